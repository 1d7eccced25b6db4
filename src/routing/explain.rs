//! Why an event matched each route or did not; backs `switchyard explain`.
//!
//! Imports `event`, `config` and `cesql`. Every route is checked here, in table order, without the
//! index: explanations are for people, not for the hot path.

use serde::ser::{SerializeStruct as _, Serializer};
use serde::Serialize;

use crate::cesql;
use crate::config::Condition;
use crate::event::Event;

use super::advanced::{CompiledFilter, Judgement};
use super::filter::{CompiledRoute, Failure, Patterns};
use super::key::{LazyData, Val};

/// Longest value, in characters, quoted in an explanation before it is cut.
const MAX_SHOWN: usize = 80;

/// The verdict of every route for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// One verdict per route, in table order.
    pub routes: Vec<RouteVerdict>,
}

/// One route's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteVerdict {
    /// The route's name.
    pub route: String,
    /// `None` when the event matches; otherwise the first condition that failed.
    pub failed: Option<String>,
    /// The sinks the event goes to through this route (empty when it does not match).
    pub sinks: Vec<String>,
    /// For a route with `sql`: the expression's value for the event and its evaluation
    /// error, if any (evaluated even when an earlier condition failed).
    pub sql: Option<SqlVerdict>,
}

/// A route's CESQL expression evaluated for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlVerdict {
    /// The expression as written.
    pub expression: String,
    /// Its value: a boolean, an integer or a string (the defined fallback after an error).
    pub value: serde_json::Value,
    /// The first error the evaluation raised, if any.
    pub error: Option<String>,
}

/// `{"route", "matched", "reason", "sinks", "sql"}`: the shape `switchyard explain -o json`
/// prints per route; `reason` is null when the event matches, `sql` when the route has none.
impl Serialize for RouteVerdict {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("RouteVerdict", 5)?;
        out.serialize_field("route", &self.route)?;
        out.serialize_field("matched", &self.failed.is_none())?;
        out.serialize_field("reason", &self.failed)?;
        out.serialize_field("sinks", &self.sinks)?;
        out.serialize_field("sql", &self.sql)?;
        out.end()
    }
}

pub(super) fn explain(routes: &[CompiledRoute], event: &Event) -> Explanation {
    let data = LazyData::new(event);
    Explanation {
        routes: routes
            .iter()
            .map(|r| match r.check(event, &data) {
                Ok(()) => RouteVerdict {
                    route: r.name.to_string(),
                    failed: None,
                    sinks: r.targets().iter().map(|t| t.sink.to_string()).collect(),
                    sql: describe_sql(r, event),
                },
                Err(failure) => RouteVerdict {
                    route: r.name.to_string(),
                    failed: Some(describe_failure(r, failure, event, &data)),
                    sinks: Vec::new(),
                    sql: describe_sql(r, event),
                },
            })
            .collect(),
    }
}

/// The value of a route's CESQL filter for the event, and its error if it raised one.
fn describe_sql(route: &CompiledRoute, event: &Event) -> Option<SqlVerdict> {
    let sql = route.sql.as_ref()?;
    let done = sql.evaluate(event);
    let value = match done.value {
        cesql::Value::Bool(b) => serde_json::Value::Bool(b),
        cesql::Value::Int(i) => serde_json::Value::from(i),
        cesql::Value::Str(s) => serde_json::Value::String(s.into_owned()),
    };
    Some(SqlVerdict {
        expression: sql.source().to_owned(),
        value,
        error: done.error.map(|e| e.to_string()),
    })
}

/// Puts a route's first failed condition into words.
fn describe_failure(
    route: &CompiledRoute,
    failure: Failure,
    event: &Event,
    data: &LazyData<'_>,
) -> String {
    let subject = route.subject.as_ref().map(|s| &s.config);
    let begins = subject.and_then(|s| s.begins_with.as_deref()).unwrap_or("");
    let ends = subject.and_then(|s| s.ends_with.as_deref()).unwrap_or("");
    let case = if subject.is_some_and(|s| s.case_sensitive) {
        " (case-sensitive)"
    } else {
        ""
    };
    let shown_subject = Val::Str(event.subject.as_deref().unwrap_or(""));
    match failure {
        Failure::Type => not_in("type", &event.ty, &route.types),
        Failure::Source => not_in("source", &event.source, &route.sources),
        Failure::NoSubject => {
            let parts: Vec<String> = [("begins with", begins), ("ends with", ends)]
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(what, v)| format!("{what} {v:?}"))
                .collect();
            format!("subject is missing ({})", parts.join(", "))
        }
        Failure::SubjectBegins => {
            format!("subject {shown_subject} does not begin with {begins:?}{case}")
        }
        Failure::SubjectEnds => format!("subject {shown_subject} does not end with {ends:?}{case}"),
        Failure::Advanced(i) => match route.advanced.get(i) {
            Some(filter) => format!("advanced[{i}]: {}", describe_filter(filter, event, data)),
            None => format!("advanced[{i}]"),
        },
        Failure::Sql => "sql is not true".to_owned(),
        Failure::SqlError(..) => "sql raised an error (its value does not count)".to_owned(),
    }
}

