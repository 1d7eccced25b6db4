//! Tests of the export layer with a subscriber scoped to the test thread.
//!
//! The sending end is process-wide: the tests that attach one take turns, and each picks its
//! own spans out of what arrives by their `event_id`.

use std::sync::Mutex;

use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt as _;

use super::export::{attach, detach};
use super::layer::{AttrValue, FinishedSpan};
use super::{current_traceparent, otlp_layer, record_outcome};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Held while a test has its sending end attached.
static ATTACHED: Mutex<()> = Mutex::new(());

/// Runs `f` under a subscriber holding only the export layer, with an exporter attached,
/// and returns the spans it finished whose `event_id` is `id`.
fn spans_of(id: &str, f: impl FnOnce()) -> Vec<FinishedSpan> {
    let _turn = ATTACHED.lock().unwrap_or_else(|e| e.into_inner());
    let (sender, mut receiver) = mpsc::channel(1024);
    let generation = attach(sender);
    let subscriber = tracing_subscriber::registry().with(otlp_layer());
    tracing::subscriber::with_default(subscriber, f);
    detach(generation);
    let mut spans = Vec::new();
    while let Ok(span) = receiver.try_recv() {
        let event_id = AttrValue::Str(id.to_owned());
        if span.attributes.contains(&("event_id", event_id)) {
            spans.push(span);
        }
    }
    spans
}

#[test]
fn a_delivery_span_continues_the_trace_of_its_traceparent() {
    let spans = spans_of("l-1", || {
        let span = tracing::info_span!(
            "delivery",
            event_id = "l-1",
            route = %"orders",
            sink = "api",
            attempt = 2_u32,
            traceparent = TRACEPARENT,
        );
        let _entered = span.enter();
        record_outcome("success");
    });
    let [span] = spans.as_slice() else {
        panic!("one span expected: {spans:#?}")
    };
    assert_eq!(span.name, "delivery");
    assert_eq!(
        span.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        span.parent_id.map(|p| p.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert_ne!(span.span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(span.outcome, Some("success"));
    assert!(span.end >= span.start);
    let keys: Vec<&str> = span.attributes.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["event_id", "route", "sink", "attempt"]);
    assert!(span.attributes.contains(&("attempt", AttrValue::Int(2))));
    assert!(span
        .attributes
        .contains(&("route", AttrValue::Str("orders".into()))));
}

#[test]
fn without_a_traceparent_a_span_starts_a_trace() {
    let spans = spans_of("l-2", || {
        tracing::info_span!("delivery", event_id = "l-2", traceparent = "garbage").in_scope(|| {});
    });
    let [span] = spans.as_slice() else {
        panic!("one span expected: {spans:#?}")
    };
    assert_eq!(span.parent_id, None);
    assert_eq!(span.outcome, None);
}

#[test]
fn a_batch_keeps_its_most_severe_outcome() {
    let spans = spans_of("l-3", || {
        tracing::info_span!("delivery", event_id = "l-3").in_scope(|| {
            record_outcome("retry");
            record_outcome("dead_letter");
            record_outcome("success");
            // Inside a span that is not exported, the outcome still reaches the delivery.
            tracing::info_span!("inner").in_scope(|| record_outcome("success"));
        });
    });
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].outcome, Some("dead_letter"));
}

#[test]
fn unsampled_traces_and_other_spans_are_not_exported() {
    let unsampled = TRACEPARENT.replace("-01", "-00");
    let spans = spans_of("l-4", || {
        tracing::info_span!("delivery", event_id = "l-4", traceparent = %unsampled).in_scope(|| {});
        tracing::info_span!("request", event_id = "l-4").in_scope(|| {});
    });
    assert!(spans.is_empty(), "{spans:#?}");
}

#[test]
fn nothing_is_recorded_while_no_exporter_is_attached() {
    let _turn = ATTACHED.lock().unwrap_or_else(|e| e.into_inner());
    let (sender, mut receiver) = mpsc::channel(16);
    let generation = attach(sender);
    detach(generation);
    let subscriber = tracing_subscriber::registry().with(otlp_layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("delivery", event_id = "l-5").in_scope(|| {});
    });
    assert!(receiver.try_recv().is_err());
}

#[test]
fn the_current_traceparent_names_the_delivery_span() {
    let mut inside = None;
    let spans = spans_of("l-6", || {
        assert_eq!(current_traceparent(), None);
        let span = tracing::info_span!("delivery", event_id = "l-6", traceparent = TRACEPARENT);
        inside = span.in_scope(current_traceparent);
    });
    let [span] = spans.as_slice() else {
        panic!("one span expected: {spans:#?}")
    };
    let expected = format!("00-{}-{}-01", span.trace_id, span.span_id);
    assert_eq!(inside, Some(expected));
}
