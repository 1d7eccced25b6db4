//! Where an advanced filter's key points and the value found there: event attributes,
//! extension attributes, and members of `data`, which is parsed at most once per event.
//!
//! Imports `event`. Attribute names ignore case (Event Grid's documentation writes `Subject`,
//! `EventType`); `data.` member names are JSON names and do not.

use std::cell::OnceCell;
use std::fmt;

use serde_json::Value;

use crate::event::{Event, ExtensionValue};

/// The event's `data`, parsed as JSON at most once per event and only on demand.
#[derive(Debug)]
pub(super) struct LazyData<'e> {
    event: &'e Event,
    parsed: OnceCell<Option<Value>>,
}

impl<'e> LazyData<'e> {
    /// Wraps an event; nothing is parsed yet.
    pub(super) fn new(event: &'e Event) -> Self {
        Self {
            event,
            parsed: OnceCell::new(),
        }
    }

    /// The parsed payload; `None` when absent, not JSON-typed or not valid JSON.
    pub(super) fn json(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| {
                let bytes = self.event.data.as_ref()?;
                if !self.event.data_is_json() {
                    return None;
                }
                serde_json::from_slice(bytes).ok()
            })
            .as_ref()
    }

    /// True once the payload has been parsed (or found unparsable).
    #[cfg(test)]
    pub(super) fn was_parsed(&self) -> bool {
        self.parsed.get().is_some()
    }
}

/// Where an advanced filter's key points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    Id,
    Source,
    Type,
    Subject,
    SpecVersion,
    Time,
    DataContentType,
    DataSchema,
    DataVersion,
    /// An extension attribute, by lower-cased name.
    Extension(Box<str>),
    /// A path of member names inside `data` (empty: `data` itself).
    Data(Box<[Box<str>]>),
}

impl Key {
    /// Parses a filter key; attribute names ignore case, `data.` member names do not.
    pub(super) fn parse(key: &str) -> Self {
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "id" => Self::Id,
            "source" | "topic" => Self::Source,
            "type" | "eventtype" => Self::Type,
            "subject" => Self::Subject,
            "specversion" => Self::SpecVersion,
            "time" | "eventtime" => Self::Time,
            "datacontenttype" => Self::DataContentType,
            "dataschema" => Self::DataSchema,
            "dataversion" => Self::DataVersion,
            "data" => Self::Data(Box::default()),
            _ if lower.starts_with("data.") => {
                // ASCII lower-casing keeps byte offsets, so `key[5..]` is the path as written.
                let path = key.get(5..).unwrap_or_default();
                Self::Data(path.split('.').map(Box::from).collect())
            }
            _ => Self::Extension(lower.into_boxed_str()),
        }
    }

    /// The value the key points at in this event.
    pub(super) fn resolve<'a>(&self, event: &'a Event, data: &'a LazyData<'_>) -> Val<'a> {
        let attr = |v: Option<&'a String>| v.map_or(Val::Missing, |s| Val::Str(s));
        match self {
            Self::Id => Val::Str(&event.id),
            Self::Source => Val::Str(&event.source),
            Self::Type => Val::Str(&event.ty),
            Self::Subject => attr(event.subject.as_ref()),
            Self::SpecVersion => Val::Str(&event.specversion),
            Self::Time => attr(event.time.as_ref()),
            Self::DataContentType => attr(event.datacontenttype.as_ref()),
            Self::DataSchema => attr(event.dataschema.as_ref()),
            Self::DataVersion => attr(event.data_version.as_ref()),
            Self::Extension(name) => match event.extension(name) {
                None => Val::Missing,
                Some(ExtensionValue::String(s)) => Val::Str(s),
                Some(ExtensionValue::Integer(i)) => Val::Int(*i),
                Some(ExtensionValue::Bool(b)) => Val::Bool(*b),
            },
            Self::Data(path) => {
                let mut value = data.json();
                for member in path.iter() {
                    value = value.and_then(|v| v.get(&**member));
                }
                value.map_or(Val::Missing, Val::from_json)
            }
        }
    }
}

/// A value found at a filter key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    /// Nothing there.
    Missing,
    /// JSON `null`.
    Null,
    /// A string (attribute, extension or JSON).
    Str(&'a str),
    /// A JSON number.
    Num(f64),
    /// An integer extension attribute.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A JSON array with no object in it.
    Array(&'a [Value]),
    /// A JSON object, or an array that holds one: not filterable.
    Unfilterable(&'a Value),
}

impl<'a> Val<'a> {
    /// The value of a JSON member or array element.
    pub(super) fn from_json(v: &'a Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(Self::Unfilterable(v), Self::Num),
            Value::String(s) => Self::Str(s),
            Value::Array(items) if !items.iter().any(Value::is_object) => Self::Array(items),
            Value::Array(_) | Value::Object(_) => Self::Unfilterable(v),
        }
    }

    /// True when the key counts as missing or null for the null checks.
    pub(super) fn is_absent(self) -> bool {
        matches!(
            self,
            Self::Missing | Self::Null | Self::Unfilterable(Value::Array(_))
        )
    }
}

impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("(missing)"),
            Self::Null => f.write_str("null"),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Num(n) => write!(f, "{n}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Array(items) => {
                f.write_str(&serde_json::to_string(items).map_err(|_| fmt::Error)?)
            }
            Self::Unfilterable(v) => write!(f, "{v}"),
        }
    }
}