fn not_in(what: &str, value: &str, patterns: &Patterns) -> String {
    format!(
        "{what} {value:?} is not in [{}]",
        patterns.written.join(", ")
    )
}

/// Says why one advanced filter does not hold.
fn describe_filter(filter: &CompiledFilter, event: &Event, data: &LazyData<'_>) -> String {
    let key = &filter.config.key;
    let condition = describe_condition(&filter.config.condition);
    let value = filter.value(event, data);
    let shown = shown(value);
    match (value, filter.judge(value)) {
        (Val::Missing, _) => format!("{key} is missing ({condition})"),
        (Val::Null, _) => format!("{key} is null ({condition})"),
        (Val::Unfilterable(_), _) => format!("{key} = {shown} is not filterable ({condition})"),
        (Val::Array(_), Judgement::AsMissing(_)) => {
            format!(
                "{key} = {shown} has no {} element ({condition})",
                filter.kind()
            )
        }
        (_, Judgement::AsMissing(_)) => {
            format!("{key} = {shown} is not a {} ({condition})", filter.kind())
        }
        (_, Judgement::Tested(_)) => format!("{key} = {shown} fails {condition}"),
    }
}

/// A value as quoted in explanations, cut after [`MAX_SHOWN`] characters.
fn shown(value: Val<'_>) -> String {
    shown_text(value.to_string())
}

/// Text cut after [`MAX_SHOWN`] characters.
fn shown_text(text: String) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// An operator and its operands, e.g. `NumberGreaterThan 100` or `StringIn ["a", "b"]`.
fn describe_condition(condition: &Condition) -> String {
    use Condition as C;
    let nums = |v: &[f64]| list(v.iter().map(f64::to_string));
    let strs = |v: &[String]| list(v.iter().map(|s| format!("{s:?}")));
    let ranges = |v: &[(f64, f64)]| list(v.iter().map(|(lo, hi)| format!("[{lo}, {hi}]")));
    let (name, operands) = match condition {
        C::NumberIn(v) => ("NumberIn", nums(v)),
        C::NumberNotIn(v) => ("NumberNotIn", nums(v)),
        C::NumberLessThan(n) => ("NumberLessThan", n.to_string()),
        C::NumberGreaterThan(n) => ("NumberGreaterThan", n.to_string()),
        C::NumberLessThanOrEquals(n) => ("NumberLessThanOrEquals", n.to_string()),
        C::NumberGreaterThanOrEquals(n) => ("NumberGreaterThanOrEquals", n.to_string()),
        C::NumberInRange(r) => ("NumberInRange", ranges(r)),
        C::NumberNotInRange(r) => ("NumberNotInRange", ranges(r)),
        C::BoolEquals(b) => ("BoolEquals", b.to_string()),
        C::StringIn(v) => ("StringIn", strs(v)),
        C::StringNotIn(v) => ("StringNotIn", strs(v)),
        C::StringContains(v) => ("StringContains", strs(v)),
        C::StringNotContains(v) => ("StringNotContains", strs(v)),
        C::StringBeginsWith(v) => ("StringBeginsWith", strs(v)),
        C::StringNotBeginsWith(v) => ("StringNotBeginsWith", strs(v)),
        C::StringEndsWith(v) => ("StringEndsWith", strs(v)),
        C::StringNotEndsWith(v) => ("StringNotEndsWith", strs(v)),
        C::IsNullOrUndefined => return "IsNullOrUndefined".to_owned(),
        C::IsNotNull => return "IsNotNull".to_owned(),
    };
    format!("{name} {operands}")
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for v in &self.routes {
            match &v.failed {
                None => writeln!(f, "{}: match -> {}", v.route, v.sinks.join(", "))?,
                Some(why) => writeln!(f, "{}: no match: {why}", v.route)?,
            }
            if let Some(sql) = &v.sql {
                writeln!(f, "  sql {sql}")?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for SqlVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = shown_text(self.value.to_string());
        write!(f, "`{}` = {value}", self.expression)?;
        match &self.error {
            Some(error) => write!(f, " (error: {error})"),
            None => Ok(()),
        }
    }
}
