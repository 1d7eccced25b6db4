//! The built-in functions (specification §3.5), resolved by name and arity when the
//! expression is parsed, so that an unknown function is a configuration error.

use std::borrow::Cow;

use super::value::{parse_bool, parse_int, Type, Value};
use super::ErrorKind;

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    Abs,
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring,
    Substring3,
    Int,
    Bool,
    String,
    IsBool,
    IsInt,
}

/// What a function failed at: the error, a detail, and the value it yields instead.
pub(super) type Failure<'a> = (ErrorKind, &'static str, Value<'a>);

impl Function {
    /// The function called `name` (any case) with `arity` arguments.
    pub(super) fn resolve(name: &str, arity: usize) -> Option<Self> {
        let name = name.to_ascii_uppercase();
        let (function, fits) = match name.as_str() {
            "ABS" => (Self::Abs, arity == 1),
            "LENGTH" => (Self::Length, arity == 1),
            "CONCAT" => (Self::Concat, true),
            "CONCAT_WS" => (Self::ConcatWs, arity >= 1),
            "LOWER" => (Self::Lower, arity == 1),
            "UPPER" => (Self::Upper, arity == 1),
            "TRIM" => (Self::Trim, arity == 1),
            "LEFT" => (Self::Left, arity == 2),
            "RIGHT" => (Self::Right, arity == 2),
            "SUBSTRING" if arity == 3 => (Self::Substring3, true),
            "SUBSTRING" => (Self::Substring, arity == 2),
            "INT" => (Self::Int, arity == 1),
            "BOOL" => (Self::Bool, arity == 1),
            "STRING" => (Self::String, arity == 1),
            "IS_BOOL" => (Self::IsBool, arity == 1),
            "IS_INT" => (Self::IsInt, arity == 1),
            _ => return None,
        };
        fits.then_some(function)
    }

    /// The type of the function's result.
    pub(super) fn result(self) -> Type {
        match self {
            Self::Abs | Self::Length | Self::Int => Type::Int,
            Self::Bool | Self::IsBool | Self::IsInt => Type::Bool,
            _ => Type::Str,
        }
    }

    /// The type argument `i` is cast to before the call; `None` for the casting functions,
    /// which take any value as it is.
    pub(super) fn parameter(self, i: usize) -> Option<Type> {
        match self {
            Self::Abs => Some(Type::Int),
            Self::Left | Self::Right | Self::Substring | Self::Substring3 if i > 0 => {
                Some(Type::Int)
            }
            Self::Int | Self::Bool | Self::String | Self::IsBool | Self::IsInt => None,
            _ => Some(Type::Str),
        }
    }

    /// Calls the function with arguments already cast to its parameter types.
    pub(super) fn call<'a>(self, args: Vec<Value<'a>>) -> Result<Value<'a>, Failure<'a>> {
        let mut args = args.into_iter();
        if self == Self::Concat {
            return Ok(Value::Str(concat("", args)));
        }
        let first = args.next().unwrap_or(Value::Bool(false));
        let text = |v: Value<'a>| v.into_str();
        Ok(match self {
            Self::Abs => abs(next_int(std::iter::once(first)))?,
            Self::Length => {
                let n = text(first).chars().count();
                Value::Int(i32::try_from(n).unwrap_or(i32::MAX))
            }
            Self::Concat => Value::Str(concat("", std::iter::once(first).chain(args))),
            Self::ConcatWs => Value::Str(concat(&text(first), args)),
            Self::Lower => Value::Str(Cow::Owned(text(first).to_lowercase())),
            Self::Upper => Value::Str(Cow::Owned(text(first).to_uppercase())),
            Self::Trim => Value::Str(map_str(text(first), str::trim)),
            Self::Left => left_right(text(first), next_int(args), true)?,
            Self::Right => left_right(text(first), next_int(args), false)?,
            Self::Substring => substring(text(first), next_int(args), None)?,
            Self::Substring3 => {
                let pos = next_int(&mut args);
                substring(text(first), pos, Some(next_int(args)))?
            }
            Self::Int => first
                .to_int()
                .map(Value::Int)
                .map_err(|why| cast(why, Type::Int))?,
            Self::Bool => match first {
                Value::Int(i) => Value::Bool(i != 0),
                v => v
                    .to_bool()
                    .map(Value::Bool)
                    .map_err(|why| cast(why, Type::Bool))?,
            },
            Self::String => Value::Str(first.into_str()),
            Self::IsBool => Value::Bool(parse_bool(&first.into_str()).is_some()),
            Self::IsInt => Value::Bool(parse_int(&first.into_str()).is_some()),
        })
    }
}

/// The next argument as an integer (arguments are already cast).
fn next_int<'a>(mut args: impl Iterator<Item = Value<'a>>) -> i32 {
    match args.next() {
        Some(Value::Int(i)) => i,
        _ => 0,
    }
}

fn cast(why: &'static str, ty: Type) -> Failure<'static> {
    (ErrorKind::Cast, why, ty.zero())
}

fn abs<'a>(i: i32) -> Result<Value<'a>, Failure<'a>> {
    match i.checked_abs() {
        Some(a) => Ok(Value::Int(a)),
        None => Err((
            ErrorKind::Math,
            "ABS overflows 32 bits",
            Value::Int(i32::MAX),
        )),
    }
}

fn concat<'a>(separator: &str, parts: impl Iterator<Item = Value<'a>>) -> Cow<'a, str> {
    let mut out = String::new();
    for (i, part) in parts.enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(&part.into_str());
    }
    Cow::Owned(out)
}

/// Applies a slicing function, borrowing when the input borrows.
fn map_str<'a>(s: Cow<'a, str>, f: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(f(b)),
        Cow::Owned(o) => Cow::Owned(f(&o).to_owned()),
    }
}

/// Byte offset of character `n` (or the end).
fn char_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

fn left_right(s: Cow<'_, str>, n: i32, left: bool) -> Result<Value<'_>, Failure<'_>> {
    let Ok(n) = usize::try_from(n) else {
        return Err((
            ErrorKind::FunctionEvaluation,
            "the length is negative",
            Value::Str(s),
        ));
    };
    let chars = s.chars().count();
    let sliced = map_str(s, |s| match left {
        true => &s[..char_offset(s, n)],
        false => &s[char_offset(s, chars.saturating_sub(n))..],
    });
    Ok(Value::Str(sliced))
}

fn substring(s: Cow<'_, str>, pos: i32, len: Option<i32>) -> Result<Value<'_>, Failure<'_>> {
    let fail = |why| Err((ErrorKind::FunctionEvaluation, why, Type::Str.zero()));
    let chars = i64::try_from(s.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    if pos > chars || pos < -chars {
        return fail("the position is outside the string");
    }
    if len.is_some_and(|l| l < 0) {
        return fail("the length is negative");
    }
    if pos == 0 {
        return Ok(Type::Str.zero());
    }
    let start = if pos > 0 { pos - 1 } else { chars + pos };
    let end = len.map_or(chars, |l| (start + i64::from(l)).min(chars));
    let (start, end) = (
        usize::try_from(start).unwrap_or(0),
        usize::try_from(end).unwrap_or(0),
    );
    Ok(Value::Str(map_str(s, |s| {
        &s[char_offset(s, start)..char_offset(s, end)]
    })))
}
