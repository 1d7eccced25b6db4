//! A route's CESQL filter: the event's attributes as CESQL sees them, and the errors an
//! evaluation reports.
//!
//! Imports `event` and `cesql`. Attribute values borrow from the event: matching copies no
//! string unless an operator has to build one.

use std::borrow::Cow;
use std::sync::Arc;

use crate::cesql::{Attributes, ErrorKind, Value};
use crate::event::{Event, ExtensionValue};

/// An evaluation error of a route's `sql` filter: the event did not match the route, and the
/// error is to be counted and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// The route whose filter failed.
    pub route: Arc<str>,
    /// What went wrong.
    pub kind: ErrorKind,
    /// 1-based column, in the expression, of the part that raised it.
    pub column: usize,
    /// What exactly, in a few words.
    pub detail: &'static str,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} error at column {}: {}",
            self.kind.label().replace('_', " "),
            self.column,
            self.detail
        )
    }
}

impl Attributes for Event {
    fn attribute(&self, name: &str) -> Option<Value<'_>> {
        match name {
            "type" => Some(borrowed(&self.ty)),
            "source" => Some(borrowed(&self.source)),
            "id" => Some(borrowed(&self.id)),
            "specversion" => Some(borrowed(&self.specversion)),
            "subject" => optional(&self.subject),
            "time" => optional(&self.time),
            "datacontenttype" => optional(&self.datacontenttype),
            "dataschema" => optional(&self.dataschema),
            _ => self.extension(name).map(|v| match v {
                ExtensionValue::String(s) => borrowed(s),
                ExtensionValue::Bool(b) => Value::Bool(*b),
                ExtensionValue::Integer(i) => match i32::try_from(*i) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Str(Cow::Owned(i.to_string())),
                },
            }),
        }
    }
}

fn borrowed(s: &str) -> Value<'_> {
    Value::Str(Cow::Borrowed(s))
}

fn optional(s: &Option<String>) -> Option<Value<'_>> {
    s.as_deref().map(borrowed)
}
