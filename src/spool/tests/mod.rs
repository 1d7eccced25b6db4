//! Tests of the spool: a contract every backend keeps, run against each, then what only the
//! embedded backend promises (durability across reopen, refusal of damaged files, group
//! commit).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Delivery, EmbeddedSpool, MemorySpool, NewDelivery, Spool};
use crate::event::{Event, ExtensionValue};

mod contract;
mod embedded;

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
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::contract::$name(&super::MemorySpool::new()).await;
            }

            #[tokio::test]
            async fn embedded() {
                let dir = tempfile::tempdir().expect("temp dir");
                super::contract::$name(&super::open(&dir)).await;
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
mod measure;
