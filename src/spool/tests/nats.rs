//! The queue contract against the JetStream backend on a real NATS server (required: these
//! tests fail when it is missing; see `nats_server`). Each test has its own stream prefix and
//! deletes its streams at the end.
//!
//! Not run here: oldest-first leasing (JetStream hands out a lane's deliveries in stream
//! order), per-call dedup windows (the window is the stream's `duplicate_window`), per-subject
//! ordering (not applied on this backend) and the purge contract (JetStream purges leased
//! deliveries too; see `purge_takes_every_lane_and_what_is_in_flight`).

use std::time::{Duration, SystemTime};

use super::nats_server::{url, NatsServer};
use super::{
    contract, contract_bounds, contract_store, dead_info, due, event, lanes, lease, wait_depth,
    PATIENCE,
};
use crate::config::{NatsAuth, NatsConnection, NatsSpoolConfig, SpoolBackend, SpoolConfig};
use crate::spool::{DeadLetterQuery, NatsSpool, NewDelivery, Priority, Spool, SpoolError};

/// The connection to the test server.
fn test_server() -> NatsConnection {
    NatsConnection {
        urls: vec![url().to_owned()],
        auth: NatsAuth::None,
    }
}

fn spool(max_bytes: u64) -> NatsSpool {
    let nats = NatsSpoolConfig {
        stream: format!("sy-test-{:016x}", fastrand::u64(..)),
        ack_wait: Duration::from_secs(5),
        connection: test_server(),
        ..NatsSpoolConfig::default()
    };
    NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes,
        dead_letter_ttl: None,
        retain_delivered: None,
        nats: Some(nats),
    })
}

/// A spool on a fresh stream. Creating the streams is tried three times: with the other spool
/// tests syncing to the same disk, JetStream may take longer than one request's timeout to
/// create them. A missing server still fails the test.
async fn connected(max_bytes: u64) -> NatsSpool {
    let spool = spool(max_bytes);
    let mut attempt = 1;
    while let Err(error) = spool.connect().await {
        assert!(
            attempt < 3,
            "the test NATS server at {} answers: {error}",
            url()
        );
        attempt += 1;
    }
    spool
}

macro_rules! nats_contract {
    ($module:ident :: $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let spool = connected(1 << 30).await;
            $module::$name(&spool).await;
            spool.delete_streams().await.expect("streams deleted");
        }
    };
}

nats_contract!(contract::put_lease_ack);
nats_contract!(contract::leased_delivery_is_not_leased_again);
nats_contract!(contract::nack_requeues_with_attempts_and_not_before);
nats_contract!(contract::dead_letter_moves_to_forward_sink);
nats_contract!(contract::lease_waits_for_put);
nats_contract!(contract::lease_waits_for_future_not_before);
nats_contract!(contract::released_lease_is_leased_again_at_once_unchanged);
nats_contract!(contract_store::dead_letters_are_kept_listed_and_filtered);
nats_contract!(contract_store::replay_requeues_with_fresh_attempts);
nats_contract!(contract_store::replay_by_filter_and_purge);
nats_contract!(contract_store::sink_depths_name_every_stored_sink);
nats_contract!(contract_bounds::a_listing_stops_at_its_byte_bound);
nats_contract!(lanes::lease_takes_high_then_normal_then_low);
nats_contract!(lanes::low_is_passed_over_at_most_six_times);
nats_contract!(lanes::high_overtakes_a_low_backlog);

