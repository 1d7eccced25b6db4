//! Tests of reading W3C trace context (the export itself is tested against a real
//! collector in `tests/it/otlp.rs`).

use super::{current_traceparent, parse_traceparent};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn parses_a_version_00_value() {
    let (trace, parent, sampled) = parse_traceparent(VALID).unwrap();
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(parent, "00f067aa0ba902b7");
    assert!(sampled);
    let unsampled = parse_traceparent(&VALID.replace("-01", "-00")).unwrap();
    assert!(!unsampled.2);
}

#[test]
fn rejects_malformed_values() {
    let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    for bad in [
        "",
        "00",
        zeros,
        zero_parent,
        &VALID.replace("00-", "ff-"),
        "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
        // Parts the SDK would read as numbers of any length or with a sign.
        "00-1-1-01",
        "00-+4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        &format!("{VALID}-extra"),
        &format!("{VALID}x"),
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad}");
    }
}

#[test]
fn a_later_version_may_carry_more_parts() {
    let later = format!("{}-what-comes-later", VALID.replacen("00-", "01-", 1));
    assert!(parse_traceparent(&later).is_some(), "{later}");
}

#[test]
fn nothing_is_current_while_no_exporter_is_attached() {
    let span = tracing::info_span!("delivery", event_id = "t-1");
    assert_eq!(span.in_scope(current_traceparent), None);
}
