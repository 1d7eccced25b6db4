//! The saga store's transitions, on a store in memory.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::store::Store;
use super::*;
use crate::config::{SagaConfig, SagaStepConfig};

pub(super) fn saga() -> Arc<SagaConfig> {
    let step = |name: &str, to: &str, compensate: Option<&str>| SagaStepConfig {
        name: name.into(),
        to: to.into(),
        compensate: compensate.map(Into::into),
    };
    Arc::new(SagaConfig {
        name: "order".into(),
        filter: crate::config::MatchConfig::default(),
        sql: None,
        timeout: Duration::from_secs(60),
        steps: vec![
            step("reserve", "inventory", Some("release")),
            step("charge", "payments", Some("refund")),
            step("ship", "shipping", None),
        ],
    })
}

pub(super) fn event(id: &str) -> Event {
    crate::event::http::decode_structured(
        format!(r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"T"}}"#).as_bytes(),
    )
    .expect("a valid event")
}

fn started(store: &mut Store, now: SystemTime) -> Next {
    let (mut nexts, _) = store
        .start(&[(saga(), Arc::new(event("trigger")))], now)
        .expect("started");
    nexts.pop().expect("one instance")
}

pub(super) fn at(next: &Next, step: &str, phase: Phase) -> Position {
    Position {
        instance: next.instance.clone(),
        step: step.into(),
        phase,
    }
}

pub(super) fn delivered(reply: Option<&str>) -> StepResult {
    StepResult {
        outcome: StepOutcome::Delivered(reply.map(|id| Box::new(event(id)))),
        attempts: 1,
        status: None,
    }
}

pub(super) fn dead() -> StepResult {
    StepResult {
        outcome: StepOutcome::DeadLettered("UndeliverableDueToHttpBadRequest".into()),
        attempts: 1,
        status: Some(400),
    }
}

fn advance(store: &mut Store, p: &Position, r: &StepResult) -> Next {
    let next = store.advance(p, r, SystemTime::now()).expect("advanced");
    next.expect("the step was current")
}

/// (sink, event id, step extension) of each delivery a transition asks for.
pub(super) fn puts(next: &Next) -> Vec<(String, String)> {
    next.deliveries
        .iter()
        .map(|d| (d.sink.to_string(), d.event.id.clone()))
        .collect()
}

#[test]
fn each_step_gets_the_previous_reply_or_else_the_previous_input() {
    let mut store = Store::memory().expect("store");
    let first = started(&mut store, SystemTime::now());
    assert_eq!(puts(&first), [("inventory".into(), "trigger".into())]);
    let d = &first.deliveries[0];
    assert_eq!(
        Position::of(&d.route, &d.event),
        Some(at(&first, "reserve", Phase::Forward))
    );

    let second = advance(
        &mut store,
        &at(&first, "reserve", Phase::Forward),
        &delivered(Some("r1")),
    );
    assert_eq!(puts(&second), [("payments".into(), "r1".into())]);
    let third = advance(
        &mut store,
        &at(&first, "charge", Phase::Forward),
        &delivered(None),
    );
    assert_eq!(puts(&third), [("shipping".into(), "r1".into())]);
    let done = advance(
        &mut store,
        &at(&first, "ship", Phase::Forward),
        &delivered(None),
    );
    assert!(done.deliveries.is_empty());
    let finished = done.finished.expect("an outcome event");
    assert_eq!(finished.ty, "switchyard.saga.completed");

    // A repeat of a step already recorded changes nothing.
    let repeat = store
        .advance(
            &at(&first, "ship", Phase::Forward),
            &delivered(None),
            SystemTime::now(),
        )
        .expect("read");
    assert!(repeat.is_none());
}

