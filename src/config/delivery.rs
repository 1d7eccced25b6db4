//! Per-sink delivery control: `rate_limit`, `batch`, `circuit_breaker` and `fallback`, their
//! validated types and how they are read from a sink's mapping; and a route's `priority` and
//! `ordering`, which decide in what order a sink's deliveries are leased.
//!
//! Imports nothing internal outside `config`.

use std::time::Duration;

use super::env::{Node, Obj};
use super::model::{Reader, Shape};
use super::units;

/// Most events in one batch (Event Grid's batch limit).
pub const MAX_BATCH_EVENTS: usize = 5000;
/// Largest batch body, in bytes (Event Grid's request limit).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Longest `batch.linger`: a batch waits at most this long for more events.
const MAX_LINGER: Duration = Duration::from_secs(60);
/// Highest `rate_limit`, in events per second.
const MAX_RATE: f64 = 1_000_000.0;

/// `batch:` — `max_events` (1..=5000, default 1), `max_bytes` (at most 1MiB, the default) and
/// `linger` (how long a batch waits for more events, at most 1m, default 0ms).
pub(super) const BATCH: Shape = Shape {
    keys: "max_events max_bytes linger",
    later: "",
};

/// `circuit_breaker:` — `consecutive_failures` (failed attempts in a row that open it,
/// 1..=10000, default 5) and `open_for` (how long it stays open before a probe, default 1m).
pub(super) const BREAKER: Shape = Shape {
    keys: "consecutive_failures open_for",
    later: "",
};

/// A route's `priority`: which lane of each sink its deliveries wait in.
///
/// The discriminants are the lane order (lower leases first) and what the embedded spool
/// stores; they never change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Leased before normal and low.
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Leased after high and normal, but never starved.
    Low = 2,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Self; 3] = [Self::High, Self::Normal, Self::Low];

    /// The name used in `routes.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// A route's `ordering`: whether its deliveries to one sink keep their order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DeliveryOrder {
    /// No order is kept (the default): deliveries go out as permits allow.
    #[default]
    Any,
    /// `ordering: subject` — per sink, an event is not delivered before an earlier event of
    /// the route with the same subject succeeded or was dead-lettered.
    Subject,
}

/// How a sink's deliveries are paced, grouped and guarded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryPolicy {
    /// Most deliveries per second (`rate_limit`); `None` is unlimited.
    pub rate_limit: Option<RateLimit>,
    /// How deliveries are grouped into one request (`batch`).
    pub batch: BatchPolicy,
    /// When the sink is given a rest after failing (`circuit_breaker`); `None` never rests.
    pub breaker: Option<BreakerPolicy>,
    /// Sink that takes this sink's deliveries while its breaker is open (`fallback`).
    pub fallback: Option<String>,
    /// Whether the target's answer is taken as an event (`reply`, `max_hops`).
    pub reply: super::ReplyPolicy,
}

/// A token-bucket rate: `rate_limit: 500/s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
}

impl RateLimit {
    /// A rate from `500/s`, `30/m` or `10/h`.
    pub fn parse(text: &str) -> Result<Self, units::UnitError> {
        units::parse_rate(text).map(|per_second| Self { per_second })
    }

    /// Deliveries per second.
    pub fn per_second(self) -> f64 {
        self.per_second
    }
}

/// `batch: { max_events, max_bytes, linger }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Most deliveries in one request; 1 means no batching.
    pub max_events: usize,
    /// Largest request body; a single larger event still goes alone.
    pub max_bytes: usize,
    /// How long a partial batch waits for more deliveries.
    pub linger: Duration,
}

impl BatchPolicy {
    /// Whether deliveries are grouped at all.
    pub fn enabled(&self) -> bool {
        self.max_events > 1
    }
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_events: 1,
            max_bytes: MAX_BATCH_BYTES,
            linger: Duration::ZERO,
        }
    }
}