#[tokio::test]
async fn full_refuses_then_recovers() {
    let spool = connected(8192).await;
    contract_store::full_refuses_then_drains(&spool).await;
    // A delivered event's ack does not wait for JetStream: the room comes back once
    // JetStream has applied the acks, moments after they were sent.
    wait_stored(&spool, 0).await;
    contract_store::put_fits_again(&spool).await;
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn put_unique_drops_a_repeat_within_the_stream_window() {
    let spool = connected(1 << 30).await;
    let window = Duration::from_secs(120);
    let ev = event("e1");
    let first = spool.put_unique(vec![due(&ev, "a"), due(&ev, "b")], window);
    assert_eq!(first.await.unwrap(), 0);
    let repeat = spool.put_unique(vec![due(&event("e1"), "a")], window);
    assert_eq!(repeat.await.unwrap(), 1);
    let twice = vec![due(&event("e2"), "a"), due(&event("e2"), "a")];
    assert_eq!(spool.put_unique(twice, window).await.unwrap(), 1);
    assert_eq!((spool.depth("a"), spool.depth("b")), (2, 1));
    assert_eq!(lease(&spool, "a", 10).await.len(), 2);
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn two_spools_on_one_stream_share_the_work() {
    let a = connected(1 << 30).await;
    let b = NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes: 1 << 30,
        dead_letter_ttl: None,
        retain_delivered: None,
        nats: Some(NatsSpoolConfig {
            stream: a_stream(&a),
            connection: test_server(),
            ..NatsSpoolConfig::default()
        }),
    });
    let puts: Vec<_> = (0..20)
        .map(|i| due(&event(&format!("e{i}")), "s"))
        .collect();
    a.put(puts).await.unwrap();
    let from_a = lease(&a, "s", 10).await;
    let from_b = lease(&b, "s", 10).await;
    let mut ids: Vec<u64> = from_a.iter().chain(&from_b).map(|d| d.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        from_a.len() + from_b.len(),
        "no delivery leased twice"
    );
    for d in &from_b {
        b.ack(d).await.unwrap();
    }
    a.delete_streams().await.expect("streams deleted");
}

fn a_stream(spool: &NatsSpool) -> String {
    spool.stream_prefix().to_owned()
}

#[tokio::test]
async fn an_unreachable_server_refuses_puts_as_unreachable() {
    let spool = NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes: 1 << 30,
        dead_letter_ttl: None,
        retain_delivered: None,
        nats: Some(NatsSpoolConfig {
            connection: NatsConnection {
                urls: vec!["nats://127.0.0.1:1".into()],
                auth: NatsAuth::None,
            },
            ..NatsSpoolConfig::default()
        }),
    });
    let put = spool.put(vec![due(&event("e1"), "a")]).await;
    assert_unreachable(put);
    assert!(!spool.is_connected());
    wait_depth(&spool, "a", 0).await;
}

