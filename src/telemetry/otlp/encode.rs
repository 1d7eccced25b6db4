//! Finished spans as an OTLP/HTTP JSON `ExportTraceServiceRequest`.
//!
//! Follows the OTLP JSON encoding: field names in lowerCamelCase, trace and span ids as hex
//! strings, 64-bit integers (times in nanoseconds, `intValue`) as decimal strings, enums as
//! numbers. Imports nothing internal.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::layer::{AttrValue, FinishedSpan};

/// `SPAN_KIND_CLIENT`: a delivery is an outgoing request to a sink.
const KIND_CLIENT: u8 = 3;
/// `STATUS_CODE_ERROR`, for an attempt that failed (`retry`, `dead_letter`).
const STATUS_ERROR: u8 = 2;
/// `STATUS_CODE_OK`, for a delivery its sink confirmed.
const STATUS_OK: u8 = 1;

/// The request body for `spans`, all from one service.
pub(crate) fn traces(service_name: &str, spans: &[FinishedSpan]) -> Vec<u8> {
    let body = json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [attribute("service.name", &AttrValue::Str(service_name.to_owned()))],
            },
            "scopeSpans": [{
                "scope": { "name": "switchyard", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    });
    body.to_string().into_bytes()
}

fn span(span: &FinishedSpan) -> Value {
    let mut attributes: Vec<Value> = span
        .attributes
        .iter()
        .map(|(key, value)| attribute(key, value))
        .collect();
    if let Some(outcome) = span.outcome {
        attributes.push(attribute("outcome", &AttrValue::Str(outcome.to_owned())));
    }
    let mut out = json!({
        "traceId": span.trace_id.to_string(),
        "spanId": span.span_id.to_string(),
        "name": span.name,
        "kind": KIND_CLIENT,
        "startTimeUnixNano": nanos(span.start),
        "endTimeUnixNano": nanos(span.end),
        "attributes": attributes,
    });
    if let Some(parent) = span.parent_id {
        out["parentSpanId"] = Value::String(parent.to_string());
    }
    match span.outcome {
        Some("success") => out["status"] = json!({ "code": STATUS_OK }),
        Some(outcome) => out["status"] = json!({ "code": STATUS_ERROR, "message": outcome }),
        None => {}
    }
    out
}

fn attribute(key: &str, value: &AttrValue) -> Value {
    let value = match value {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        AttrValue::Int(n) => json!({ "intValue": n.to_string() }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
        AttrValue::Double(x) => json!({ "doubleValue": x }),
    };
    json!({ "key": key, "value": value })
}

/// Nanoseconds since the Unix epoch, as a decimal string (0 for a clock set before it).
fn nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::context::{SpanId, TraceId};
    use super::*;

    fn finished(outcome: Option<&'static str>, parent: Option<SpanId>) -> FinishedSpan {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        FinishedSpan {
            name: "delivery",
            trace_id: TraceId([0xab; 16]),
            span_id: SpanId([0x01; 8]),
            parent_id: parent,
            start,
            end: start + Duration::from_millis(2),
            attributes: vec![
                ("event_id", AttrValue::Str("e-1".into())),
                ("attempt", AttrValue::Int(3)),
                ("ok", AttrValue::Bool(true)),
                ("ratio", AttrValue::Double(0.5)),
            ],
            outcome,
        }
    }

    fn decode(spans: &[FinishedSpan]) -> Value {
        serde_json::from_slice(&traces("orders", spans)).unwrap()
    }

    #[test]
    fn encodes_resource_scope_ids_times_and_attributes() {
        let body = decode(&[finished(Some("success"), Some(SpanId([0x02; 8])))]);
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "orders"}})
        );
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "abababababababababababababababab");
        assert_eq!(span["spanId"], "0101010101010101");
        assert_eq!(span["parentSpanId"], "0202020202020202");
        assert_eq!(span["name"], "delivery");
        assert_eq!(span["kind"], 3);
        assert_eq!(span["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(span["endTimeUnixNano"], "1700000000125456789");
        assert_eq!(span["status"], json!({"code": 1}));
        assert_eq!(
            span["attributes"],
            json!([
                {"key": "event_id", "value": {"stringValue": "e-1"}},
                {"key": "attempt", "value": {"intValue": "3"}},
                {"key": "ok", "value": {"boolValue": true}},
                {"key": "ratio", "value": {"doubleValue": 0.5}},
                {"key": "outcome", "value": {"stringValue": "success"}},
            ])
        );
    }

    #[test]
    fn a_root_span_has_no_parent_and_a_failure_an_error_status() {
        let body = decode(&[finished(Some("retry"), None), finished(None, None)]);
        let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert!(spans[0].get("parentSpanId").is_none());
        assert_eq!(spans[0]["status"], json!({"code": 2, "message": "retry"}));
        assert!(spans[1].get("status").is_none());
    }
}
