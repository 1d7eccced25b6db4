//! Reply events: a sink's `reply` and `max_hops`, and the top-level `max_hops` default.
//!
//! Imports nothing internal outside `config`.

use super::env::{Node, Obj};
use super::model::Reader;

/// `max_hops` when the file sets none: a reply chain stops after eight replies.
pub const DEFAULT_MAX_HOPS: u32 = 8;
/// The CloudEvents extension that counts how many replies led to an event.
pub const HOPS_EXTENSION: &str = "switchyardhops";
/// Highest `max_hops` accepted.
const MAX_MAX_HOPS: u64 = 255;

/// The sink kinds whose targets can answer with an event.
const REPLYING_KINDS: &[&str] = &["http", "exec", "handler"];

/// A sink's `reply` and `max_hops`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyPolicy {
    /// `reply`: a CloudEvent in a successful delivery's response is accepted as an event.
    pub enabled: bool,
    /// `max_hops` of the sink; `None` takes the top-level `max_hops`.
    pub max_hops: Option<u32>,
}

/// Reads a `max_hops` value (1..=255).
pub(super) fn max_hops(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<u32> {
    rd.integer(node, 1..=MAX_MAX_HOPS)
}

/// Reads `reply` and `max_hops` of a sink's mapping `o`; `reply: true` needs a kind that can
/// answer and one event per request.
pub(super) fn read(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<ReplyPolicy> {
    let enabled = rd.or(o.get("reply"), false, |rd, n| {
        let enabled = rd.boolean(n)?;
        if enabled && !REPLYING_KINDS.iter().any(|k| o.has(k)) {
            return rd.fail(&n.path, "only http, exec and handler sinks can reply");
        }
        if enabled && batched(o) {
            return rd.fail(&n.path, "needs one event per request (batch.max_events: 1)");
        }
        Some(enabled)
    });
    let max_hops = rd.or(o.get("max_hops"), None, |rd, n| max_hops(rd, n).map(Some));
    Some(ReplyPolicy {
        enabled: enabled?,
        max_hops: max_hops?,
    })
}

/// Whether the sink sends more than one event per request (an invalid value is reported
/// where `batch` is read).
fn batched(o: &Obj<'_>) -> bool {
    let Some(batch) = o.get("batch") else {
        return false;
    };
    let max_events = batch.value.get("max_events");
    let number = max_events.and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    });
    number.is_some_and(|n| n > 1)
}