/// `circuit_breaker: { consecutive_failures, open_for }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failed attempts in a row that open the breaker.
    pub consecutive_failures: u32,
    /// How long it stays open before one probe delivery is let through.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// `batch.max_events` of a `file` sink that sets no `batch`: deliveries already leased
/// together are written with one append and one sync, while a delivery that finds nothing
/// waiting beside it is still written alone, at once (no `linger`).
pub const FILE_BATCH_EVENTS: usize = 64;

/// Reads the delivery-control keys of the sink `name` (mapping `o`); `names` are all sinks.
pub(super) fn read(
    rd: &mut Reader<'_>,
    o: &Obj<'_>,
    name: &str,
    names: &[String],
) -> Option<DeliveryPolicy> {
    let rate_limit = rd.or(o.get("rate_limit"), None, |rd, n| rate(rd, n).map(Some));
    let batch = match o.has("batch") || !o.has("file") {
        true => rd.section(o, "batch", &BATCH).and_then(|o| batch(rd, &o)),
        false => Some(BatchPolicy {
            max_events: FILE_BATCH_EVENTS,
            ..BatchPolicy::default()
        }),
    };
    let breaker = rd.or(o.get("circuit_breaker"), None, |rd, n| {
        let o = rd.object(n, &BREAKER)?;
        breaker(rd, &o).map(Some)
    });
    let fallback = rd.or(o.get("fallback"), None, |rd, n| {
        let target = rd.text(n)?;
        if target == name {
            return rd.fail(&n.path, "must name another sink, not the sink itself");
        }
        if !names.contains(&target) {
            return rd.fail(&n.path, format!("unknown sink `{target}`"));
        }
        if !o.has("circuit_breaker") {
            return rd.fail(
                &n.path,
                "needs a circuit_breaker (it is used while that is open)",
            );
        }
        Some(Some(target))
    });
    let reply = super::reply::read(rd, o);
    Some(DeliveryPolicy {
        rate_limit: rate_limit?,
        batch: batch?,
        breaker: breaker?,
        fallback: fallback?,
        reply: reply?,
    })
}

fn rate(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<RateLimit> {
    let rate = rd.parsed(node, "rate (e.g. 500/s)", RateLimit::parse)?;
    if rate.per_second > MAX_RATE {
        return rd.fail(&node.path, "must be at most 1000000/s");
    }
    Some(rate)
}

fn batch(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<BatchPolicy> {
    let defaults = BatchPolicy::default();
    let max_events = rd.or(o.get("max_events"), defaults.max_events, |rd, n| {
        rd.integer(n, 1..=MAX_BATCH_EVENTS as u64)
    });
    let max_bytes = rd.or(o.get("max_bytes"), defaults.max_bytes, |rd, n| {
        let bytes = rd.size(n)?;
        match usize::try_from(bytes) {
            Ok(b) if (1..=MAX_BATCH_BYTES).contains(&b) => Some(b),
            _ => rd.fail(&n.path, "must be between 1B and 1MiB"),
        }
    });
    let linger = rd.or(o.get("linger"), defaults.linger, |rd, n| {
        let linger = rd.duration(n)?;
        if linger > MAX_LINGER {
            return rd.fail(&n.path, "must be at most 1m");
        }
        Some(linger)
    });
    Some(BatchPolicy {
        max_events: max_events?,
        max_bytes: max_bytes?,
        linger: linger?,
    })
}

fn breaker(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<BreakerPolicy> {
    let defaults = BreakerPolicy::default();
    let failures = rd.or(
        o.get("consecutive_failures"),
        defaults.consecutive_failures,
        |rd, n| rd.integer(n, 1..=10_000),
    );
    let open_for = rd.or(o.get("open_for"), defaults.open_for, positive);
    Some(BreakerPolicy {
        consecutive_failures: failures?,
        open_for: open_for?,
    })
}

/// Reads a duration that must be longer than zero.
pub(super) fn positive(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<Duration> {
    let duration = rd.duration(node)?;
    if duration.is_zero() {
        return rd.fail(&node.path, "must be longer than 0s");
    }
    Some(duration)
}
