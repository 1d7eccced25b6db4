//! Transformations: a route's and a sink's jq programs (`transform`), run by jaq on an event
//! at delivery time, giving the event that one sink receives.
//!
//! `program` is a leaf (`config` compiles programs with it while loading). This file imports
//! `config` and `event`: it finds the programs a delivery runs (the route's, then the sink's)
//! and turns an event into the program's input and its output back into an event, through
//! the CloudEvents JSON format, so the output is checked exactly as ingress checks an event.

mod json;
mod program;
#[cfg(test)]
mod tests;

use std::fmt;

use jaq_json::Val;

use crate::config::Config;
use crate::event::{http, DecodeError, Event};

pub use program::{CompileError, Program, RunError};

/// Where a program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// `routes[].transform` of the named route.
    Route(&'a str),
    /// `sinks.<name>.transform`.
    Sink(&'a str),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Route(name) => write!(f, "route `{name}`"),
            Self::Sink(name) => write!(f, "sink `{name}`"),
        }
    }
}

/// One program a delivery runs, and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The route or sink that holds it.
    pub origin: Origin<'a>,
    /// The compiled program.
    pub program: &'a Program,
}

/// Why an event could not be transformed for a sink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin} transform: {failure}")]
pub struct TransformError {
    /// The route or sink whose program failed, in words (`route `orders``).
    pub origin: String,
    /// What went wrong.
    pub failure: Failure,
}

/// What went wrong in one program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The program failed, or did not yield exactly one value.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The event's JSON format could not be read as the program's input.
    #[error("the event could not be read as JSON: {0}")]
    Unreadable(String),
    /// The program yielded something other than an object.
    #[error("the program yielded {0}, not an object")]
    NotObject(&'static str),
    /// The object it yielded holds what JSON cannot (a non-string key, a byte string, NaN).
    #[error("the program's output is not JSON: {0}")]
    NotJson(String),
    /// The object it yielded is not a valid CloudEvent.
    #[error("the program's output is not a valid event: {0}")]
    Invalid(#[source] DecodeError),
}

/// The programs a delivery of `route` to `sink` runs, in order: the route's (when the route
/// still delivers to that sink), then the sink's. Empty when neither has one.
pub fn steps<'a>(config: &'a Config, route: &str, sink: &'a str) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let route = config
        .routes
        .iter()
        .find(|r| r.name == route && r.to.iter().any(|to| to == sink));
    if let Some(route) = route {
        if let Some(program) = &route.transform {
            steps.push(Step {
                origin: Origin::Route(&route.name),
                program,
            });
        }
    }
    if let Some(program) = config.sinks.get(sink).and_then(|s| s.transform.as_ref()) {
        steps.push(Step {
            origin: Origin::Sink(sink),
            program,
        });
    }
    steps
}

/// True when some route or sink of `config` has a program.
pub fn any(config: &Config) -> bool {
    config.routes.iter().any(|r| r.transform.is_some())
        || config.sinks.values().any(|s| s.transform.is_some())
}

/// Runs `steps` in order on `event`; `None` when there are none (the event goes unchanged).
pub fn apply_all(event: &Event, steps: &[Step<'_>]) -> Result<Option<Event>, TransformError> {
    let mut current: Option<Event> = None;
    for step in steps {
        let input = current.as_ref().unwrap_or(event);
        let out = apply(input, step.program).map_err(|failure| TransformError {
            origin: step.origin.to_string(),
            failure,
        })?;
        current = Some(out);
    }
    Ok(current)
}

/// Runs one program on `event`: its input is the event in the CloudEvents JSON format, and
/// its one output, an object, must decode as a valid event.
pub fn apply(event: &Event, program: &Program) -> Result<Event, Failure> {
    let text = http::encode_structured(event);
    let input = json::read(&text).map_err(|e| Failure::Unreadable(e.to_string()))?;
    let output = program.run_one(input)?;
    if !matches!(output, Val::Obj(_)) {
        return Err(Failure::NotObject(kind(&output)));
    }
    let text = json::write(&output).map_err(|e| Failure::NotJson(e.to_string()))?;
    let mut out = http::decode_structured(&text).map_err(Failure::Invalid)?;
    // Event Grid's `dataVersion` is no CloudEvents attribute; it stays with the event.
    out.data_version.clone_from(&event.data_version);
    Ok(out)
}

/// What a value is, for the "not an object" error.
fn kind(value: &Val) -> &'static str {
    match value {
        Val::Null => "null",
        Val::Bool(_) => "a boolean",
        Val::Num(_) => "a number",
        Val::BStr(_) | Val::TStr(_) => "a string",
        Val::Arr(_) => "an array",
        Val::Obj(_) => "an object",
    }
}

/// The event a delivery of `route` to `sink` hands the sink: `event` after the programs that
/// delivery runs (backs `switchyard explain --transform`).
pub fn preview(
    config: &Config,
    event: &Event,
    route: &str,
    sink: &str,
) -> Result<Event, TransformError> {
    let transformed = apply_all(event, &steps(config, route, sink))?;
    Ok(transformed.unwrap_or_else(|| event.clone()))
}
