//! The events a saga sends: each step's (its input, marked with the instance and step), each
//! compensation's (the step's input and reply wrapped in JSON), and the outcome event an
//! instance emits when it ends. Also how events are kept in the store (structured JSON).

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde_json::json;
use serde_json::value::RawValue;

use super::{
    SagaError, State, COMPENSATE_EXTENSION, COMPENSATE_TYPE, SAGA_EXTENSION, STEP_EXTENSION,
};
use crate::event::{http as ce_http, Event, ExtensionValue};

/// The source of every event a saga makes: `/switchyard/sagas/<name>`.
fn source(saga: &str) -> String {
    format!("/switchyard/sagas/{saga}")
}

/// An event as the store keeps it.
pub(super) fn encode(event: &Event) -> String {
    String::from_utf8_lossy(&ce_http::encode_structured(event)).into_owned()
}

/// An event the store kept.
pub(super) fn decode(text: &str) -> Result<Event, SagaError> {
    ce_http::decode_structured(text.as_bytes()).map_err(|e| SagaError::Record(e.to_string()))
}

/// A stored event as raw JSON, to embed in another event's data.
fn raw(text: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(text.to_owned()).ok()
}

/// What the step `step` of `instance` receives: its input with the saga's extensions (and
/// without a compensation mark it may have carried in).
pub(super) fn step(input: &Event, instance: &str, step: &str) -> Event {
    let mut event = input.clone();
    event.extensions.retain(|(n, _)| n != COMPENSATE_EXTENSION);
    event.set_extension(SAGA_EXTENSION, ExtensionValue::String(instance.to_owned()));
    event.set_extension(STEP_EXTENSION, ExtensionValue::String(step.to_owned()));
    event
}

/// What undoing a step looks like to its compensation sink.
pub(super) struct Compensation<'a> {
    /// The saga's name.
    pub(super) saga: &'a str,
    /// The instance id.
    pub(super) instance: &'a str,
    /// The step undone.
    pub(super) step: &'a str,
    /// Why the instance compensates.
    pub(super) reason: &'a str,
    /// What the step received (stored form).
    pub(super) input: &'a str,
    /// What the step's sink replied (stored form), if it replied.
    pub(super) reply: Option<&'a str>,
}

/// The compensation event: type `switchyard.saga.compensate`, the step input's subject,
/// JSON data `{saga, instance, step, reason, input, reply}` where `input` and `reply` are
/// structured-mode CloudEvents (`reply` is null when the step replied nothing).
pub(super) fn compensation(c: &Compensation<'_>, subject: Option<String>) -> Event {
    let data = json!({
        "saga": c.saga,
        "instance": c.instance,
        "step": c.step,
        "reason": c.reason,
        "input": raw(c.input),
        "reply": c.reply.and_then(raw),
    });
    let mut event = base(
        format!("{}-{}-compensate", c.instance, c.step),
        c.saga,
        COMPENSATE_TYPE.to_owned(),
        subject,
        &data,
    );
    event.set_extension(
        SAGA_EXTENSION,
        ExtensionValue::String(c.instance.to_owned()),
    );
    event.set_extension(STEP_EXTENSION, ExtensionValue::String(c.step.to_owned()));
    event.set_extension(COMPENSATE_EXTENSION, ExtensionValue::Bool(true));
    event
}

/// How an instance ended, for its outcome event.
pub(super) struct Ending<'a> {
    /// The saga's name.
    pub(super) saga: &'a str,
    /// The instance id.
    pub(super) instance: &'a str,
    /// Its end state.
    pub(super) state: State,
    /// Why it compensated, if it did.
    pub(super) reason: Option<&'a str>,
    /// Compensations that were dead-lettered.
    pub(super) failed: &'a [String],
    /// The last step's reply or input (stored form), for a completed instance.
    pub(super) output: Option<&'a str>,
    /// The id of the event that started it.
    pub(super) trigger: &'a str,
}

/// The outcome event: type `switchyard.saga.<state>`, subject the instance id, data
/// `{saga, instance, state, trigger, reason, failed_compensations, output}`.
pub(super) fn ending(e: &Ending<'_>) -> Event {
    let data = json!({
        "saga": e.saga,
        "instance": e.instance,
        "state": e.state.name(),
        "trigger": e.trigger,
        "reason": e.reason,
        "failed_compensations": e.failed,
        "output": e.output.and_then(raw),
    });
    let mut event = base(
        format!("{}-{}", e.instance, e.state.name()),
        e.saga,
        format!("switchyard.saga.{}", e.state.name()),
        Some(e.instance.to_owned()),
        &data,
    );
    event.set_extension(
        SAGA_EXTENSION,
        ExtensionValue::String(e.instance.to_owned()),
    );
    event
}

/// An event of the saga `saga` with JSON data.
fn base(
    id: String,
    saga: &str,
    ty: String,
    subject: Option<String>,
    data: &serde_json::Value,
) -> Event {
    Event {
        specversion: "1.0".into(),
        id,
        source: source(saga),
        ty,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        subject,
        time: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        extensions: Vec::new(),
        data_version: None,
        data: Some(Bytes::from(data.to_string())),
    }
}
