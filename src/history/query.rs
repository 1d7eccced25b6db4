//! Reading the history: events (grouped by `source` and `id`) with their deliveries (by
//! route and sink) and attempts, selected by filters and paged by key.
//!
//! An event's key is the position of its oldest record still kept. Event filters (`source`,
//! `id`, `type`) select events; attempt filters (`sink`, `outcome`, `since`, `until`) select
//! the events with at least one attempt that passes all of them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::record::{Stored, StoredEvent};
use super::store::{millis, Store};
use super::AttemptOutcome;

/// Most events on one page.
pub const MAX_LIMIT: usize = 1000;

/// Selects events; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only this `source`.
    pub source: Option<String>,
    /// Only this `id`.
    pub id: Option<String>,
    /// Only this `type`.
    pub ty: Option<String>,
    /// Only events with an attempt at this sink (and the other attempt filters).
    pub sink: Option<String>,
    /// Only events with an attempt of this outcome.
    pub outcome: Option<AttemptOutcome>,
    /// Only events with an attempt at or after this time.
    pub since: Option<SystemTime>,
    /// Only events with an attempt before this time.
    pub until: Option<SystemTime>,
    /// Most events on the page (at least one).
    pub limit: usize,
    /// Only events with a smaller key (the previous page's `next`).
    pub cursor: Option<u64>,
}

/// A page of events, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// The events.
    pub events: Vec<EventView>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<u64>,
}

/// An event and what happened to its deliveries.
#[derive(Debug, Clone)]
pub struct EventView {
    /// Its key in the history.
    pub key: u64,
    /// `source`.
    pub source: String,
    /// `id`.
    pub id: String,
    /// `type`.
    pub ty: String,
    /// Attributes (a structured CloudEvent without data, JSON) when still kept (`show` only).
    pub attributes: Option<Vec<u8>>,
    /// Size of its data.
    pub data_size: u64,
    /// The first bytes of its data (`show` only).
    pub data: Option<Vec<u8>>,
    /// Its deliveries, in the order of their first attempt.
    pub deliveries: Vec<DeliveryView>,
}

/// One (route, sink) delivery of an event.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    /// The route.
    pub route: String,
    /// The sink.
    pub sink: String,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One attempt (or an expiry without one).
#[derive(Debug, Clone)]
pub struct AttemptView {
    /// The attempt's number.
    pub attempt: u32,
    /// When.
    pub at: SystemTime,
    /// How long it took; `None` when none was made.
    pub duration: Option<Duration>,
    /// What became of the delivery.
    pub outcome: AttemptOutcome,
    /// The status the sink reported.
    pub status: Option<u16>,
    /// The failure or dead-letter reason, cut to its first bytes.
    pub detail: Option<String>,
}

impl HistoryQuery {
    fn wants_event(&self, r: &Stored) -> bool {
        let text = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        text(&self.source, &r.source) && text(&self.id, &r.id) && text(&self.ty, &r.ty)
    }

    fn wants_attempt(&self, r: &Stored) -> bool {
        self.sink.as_deref().is_none_or(|s| s == r.sink)
            && self.outcome.is_none_or(|o| o == r.outcome)
            && self.since.is_none_or(|t| r.at_ms >= millis(t))
            && self.until.is_none_or(|t| r.at_ms < millis(t))
    }
}

/// Records grouped by event, in the order of their keys.
fn grouped(records: Vec<Stored>) -> Vec<Vec<Stored>> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut groups: Vec<Vec<Stored>> = Vec::new();
    for record in records {
        let key = (record.source.clone(), record.id.clone());
        match index.get(&key) {
            Some(&at) => groups[at].push(record),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![record]);
            }
        }
    }
    groups
}

/// One page for `query`.
pub(super) fn page(store: &Store, query: &HistoryQuery, now: SystemTime) -> Page {
    let mut records = Vec::new();
    store.scan(
        now,
        |_| false,
        |r| {
            if query.wants_event(&r) {
                records.push(r);
            }
        },
    );
    let mut events: Vec<Vec<Stored>> = grouped(records)
        .into_iter()
        .filter(|g| g.iter().any(|r| query.wants_attempt(r)))
        .filter(|g| query.cursor.is_none_or(|c| g[0].seq < c))
        .collect();
    events.reverse();
    let limit = query.limit.clamp(1, MAX_LIMIT);
    let next = (events.len() > limit).then(|| events[limit - 1][0].seq);
    events.truncate(limit);
    Page {
        events: events.into_iter().map(view).collect(),
        next,
    }
}

/// The event whose key is `key`, with its attributes and data.
pub(super) fn event(store: &Store, key: u64, now: SystemTime) -> Option<EventView> {
    let mut named = None;
    store.scan(
        now,
        |_| false,
        |r| {
            if r.seq == key {
                named = Some((r.source, r.id));
            }
        },
    );
    let (source, id) = named?;
    let mut records = Vec::new();
    let is_it = |r: &Stored| r.source == source && r.id == id;
    store.scan(now, is_it, |r| {
        if is_it(&r) {
            records.push(r);
        }
    });
    let event = records.iter().find_map(|r| r.event.clone());
    let mut view = view(records);
    if let Some(StoredEvent {
        attributes,
        data_size,
        data,
    }) = event
    {
        view.attributes = Some(attributes);
        view.data_size = data_size;
        view.data = Some(data);
    }
    Some(view)
}

/// An event's records (oldest first, at least one) as a view.
fn view(records: Vec<Stored>) -> EventView {
    let first = &records[0];
    let mut view = EventView {
        key: first.seq,
        source: first.source.clone(),
        id: first.id.clone(),
        ty: first.ty.clone(),
        attributes: None,
        data_size: 0,
        data: None,
        deliveries: Vec::new(),
    };
    for r in records {
        let attempt = AttemptView {
            attempt: r.attempt,
            at: r.at(),
            duration: r.duration_us.map(Duration::from_micros),
            outcome: r.outcome,
            status: r.status,
            detail: r.detail,
        };
        let found = view
            .deliveries
            .iter_mut()
            .find(|d| d.route == r.route && d.sink == r.sink);
        match found {
            Some(delivery) => delivery.attempts.push(attempt),
            None => view.deliveries.push(DeliveryView {
                route: r.route,
                sink: r.sink,
                attempts: vec![attempt],
            }),
        }
    }
    view
}
