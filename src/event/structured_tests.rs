//! Tests of the CloudEvents JSON format: structured and batched decoding, the structured
//! and batch encoders and their round trips.

use bytes::Bytes;

use super::http::{decode_batch, decode_structured, encode_batch, encode_structured};
use super::tests::{attribute_error, sample_event};
use super::{DecodeError, DecodeErrorKind, Event, ExtensionValue};

#[test]
fn structured_reads_the_spec_example() {
    let body = br#"{
        "specversion" : "1.0",
        "type" : "com.github.pull_request.opened",
        "source" : "https://github.com/cloudevents/spec/pull",
        "subject" : "123",
        "id" : "A234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "text/xml",
        "data" : "<much wow=\"xml\"/>"
    }"#;
    let event = decode_structured(body).unwrap();
    assert_eq!(event.ty, "com.github.pull_request.opened");
    assert_eq!(event.subject.as_deref(), Some("123"));
    assert_eq!(event.time.as_deref(), Some("2018-04-05T17:31:00Z"));
    assert_eq!(event.datacontenttype.as_deref(), Some("text/xml"));
    assert_eq!(event.data.as_deref(), Some(&b"<much wow=\"xml\"/>"[..]));
    assert_eq!(
        event.extensions,
        vec![
            (
                "comexampleextension1".into(),
                ExtensionValue::String("value".into())
            ),
            ("comexampleothervalue".into(), ExtensionValue::Integer(5)),
        ]
    );
}

fn structured(members: &str) -> Result<Event, DecodeError> {
    let body = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t"{}{members}}}"#,
        if members.is_empty() { "" } else { "," }
    );
    decode_structured(body.as_bytes())
}

