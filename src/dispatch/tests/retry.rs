use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::RetryPolicy;
use crate::dispatch::retry::{
    decide, decide_with_jitter, expired, Decision, BAD_REQUEST, CLIENT_ERROR, MAX_ATTEMPTS,
    TTL_EXCEEDED,
};
use crate::sinks::tests::support::event;
use crate::sinks::SinkError;
use crate::spool::Delivery;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        event_ttl: secs(3600),
        schedule: vec![secs(10), secs(30), secs(60)],
        ..RetryPolicy::default()
    }
}

fn delivery(attempts: u32) -> Delivery {
    Delivery {
        id: 1,
        event: Arc::new(event("e")),
        route: Arc::from("r"),
        sink: Arc::from("s"),
        attempts,
        accepted_at: t0(),
        not_before: t0(),
        last_outcome: None,
        last_status: None,
        last_attempt_at: None,
        priority: Default::default(),
        ordering_key: None,
    }
}

fn failure() -> SinkError {
    SinkError::retryable("GenericError", "boom")
}

fn retry_at(at: SystemTime) -> Decision {
    Decision::Retry { not_before: at }
}

fn dead(reason: &'static str) -> Decision {
    Decision::DeadLetter { reason }
}

#[test]
fn not_retryable_failures_dead_letter_at_once() {
    let mut bad_request = SinkError::permanent("BadRequest", "no");
    bad_request.status = Some(400);
    assert_eq!(
        decide(&policy(), &delivery(1), &bad_request, t0()),
        dead(BAD_REQUEST)
    );
    let mut forbidden = SinkError::permanent("Forbidden", "no");
    forbidden.status = Some(403);
    assert_eq!(
        decide(&policy(), &delivery(1), &forbidden, t0()),
        dead(CLIENT_ERROR)
    );
    let handler = SinkError::permanent("GenericError", "no");
    assert_eq!(
        decide(&policy(), &delivery(1), &handler, t0()),
        dead(CLIENT_ERROR)
    );
}

#[test]
fn the_last_allowed_attempt_dead_letters() {
    assert_eq!(
        decide(&policy(), &delivery(5), &failure(), t0()),
        dead(MAX_ATTEMPTS)
    );
    assert!(matches!(
        decide(&policy(), &delivery(4), &failure(), t0()),
        Decision::Retry { .. }
    ));
}

#[test]
fn delays_follow_the_schedule_and_repeat_its_last_step() {
    let now = t0() + secs(100);
    let step = |attempts| decide_with_jitter(&policy(), &delivery(attempts), &failure(), now, 0.0);
    assert_eq!(step(1), retry_at(now + secs(10)));
    assert_eq!(step(2), retry_at(now + secs(30)));
    assert_eq!(step(3), retry_at(now + secs(60)));
    assert_eq!(step(4), retry_at(now + secs(60)));
}

#[test]
fn jitter_adds_at_most_a_tenth() {
    let full = decide_with_jitter(&policy(), &delivery(1), &failure(), t0(), 1.0);
    assert_eq!(full, retry_at(t0() + secs(11)));
    for _ in 0..100 {
        let Decision::Retry { not_before } = decide(&policy(), &delivery(1), &failure(), t0())
        else {
            panic!("expected a retry");
        };
        let delay = not_before.duration_since(t0()).unwrap();
        assert!(delay >= secs(10) && delay <= secs(11), "{delay:?}");
    }
}

#[test]
fn retry_after_replaces_the_schedule_without_jitter() {
    let mut busy = SinkError::retryable("Busy", "slow down");
    busy.status = Some(429);
    busy.retry_after = Some(secs(120));
    let decision = decide_with_jitter(&policy(), &delivery(1), &busy, t0(), 1.0);
    assert_eq!(decision, retry_at(t0() + secs(120)));
    busy.retry_after = Some(Duration::ZERO);
    assert_eq!(decide(&policy(), &delivery(1), &busy, t0()), retry_at(t0()));
}

#[test]
fn a_retry_past_the_time_to_live_dead_letters() {
    let ttl_end = t0() + secs(3600);
    let step = |now| decide_with_jitter(&policy(), &delivery(1), &failure(), now, 0.0);
    assert_eq!(
        step(ttl_end - secs(10)),
        retry_at(ttl_end),
        "exactly at the deadline"
    );
    assert_eq!(step(ttl_end - secs(9)), dead(TTL_EXCEEDED));
    let mut busy = failure();
    busy.retry_after = Some(secs(7200));
    assert_eq!(
        decide(&policy(), &delivery(1), &busy, t0()),
        dead(TTL_EXCEEDED)
    );
}

#[test]
fn an_expired_delivery_is_dead_lettered_before_an_attempt() {
    let ttl_end = t0() + secs(3600);
    assert_eq!(expired(&policy(), &delivery(0), ttl_end), None);
    assert_eq!(
        expired(&policy(), &delivery(0), ttl_end + secs(1)),
        Some(dead(TTL_EXCEEDED))
    );
}
