//! The queue contract against the JetStream backend on the NATS server at 127.0.0.1:4222
//! (required: these tests fail when it is missing). Each test has its own stream prefix and
//! deletes its streams at the end.
//!
//! Not run here: oldest-first leasing (JetStream hands out a sink's deliveries in stream
//! order) and per-call dedup windows (the window is the stream's `duplicate_window`).

use std::time::Duration;

use super::{contract, contract_store, due, event, lease, wait_depth};
use crate::config::{NatsSpoolConfig, SpoolBackend, SpoolConfig};
use crate::spool::{NatsSpool, Spool, SpoolError};

fn spool(max_bytes: u64) -> NatsSpool {
    let nats = NatsSpoolConfig {
        stream: format!("sy-test-{:016x}", fastrand::u64(..)),
        ack_wait: Duration::from_secs(5),
        ..NatsSpoolConfig::default()
    };
    NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes,
        nats: Some(nats),
    })
}

async fn connected(max_bytes: u64) -> NatsSpool {
    let spool = spool(max_bytes);
    spool
        .connect()
        .await
        .expect("a NATS server with JetStream listens on 127.0.0.1:4222");
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
nats_contract!(contract_store::dead_letters_are_kept_listed_and_filtered);
nats_contract!(contract_store::replay_requeues_with_fresh_attempts);
nats_contract!(contract_store::replay_by_filter_and_purge);
nats_contract!(contract_store::sink_depths_name_every_stored_sink);

#[tokio::test]
async fn full_refuses_then_recovers() {
    let spool = connected(8192).await;
    contract_store::full_refuses_then_recovers(&spool).await;
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
        nats: Some(NatsSpoolConfig {
            stream: a_stream(&a),
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
async fn an_unreachable_server_refuses_puts_as_full() {
    let spool = NatsSpool::open(&SpoolConfig {
        backend: SpoolBackend::Nats,
        path: ".".into(),
        max_bytes: 1 << 30,
        nats: Some(NatsSpoolConfig {
            connection: crate::config::NatsConnection {
                urls: vec!["nats://127.0.0.1:1".into()],
                auth: crate::config::NatsAuth::None,
            },
            ..NatsSpoolConfig::default()
        }),
    });
    let put = spool.put(vec![due(&event("e1"), "a")]).await;
    assert!(matches!(put, Err(SpoolError::Full { .. })), "{put:?}");
    wait_depth(&spool, "a", 0).await;
}

/// Messages left in the work stream, as JetStream counts them.
async fn stored_messages(spool: &NatsSpool) -> u64 {
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(spool.stream_prefix()).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
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
    assert_eq!(
        stored_messages(&spool).await,
        0,
        "an acked retry leaves nothing"
    );
    spool.delete_streams().await.expect("streams deleted");
}
