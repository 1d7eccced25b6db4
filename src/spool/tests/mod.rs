//! Tests of the spool: a contract every backend keeps, run against each, then what only the
//! embedded backend promises (durability across reopen, refusal of damaged files, group
//! commit).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{DeadLetter, Delivery, EmbeddedSpool, MemorySpool, NewDelivery, Priority, Spool};
use crate::event::{Event, ExtensionValue};

mod contract;
mod contract_age;
mod contract_bounds;
mod contract_purge;
mod contract_store;
mod embedded;
mod embedded_store;
mod journal;
mod journal_damage;
mod journal_props;
mod lanes;
mod nats;
#[path = "../../../tests/it/support/nats_server.rs"]
#[allow(dead_code, unreachable_pub)]
pub(crate) mod nats_server;

/// Longest any single wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn event(id: &str) -> Arc<Event> {
    Arc::new(Event {
        specversion: "1.0".into(),
        id: id.into(),
        source: "/tests".into(),
        ty: "Test.Created".into(),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        subject: Some("/orders/1".into()),
        time: Some("2024-01-01T00:00:00Z".into()),
        extensions: vec![
            (
                "traceparent".into(),
                ExtensionValue::String("00-abc".into()),
            ),
            ("priority".into(), ExtensionValue::Integer(3)),
            ("sampled".into(), ExtensionValue::Bool(true)),
        ],
        data_version: None,
        data: Some(Bytes::from_static(br#"{"total":120}"#)),
    })
}

fn new_delivery(event: &Arc<Event>, sink: &str, not_before: SystemTime) -> NewDelivery {
    NewDelivery {
        event: event.clone(),
        route: Arc::from("orders"),
        sink: Arc::from(sink),
        accepted_at: SystemTime::now(),
        not_before,
        priority: Priority::default(),
        ordering_key: None,
    }
}

fn dead_info(reason: &str) -> DeadLetter {
    DeadLetter {
        reason: reason.into(),
        attempts: 3,
        last_outcome: Some("BadRequest".into()),
        last_status: Some(400),
        last_attempt_at: Some(SystemTime::now()),
        dead_lettered_at: SystemTime::now(),
    }
}

fn due(event: &Arc<Event>, sink: &str) -> NewDelivery {
    new_delivery(event, sink, SystemTime::now())
}

async fn lease(spool: &impl Spool, sink: &str, max: usize) -> Vec<Delivery> {
    tokio::time::timeout(PATIENCE, spool.lease(sink, max))
        .await
        .expect("a delivery was due within the test's patience")
        .expect("lease succeeds")
}

/// Waits (bounded) until `depth(sink)` reaches `want`; acks and nacks may commit lazily.
async fn wait_depth(spool: &impl Spool, sink: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while spool.depth(sink) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "depth of {sink} stayed {} instead of {want}",
            spool.depth(sink)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn open(dir: &tempfile::TempDir) -> EmbeddedSpool {
    EmbeddedSpool::open(dir.path()).expect("spool opens")
}

/// Runs one contract check against a fresh memory spool and a fresh embedded spool.
macro_rules! contract_test {
    ($name:ident) => {
        contract_test!(contract::$name);
    };
    ($module:ident :: $name:ident) => {
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$module::$name(&super::MemorySpool::new()).await;
            }

            #[tokio::test]
            async fn embedded() {
                let dir = tempfile::tempdir().expect("temp dir");
                super::$module::$name(&super::open(&dir)).await;
            }
        }
    };
}

contract_test!(put_lease_ack);
contract_test!(leased_delivery_is_not_leased_again);
contract_test!(lease_is_oldest_first_and_bounded_by_max);
contract_test!(nack_requeues_with_attempts_and_not_before);
contract_test!(dead_letter_moves_to_forward_sink);
contract_test!(lease_waits_for_put);
contract_test!(lease_waits_for_future_not_before);
contract_test!(released_lease_is_leased_again_at_once_unchanged);
contract_test!(contract_store::dead_letters_are_kept_listed_and_filtered);
contract_test!(contract_store::replay_requeues_with_fresh_attempts);
contract_test!(contract_store::replay_by_filter_and_purge);
contract_test!(contract_store::put_unique_drops_repeats_within_the_window);
contract_test!(contract_store::sink_depths_name_every_stored_sink);
contract_test!(contract_age::oldest_follows_the_earliest_accepted_delivery);
contract_test!(contract_purge::purge_spares_leased_and_other_sinks);
contract_test!(contract_purge::purge_takes_an_ordered_chain_behind_a_leased_head);
contract_test!(lanes::lease_takes_high_then_normal_then_low);
contract_test!(lanes::low_is_passed_over_at_most_six_times);
contract_test!(lanes::high_overtakes_a_low_backlog);
contract_test!(lanes::ordering_blocks_a_successor_while_leased_or_nacked);
contract_test!(lanes::ordering_releases_after_dead_letter);
contract_test!(lanes::other_subjects_routes_and_unordered_go_in_parallel);
contract_test!(lanes::ordering_a_released_head_keeps_its_place_and_unblocks);

/// `max_bytes` refuses a put past the bound, harms nothing stored, and accepts again once
/// deliveries drain.
mod bounded {
    #[tokio::test]
    async fn memory() {
        let spool = super::MemorySpool::bounded(4096);
        super::contract_store::full_refuses_then_recovers(&spool).await;
    }

    #[tokio::test]
    async fn embedded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spool = super::EmbeddedSpool::open_bounded(dir.path(), 4096).expect("spool opens");
        super::contract_store::full_refuses_then_recovers(&spool).await;
    }
}
mod measure;
