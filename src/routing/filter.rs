//! A compiled route: type and source lists with trailing-`*` wildcards, the subject
//! begins/ends-with filter, the advanced filters and the CESQL filter, checked in that order
//! (AND).
//!
//! Imports `event` and `config`. Checking a route allocates nothing for ASCII text; the
//! first failed condition comes back as a [`Failure`] that `explain` turns into words.

use std::sync::Arc;

use crate::cesql::{ErrorKind, Expr};
use crate::config::{MatchConfig, RouteConfig, SubjectFilter};
use crate::event::Event;

use super::advanced::CompiledFilter;
use super::key::LazyData;
use super::text::{fold, Folded};
use super::Target;

/// The first condition of a route that an event fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The type is not in the route's list.
    Type,
    /// The source is not in the route's list.
    Source,
    /// The event has no subject but the route filters on it.
    NoSubject,
    /// The subject does not begin with the required prefix.
    SubjectBegins,
    /// The subject does not end with the required suffix.
    SubjectEnds,
    /// The advanced filter at this position does not hold.
    Advanced(usize),
    /// The CESQL filter is not `true`.
    Sql,
    /// The CESQL filter raised an error (column and detail).
    SqlError(ErrorKind, usize, &'static str),
}

/// A list of exact values and trailing-`*` prefixes, compared ignoring case.
#[derive(Debug, Default)]
pub(super) struct Patterns {
    /// True when the list is empty or holds `*`: every value matches.
    pub(super) any: bool,
    /// Exact values, lower-cased.
    pub(super) exact: Box<[Box<str>]>,
    /// Prefixes of the `*` patterns, lower-cased.
    pub(super) prefixes: Box<[Box<str>]>,
    /// The patterns as configured, for explanations.
    pub(super) written: Box<[String]>,
}

impl Patterns {
    fn compile(patterns: &[String]) -> Self {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for p in patterns {
            match p.strip_suffix('*') {
                Some(prefix) => prefixes.push(fold(prefix)),
                None => exact.push(fold(p)),
            }
        }
        Self {
            any: patterns.is_empty() || prefixes.iter().any(|p| p.is_empty()),
            exact: exact.into(),
            prefixes: prefixes.into(),
            written: patterns.into(),
        }
    }

    /// True when the value is in the list.
    pub(super) fn matches(&self, value: &str) -> bool {
        if self.any {
            return true;
        }
        let value = Folded::new(value);
        self.exact.iter().any(|e| value.eq(e)) || self.prefixes.iter().any(|p| value.starts_with(p))
    }
}

/// A compiled subject filter; at least one of its parts is non-empty.
#[derive(Debug)]
pub(super) struct SubjectMatch {
    /// Required prefix (lower-cased unless case-sensitive).
    begins: Option<Box<str>>,
    /// Required suffix (lower-cased unless case-sensitive).
    ends: Option<Box<str>>,
    /// The filter as configured, for explanations.
    pub(super) config: SubjectFilter,
}

impl SubjectMatch {
    fn compile(filter: &SubjectFilter) -> Option<Self> {
        let part = |s: &Option<String>| {
            let s = s.as_deref().filter(|s| !s.is_empty())?;
            Some(if filter.case_sensitive {
                s.into()
            } else {
                fold(s)
            })
        };
        let (begins, ends) = (part(&filter.begins_with), part(&filter.ends_with));
        (begins.is_some() || ends.is_some()).then(|| Self {
            begins,
            ends,
            config: filter.clone(),
        })
    }

    fn check(&self, subject: Option<&str>) -> Result<(), Failure> {
        let subject = subject.ok_or(Failure::NoSubject)?;
        let (begins, ends) = if self.config.case_sensitive {
            let begins = self
                .begins
                .as_deref()
                .is_none_or(|b| subject.starts_with(b));
            let ends = self.ends.as_deref().is_none_or(|e| subject.ends_with(e));
            (begins, ends)
        } else {
            let folded = Folded::new(subject);
            let begins = self.begins.as_deref().is_none_or(|b| folded.starts_with(b));
            let ends = self.ends.as_deref().is_none_or(|e| folded.ends_with(e));
            (begins, ends)
        };
        match (begins, ends) {
            (false, _) => Err(Failure::SubjectBegins),
            (true, false) => Err(Failure::SubjectEnds),
            (true, true) => Ok(()),
        }
    }
}

/// A route compiled for matching.
#[derive(Debug)]
pub(super) struct CompiledRoute {
    /// The route's name.
    pub(super) name: Arc<str>,
    targets: Box<[Target]>,
    /// Accepted event types.
    pub(super) types: Patterns,
    /// Accepted event sources.
    pub(super) sources: Patterns,
    /// The subject filter, if it constrains anything.
    pub(super) subject: Option<SubjectMatch>,
    /// Advanced filters, AND-ed, in configured order.
    pub(super) advanced: Box<[CompiledFilter]>,
    /// The CESQL filter.
    pub(super) sql: Option<Expr>,
    /// The event types the CESQL filter pins, for the index (when `types` accepts any).
    pub(super) sql_types: Option<Patterns>,
}

impl CompiledRoute {
    /// Compiles one configured route.
    pub(super) fn compile(route: &RouteConfig) -> Self {
        let name: Arc<str> = Arc::from(route.name.as_str());
        let targets = route
            .to
            .iter()
            .map(|sink| Target {
                route: name.clone(),
                sink: Arc::from(sink.as_str()),
                priority: route.priority,
                ordering: route.ordering,
            })
            .collect();
        let MatchConfig {
            types,
            sources,
            subject,
            advanced,
        } = &route.filter;
        Self {
            name,
            targets,
            types: Patterns::compile(types),
            sources: Patterns::compile(sources),
            subject: subject.as_ref().and_then(SubjectMatch::compile),
            advanced: advanced.iter().map(CompiledFilter::compile).collect(),
            sql: route.sql.clone(),
            sql_types: route.sql.as_ref().and_then(sql_types),
        }
    }

    /// `Ok(())` when the event matches; otherwise the first condition that failed.
    pub(super) fn check(&self, event: &Event, data: &LazyData<'_>) -> Result<(), Failure> {
        if !self.types.matches(&event.ty) {
            return Err(Failure::Type);
        }
        if !self.sources.matches(&event.source) {
            return Err(Failure::Source);
        }
        if let Some(subject) = &self.subject {
            subject.check(event.subject.as_deref())?;
        }
        if let Some(i) = self.advanced.iter().position(|f| !f.holds(event, data)) {
            return Err(Failure::Advanced(i));
        }
        match self.sql.as_ref().map(|sql| sql.filter(event)) {
            None | Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => Err(Failure::Sql),
            Some(Err(e)) => Err(Failure::SqlError(e.kind, e.column, e.detail)),
        }
    }

    /// The (route, sink) pairs of this route.
    pub(super) fn targets(&self) -> &[Target] {
        &self.targets
    }
}

/// The types a CESQL filter pins, as patterns (`*` after a prefix); `None` if it pins none.
fn sql_types(sql: &Expr) -> Option<Patterns> {
    let (exact, prefixes) = sql.pinned_types()?;
    let written: Vec<String> = exact
        .into_iter()
        .chain(prefixes.into_iter().map(|p| format!("{p}*")))
        .collect();
    let patterns = Patterns::compile(&written);
    (!patterns.any).then_some(patterns)
}