#[test]
fn a_dead_letter_compensates_the_done_steps_in_reverse_and_a_failed_one_is_named() {
    let mut store = Store::memory().expect("store");
    let first = started(&mut store, SystemTime::now());
    advance(
        &mut store,
        &at(&first, "reserve", Phase::Forward),
        &delivered(Some("r1")),
    );
    advance(
        &mut store,
        &at(&first, "charge", Phase::Forward),
        &delivered(Some("r2")),
    );
    let refund = advance(&mut store, &at(&first, "ship", Phase::Forward), &dead());
    assert_eq!(refund.deliveries[0].sink.as_ref(), "refund");
    assert!(store
        .is_current(&at(&first, "charge", Phase::Compensate))
        .expect("read"));
    assert!(!store
        .is_current(&at(&first, "ship", Phase::Forward))
        .expect("read"));
    let release = advance(
        &mut store,
        &at(&first, "charge", Phase::Compensate),
        &dead(),
    );
    assert_eq!(release.deliveries[0].sink.as_ref(), "release");
    let end = advance(
        &mut store,
        &at(&first, "reserve", Phase::Compensate),
        &delivered(None),
    );
    let event = end.finished.expect("an outcome event");
    assert_eq!(event.ty, "switchyard.saga.failed");
    let view = store.get(&first.instance).expect("read").expect("kept");
    assert_eq!(view.state, State::Failed);
    assert_eq!(view.failed, ["charge"]);
    assert_eq!(view.steps.len(), 5);
}

#[test]
fn the_deadline_and_an_abort_compensate_a_running_instance_once() {
    let mut store = Store::memory().expect("store");
    let t0 = SystemTime::now();
    let first = started(&mut store, t0);
    advance(
        &mut store,
        &at(&first, "reserve", Phase::Forward),
        &delivered(None),
    );
    let (early, _) = store.expire(t0 + Duration::from_secs(30)).expect("expire");
    assert!(early.is_empty());
    let (late, _) = store.expire(t0 + Duration::from_secs(61)).expect("expire");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].deliveries[0].sink.as_ref(), "release");
    let (again, _) = store.abort(&first.instance, "aborted", t0).expect("abort");
    assert!(matches!(again, Abort::Already(State::Compensating)));
    let (missing, _) = store.abort("nope", "aborted", t0).expect("abort");
    assert!(matches!(missing, Abort::NotFound));
}

#[test]
fn what_a_transition_asked_for_stays_pending_until_flushed() {
    let mut store = Store::memory().expect("store");
    let now = SystemTime::now();
    let first = started(&mut store, now);
    assert_eq!(store.pending(now).expect("read").len(), 1);
    let second = advance(
        &mut store,
        &at(&first, "reserve", Phase::Forward),
        &delivered(None),
    );
    // Clearing an older transition leaves the newer one pending.
    store
        .flushed(&[(first.instance.clone(), first.seq)])
        .expect("flush");
    let pending = store.pending(now).expect("read");
    assert_eq!(puts(&pending[0]), puts(&second));
    store
        .flushed(&[(second.instance.clone(), second.seq)])
        .expect("flush");
    assert!(store.pending(now).expect("read").is_empty());
}

#[test]
fn finished_instances_are_swept_after_retention() {
    let mut store = Store::memory().expect("store");
    let first = started(&mut store, SystemTime::now());
    advance(&mut store, &at(&first, "reserve", Phase::Forward), &dead());
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    assert_eq!(store.sweep(now, day).expect("sweep"), 0);
    assert_eq!(store.sweep(now + 2 * day, day).expect("sweep"), 1);
    assert!(store.get(&first.instance).expect("read").is_none());
}

/// A start between its commit and the put of its first step (the accept path) is this
/// process's own work in flight: the runner's recovery must not put that step a second time.
/// What a crash left, the next open offers once.
#[tokio::test]
async fn a_start_in_flight_is_not_taken_for_what_a_crash_left() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = crate::config::SpoolConfig {
        backend: crate::config::SpoolBackend::Embedded,
        path: dir.path().into(),
        max_bytes: 1 << 20,
        dead_letter_ttl: None,
        retain_delivered: None,
        nats: None,
    };
    let sagas = Sagas::open(&config).expect("opened");
    assert!(sagas.pending().await.expect("read").is_empty());
    let nexts = sagas
        .start(vec![(saga(), Arc::new(event("o-1")))])
        .await
        .expect("started");
    assert_eq!(nexts.len(), 1);
    assert!(
        sagas.pending().await.expect("read").is_empty(),
        "a live start offered as left over"
    );
    // The process stops before its put is confirmed: the next open offers the step once.
    drop(sagas);
    let reopened = Sagas::open(&config).expect("reopened");
    let left = reopened.pending().await.expect("read");
    assert_eq!(left.iter().map(puts).collect::<Vec<_>>(), [puts(&nexts[0])]);
    assert!(reopened.pending().await.expect("read").is_empty());
}
