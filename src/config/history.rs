//! Delivery history settings, read from the `spool:` section: `history_ttl` and
//! `history_max_bytes`.
//!
//! Imports nothing internal outside `config`.

use std::time::Duration;

use super::env::{Node, Obj};
use super::model::Reader;

/// How long delivery history is kept when `spool.history_ttl` is absent: 24 hours.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Most bytes of delivery history kept when `spool.history_max_bytes` is absent: 64 MiB.
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 64 << 20;

/// Delivery history: every attempt, kept for a while within a size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long an attempt's record is kept (`spool.history_ttl`).
    pub ttl: Duration,
    /// Most bytes of records kept; the oldest go first (`spool.history_max_bytes`).
    pub max_bytes: u64,
}

impl HistoryConfig {
    /// History switched off: `0` for either setting.
    pub const OFF: Self = Self {
        ttl: Duration::ZERO,
        max_bytes: 0,
    };

    /// Whether attempts are recorded at all.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.max_bytes > 0
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_HISTORY_TTL,
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
        }
    }
}

/// Reads `history_ttl` and `history_max_bytes` from the `spool:` mapping.
pub(super) fn read(rd: &mut Reader<'_>, spool: &Obj<'_>) -> Option<HistoryConfig> {
    let ttl = rd.or(spool.get("history_ttl"), DEFAULT_HISTORY_TTL, |rd, n| {
        // A bare `0` (number or text) switches history off; any other value needs a unit.
        match is_zero(n) {
            true => Some(Duration::ZERO),
            false => rd.duration(n),
        }
    });
    let max_bytes = rd.or(
        spool.get("history_max_bytes"),
        DEFAULT_HISTORY_MAX_BYTES,
        Reader::size,
    );
    Some(HistoryConfig {
        ttl: ttl?,
        max_bytes: max_bytes?,
    })
}

fn is_zero(node: &Node<'_>) -> bool {
    node.value.as_u64() == Some(0) || node.value.as_str() == Some("0")
}
