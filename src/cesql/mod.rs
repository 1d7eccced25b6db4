//! CloudEvents SQL (CESQL v1): an expression is parsed once, when the configuration is
//! loaded, and evaluated against each event.
//!
//! Imports nothing internal: it is a language, like a dependency crate, that `config` parses
//! with and `routing` evaluates with. [`lexer`] cuts the text into tokens, [`parser`] builds the
//! tree (a Pratt parser following the specification's ANTLR grammar, precedence included),
//! [`functions`] resolves built-in calls, [`eval`] walks the tree, [`like`] matches `LIKE`
//! patterns and [`value`] holds the three types and their casts.
//!
//! Evaluation is total: an error (a failed cast, a division by zero, a missing attribute, a
//! function given a bad argument) never stops it. The operator where it arises yields the
//! defined fallback, every enclosing operator yields the zero value of its type, and the first
//! error is returned beside the value — for a filter, an errored expression does not match.

mod eval;
mod functions;
mod lexer;
mod like;
mod parser;
#[cfg(test)]
mod tck;
#[cfg(test)]
mod tests;
mod value;

use std::fmt;

pub use value::{Type, Value};

/// Deepest nesting of parentheses and operators an expression may have.
const MAX_DEPTH: usize = 64;

/// Where an expression reads attribute values from (a CloudEvent).
pub trait Attributes {
    /// The value of the attribute `name` (lower-case), or `None` when the event lacks it.
    fn attribute(&self, name: &str) -> Option<Value<'_>>;
}

/// A parsed, checked CESQL expression.
#[derive(Debug, Clone)]
pub struct Expr {
    source: Box<str>,
    root: parser::Node,
}

/// Why an expression cannot be used: it does not parse, or calls an unknown function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct CompileError {
    /// Parse error or missing function.
    pub kind: CompileErrorKind,
    /// 1-based column (in characters) where the problem starts.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The classes of [`CompileError`], as the CESQL test kit names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// The text is not a CESQL expression.
    Parse,
    /// A function that does not exist, or not with that many arguments.
    MissingFunction,
}

/// The classes of evaluation error the specification defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value could not be cast to the type an operator or function needs.
    Cast,
    /// Division or remainder by zero, or an integer overflow.
    Math,
    /// The expression reads an attribute the event does not have.
    MissingAttribute,
    /// A function was given an argument outside its domain.
    FunctionEvaluation,
}

impl ErrorKind {
    /// The name used in metrics labels and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cast => "cast",
            Self::Math => "math",
            Self::MissingAttribute => "missing_attribute",
            Self::FunctionEvaluation => "function_evaluation",
        }
    }
}

/// An error raised while evaluating; the expression still has a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalError<'a> {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What exactly, in a few words.
    pub detail: &'static str,
    /// The part of the expression that raised it.
    pub at: &'a str,
    /// 1-based column of that part.
    pub column: usize,
}

impl fmt::Display for EvalError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} error at column {} (`{}`): {}",
            self.kind.label().replace('_', " "),
            self.column,
            self.at,
            self.detail
        )
    }
}

/// The outcome of evaluating an expression: always a value, and the first error if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation<'a> {
    /// The value (the defined fallback when an error arose).
    pub value: Value<'a>,
    /// The first error raised, if any.
    pub error: Option<EvalError<'a>>,
}

impl Expr {
    /// Parses an expression and resolves its function calls.
    pub fn parse(source: &str) -> Result<Self, CompileError> {
        let root = parser::parse(source)?;
        Ok(Self {
            source: source.into(),
            root,
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The type of the expression's value when it does not depend on the event (an attribute
    /// on its own can hold any type).
    pub fn static_type(&self) -> Option<Type> {
        self.root.static_type()
    }

    /// Evaluates the expression against an event's attributes.
    pub fn evaluate<'a, A: Attributes + ?Sized>(&'a self, attributes: &'a A) -> Evaluation<'a> {
        let ctx = eval::Context {
            source: &self.source,
            attributes,
        };
        match ctx.eval(&self.root) {
            Ok(value) => Evaluation { value, error: None },
            Err(failed) => Evaluation {
                value: failed.value,
                error: Some(failed.error),
            },
        }
    }

    /// Evaluates the expression as a filter: `Ok(true)` only for a boolean `true` without error.
    pub fn filter<'a, A: Attributes + ?Sized>(
        &'a self,
        attributes: &'a A,
    ) -> Result<bool, EvalError<'a>> {
        let done = self.evaluate(attributes);
        match done.error {
            Some(error) => Err(error),
            None => Ok(done.value == Value::Bool(true)),
        }
    }

    /// The event types the expression requires when its top-level `AND` chain holds
    /// `type = '…'`, `type IN ('…', …)` or `type LIKE '…%'`: exact values and prefixes. `None`
    /// when it accepts any type.
    pub fn pinned_types(&self) -> Option<(Vec<String>, Vec<String>)> {
        self.root.pinned_types()
    }
}