/// Asserts that `result` is the refusal of an unreachable NATS, not of a full spool.
#[track_caller]
fn assert_unreachable<T: std::fmt::Debug>(result: Result<T, SpoolError>) {
    match result {
        Err(error @ SpoolError::Unreachable { store: "NATS", .. }) => {
            assert_eq!(error.to_string(), "NATS unreachable");
        }
        other => panic!("expected NATS unreachable, got {other:?}"),
    }
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_ridden_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(dir.path());
    let spool = std::sync::Arc::new(NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes: 1 << 30,
        dead_letter_ttl: None,
        retain_delivered: None,
        nats: Some(NatsSpoolConfig {
            stream: "sy-test-restart".into(),
            ack_wait: Duration::from_secs(2),
            connection: NatsConnection {
                urls: vec![server.url()],
                auth: NatsAuth::None,
            },
            ..NatsSpoolConfig::default()
        }),
    }));
    spool
        .connect()
        .await
        .expect("connected to the test's own server");
    assert!(spool.is_connected());
    let puts = ["acked", "ack-lost", "abandoned"].map(|id| due(&event(id), "a"));
    spool.put(puts.into()).await.expect("stored");
    let leased = lease(&*spool, "a", 3).await;
    let [acked, ack_lost, _abandoned] = <[_; 3]>::try_from(leased).expect("all leased");
    spool.ack(&acked).await.expect("acked");
    // A lease waiting on an empty sink when the server goes.
    let waiting = tokio::spawn({
        let spool = spool.clone();
        async move { spool.lease("b", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.kill();
    let cut = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("a waiting lease ends when the connection is lost")
        .expect("lease task");
    assert_unreachable(cut);
    eventually("disconnected", Duration::from_secs(5), || {
        !spool.is_connected()
    })
    .await;
    assert_unreachable(spool.put(vec![due(&event("refused"), "a")]).await);
    // A worker stops settling a batch at its first failure: the rest of the batch
    // ("abandoned") is never settled, and must not be kept alive for ever.
    assert_unreachable(spool.ack(&ack_lost).await);

    server.restart();
    eventually("reconnected", Duration::from_secs(20), || {
        spool.is_connected()
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(error) = spool.put(vec![due(&event("after"), "a")]).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "put after the restart: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The abandoned delivery comes back after `ack_wait`, as does the one whose ack was
    // lost unless the client sent that ack after reconnecting; the refused put was never
    // stored.
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(ids.contains(&"abandoned".to_owned()) && ids.contains(&"after".to_owned())) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "leased only {ids:?}"
        );
        let lease = tokio::time::timeout(Duration::from_secs(2), spool.lease("a", 10)).await;
        let Ok(Ok(leased)) = lease else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for d in leased {
            spool.ack(&d).await.expect("acked after the restart");
            ids.push(d.event.id.clone());
        }
    }
    // Anything else would come within another `ack_wait`.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(Ok(leased)) =
        tokio::time::timeout(Duration::from_millis(500), spool.lease("a", 10)).await
    {
        for d in leased {
            spool.ack(&d).await.expect("acked after the restart");
            ids.push(d.event.id.clone());
        }
    }
    ids.sort_unstable();
    ids.retain(|id| id != "ack-lost");
    assert_eq!(
        ids,
        ["abandoned", "after"],
        "each once, and not the refused one"
    );
    // Nothing is left to deliver or in flight. (The stream itself may still hold "acked":
    // a SIGKILL can cost JetStream the removal of an acked message, though not the ack.)
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("sy-test-restart").await.expect("stream");
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer("sy-test-restart-a")
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("consumer info");
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{info:?}");
}

/// The work stream's state, as JetStream reports it.
async fn stream_state(spool: &NatsSpool) -> async_nats::jetstream::stream::State {
    stream_state_at(url(), spool.stream_prefix()).await
}

/// The state of `stream` on the server at `url`.
async fn stream_state_at(url: &str, stream: &str) -> async_nats::jetstream::stream::State {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.expect("stream");
    stream.info().await.expect("stream info").state.clone()
}

/// Messages left in the work stream, as JetStream counts them.
async fn stored_messages(spool: &NatsSpool) -> u64 {
    stream_state(spool).await.messages
}

#[tokio::test]
async fn settled_deliveries_leave_the_work_stream() {
    let spool = connected(1 << 30).await;
    let puts = (0..3).map(|i| due(&event(&format!("e{i}")), "a")).collect();
    spool.put(puts).await.unwrap();
    let leased = lease(&spool, "a", 3).await;
    let [done, again, dead] = <[_; 3]>::try_from(leased).expect("three leased");
    spool.ack(&done).await.unwrap();
    spool
        .nack(again, std::time::SystemTime::now())
        .await
        .unwrap();
    let info = super::dead_info("MaxDeliveryAttemptsExceeded");
    spool.dead_letter(&dead, info, None).await.unwrap();
    assert_eq!(
        stored_messages(&spool).await,
        1,
        "only the retry record is left"
    );
    let retried = lease(&spool, "a", 1).await;
    spool.ack(&retried[0]).await.unwrap();
    // An acked retry leaves nothing, once JetStream has applied the ack.
    wait_stored(&spool, 0).await;
    spool.delete_streams().await.expect("streams deleted");
}

/// The next ack sent for `spool`'s stream that `acks` (a subscription to `$JS.ACK.>`) sees,
/// progress marks left out: whether it asks for an answer, and its payload.
async fn next_ack(spool: &NatsSpool, acks: &mut async_nats::Subscriber) -> (bool, String) {
    use futures_util::StreamExt as _;
    loop {
        let ack = tokio::time::timeout(PATIENCE, acks.next())
            .await
            .expect("an ack within the patience")
            .expect("the subscription is open");
        let payload = String::from_utf8_lossy(&ack.payload).into_owned();
        if ack.subject.contains(spool.stream_prefix()) && payload != "+WPI" {
            return (ack.reply.is_some(), payload);
        }
    }
}

/// Waits (bounded) until the work stream holds `n` messages.
async fn wait_stored(spool: &NatsSpool, n: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stored = stored_messages(spool).await;
        if stored == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored} messages stored, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_delivered_event_is_acked_without_waiting_and_a_retry_with_confirmation() {
    let spool = connected(1 << 30).await;
    let watcher = async_nats::connect(url()).await.expect("connect");
    let mut acks = watcher.subscribe("$JS.ACK.>").await.expect("subscribed");
    watcher.flush().await.expect("the subscription in place");
    let puts = (0..2).map(|i| due(&event(&format!("e{i}")), "a")).collect();
    spool.put(puts).await.unwrap();
    let leased = lease(&spool, "a", 2).await;
    let [delivered, mut failed] = <[_; 2]>::try_from(leased).expect("two leased");

    spool.ack(&delivered).await.unwrap();
    assert_eq!(
        next_ack(&spool, &mut acks).await,
        (false, "+ACK".to_owned()),
        "a delivered event's ack asks for no answer"
    );
    wait_stored(&spool, 1).await;

    failed.attempts += 1;
    let failed_id = failed.event.id.clone();
    spool.nack(failed, SystemTime::now()).await.unwrap();
    assert_eq!(
        next_ack(&spool, &mut acks).await,
        (true, "+ACK".to_owned()),
        "a retry's ack waits for JetStream's answer"
    );
    assert_eq!(stored_messages(&spool).await, 1, "only the retry record");
    let retried = lease(&spool, "a", 1).await.remove(0);
    assert_eq!((&retried.event.id, retried.attempts), (&failed_id, 1));
    spool.delete_streams().await.expect("streams deleted");
}

fn in_lane(id: &str, sink: &str, priority: Priority) -> NewDelivery {
    NewDelivery {
        priority,
        ..due(&event(id), sink)
    }
}

/// `n` deliveries of one lane, with ids `<prefix>0`, `<prefix>1`, ….
fn lane_of(n: usize, prefix: &str, sink: &str, priority: Priority) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| in_lane(&format!("{prefix}{i}"), sink, priority))
        .collect()
}

#[tokio::test]
async fn a_high_delivery_overtakes_a_low_backlog_of_300() {
    let spool = connected(1 << 30).await;
    spool
        .put(lane_of(300, "low", "a", Priority::Low))
        .await
        .unwrap();
    spool
        .put(vec![in_lane("urgent", "a", Priority::High)])
        .await
        .unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        let d = lease(&spool, "a", 1).await.remove(0);
        spool.ack(&d).await.unwrap();
        first.push(d.event.id.clone());
    }
    assert!(first.iter().any(|id| id == "urgent"), "{first:?}");
    spool.delete_streams().await.expect("streams deleted");
}

