//! Mode detection, credential checks and error responses, without a server.

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(n, v)| (n.parse().unwrap(), HeaderValue::from_static(v)))
        .collect()
}

const CE: (&str, &str) = ("ce-specversion", "1.0");

type ModeCase = (&'static [(&'static str, &'static str)], Option<Mode>);

#[test]
fn mode_follows_the_content_type_then_ce_headers() {
    let cases: &[ModeCase] = &[
        (
            &[("content-type", "application/cloudevents-batch+json")],
            Some(Mode::Batch),
        ),
        (
            &[(
                "content-type",
                "APPLICATION/CloudEvents-Batch+JSON; charset=UTF-8",
            )],
            Some(Mode::Batch),
        ),
        (
            &[(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )],
            Some(Mode::Structured),
        ),
        (
            &[("content-type", "application/cloudevents+json"), CE],
            Some(Mode::Structured),
        ),
        (
            &[("content-type", "application/cloudevents+avro"), CE],
            Some(Mode::Binary),
        ),
        (&[("content-type", "application/cloudevents+avro")], None),
        (
            &[("content-type", "application/cloudevents-batch+avro"), CE],
            None,
        ),
        (
            &[("content-type", "application/json"), CE],
            Some(Mode::Binary),
        ),
        (&[("content-type", "text/plain"), CE], Some(Mode::Binary)),
        (&[CE], Some(Mode::Binary)),
        (
            &[("content-type", "application/json; charset=utf-8")],
            Some(Mode::EventGrid),
        ),
        (&[("content-type", "text/json")], Some(Mode::EventGrid)),
        (
            &[("content-type", "application/vnd.contoso+json")],
            Some(Mode::EventGrid),
        ),
        (&[("content-type", "text/plain")], None),
        (&[("content-type", "text/plain"), ("ce-id", "1")], None),
        (&[], None),
    ];
    for (pairs, expected) in cases {
        let mode = detect_mode(&headers(pairs)).ok();
        assert_eq!(mode, *expected, "{pairs:?}");
    }
}

#[test]
fn constant_time_eq_compares_whole_strings() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"secret2"));
    assert!(!constant_time_eq(b"", b"x"));
    assert!(constant_time_eq(b"", b""));
}

#[test]
fn query_values_are_form_decoded() {
    assert_eq!(&*form_decode("2018-01-01"), b"2018-01-01");
    assert_eq!(&*form_decode("a%2Bb+c%2f"), b"a+b c/");
    assert_eq!(&*form_decode("%FF"), [0xFF]);
}

async fn error_reply(error: IngressError) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = error.into_response();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn decode_errors_use_the_event_grid_shape_with_location() {
    let error = DecodeError {
        kind: DecodeErrorKind::Invalid,
        index: Some(3),
        attribute: Some("source".into()),
        message: "missing required attribute".into(),
    };
    let (status, _, body) = error_reply(error.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "code": "BadRequest",
            "message": "event 3, source: missing required attribute",
            "details": [{"code": "InvalidEvent", "message": "missing required attribute",
                         "index": 3, "attribute": "source"}]
        }})
    );

    let (status, _, body) = error_reply(DecodeError::too_large("too many events").into()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let detail = &body["error"]["details"][0];
    assert_eq!(
        detail,
        &serde_json::json!({"code": "PayloadTooLarge", "message": "too many events"})
    );
}

#[tokio::test]
async fn a_full_spool_is_503_with_retry_after() {
    let full = IngressError::Accept {
        source: AcceptError::Full {
            retry_after: Duration::from_millis(2500),
        },
        events: 4,
    };
    assert_eq!(full.rejected_events(), 4);
    let (status, headers, body) = error_reply(full).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(body["error"]["code"], "ServiceUnavailable");

    let closed = IngressError::Accept {
        source: AcceptError::Closed,
        events: 1,
    };
    let (status, headers, _) = error_reply(closed).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
}

#[tokio::test]
async fn an_unreachable_store_is_503_with_retry_after_and_says_so() {
    let unreachable = IngressError::Accept {
        source: AcceptError::Unreachable {
            store: "NATS",
            retry_after: Duration::from_secs(2),
        },
        events: 3,
    };
    assert_eq!(unreachable.rejected_events(), 3);
    let (status, headers, body) = error_reply(unreachable).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(body["error"]["message"], "NATS unreachable; retry after 2s");
}

#[tokio::test]
async fn client_errors_carry_no_retry_after() {
    let (status, headers, _) = error_reply(IngressError::MissingCredential).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("retry-after").is_none());
}
