//! `sagas:` — multi-step workflows with compensations: the validated [`SagaConfig`] and its
//! reading from the raw tree, and `spool.saga_retention`.
//!
//! A saga's `match` and `sql` read exactly as a route's. Imports nothing internal outside
//! `config` (and `cesql` for the filter, as routes do).

use std::collections::BTreeMap;
use std::time::Duration;

use super::env::{Node, Obj};
use super::model::{Reader, Shape};
use super::routes;
use super::validate::sink_ref;
use super::MatchConfig;

/// A saga's whole-instance deadline when it sets no `timeout`: 24 hours.
pub const DEFAULT_SAGA_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a finished instance is kept when `spool.saga_retention` is absent: 7 days.
pub const DEFAULT_SAGA_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// One entry of `sagas:` — `name` (unique, required), `match` and `sql` (as a route's: which
/// events start an instance), `timeout` (whole-instance deadline, default 24h) and `steps`
/// (required, at least one).
pub(super) const SAGA: Shape = Shape {
    keys: "name match sql timeout steps",
    later: "",
};

/// One entry of `sagas[].steps:` — `name` (unique in its saga, required), `to` (the sink the
/// step is delivered to, required) and `compensate` (the sink that undoes it, optional).
pub(super) const STEP: Shape = Shape {
    keys: "name to compensate",
    later: "",
};

/// A saga: which events start an instance, and the steps each instance runs in order.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Its name, unique among sagas.
    pub name: String,
    /// Conditions an event must meet to start an instance (as a route's `match`).
    pub filter: MatchConfig,
    /// A CESQL v1 expression the event must also satisfy (`sql`).
    pub sql: Option<crate::cesql::Expr>,
    /// Deadline of a whole instance, from its start.
    pub timeout: Duration,
    /// The steps, in order.
    pub steps: Vec<SagaStepConfig>,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaStepConfig {
    /// Its name, unique within the saga.
    pub name: String,
    /// The sink the step is delivered to.
    pub to: String,
    /// The sink that undoes the step when a later one fails; `None` when nothing undoes it.
    pub compensate: Option<String>,
}

/// Reads the `sagas:` list; `names` are the defined sinks. Every spool backend keeps saga
/// state (SQLite beside the embedded spool, memory, or a JetStream bucket for nats).
pub(super) fn read(
    rd: &mut Reader<'_>,
    top: &Obj<'_>,
    names: &[String],
) -> Option<Vec<SagaConfig>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    rd.or(top.get("sagas"), Vec::new(), |rd, n| {
        rd.each(n, |rd, n| saga(rd, n, names, &mut seen))
    })
}

/// Reads `spool.saga_retention` (a duration, default 7d).
pub(super) fn retention(rd: &mut Reader<'_>, spool: &Obj<'_>) -> Option<Duration> {
    rd.or(
        spool.get("saga_retention"),
        DEFAULT_SAGA_RETENTION,
        Reader::duration,
    )
}

fn saga(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
    names: &[String],
    seen: &mut BTreeMap<String, String>,
) -> Option<SagaConfig> {
    let o = rd.object(node, &SAGA)?;
    let name = rd.required(&o, "name", |rd, n| unique(rd, n, seen, "saga"));
    let filter = rd
        .section(&o, "match", &super::model::MATCH)
        .and_then(|o| routes::filter(rd, &o));
    let sql = rd.or(o.get("sql"), None, |rd, n| routes::sql(rd, n).map(Some));
    let timeout = rd.or(o.get("timeout"), DEFAULT_SAGA_TIMEOUT, |rd, n| {
        match rd.duration(n)? {
            d if d.is_zero() => rd.fail(&n.path, "must be longer than 0s"),
            d => Some(d),
        }
    });
    let mut steps_seen = BTreeMap::new();
    let steps = rd.required(&o, "steps", |rd, n| {
        rd.some(n, "needs at least one step", |rd, n| {
            step(rd, n, names, &mut steps_seen)
        })
    });
    Some(SagaConfig {
        name: name?,
        filter: filter?,
        sql: sql?,
        timeout: timeout?,
        steps: steps?,
    })
}

