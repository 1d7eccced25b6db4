//! `schedules:` — cron-scheduled events: the validated [`ScheduleConfig`] and its reading from
//! the raw tree.
//!
//! A cron expression has exactly six fields, seconds first; five-field expressions are refused
//! rather than guessed at, so `0 6 * * *` never silently means "every minute past six".
//! Imports nothing internal outside `config`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde_json::Value as Json;

use super::env::{Node, Obj};
use super::model::{Reader, Shape};

/// The field layout every schedule's `cron` follows, for error messages.
const LAYOUT: &str = "six fields, seconds first: sec min hour day-of-month month day-of-week, \
                      e.g. \"0 0 6 * * *\"";

/// One entry of `schedules:` — `name` (unique, required), `cron` (six fields, seconds first,
/// required), `timezone` (IANA name, default UTC), `catch_up` (emit the last tick missed while
/// the daemon was down, default false) and `event` (what each tick emits, required).
pub(super) const SCHEDULE: Shape = Shape {
    keys: "name cron timezone catch_up event",
    later: "",
};

/// `schedules[].event:` — `type` and `source` (required), `subject` and `data` (any value,
/// sent as JSON).
pub(super) const EVENT: Shape = Shape {
    keys: "type source subject data",
    later: "",
};

/// One cron schedule: at each tick it emits a configured event into the accept path.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// The schedule's name, unique among schedules; part of every emitted event id.
    pub name: String,
    /// When it ticks.
    pub cron: Cron,
    /// The time zone `cron` is read in.
    pub timezone: Tz,
    /// Whether the last tick missed while the daemon was down is emitted at start.
    pub catch_up: bool,
    /// What each tick emits.
    pub event: ScheduledEvent,
}

/// The event a schedule emits (`id`, `time` and `specversion` are set per tick).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledEvent {
    /// `type`.
    pub ty: String,
    /// `source`.
    pub source: String,
    /// `subject`, if any.
    pub subject: Option<String>,
    /// `data`, sent as `application/json`.
    pub data: Option<Json>,
}

/// Why a cron expression was refused.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// Not six whitespace-separated fields.
    #[error("found {found} field(s); expected {LAYOUT}")]
    FieldCount {
        /// How many fields there were.
        found: usize,
    },
    /// A valid expression that matches no date (`0 0 0 30 2 *`).
    #[error("never fires (no date matches it)")]
    Never,
    /// Six fields, but not a valid expression.
    #[error("{source}; expected {LAYOUT}")]
    Invalid {
        /// What the parser found wrong.
        #[source]
        source: croner::errors::CronError,
    },
}

/// Parses a six-field cron expression (seconds first), as `schedules[].cron` takes it.
pub fn parse_cron(text: &str) -> Result<Cron, CronError> {
    let found = text.split_whitespace().count();
    if found != 6 {
        return Err(CronError::FieldCount { found });
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|source| CronError::Invalid { source })?;
    // Without a year field, an expression that fires at all fires within any four years.
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    match cron.find_next_occurrence(&epoch, false) {
        Ok(_) => Ok(cron),
        Err(_) => Err(CronError::Never),
    }
}

/// Reads the `schedules:` list.
pub(super) fn read(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<Vec<ScheduleConfig>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    rd.each(node, |rd, n| schedule(rd, n, &mut seen))
}

fn schedule(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
    seen: &mut BTreeMap<String, String>,
) -> Option<ScheduleConfig> {
    let o = rd.object(node, &SCHEDULE)?;
    let name = rd.required(&o, "name", |rd, n| {
        let name = rd.text(n)?;
        if let Some(first) = seen.get(&name) {
            let message = format!("duplicate schedule name `{name}` (first at {first})");
            return rd.fail(&n.path, message);
        }
        seen.insert(name.clone(), n.path.clone());
        Some(name)
    });
    let cron = rd.required(&o, "cron", |rd, n| rd.parsed(n, "cron", parse_cron));
    let timezone = rd.or(o.get("timezone"), Tz::UTC, |rd, n| {
        let text = rd.string(n)?;
        match text.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => rd.fail(
                &n.path,
                format!("unknown time zone `{text}` (expected an IANA name such as Europe/Berlin or UTC)"),
            ),
        }
    });
    let catch_up = rd.or(o.get("catch_up"), false, Reader::boolean);
    let event = rd.required(&o, "event", |rd, n| {
        let o = rd.object(n, &EVENT)?;
        event(rd, &o)
    });
    Some(ScheduleConfig {
        name: name?,
        cron: cron?,
        timezone: timezone?,
        catch_up: catch_up?,
        event: event?,
    })
}

fn event(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<ScheduledEvent> {
    let ty = rd.required(o, "type", Reader::text);
    let source = rd.required(o, "source", Reader::text);
    let subject = rd.or(o.get("subject"), None, |rd, n| rd.text(n).map(Some));
    let data = rd.or(o.get("data"), None, |rd, n| data(rd, n).map(Some));
    Some(ScheduledEvent {
        ty: ty?,
        source: source?,
        subject: subject?,
        data: data?,
    })
}

/// Reads `data` as JSON, with `${VAR}` interpolated in every string inside it.
fn data(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<Json> {
    match node.value {
        Json::String(_) => rd.string(node).map(Json::String),
        Json::Array(_) => rd.each(node, data).map(Json::Array),
        Json::Object(map) => {
            let items: Vec<_> = map
                .iter()
                .map(|(key, value)| {
                    let child = Node {
                        path: node.key_path(key),
                        value,
                    };
                    data(rd, &child).map(|v| (key.clone(), v))
                })
                .collect();
            items.into_iter().collect::<Option<_>>().map(Json::Object)
        }
        other => Some(other.clone()),
    }
}