#[test]
fn structured_data_representations() {
    let cases: [(&str, Option<&[u8]>); 9] = [
        ("", None),
        (
            r#""data": {"message": "Hello World!"}"#,
            Some(br#"{"message": "Hello World!"}"#),
        ),
        (r#""data":"Hello, \u00e9""#, Some(br#""Hello, \u00e9""#)),
        (r#""data":null"#, Some(b"null")),
        (r#""data":[1, 2]"#, Some(b"[1, 2]")),
        (
            r#""datacontenttype":"text/plain","data":"a\"b\u00e9""#,
            Some("a\"bé".as_bytes()),
        ),
        (r#""datacontenttype":"text/plain","data":42"#, Some(b"42")),
        (
            r#""datacontenttype":"application/vnd.x+json","data":"s""#,
            Some(br#""s""#),
        ),
        (r#""data_base64":"AAEC/w==""#, Some(&[0, 1, 2, 255])),
    ];
    for (members, expected) in cases {
        let event = structured(members).unwrap_or_else(|e| panic!("{members}: {e}"));
        assert_eq!(event.data.as_deref(), expected, "{members}");
    }
    let both = structured(r#""data_base64":"AAEC/w","data":null"#);
    attribute_error(both, "data_base64");
    let event = structured(r#""data_base64":"AAEC/w""#).unwrap();
    assert_eq!(event.data.as_deref(), Some(&[0, 1, 2, 255][..]));
    assert_eq!(structured(r#""data_base64":null"#).unwrap().data, None);
}

#[test]
fn structured_rejects_bad_data_members() {
    attribute_error(
        structured(r#""data":{},"data_base64":"AA==""#),
        "data_base64",
    );
    attribute_error(structured(r#""data_base64":"not base64!""#), "data_base64");
    attribute_error(structured(r#""data_base64":5"#), "data_base64");
    attribute_error(structured(r#""data":1,"data":2"#), "data");
}

#[test]
fn structured_rejects_bad_required_attributes() {
    for name in ["specversion", "id", "source", "type"] {
        let event = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(event).unwrap();
        let body = |object: &serde_json::Map<_, _>| serde_json::to_vec(object).unwrap();
        object.remove(name);
        let missing = attribute_error(decode_structured(&body(&object)), name);
        assert_eq!(missing.message, "missing required attribute");
        object.insert(name.into(), serde_json::Value::Null);
        attribute_error(decode_structured(&body(&object)), name);
        object.insert(name.into(), "".into());
        let empty = attribute_error(decode_structured(&body(&object)), name);
        assert_eq!(empty.message, "must be a non-empty string");
        object.insert(name.into(), 5.into());
        attribute_error(decode_structured(&body(&object)), name);
    }
    let body = br#"{"specversion":"2.0","id":"1","source":"/s","type":"t"}"#;
    let error = attribute_error(decode_structured(body), "specversion");
    assert_eq!(
        error.to_string(),
        "specversion: unsupported specversion \"2.0\""
    );
}

#[test]
fn structured_optional_attributes_and_nulls() {
    let event = structured(r#""subject":null,"time":null,"dataschema":null,"ext":null"#).unwrap();
    assert_eq!(
        (event.subject, event.time, event.dataschema),
        (None, None, None)
    );
    assert!(event.extensions.is_empty());
    attribute_error(structured(r#""time":"2018-04-05T17:31:00""#), "time");
    attribute_error(structured(r#""subject":5"#), "subject");
    attribute_error(structured(r#""id":"2""#), "id");
}

#[test]
fn structured_extension_types_and_names() {
    let event =
        structured(r#""b":true,"f":false,"min":-2147483648,"max":2147483647,"s":"x""#).unwrap();
    let expected = vec![
        ("b".to_owned(), ExtensionValue::Bool(true)),
        ("f".to_owned(), ExtensionValue::Bool(false)),
        ("min".to_owned(), ExtensionValue::Integer(-2_147_483_648)),
        ("max".to_owned(), ExtensionValue::Integer(2_147_483_647)),
        ("s".to_owned(), ExtensionValue::String("x".into())),
    ];
    assert_eq!(event.extensions, expected);
    for (members, name) in [
        (r#""big":2147483648"#, "big"),
        (r#""small":-2147483649"#, "small"),
        (r#""float":1.5"#, "float"),
        (r#""obj":{}"#, "obj"),
        (r#""arr":[]"#, "arr"),
        (r#""Upper":"x""#, "Upper"),
        (r#""with_underscore":"x""#, "with_underscore"),
        (r#""":"x""#, ""),
        (r#""ext":"a","ext":"b""#, "ext"),
    ] {
        attribute_error(structured(members), name);
    }
}

#[test]
fn structured_reports_malformed_json_with_position() {
    let error = decode_structured(b"{\"id\": \n  oops}").unwrap_err();
    assert_eq!(
        (error.kind, error.attribute.as_deref()),
        (DecodeErrorKind::Invalid, None)
    );
    assert!(error.message.starts_with("malformed JSON"), "{error}");
    assert!(error.message.contains("line 2 column"), "{error}");
    let error = decode_structured(b"[]").unwrap_err();
    assert!(error.message.contains("JSON object"), "{error}");
    assert!(decode_structured(b"").is_err());
}

#[test]
fn structured_0_3_schemaurl_and_base64_encoding() {
    let body = br#"{"specversion":"0.3","id":"1","source":"/s","type":"t","schemaurl":"https://x/s",
        "datacontenttype":"application/octet-stream","datacontentencoding":"base64","data":"AAEC"}"#;
    let event = decode_structured(body).unwrap();
    assert_eq!(event.dataschema.as_deref(), Some("https://x/s"));
    assert_eq!(event.data.as_deref(), Some(&[0u8, 1, 2][..]));
    assert!(event.extensions.is_empty());
    let encoded = encode_structured(&event);
    let text = std::str::from_utf8(&encoded).unwrap();
    assert!(
        text.contains(r#""datacontentencoding":"base64","data":"AAEC""#),
        "{text}"
    );
    assert!(text.contains(r#""schemaurl":"https://x/s""#), "{text}");
    assert_eq!(decode_structured(&encoded).unwrap(), event);
}

#[test]
fn structured_mode_as_in_the_feature_file() {
    let body = br#"{
        "specversion": "1.0", "type": "com.example.someevent", "time": "2018-04-05T03:56:24Z",
        "id": "1234-1234-1234", "source": "/mycontext/subcontext",
        "datacontenttype": "application/json", "data": { "message": "Hello World!" }
    }"#;
    let event = decode_structured(body).unwrap();
    let data: serde_json::Value = serde_json::from_slice(event.data.as_deref().unwrap()).unwrap();
    assert_eq!(data, serde_json::json!({"message": "Hello World!"}));
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
}

#[test]
fn structured_encoding_round_trips() {
    let mut events = vec![sample_event()];
    let mut text = sample_event();
    text.datacontenttype = Some("text/xml".into());
    text.data = Some(Bytes::from_static(b"<much wow=\"xml\"/>"));
    text.extensions
        .push(("n".into(), ExtensionValue::Integer(-7)));
    text.extensions
        .push(("yes".into(), ExtensionValue::Bool(true)));
    events.push(text);
    let mut binary = sample_event();
    (binary.datacontenttype, binary.data) = (
        Some("application/octet-stream".into()),
        Some(Bytes::from_static(&[0, 159, 146, 150])),
    );
    events.push(binary);
    let mut untyped = sample_event();
    (untyped.datacontenttype, untyped.data) = (None, Some(Bytes::from_static(b"not json")));
    events.push(untyped);
    let mut invalid_json = sample_event();
    invalid_json.data = Some(Bytes::from_static(b"{\"open\":"));
    events.push(invalid_json);
    let mut empty = sample_event();
    (empty.data, empty.datacontenttype, empty.dataschema) = (None, None, None);
    events.push(empty);
    for event in &events {
        let encoded = encode_structured(event);
        assert_eq!(
            &decode_structured(&encoded).unwrap(),
            event,
            "{}",
            String::from_utf8_lossy(&encoded)
        );
    }
    let text = String::from_utf8(encode_structured(&events[0])).unwrap();
    assert!(
        text.contains(r#""data":{"message":"Hello World!"}"#),
        "{text}"
    );
    let text = String::from_utf8(encode_structured(&events[1])).unwrap();
    assert!(
        text.contains(r#""n":-7,"yes":true,"data":"<much wow=\"xml\"/>""#),
        "{text}"
    );
    let text = String::from_utf8(encode_structured(&events[2])).unwrap();
    assert!(text.contains(r#""data_base64":"AJ+Slg==""#), "{text}");
    let batch = encode_batch(&events);
    assert_eq!(decode_batch(&batch, 1 << 20, 100).unwrap(), events);
    assert_eq!(encode_batch(&[]), b"[]");
}

#[test]
fn batch_decoding_limits_and_indexes() {
    let one = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
    assert_eq!(decode_batch(b" [ ] ", 100, 10).unwrap(), vec![]);
    let two = format!("[{one},{one}]");
    assert_eq!(decode_batch(two.as_bytes(), one.len(), 2).unwrap().len(), 2);

    let error = decode_batch(format!("[{one},{one},{one}]").as_bytes(), 1000, 2).unwrap_err();
    assert_eq!((error.kind, error.index), (DecodeErrorKind::TooLarge, None));
    assert_eq!(error.message, "batch has 3 events; at most 2");
    let big = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"xxxxxxxx"}"#;
    let error = decode_batch(format!("[{one},{big}]").as_bytes(), one.len(), 10).unwrap_err();
    assert_eq!(
        (error.kind, error.index),
        (DecodeErrorKind::TooLarge, Some(1))
    );

    let missing = r#"{"specversion":"1.0","source":"/s","type":"t"}"#;
    let error = decode_batch(format!("[{one},{one},{missing}]").as_bytes(), 1000, 10).unwrap_err();
    assert_eq!(
        (error.index, error.attribute.as_deref()),
        (Some(2), Some("id"))
    );
    assert_eq!(error.to_string(), "event 2, id: missing required attribute");
    let old = r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#;
    let error = decode_batch(format!("[{one},{old}]").as_bytes(), 1000, 10).unwrap_err();
    assert_eq!(
        (error.index, error.attribute.as_deref()),
        (Some(1), Some("specversion"))
    );
    assert!(decode_batch(format!("[{old},{old}]").as_bytes(), 1000, 10).is_ok());
    let error = decode_batch(one.as_bytes(), 1000, 10).unwrap_err();
    assert_eq!(error.index, None);
    let error = decode_batch(b"[{}, 5]", 1000, 10).unwrap_err();
    assert_eq!(error.index, Some(0));
    assert!(decode_batch(b"[", 1000, 10)
        .unwrap_err()
        .message
        .starts_with("malformed JSON"));
}

#[test]
fn one_pass_batch_reading_sees_what_the_two_pass_reading_sees() {
    use super::json::{parse_array, parse_members, parse_object_array};
    let bodies: [&[u8]; 5] = [
        b"[]",
        b" \r\n[ \t] \n",
        br#"[{"id":"1"},{"id":"2","data":{"a":["]","}",{"b":[]}]}}]"#,
        br#" [ { "i\u0064" : "x" , "data" : "[{,}]" } ,{} ]  "#,
        br#"[{"nested":[[[{"deep":{"er":null}}]]],"n":-1.5e3,"t":true}]"#,
    ];
    for body in bodies {
        let one_pass = parse_object_array(body, 10).expect("a well-formed batch");
        let elements = parse_array(body).unwrap();
        assert_eq!(one_pass.len(), elements.len());
        for ((members, size), raw) in one_pass.iter().zip(&elements) {
            assert_eq!(*size, raw.get().len(), "{}", raw.get());
            let expected = parse_members(raw.get().as_bytes()).unwrap();
            let got: Vec<_> = members.0.iter().map(|(k, v)| (k, v.get())).collect();
            let want: Vec<_> = expected.0.iter().map(|(k, v)| (k, v.get())).collect();
            assert_eq!(got, want);
        }
    }
}

#[test]
fn one_pass_batch_reading_leaves_every_fault_to_the_reading_that_names_it() {
    use super::json::parse_object_array;
    let refused: [&[u8]; 12] = [
        b"",
        b"{}",
        b"[",
        b"[{}",
        b"[{},]",
        b"[{} {}]",
        b"[{}] x",
        b"[{},5]",
        b"[\x0c{}]",
        br#"[{"a":}]"#,
        br#"[{"a":1,}]"#,
        b"[{}][]",
    ];
    for body in refused {
        assert!(
            parse_object_array(body, 10).is_none(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(parse_object_array(b"[{},{}]", 2).is_some());
    assert!(parse_object_array(b"[{},{},{}]", 2).is_none());
    // Each of them still gets the error the element-by-element reading gives.
    let error = decode_batch(b"[{},5]", 1000, 10).unwrap_err();
    assert_eq!(error.index, Some(0));
    let error = decode_batch(b"[{}] x", 1000, 10).unwrap_err();
    assert!(error.message.starts_with("malformed JSON"), "{error}");
}