fn step(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
    names: &[String],
    seen: &mut BTreeMap<String, String>,
) -> Option<SagaStepConfig> {
    let o = rd.object(node, &STEP)?;
    let name = rd.required(&o, "name", |rd, n| unique(rd, n, seen, "step"));
    let to = rd.required(&o, "to", |rd, n| sink_ref(rd, n, names));
    let compensate = rd.or(o.get("compensate"), None, |rd, n| {
        sink_ref(rd, n, names).map(Some)
    });
    Some(SagaStepConfig {
        name: name?,
        to: to?,
        compensate: compensate?,
    })
}

/// Reads a name that must not repeat among `seen` (its kind, `saga` or `step`, for the
/// message); names are also part of event attributes, so they are non-empty.
fn unique(
    rd: &mut Reader<'_>,
    n: &Node<'_>,
    seen: &mut BTreeMap<String, String>,
    kind: &str,
) -> Option<String> {
    let name = rd.text(n)?;
    if name.trim().is_empty() {
        return rd.fail(&n.path, format!("a {kind} name must not be empty"));
    }
    match seen.get(&name) {
        Some(first) => rd.fail(
            &n.path,
            format!("duplicate {kind} name `{name}` (first at {first})"),
        ),
        None => {
            seen.insert(name.clone(), n.path.clone());
            Some(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_text;

    const SINKS: &str = "sinks: { a: { log: {} }, b: { log: {} } }\n";

    fn errors(sagas: &str) -> String {
        match load_text(&format!("{SINKS}{sagas}"), &[]) {
            Err(text) => text,
            Ok(_) => panic!("expected errors for:\n{sagas}"),
        }
    }

    #[test]
    fn a_saga_reads_with_its_defaults() {
        let yaml = format!(
            "{SINKS}sagas:\n  - name: order\n    match: {{ types: [T] }}\n    steps:\n      - {{ name: one, to: a, compensate: b }}\n      - {{ name: two, to: b }}\n"
        );
        let config = load_text(&yaml, &[]).expect("valid");
        let saga = &config.sagas[0];
        assert_eq!(saga.name, "order");
        assert_eq!(saga.timeout, super::DEFAULT_SAGA_TIMEOUT);
        assert_eq!(saga.steps.len(), 2);
        assert_eq!(saga.steps[0].compensate.as_deref(), Some("b"));
        assert_eq!(config.saga_retention, super::DEFAULT_SAGA_RETENTION);
    }

    #[test]
    fn every_saga_error_is_reported_with_its_path() {
        let text = errors(
            "sagas:\n  - name: s\n    steps:\n      - { name: one, to: nowhere }\n      - { name: one, compensate: a }\n  - name: s\n    steps: []\n  - name: t\n",
        );
        for expected in [
            "sagas[0].steps[0].to: unknown sink `nowhere`",
            "sagas[0].steps[1].name: duplicate step name `one`",
            "sagas[0].steps[1].to: required",
            "sagas[1].name: duplicate saga name `s`",
            "sagas[1].steps: needs at least one step",
            "sagas[2].steps: required",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn the_nats_spool_takes_sagas() {
        let yaml = format!(
            "{SINKS}spool: {{ backend: nats, saga_retention: 1h }}\nsagas: [ {{ name: s, steps: [ {{ name: one, to: a }} ] }} ]\n"
        );
        let config = load_text(&yaml, &[]).expect("sagas on the nats spool are valid");
        assert_eq!(config.spool.backend, crate::config::SpoolBackend::Nats);
        assert_eq!(config.sagas.len(), 1);
        assert_eq!(config.sagas[0].steps[0].to, "a");
        assert_eq!(config.saga_retention, std::time::Duration::from_secs(3600));
    }
}
