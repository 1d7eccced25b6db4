//! Tests of the CloudEvents HTTP binding in binary mode, of decoding a document of events,
//! and the helpers the other test modules of `event` share.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use super::http::{decode_binary, encode_binary};
use super::{DecodeError, DecodeErrorKind, Event, ExtensionValue};

/// A header map from `(name, value)` pairs; values may hold any bytes.
pub(super) fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("test header name");
        let value = HeaderValue::from_bytes(value).expect("test header value");
        map.append(name, value);
    }
    map
}

const REQUIRED: [(&str, &[u8]); 4] = [
    ("ce-specversion", b"1.0"),
    ("ce-id", b"1234-1234-1234"),
    ("ce-source", b"/mycontext/subcontext"),
    ("ce-type", b"com.example.someevent"),
];

/// Decodes a binary request carrying the required headers plus `extra`.
fn binary(extra: &[(&str, &[u8])], body: &'static [u8]) -> Result<Event, DecodeError> {
    let mut pairs = REQUIRED.to_vec();
    pairs.extend_from_slice(extra);
    decode_binary(&headers(&pairs), Bytes::from_static(body))
}

pub(super) fn attribute_error(
    result: Result<impl std::fmt::Debug, DecodeError>,
    attribute: &str,
) -> DecodeError {
    let error = result.expect_err("decoding should fail");
    assert_eq!(error.kind, DecodeErrorKind::Invalid, "{error}");
    assert_eq!(error.attribute.as_deref(), Some(attribute), "{error}");
    error
}

