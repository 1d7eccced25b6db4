//! A jq program compiled by jaq: the definitions and native filters it may call, compile
//! errors with their line and column, and one run that must yield exactly one value.
//!
//! Imports nothing internal. What a program may call is decided here, once: jaq's core, JSON
//! and standard filters, less those that reach outside the program (the environment, the
//! local time zone, the log, the process exit code). Inputs (`input`, `inputs`), `$ENV` and modules (`import`,
//! `include`) are never provided, so a program naming them does not compile.

use std::fmt;
use std::sync::Arc;

use jaq_core::compile::Undefined;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Vars};
use jaq_json::Val;

/// What programs run on: JSON values, with no data besides the program itself.
type Data = data::JustLut<Val>;

/// Native filters left out: they read the environment (`env`, and the `TZ` variable or
/// `/etc/localtime` behind `localtime` and `strflocaltime`), write to the log (`debug`,
/// `stderr`) or end the process (`halt`).
const HIDDEN_FUNS: &[&str] = &[
    "env",
    "localtime",
    "strflocaltime",
    "debug_empty",
    "stderr_empty",
    "halt",
];

/// Definitions left out, because they call the filters above.
const HIDDEN_DEFS: &[&str] = &["debug", "stderr", "halt", "halt_error"];

/// Longest error message kept, in characters; jaq quotes whole values in some messages.
const MAX_MESSAGE: usize = 300;

/// A compiled jq program; cheap to clone.
#[derive(Clone)]
pub struct Program {
    source: Arc<str>,
    filter: Arc<jaq_core::Filter<Data>>,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Program").field(&self.source).finish()
    }
}

/// Why a program does not compile, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line}, column {column}")]
pub struct CompileError {
    /// 1-based line in the program.
    pub line: usize,
    /// 1-based column (in characters) in that line.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Why one run of a program gave no usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The program raised an error.
    #[error("the program failed: {0}")]
    Failed(String),
    /// The program yielded no value.
    #[error("the program yielded no value")]
    Empty,
    /// The program yielded more than one value.
    #[error("the program yielded more than one value")]
    Several,
}

impl Program {
    /// Parses and compiles `source`; the first error found is reported.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs().filter(|d| !HIDDEN_DEFS.contains(&d.name)))
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !HIDDEN_FUNS.contains(name));
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let file = File {
            code: source,
            path: (),
        };
        let modules = loader
            .load(&arena, file)
            .map_err(|errors| load_error(source, errors))?;
        // `import "file" as $name` reads a data file: never provided.
        load::import(&modules, |_| Err(String::new()))
            .map_err(|errors| load_error(source, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| compile_error(source, errors))?;
        Ok(Self {
            source: Arc::from(source),
            filter: Arc::new(filter),
        })
    }

    /// The program as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on `input`; it must yield exactly one value. Stops after a second
    /// value, so a program yielding many is not run to its end.
    pub fn run_one(&self, input: Val) -> Result<Val, RunError> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let first = match outputs.next() {
            None => return Err(RunError::Empty),
            Some(first) => first.map_err(failed)?,
        };
        match outputs.next() {
            None => Ok(first),
            Some(Ok(_)) => Err(RunError::Several),
            Some(Err(e)) => Err(failed(e)),
        }
    }
}

/// The message of a run-time exception; only errors reach here, as `halt` is not provided.
fn failed(exn: jaq_core::Exn<'_, Val>) -> RunError {
    let message = match exn.get_err().map(jaq_core::Error::into_val) {
        // `error("text")`: the text, unquoted.
        Ok(Val::TStr(text)) => String::from_utf8_lossy(&text).into_owned(),
        Ok(value) => value.to_string(),
        Err(other) => format!("{other:?}"),
    };
    RunError::Failed(cut(message))
}

fn cut(text: String) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn load_error(source: &str, errors: load::Errors<&str, ()>) -> CompileError {
    let first = errors.into_iter().next().map(|(_, e)| e);
    let (part, message) = match first {
        Some(load::Error::Lex(errors)) => match errors.into_iter().next() {
            Some((expect, part)) => (part, format!("expected {}", expect.as_str())),
            None => ("", "invalid token".to_owned()),
        },
        Some(load::Error::Parse(errors)) => match errors.into_iter().next() {
            Some((expect, part)) => (part, parse_message(expect.as_str(), part)),
            None => ("", "syntax error".to_owned()),
        },
        Some(load::Error::Io(errors)) => match errors.into_iter().next() {
            Some((part, _)) => (
                part,
                format!("cannot load `{part}`: modules and data files are not available"),
            ),
            None => ("", "modules and data files are not available".to_owned()),
        },
        None => ("", "syntax error".to_owned()),
    };
    located(source, part, message)
}

fn parse_message(expected: &str, found: &str) -> String {
    match found {
        "" => format!("expected {expected}, found the end of the program"),
        found => format!("expected {expected}, found `{}`", cut(found.to_owned())),
    }
}

fn compile_error(source: &str, errors: jaq_core::compile::Errors<&str, ()>) -> CompileError {
    let first = errors.into_iter().flat_map(|(_, e)| e).next();
    let Some((name, undefined)) = first else {
        return located(source, "", "cannot compile".to_owned());
    };
    let message = match undefined {
        Undefined::Filter(arity) => format!("undefined filter `{name}/{arity}`"),
        other => format!("undefined {} `{name}`", other.as_str()),
    };
    located(source, name, message)
}

/// Places an error at `part`, a slice of `source`; a part from elsewhere (the end of the
/// program, say) places it at the end.
fn located(source: &str, part: &str, message: String) -> CompileError {
    let start = source.as_ptr() as usize;
    let at = (part.as_ptr() as usize)
        .checked_sub(start)
        .filter(|offset| *offset <= source.len() && source.is_char_boundary(*offset))
        .unwrap_or(source.len());
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    CompileError {
        line,
        column,
        message,
    }
}
