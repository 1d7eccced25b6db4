//! Pure tick arithmetic: when a schedule fires next, which missed tick a restart catches up,
//! and the event a tick emits. Every function takes `now`, so tests choose the clock.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

use crate::config::ScheduleConfig;
use crate::event::Event;

/// The first tick strictly after `after`, in UTC; `None` if the expression never fires again.
pub(crate) fn next_tick(schedule: &ScheduleConfig, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Ticks fall on whole seconds, so "after 12:00:00.3" is "after 12:00:00".
    let local = after.trunc_subsecs(0).with_timezone(&schedule.timezone);
    let next = schedule.cron.find_next_occurrence(&local, false).ok()?;
    Some(next.with_timezone(&Utc))
}

/// The tick to emit at start for a schedule last emitted at `last`: the latest tick after
/// `last` and not after `now`. `None` when catch-up is off, nothing was recorded, or no tick
/// was missed.
pub(crate) fn missed_tick(
    schedule: &ScheduleConfig,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let last = last.filter(|_| schedule.catch_up)?;
    let local = now.trunc_subsecs(0).with_timezone(&schedule.timezone);
    let latest = schedule
        .cron
        .find_previous_occurrence(&local, true)
        .ok()?
        .with_timezone(&Utc);
    (latest > last).then_some(latest)
}

/// The event emitted for `schedule` at `tick`.
///
/// The id is `<name>-<tick>`: unique per tick, and the same if a tick is emitted twice (a
/// retry, a catch-up racing a crash), so receivers can de-duplicate.
pub(crate) fn event_at(schedule: &ScheduleConfig, tick: DateTime<Utc>) -> Event {
    let time = rfc3339(tick);
    let spec = &schedule.event;
    // Serialising a `serde_json::Value` cannot fail: its map keys are always strings.
    let data = spec
        .data
        .as_ref()
        .map(|d| Bytes::from(serde_json::to_vec(d).unwrap_or_default()));
    Event {
        specversion: "1.0".to_owned(),
        id: format!("{}-{time}", schedule.name),
        source: spec.source.clone(),
        ty: spec.ty.clone(),
        datacontenttype: data.as_ref().map(|_| "application/json".to_owned()),
        dataschema: None,
        subject: spec.subject.clone(),
        time: Some(time),
        extensions: Vec::new(),
        data_version: None,
        data,
    }
}

/// A tick as RFC 3339 in UTC, whole seconds (`2024-03-31T04:00:00Z`).
pub(crate) fn rfc3339(tick: DateTime<Utc>) -> String {
    tick.to_rfc3339_opts(SecondsFormat::Secs, true)
}