/// A full event used by the round-trip tests.
pub(super) fn sample_event() -> Event {
    Event {
        specversion: "1.0".into(),
        id: "A234-1234-1234".into(),
        source: "https://github.com/cloudevents/spec/pull".into(),
        ty: "com.github.pull_request.opened".into(),
        datacontenttype: Some("application/json".into()),
        dataschema: Some("https://example.com/schema.json".into()),
        subject: Some("Euro € 😀 \"quoted\" 100%".into()),
        time: Some("2018-04-05T17:31:00Z".into()),
        extensions: vec![(
            "comexampleextension1".into(),
            ExtensionValue::String("a b%c".into()),
        )],
        data_version: None,
        data: Some(Bytes::from_static(br#"{"message":"Hello World!"}"#)),
    }
}

#[test]
fn binary_mode_as_in_the_feature_file() {
    for content_type in ["application/json", "application/json; charset=utf-8"] {
        let body = b"{\n    \"message\": \"Hello World!\"\n}\n";
        let extra = [
            ("ce-time", &b"2018-04-05T03:56:24Z"[..]),
            ("content-type", content_type.as_bytes()),
        ];
        let event = binary(&extra, body).unwrap();
        assert_eq!(event.specversion, "1.0");
        assert_eq!(event.id, "1234-1234-1234");
        assert_eq!(event.source, "/mycontext/subcontext");
        assert_eq!(event.ty, "com.example.someevent");
        assert_eq!(event.time.as_deref(), Some("2018-04-05T03:56:24Z"));
        assert_eq!(event.datacontenttype.as_deref(), Some(content_type));
        assert_eq!(event.data.as_deref(), Some(&body[..]));
        assert!(event.extensions.is_empty());
    }
}

#[test]
fn binary_header_names_are_case_insensitive() {
    let pairs: [(&str, &[u8]); 5] = [
        ("CE-SpecVersion", b"1.0"),
        ("Ce-Id", b"1"),
        ("CE-SOURCE", b"/s"),
        ("ce-Type", b"t"),
        ("CE-MyExt", b"v"),
    ];
    let event = decode_binary(&headers(&pairs), Bytes::new()).unwrap();
    assert_eq!((event.id.as_str(), event.ty.as_str()), ("1", "t"));
    assert_eq!(
        event.extensions,
        vec![("myext".into(), ExtensionValue::String("v".into()))]
    );
    assert_eq!(event.data, None, "an empty body is no data");
}

#[test]
fn a_repeated_attribute_header_is_refused_and_other_repeated_headers_are_not() {
    let error = attribute_error(binary(&[("ce-type", b"again")], b""), "ce-type");
    assert!(error.to_string().contains("duplicate header"), "{error}");
    let error = attribute_error(
        binary(&[("ce-myext", b"1"), ("ce-myext", b"2")], b""),
        "ce-myext",
    );
    assert!(error.to_string().contains("duplicate header"), "{error}");
    let event = binary(
        &[("accept", b"a"), ("accept", b"b"), ("ce-myext", b"v")],
        b"",
    )
    .expect("a repeated header outside the binding is not an attribute");
    assert_eq!(
        event.extensions,
        vec![("myext".into(), ExtensionValue::String("v".into()))]
    );
}

#[test]
fn binary_values_are_percent_decoded_once() {
    let cases: [(&[u8], &str); 6] = [
        (b"Euro%20%E2%82%AC%20%F0%9F%98%80", "Euro € 😀"),
        (b"Euro%20%e2%82%ac%20%f0%9f%98%80", "Euro € 😀"),
        (b"%41%42C", "ABC"),
        (b"100%2525", "100%25"),
        (b"plain", "plain"),
        (b"", ""),
    ];
    for (raw, expected) in cases {
        let event = binary(&[("ce-subject", raw)], b"").unwrap();
        assert_eq!(event.subject.as_deref(), Some(expected), "{raw:?}");
    }
}

#[test]
fn binary_values_may_be_quoted_strings() {
    let cases: [(&[u8], &str); 4] = [
        (b"\"Euro%20%E2%82%AC\"", "Euro €"),
        (br#""say \"hi\" \\ bye""#, "say \"hi\" \\ bye"),
        (br#""a\%41""#, "aA"),
        (b"\"\"", ""),
    ];
    for (raw, expected) in cases {
        let event = binary(&[("ce-subject", raw)], b"").unwrap();
        assert_eq!(event.subject.as_deref(), Some(expected), "{raw:?}");
    }
    for raw in [&b"\"open"[..], b"\"a\"b\"", b"\"ends\\"] {
        attribute_error(binary(&[("ce-subject", raw)], b""), "ce-subject");
    }
}

#[test]
fn binary_rejects_percent_sequences_that_are_not_utf8() {
    for raw in [&b"%C0%A0"[..], b"%FF", b"%E2%82", b"ok%ED%A0%80"] {
        let error = attribute_error(binary(&[("ce-myext", raw)], b""), "ce-myext");
        assert!(error.message.contains("UTF-8"), "{error}");
    }
    attribute_error(binary(&[("ce-subject", b"\xC0\xA0")], b""), "ce-subject");
}

#[test]
fn binary_content_type_and_datacontenttype_header_conflict() {
    let extra = [
        ("content-type", &b"text/plain"[..]),
        ("ce-datacontenttype", b"text/plain"),
    ];
    attribute_error(binary(&extra, b"x"), "ce-datacontenttype");
    let alone = binary(&[("ce-datacontenttype", b"text/plain")], b"x").unwrap();
    assert_eq!(alone.datacontenttype.as_deref(), Some("text/plain"));
}

#[test]
fn binary_rejects_missing_and_empty_required_attributes() {
    for skip in 0..REQUIRED.len() {
        let pairs: Vec<_> = REQUIRED
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| *p)
            .collect();
        let error = attribute_error(
            decode_binary(&headers(&pairs), Bytes::new()),
            REQUIRED[skip].0,
        );
        assert_eq!(error.message, "missing required attribute");
        let mut pairs = REQUIRED.to_vec();
        pairs[skip].1 = b"";
        let error = attribute_error(
            decode_binary(&headers(&pairs), Bytes::new()),
            REQUIRED[skip].0,
        );
        assert_eq!(error.message, "must be a non-empty string");
    }
}

#[test]
fn binary_rejects_bad_specversion_time_names_and_duplicates() {
    let mut pairs = REQUIRED.to_vec();
    pairs[0].1 = b"2.0";
    let error = attribute_error(
        decode_binary(&headers(&pairs), Bytes::new()),
        "ce-specversion",
    );
    assert_eq!(error.message, "unsupported specversion \"2.0\"");
    attribute_error(binary(&[("ce-time", b"yesterday")], b""), "ce-time");
    attribute_error(binary(&[("ce-time", b"2018-04-05 03:56")], b""), "ce-time");
    attribute_error(binary(&[("ce-my_ext", b"v")], b""), "ce-my_ext");
    attribute_error(binary(&[("ce-", b"v")], b""), "ce-");
    attribute_error(binary(&[("ce-data", b"v")], b""), "ce-data");
    attribute_error(binary(&[("ce-id", b"again")], b""), "ce-id");
    attribute_error(binary(&[("ce-ext", b"1"), ("ce-ext", b"2")], b""), "ce-ext");
}

#[test]
fn binary_reads_optional_attributes_and_extensions() {
    let extra: [(&str, &[u8]); 6] = [
        ("ce-time", b"2018-04-05T03:56:24.123+02:00"),
        ("ce-subject", b"123"),
        ("ce-dataschema", b"https://example.com/s"),
        ("ce-comexampleextension1", b"value"),
        ("ce-comexampleothervalue", b"5"),
        ("x-other", b"ignored"),
    ];
    let event = binary(&extra, b"<much wow=\"xml\"/>").unwrap();
    assert_eq!(event.time.as_deref(), Some("2018-04-05T03:56:24.123+02:00"));
    assert_eq!(event.subject.as_deref(), Some("123"));
    assert_eq!(event.dataschema.as_deref(), Some("https://example.com/s"));
    assert_eq!(
        event.extension("comexampleothervalue"),
        Some(&ExtensionValue::String("5".into()))
    );
    assert_eq!(event.extensions.len(), 2);
    assert_eq!(event.datacontenttype, None);
}

#[test]
fn binary_0_3_maps_schemaurl_to_dataschema() {
    let mut pairs = REQUIRED.to_vec();
    pairs[0].1 = b"0.3";
    pairs.push(("ce-schemaurl", b"https://example.com/s"));
    let event = decode_binary(&headers(&pairs), Bytes::new()).unwrap();
    assert_eq!(event.specversion, "0.3");
    assert_eq!(event.dataschema.as_deref(), Some("https://example.com/s"));
    assert!(event.extensions.is_empty());
    let mut out = HeaderMap::new();
    encode_binary(&event, &mut out);
    assert_eq!(out["ce-schemaurl"], "https://example.com/s");
    assert_eq!(decode_binary(&out, Bytes::new()).unwrap(), event);
}

#[test]
fn binary_encoding_percent_encodes_and_round_trips() {
    let event = sample_event();
    let mut out = HeaderMap::new();
    let body = encode_binary(&event, &mut out);
    assert_eq!(
        out["ce-subject"],
        "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22quoted%22%20100%25"
    );
    assert_eq!(out["ce-comexampleextension1"], "a%20b%25c");
    assert_eq!(out["content-type"], "application/json");
    assert_eq!(out["ce-dataschema"], "https://example.com/schema.json");
    assert_eq!(decode_binary(&out, body).unwrap(), event);

    let mut bare = sample_event();
    (
        bare.datacontenttype,
        bare.data,
        bare.subject,
        bare.time,
        bare.dataschema,
    ) = (None, None, None, None, None);
    let mut out = HeaderMap::new();
    let body = encode_binary(&bare, &mut out);
    assert!(body.is_empty() && !out.contains_key("content-type") && !out.contains_key("ce-time"));
    assert_eq!(decode_binary(&out, body).unwrap(), bare);
}

#[test]
fn binary_rejects_a_percent_sign_that_starts_no_escape() {
    for bad in [&b"%ZZ"[..], b"%", b"50%", b"%4", b"a%g1"] {
        let error = attribute_error(binary(&[("ce-subject", bad)], b""), "ce-subject");
        assert!(error.to_string().contains("two hex digits"), "{error}");
    }
    let event = binary(&[("ce-subject", b"100%25%2f%2F")], b"").expect("valid escapes");
    assert_eq!(event.subject.as_deref(), Some("100%//"));
}

#[test]
fn context_attributes_of_a_1_0_event_refuse_control_characters_and_noncharacters() {
    for (header, value) in [
        ("ce-subject", &b"a%00b"[..]),
        ("ce-subject", b"line%0Abreak"),
        ("ce-subject", b"%1B%5B31m"),
        ("ce-subject", b"c1%C2%85"),
        ("ce-subject", b"%EF%BF%BE"),
        ("ce-dataschema", b"https://x/%0D"),
    ] {
        let error = attribute_error(binary(&[(header, value)], b""), header);
        assert!(error.to_string().contains("does not allow"), "{error}");
    }
    let mut pairs = REQUIRED.to_vec();
    pairs[1] = ("ce-id", b"a%0Ab");
    let error = attribute_error(decode_binary(&headers(&pairs), Bytes::new()), "ce-id");
    assert!(error.to_string().contains("U+000A"), "{error}");
    // Spaces and any other character are fine; extensions are carried as they came.
    let event = binary(
        &[
            ("ce-subject", b"space%20and%20%E2%82%AC"),
            ("ce-note", b"two%0Alines"),
        ],
        b"",
    )
    .expect("allowed characters");
    assert_eq!(event.subject.as_deref(), Some("space and €"));
}

/// Found by the round-trip checks of the fuzz targets: a `datacontenttype` with non-ASCII characters was sent as a
/// `Content-Type` header that binary mode (switchyard's own, and others') refuses.
#[test]
fn binary_encoding_leaves_out_a_content_type_a_header_cannot_carry() {
    let mut event = sample_event();
    event.datacontenttype = Some("text/plain; name=caf\u{e9}".into());
    let mut headers = HeaderMap::new();
    let body = encode_binary(&event, &mut headers);
    assert_eq!(headers.get("content-type"), None);
    let back = decode_binary(&headers, body).expect("what was sent decodes");
    assert_eq!(back.datacontenttype, None);
    assert_eq!(back.data, event.data);
}

#[test]
fn a_document_holds_one_event_a_batch_or_event_grid_events() {
    use super::decode_document;
    let one = br#"{"specversion":"1.0","id":"a","source":"/s","type":"T"}"#;
    let ids = |events: Vec<Event>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(decode_document(one).expect("one event")), ["a"]);
    let batch = br#" [{"specversion":"1.0","id":"a","source":"/s","type":"T"},
                     {"specversion":"1.0","id":"b","source":"/s","type":"T"}]"#;
    assert_eq!(ids(decode_document(batch).expect("a batch")), ["a", "b"]);
    let grid = br#"[{"id":"g","subject":"/x","eventType":"T","eventTime":"2026-01-01T00:00:00Z",
                   "data":{},"dataVersion":"1"}]"#;
    assert_eq!(ids(decode_document(grid).expect("Event Grid")), ["g"]);
    let validation = br#"[{"id":"v","subject":"","eventTime":"2026-01-01T00:00:00Z",
        "eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","dataVersion":"1",
        "data":{"validationCode":"c"}}]"#;
    let refused = decode_document(validation).expect_err("a handshake is no event");
    assert!(refused.message.contains("validation"), "{refused}");
    assert!(decode_document(b"{\"id\": 1}").is_err());
}