/// Leases by lane (high, normal, low).
fn by_lane(leased: &[crate::spool::Delivery]) -> [usize; 3] {
    let mut counts = [0; 3];
    for d in leased {
        counts[d.priority as usize] += 1;
    }
    counts
}

#[tokio::test]
async fn backlogged_lanes_share_leases_four_two_one() {
    let spool = connected(1 << 30).await;
    for sink in ["one-by-one", "batch"] {
        let mut puts = lane_of(20, "l", sink, Priority::Low);
        puts.extend(lane_of(30, "n", sink, Priority::Normal));
        puts.extend(lane_of(50, "h", sink, Priority::High));
        spool.put(puts).await.unwrap();
    }
    let mut leased = Vec::new();
    for _ in 0..70 {
        leased.extend(lease(&spool, "one-by-one", 1).await);
    }
    assert_eq!(by_lane(&leased), [40, 20, 10]);
    assert_eq!(by_lane(&lease(&spool, "batch", 70).await), [40, 20, 10]);
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn a_retry_keeps_its_lane() {
    let spool = connected(1 << 30).await;
    let puts = vec![
        in_lane("low", "a", Priority::Low),
        in_lane("normal", "a", Priority::Normal),
        in_lane("high", "a", Priority::High),
    ];
    spool.put(puts).await.unwrap();
    let high = lease(&spool, "a", 1).await.remove(0);
    spool.nack(high, SystemTime::now()).await.unwrap();
    let again = lease(&spool, "a", 1).await.remove(0);
    assert_eq!(
        again.event.id, "high",
        "retried in the high lane, before normal"
    );
    assert_eq!(again.priority, Priority::High);
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn cancelled_leases_give_back_what_they_fetched() {
    let spool = connected(1 << 30).await;
    let mut puts = lane_of(20, "n", "a", Priority::Normal);
    puts.extend(lane_of(20, "l", "a", Priority::Low));
    spool.put(puts).await.unwrap();
    let mut leased = Vec::new();
    for i in 0..40 {
        let cut = Duration::from_micros(100 * i);
        if let Ok(got) = tokio::time::timeout(cut, spool.lease("a", 3)).await {
            leased.extend(got.unwrap());
        }
    }
    // Well within the 5 s `ack_wait`: nothing waits for a redelivery.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while leased.len() < 40 {
        let more = tokio::time::timeout_at(deadline, spool.lease("a", 40)).await;
        leased.extend(
            more.expect("every delivery leased before ack_wait")
                .unwrap(),
        );
    }
    let mut ids: Vec<_> = leased.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), leased.len()), (40, 40));
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn purge_takes_every_lane_and_what_is_in_flight() {
    let spool = connected(1 << 30).await;
    let mut gone = lane_of(3, "n", "gone", Priority::Normal);
    gone.extend(lane_of(2, "h", "gone", Priority::High));
    gone.extend(lane_of(2, "l", "gone", Priority::Low));
    spool.put(gone).await.unwrap();
    spool.put(vec![due(&event("k"), "kept")]).await.unwrap();
    let in_flight = lease(&spool, "gone", 2).await;
    let [acked, retried] = <[_; 2]>::try_from(in_flight).expect("two leased");

    assert_eq!(
        spool.purge_sink("gone").await.unwrap(),
        7,
        "leased ones too"
    );
    assert_eq!((spool.depth("gone"), spool.depth("kept")), (0, 1));
    assert_eq!(stored_messages(&spool).await, 1, "only the other sink's");
    let early = tokio::time::timeout(Duration::from_millis(50), spool.lease("gone", 10)).await;
    assert!(early.is_err(), "nothing of the sink is left to lease");

    spool.ack(&acked).await.unwrap();
    spool.nack(retried, SystemTime::now()).await.unwrap();
    assert_eq!(
        stored_messages(&spool).await,
        2,
        "a failed attempt's retry is stored anew"
    );
    let retry = lease(&spool, "gone", 10).await;
    assert_eq!(retry.len(), 1);
    spool.ack(&retry[0]).await.unwrap();
    // Until JetStream has applied that ack, a purge would count the delivery as in flight.
    wait_stored(&spool, 1).await;
    assert_eq!(spool.purge_sink("gone").await.unwrap(), 0);
    assert_eq!(spool.purge_sink("never-stored").await.unwrap(), 0);
    spool.delete_streams().await.expect("streams deleted");
}

