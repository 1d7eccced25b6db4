//! What bounds the spool's state, whatever the traffic: the size an event is counted at
//! against `spool.max_bytes`, and the sweep that removes expired duplicate-suppression entries
//! and dead letters past `spool.dead_letter_ttl` at the rate they expire.
//!
//! Imports `event` only (and the spool's handle, to sweep it).

use std::mem::size_of;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Spool, SpoolError, SpoolHandle};
use crate::event::{Event, ExtensionValue};

/// How often the sweep runs: an entry outlives its expiry by at most this (plus the sweep).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Bytes an event takes in memory besides its attributes and payload: the struct, its `Arc`
/// and the allocations' headers.
const EVENT_OVERHEAD: u64 = (size_of::<Event>() + 2 * size_of::<usize>() + 64) as u64;

/// Bytes a duplicate-suppression entry takes besides its (`source`, `id`): the table's slot,
/// the expiry order's slot and the key's allocation (memory), or the row, its key and its
/// expiry index entry (embedded).
pub(super) const SEEN_ENTRY_OVERHEAD: u64 = 96;

/// The whole size of an event as kept in memory: every attribute, every extension (name and
/// value), the payload, and the bookkeeping around them. The memory backend and the embedded
/// spool's cache count an event at this size.
pub fn event_size(event: &Event) -> u64 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let extensions: usize = event
        .extensions
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    ExtensionValue::String(s) => s.len(),
                    ExtensionValue::Integer(_) | ExtensionValue::Bool(_) => size_of::<i64>(),
                }
                + size_of::<(String, ExtensionValue)>()
        })
        .sum();
    let attributes = event.specversion.len()
        + event.id.len()
        + event.source.len()
        + event.ty.len()
        + text(&event.datacontenttype)
        + text(&event.dataschema)
        + text(&event.subject)
        + text(&event.time)
        + text(&event.data_version);
    let data = event.data.as_ref().map_or(0, bytes::Bytes::len);
    EVENT_OVERHEAD + (attributes + extensions + data) as u64
}

/// Bytes one duplicate-suppression entry for (`source`, `id`) is counted at.
pub(super) fn seen_entry_size(source: &str, id: &str) -> u64 {
    SEEN_ENTRY_OVERHEAD + (source.len() + id.len()) as u64
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired duplicate-suppression entries.
    pub sightings: u64,
    /// Dead letters past `spool.dead_letter_ttl`.
    pub dead_letters: u64,
}

/// Sweeps `spool` every [`SWEEP_EVERY`] until `stop` is cancelled. A failed sweep is logged
/// and tried again at the next tick.
pub async fn sweep_until(spool: Arc<SpoolHandle>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match spool.sweep(SystemTime::now()).await {
            Ok(swept) if swept.dead_letters > 0 => {
                tracing::info!(
                    dead_letters = swept.dead_letters,
                    sightings = swept.sightings,
                    "Expired dead letters removed"
                );
            }
            Ok(swept) if swept.sightings > 0 => {
                tracing::debug!(sightings = swept.sightings, "Expired sightings removed");
            }
            Ok(_) => {}
            // Shutting down: the spool closed before this task was told to stop.
            Err(SpoolError::Closed) => return,
            Err(error) => tracing::warn!(%error, "Spool sweep failed; trying again"),
        }
    }
}
