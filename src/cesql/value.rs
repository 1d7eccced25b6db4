//! CESQL's three types and the casts between them (specification §3.1 and §3.7).

use std::borrow::Cow;
use std::fmt;

/// A CESQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// `true` or `false`.
    Bool,
    /// A signed 32-bit integer.
    Int,
    /// A string of Unicode characters.
    Str,
}

impl Type {
    /// The zero value of the type: the fallback after an error.
    pub(super) fn zero(self) -> Value<'static> {
        match self {
            Self::Bool => Value::Bool(false),
            Self::Int => Value::Int(0),
            Self::Str => Value::Str(Cow::Borrowed("")),
        }
    }

    /// The type's name, as written in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "boolean",
            Self::Int => "integer",
            Self::Str => "string",
        }
    }
}

/// A CESQL value; strings borrow from the event or the expression where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// A boolean.
    Bool(bool),
    /// A 32-bit integer.
    Int(i32),
    /// A string.
    Str(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// The value's type.
    pub fn ty(&self) -> Type {
        match self {
            Self::Bool(_) => Type::Bool,
            Self::Int(_) => Type::Int,
            Self::Str(_) => Type::Str,
        }
    }

    /// Casts to an integer: booleans are 1 and 0, strings must be decimal integer literals.
    pub(super) fn to_int(&self) -> Result<i32, &'static str> {
        match self {
            Self::Int(i) => Ok(*i),
            Self::Bool(b) => Ok(i32::from(*b)),
            Self::Str(s) => parse_int(s).ok_or("the string is not a 32-bit integer"),
        }
    }

    /// Casts to a boolean implicitly: only the strings `true` and `false` (any case) convert.
    pub(super) fn to_bool(&self) -> Result<bool, &'static str> {
        match self {
            Self::Bool(b) => Ok(*b),
            Self::Int(_) => Err("an integer is not a boolean"),
            Self::Str(s) => parse_bool(s).ok_or("the string is neither true nor false"),
        }
    }

    /// Casts to a string; every value has one.
    pub(super) fn into_str(self) -> Cow<'a, str> {
        match self {
            Self::Str(s) => s,
            Self::Int(i) => Cow::Owned(i.to_string()),
            Self::Bool(true) => Cow::Borrowed("true"),
            Self::Bool(false) => Cow::Borrowed("false"),
        }
    }

    /// Casts to `ty`; a failed cast gives the type's zero value and the reason.
    pub(super) fn cast(self, ty: Type) -> Result<Self, (Self, &'static str)> {
        let failed = |why| (ty.zero(), why);
        match ty {
            Type::Bool => self.to_bool().map(Value::Bool).map_err(failed),
            Type::Int => self.to_int().map(Value::Int).map_err(failed),
            Type::Str => Ok(Self::Str(self.into_str())),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Parses an optionally signed decimal integer that fits in 32 bits.
pub(super) fn parse_int(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `true` or `false`, ignoring case.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}
