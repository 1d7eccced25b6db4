//! The JetStream record's transitions, without a server: the same choices as on SQLite,
//! and what survives writing the record and reading it back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::record::Record;
use super::KvStore;
use crate::config::{NatsAuth, NatsConnection, NatsSpoolConfig};
use crate::saga::tests::{at, dead, delivered, event, puts, saga};
use crate::saga::{Abort, Phase, State, Tally};
use crate::spool::tests::nats_server;

/// A record through JSON, as the bucket keeps it.
fn stored(record: &Record) -> Record {
    let bytes = serde_json::to_vec(record).expect("a record writes");
    Record::parse(&bytes).expect("and reads back")
}

#[test]
fn a_record_completes_its_steps_in_order_and_ignores_a_repeat() {
    let now = SystemTime::now();
    let (record, first) =
        Record::start(&saga(), &Arc::new(event("trigger")), now, 1).expect("a first step");
    assert_eq!(puts(&first), [("inventory".into(), "trigger".into())]);
    let mut record = stored(&record);
    assert!(record.has_pending());
    let mut tally = Tally::default();

    let reserve = at(&first, "reserve", Phase::Forward);
    let second = record.advance(&reserve, &delivered(Some("r1")), now, &mut tally);
    let second = second.expect("recorded").expect("current");
    assert_eq!(puts(&second), [("payments".into(), "r1".into())]);
    let mut record = stored(&record);
    assert!(record.flushed(second.seq));
    assert!(!record.has_pending());
    assert!(!record.flushed(second.seq), "nothing left to clear");
    let repeat = record.advance(&reserve, &delivered(Some("r1")), now, &mut tally);
    assert!(repeat.expect("read").is_none(), "a repeat is not current");

    let charge = at(&first, "charge", Phase::Forward);
    record
        .advance(&charge, &delivered(None), now, &mut tally)
        .expect("recorded");
    let ship = at(&first, "ship", Phase::Forward);
    let done = record.advance(&ship, &delivered(None), now, &mut tally);
    let done = done.expect("recorded").expect("current");
    assert_eq!(
        done.finished.expect("an outcome").ty,
        "switchyard.saga.completed"
    );
    let view = stored(&record).view(true);
    assert_eq!(view.state, State::Completed);
    assert_eq!(view.steps.len(), 3);
    assert!(view.finished_at.is_some());
    assert_eq!(tally.steps.len(), 3);
}

#[test]
fn a_record_compensates_in_reverse_and_an_abort_cancels_the_step_in_flight() {
    let now = SystemTime::now();
    let trigger = Arc::new(event("trigger"));
    let (mut record, first) = Record::start(&saga(), &trigger, now, 1).expect("a first step");
    let mut tally = Tally::default();
    let reserve = at(&first, "reserve", Phase::Forward);
    record
        .advance(&reserve, &delivered(Some("r1")), now, &mut tally)
        .expect("recorded");
    let charge = at(&first, "charge", Phase::Forward);
    let refund = record.advance(&charge, &dead(), now, &mut tally);
    let release = refund.expect("recorded").expect("current");
    assert_eq!(release.deliveries[0].sink.as_ref(), "release");
    assert!(record.is_current(&at(&first, "reserve", Phase::Compensate)));
    let back = at(&first, "reserve", Phase::Compensate);
    let end = record.advance(&back, &delivered(None), now, &mut tally);
    let end = end.expect("recorded").expect("current");
    assert_eq!(
        end.finished.expect("an outcome").ty,
        "switchyard.saga.compensated"
    );

    let (mut other, _) = Record::start(&saga(), &trigger, now, 2).expect("a first step");
    let Abort::Started(next) = other.abort("aborted", now, &mut tally).expect("aborted") else {
        panic!("a running instance aborts");
    };
    assert!(next.deliveries.is_empty(), "nothing was done");
    assert_eq!(
        next.finished.expect("an outcome").ty,
        "switchyard.saga.compensated"
    );
    let view = other.view(true);
    assert_eq!(view.steps[0].outcome.as_deref(), Some("cancelled"));
    assert!(matches!(
        other.abort("aborted", now, &mut tally),
        Ok(Abort::Already(State::Compensated))
    ));
}

/// Two stores on one fresh bucket of the test server, as two daemons have them.
fn two_stores() -> (KvStore, KvStore, String) {
    let config = NatsSpoolConfig {
        stream: format!("sy-test-saga-{:016x}", fastrand::u64(..)),
        connection: NatsConnection {
            urls: vec![nats_server::url().to_owned()],
            auth: NatsAuth::None,
        },
        ..NatsSpoolConfig::default()
    };
    let bucket = format!("KV_{}-sagas", config.stream);
    (KvStore::new(config.clone()), KvStore::new(config), bucket)
}

#[tokio::test]
async fn of_two_daemons_advancing_one_step_one_wins_and_a_sweep_deletes_what_ended() {
    let (a, b, stream) = two_stores();
    let now = SystemTime::now();
    let trigger = Arc::new(event("trigger"));
    let mut started = a
        .start(vec![(saga(), trigger)], now)
        .await
        .expect("started");
    let first = started.pop().expect("one instance");
    let reserve = at(&first, "reserve", Phase::Forward);
    let reply = delivered(Some("r1"));
    let (x, y) = tokio::join!(a.advance(&reserve, &reply), b.advance(&reserve, &reply));
    let (x, y) = (x.expect("recorded"), y.expect("read"));
    assert_eq!(
        usize::from(x.is_some()) + usize::from(y.is_some()),
        1,
        "one daemon advances the step, the other finds it done"
    );
    for step in ["charge", "ship"] {
        let p = at(&first, step, Phase::Forward);
        b.advance(&p, &delivered(None)).await.expect("recorded");
    }
    let shown = a.get(&first.instance).await.expect("read").expect("kept");
    assert_eq!(shown.state, State::Completed);

    // `a` learns of the end from the bucket, then removes it once past retention.
    let ended = crate::saga::InstanceQuery {
        state: Some(State::Completed),
        limit: 10,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.list(&ended).await.expect("listed").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch shows the end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let later = now + Duration::from_secs(3600);
    let removed = a
        .sweep(later, Duration::from_secs(60))
        .await
        .expect("swept");
    assert_eq!(removed, 1);
    assert!(b.get(&first.instance).await.expect("read").is_none());

    let js = async_nats::jetstream::new(
        async_nats::connect(nats_server::url())
            .await
            .expect("the test server"),
    );
    js.delete_stream(&stream)
        .await
        .expect("the bucket is deleted");
}
