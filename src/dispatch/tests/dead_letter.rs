use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::dispatch::dead_letter::record;
use crate::event::ExtensionValue;
use crate::sinks::tests::support::event;
use crate::spool::Delivery;

fn delivery() -> Delivery {
    let accepted = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    Delivery {
        id: 7,
        event: Arc::new(event("ev-dl")),
        route: Arc::from("orders"),
        sink: Arc::from("api"),
        attempts: 3,
        accepted_at: accepted,
        not_before: accepted,
        last_outcome: Some("NotFound".into()),
        last_status: Some(404),
        last_attempt_at: Some(accepted + Duration::from_millis(1500)),
        priority: Default::default(),
        ordering_key: None,
    }
}

#[test]
fn record_carries_event_grid_dead_letter_fields() {
    let record = record(&delivery(), "MaxDeliveryAttemptsExceeded");
    let text = |s: &str| Some(ExtensionValue::String(s.into()));
    assert_eq!(record.id, "ev-dl");
    assert_eq!(record.data, event("ev-dl").data);
    assert_eq!(
        record.extension("deadletterreason").cloned(),
        text("MaxDeliveryAttemptsExceeded")
    );
    assert_eq!(
        record.extension("deliveryattempts").cloned(),
        Some(ExtensionValue::Integer(3))
    );
    assert_eq!(
        record.extension("lastdeliveryoutcome").cloned(),
        text("NotFound")
    );
    assert_eq!(
        record.extension("lasthttpstatuscode").cloned(),
        Some(ExtensionValue::Integer(404))
    );
    assert_eq!(
        record.extension("publishtime").cloned(),
        text("2023-11-14T22:13:20.000Z")
    );
    assert_eq!(
        record.extension("lastdeliveryattempttime").cloned(),
        text("2023-11-14T22:13:21.500Z")
    );
}

#[test]
fn record_leaves_out_what_did_not_happen() {
    let mut delivery = delivery();
    delivery.attempts = 0;
    delivery.last_outcome = None;
    delivery.last_status = None;
    delivery.last_attempt_at = None;
    let record = record(&delivery, "TimeToLiveExceeded");
    assert_eq!(
        record.extension("deliveryattempts").cloned(),
        Some(ExtensionValue::Integer(0))
    );
    for absent in [
        "lastdeliveryoutcome",
        "lasthttpstatuscode",
        "lastdeliveryattempttime",
    ] {
        assert_eq!(record.extension(absent), None, "{absent}");
    }
}