/// Bytes JetStream counts for one record of [`sized`] on sink `a`.
const RECORD_BYTES: u64 = 469;

/// `n` deliveries to `a` whose records are [`RECORD_BYTES`] each.
fn sized(n: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| due(&event(&format!("r{i:02}")), "a"))
        .collect()
}

#[tokio::test]
async fn a_request_refused_part_way_leaves_nothing_stored() {
    let spool = connected(10 * RECORD_BYTES + 100).await;
    let put = spool.put(sized(12)).await;
    assert!(matches!(put, Err(SpoolError::Full { .. })), "{put:?}");
    let state = stream_state(&spool).await;
    assert_eq!(
        state.last_sequence, 10,
        "ten were stored before the stream filled"
    );
    assert_eq!(state.messages, 0, "and taken back");
    assert_eq!(spool.depth("a"), 0);
    spool.put(sized(10)).await.unwrap();
    assert_eq!(lease(&spool, "a", 20).await.len(), 10);
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn a_unique_request_refused_part_way_is_completed_by_its_retry() {
    let spool = connected(10 * RECORD_BYTES + 100).await;
    let window = Duration::from_secs(120);
    let put = spool.put_unique(sized(12), window).await;
    assert!(matches!(put, Err(SpoolError::Full { .. })), "{put:?}");
    let kept = stored_messages(&spool).await;
    assert!((1..12).contains(&kept), "{kept} kept for the retry");
    let mut delivered = lease(&spool, "a", 20).await;
    for d in &delivered {
        spool.ack(d).await.unwrap();
    }
    // The room they took comes back once JetStream has applied the acks.
    wait_stored(&spool, 0).await;
    let repeats = spool.put_unique(sized(12), window).await.unwrap();
    assert_eq!(repeats as u64, kept, "what was kept is not stored twice");
    delivered.extend(lease(&spool, "a", 20).await);
    let mut ids: Vec<_> = delivered.iter().map(|d| d.event.id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((ids.len(), delivered.len()), (12, 12), "each once");
    spool.delete_streams().await.expect("streams deleted");
}

/// JetStream removes a dead letter once it is older than `spool.dead_letter_ttl`: the
/// dead-letter stream's `max_age`.
#[tokio::test]
async fn dead_letters_go_after_the_stream_max_age() {
    let spool = NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes: 1 << 30,
        dead_letter_ttl: Some(Duration::from_secs(1)),
        retain_delivered: None,
        nats: Some(NatsSpoolConfig {
            stream: format!("sy-test-{:016x}", fastrand::u64(..)),
            connection: test_server(),
            dead_letter_ttl: Some(Duration::from_secs(1)),
            ..NatsSpoolConfig::default()
        }),
    });
    spool.connect().await.expect("the test NATS server answers");
    spool
        .put(vec![due(&event("short-lived"), "a")])
        .await
        .unwrap();
    let d = lease(&spool, "a", 1).await.remove(0);
    spool
        .dead_letter(&d, dead_info("BadRequest"), None)
        .await
        .unwrap();
    let listed = || async {
        spool
            .dead_letters(&DeadLetterQuery::default())
            .await
            .unwrap()
    };
    assert_eq!(listed().await.len(), 1, "kept at first");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listed().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outlived its max_age"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spool.delete_streams().await.expect("streams deleted");
}

#[tokio::test]
async fn a_full_dead_letter_stream_refuses_and_the_delivery_stays_queued() {
    let spool = connected(4096).await;
    let mut kept = 0;
    let refused = loop {
        assert!(
            kept < 64,
            "the dead-letter stream took {kept} dead letters past its 4 KiB"
        );
        spool
            .put(vec![due(&event(&format!("dead-{kept}")), "a")])
            .await
            .expect("the queue has room: each delivery leaves it");
        let d = lease(&spool, "a", 1).await.remove(0);
        match spool.dead_letter(&d, dead_info("BadRequest"), None).await {
            Ok(()) => kept += 1,
            Err(_) => break d,
        }
    };
    assert!(kept > 0, "the first dead letter fits");
    let listed = spool
        .dead_letters(&DeadLetterQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), kept, "nothing kept was dropped for room");
    let id = refused.id;
    spool.release(refused);
    let again = lease(&spool, "a", 1).await.remove(0);
    assert_eq!(again.id, id, "the refused delivery is still queued");
    spool.delete_streams().await.expect("streams deleted");
}

/// The backlog age is read from the oldest message of each lane, the stream's size with it,
/// and the age is gone once the sink's backlog is.
#[tokio::test]
async fn oldest_and_used_bytes_are_read_from_the_stream() {
    let spool = connected(1 << 30).await;
    assert!(spool.tells_oldest());
    let old = SystemTime::now() - Duration::from_secs(300);
    let mut low = due(&event("age-1"), "a");
    (low.accepted_at, low.priority) = (old, Priority::Low);
    let mut high = due(&event("age-2"), "a");
    high.priority = Priority::High;
    spool.put(vec![high, low]).await.unwrap();

    let deadline = tokio::time::Instant::now() + PATIENCE;
    // Stored in whole microseconds.
    let near = |t: Option<SystemTime>| {
        t.and_then(|t| old.duration_since(t).ok())
            .is_some_and(|d| d < Duration::from_millis(1))
    };
    while !near(spool.oldest("a")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            spool.oldest("a")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        spool.used_bytes().is_some_and(|b| b > 0),
        "{:?}",
        spool.used_bytes()
    );
    assert_eq!(spool.oldest("b"), None);

    for _ in 0..2 {
        let delivery = lease(&spool, "a", 1).await.remove(0);
        spool.ack(&delivery).await.unwrap();
    }
    wait_depth(&spool, "a", 0).await;
    assert_eq!(spool.oldest("a"), None);
    spool.delete_streams().await.expect("streams deleted");
}
