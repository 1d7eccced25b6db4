//! Tests of the Event Grid schema codec: the published samples, the validation event,
//! rejects, limits and round trips.

use bytes::Bytes;

use super::eventgrid::{decode, encode, EventGridBody, DEFAULT_SOURCE, VALIDATION_EVENT_TYPE};
use super::{DecodeErrorKind, Event, ExtensionValue};

const VALIDATION_SAMPLE: &str = r#"[
  {
    "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
    "topic": "/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
    "subject": "",
    "data": {
      "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
      "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/myeventsub/validate?id=0000000000-0000-0000-0000-00000000000000&t=2022-10-28T04:23:35.1981776Z&apiVersion=2018-05-01-preview&token=1A1A1A1A"
    },
    "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
    "eventTime": "2022-10-28T04:23:35.1981776Z",
    "metadataVersion": "1",
    "dataVersion": "1"
  }
]"#;

const BLOB_CREATED: &str = r#"{
    "id": "93902694-901e-008f-6f95-7153a806873c",
    "eventTime": "2020-08-13T17:18:13.1647262Z",
    "eventType": "Microsoft.Storage.BlobCreated",
    "dataVersion": "",
    "metadataVersion": "1",
    "topic": "/subscriptions/000000000-0000-0000-0000-00000000000000/resourceGroups/rgwithoutpolicy/providers/Microsoft.Storage/storageAccounts/myegteststgfoo",
    "subject": "/blobServices/default/containers/deadletter/blobs/myBlobFile.txt",
    "data": {
        "api": "PutBlob",
        "clientRequestId": "c0d879ad-88c8-4bbe-8774-d65888dc2038",
        "requestId": "93902694-901e-008f-6f95-7153a8000000",
        "eTag": "0x8D83FACDC0C3402",
        "contentType": "text/plain",
        "contentLength": 0,
        "blobType": "BlockBlob",
        "url": "https://myegteststgfoo.blob.core.windows.net/deadletter/myBlobFile.txt",
        "sequencer": "00000000000000000000000000015508000000000005101c",
        "storageDiagnostics": { "batchId": "cfb32f79-3006-0010-0095-711faa000000" }
    }
}"#;

fn events(body: &str) -> Vec<Event> {
    match decode(body.as_bytes(), 1 << 20, 100) {
        Ok(EventGridBody::Events(events)) => events,
        other => panic!("expected events, got {other:?}"),
    }
}

fn minimal(extra: &str) -> String {
    format!(
        r#"{{"id":"1","eventType":"t","subject":"s","eventTime":"2020-08-13T17:18:13Z"{extra}}}"#
    )
}

#[test]
fn validation_sample_is_recognised() {
    let body = decode(VALIDATION_SAMPLE.as_bytes(), 1 << 20, 100).unwrap();
    let code = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6".to_owned();
    assert_eq!(body, EventGridBody::Validation { code });
}

#[test]
fn validation_event_needs_to_be_alone_and_carry_a_code() {
    let single = VALIDATION_SAMPLE
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let two = format!("[{single},{single}]");
    assert_eq!(events(&two).len(), 2);
    let no_code = minimal(r#","data":{"validationUrl":"u"}"#).replace(
        r#""eventType":"t""#,
        &format!(r#""eventType":"{VALIDATION_EVENT_TYPE}""#),
    );
    assert_eq!(events(&no_code).len(), 1);
    assert!(matches!(
        decode(single.as_bytes(), 1 << 20, 1),
        Ok(EventGridBody::Validation { .. })
    ));
}

#[test]
fn blob_created_sample_decodes() {
    for body in [BLOB_CREATED.to_owned(), format!("[{BLOB_CREATED}]")] {
        let [event] = <[Event; 1]>::try_from(events(&body)).unwrap();
        assert_eq!(event.specversion, "1.0");
        assert_eq!(event.id, "93902694-901e-008f-6f95-7153a806873c");
        assert_eq!(event.ty, "Microsoft.Storage.BlobCreated");
        assert!(event.source.ends_with("/storageAccounts/myegteststgfoo"));
        assert_eq!(
            event.subject.as_deref(),
            Some("/blobServices/default/containers/deadletter/blobs/myBlobFile.txt")
        );
        assert_eq!(event.time.as_deref(), Some("2020-08-13T17:18:13.1647262Z"));
        assert_eq!(event.data_version.as_deref(), Some(""));
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
        let data: serde_json::Value =
            serde_json::from_slice(event.data.as_deref().unwrap()).unwrap();
        assert_eq!(
            data["storageDiagnostics"]["batchId"],
            "cfb32f79-3006-0010-0095-711faa000000"
        );
        assert!(event.extensions.is_empty());
    }
}

#[test]
fn optional_members_defaults_and_unknown_members() {
    let [event] =
        <[Event; 1]>::try_from(events(&minimal(r#","unknown":{"x":1},"data":null"#))).unwrap();
    assert_eq!(event.source, DEFAULT_SOURCE);
    assert_eq!(
        (event.data, event.datacontenttype, event.data_version),
        (None, None, None)
    );
    let empty_subject = minimal("").replace(r#""subject":"s""#, r#""subject":"""#);
    assert_eq!(events(&empty_subject)[0].subject.as_deref(), Some(""));
}

#[test]
fn rejects_bad_events_with_their_index() {
    let good = minimal("");
    let cases = [
        (minimal("").replace(r#""id":"1","#, ""), "id"),
        (minimal("").replace(r#""id":"1""#, r#""id":"""#), "id"),
        (minimal("").replace(r#""eventType":"t","#, ""), "eventType"),
        (minimal("").replace(r#""subject":"s","#, ""), "subject"),
        (
            minimal("").replace(r#""subject":"s""#, r#""subject":null"#),
            "subject",
        ),
        (
            minimal("").replace(r#""subject":"s""#, r#""subject":5"#),
            "subject",
        ),
        (
            minimal("").replace("2020-08-13T17:18:13Z", "2020-08-13"),
            "eventTime",
        ),
        (
            minimal("").replace(r#","eventTime":"2020-08-13T17:18:13Z""#, ""),
            "eventTime",
        ),
        (minimal(r#","metadataVersion":"2""#), "metadataVersion"),
        (minimal(r#","dataVersion":1"#), "dataVersion"),
        (minimal(r#","topic":["x"]"#), "topic"),
        (minimal("").replace(r#""id":"1""#, r#""id":"a\nb""#), "id"),
        (
            minimal("").replace(r#""subject":"s""#, r#""subject":"\u0000""#),
            "subject",
        ),
        (minimal(r#","id":"again""#), "id"),
    ];
    for (bad, attribute) in cases {
        let body = format!("[{good},{bad}]");
        let error = decode(body.as_bytes(), 1 << 20, 100).unwrap_err();
        assert_eq!(error.kind, DecodeErrorKind::Invalid, "{bad}");
        assert_eq!(
            (error.index, error.attribute.as_deref()),
            (Some(1), Some(attribute)),
            "{bad}"
        );
    }
    assert!(decode(b"[1]", 100, 10).unwrap_err().index == Some(0));
    assert!(decode(b"\"x\"", 100, 10).is_err());
    let malformed = decode(b"[{\"id\":", 100, 10).unwrap_err();
    assert!(
        malformed.message.starts_with("malformed JSON"),
        "{malformed}"
    );
}

#[test]
fn limits_apply_to_count_and_event_size() {
    let one = minimal("");
    let body = format!("[{one},{one},{one}]");
    let error = decode(body.as_bytes(), 1000, 2).unwrap_err();
    assert_eq!((error.kind, error.index), (DecodeErrorKind::TooLarge, None));
    assert_eq!(error.message, "batch has 3 events; at most 2");
    let big = minimal(r#","data":"xxxxxxxxxxxxxxxx""#);
    let error = decode(format!("[{one},{big}]").as_bytes(), one.len(), 10).unwrap_err();
    assert_eq!(
        (error.kind, error.index),
        (DecodeErrorKind::TooLarge, Some(1))
    );
    assert!(matches!(decode(b"[]", 10, 10), Ok(EventGridBody::Events(e)) if e.is_empty()));
}

#[test]
fn encoding_round_trips_and_maps_dead_letter_fields() {
    let mut decoded = events(&format!(
        "[{BLOB_CREATED},{}]",
        minimal(r#","topic":"/t","dataVersion":"2""#)
    ));
    decoded[0].extensions = vec![
        (
            "deadletterreason".into(),
            ExtensionValue::String("MaxDeliveryAttemptsExceeded".into()),
        ),
        ("deliveryattempts".into(), ExtensionValue::Integer(1)),
        (
            "lastdeliveryoutcome".into(),
            ExtensionValue::String("NotFound".into()),
        ),
        ("lasthttpstatuscode".into(), ExtensionValue::Integer(404)),
        (
            "publishtime".into(),
            ExtensionValue::String("2020-08-13T17:18:14.0265758Z".into()),
        ),
        (
            "lastdeliveryattempttime".into(),
            ExtensionValue::String("2020-08-13T17:18:14.0465788Z".into()),
        ),
    ];
    let encoded = encode(&decoded);
    let text = std::str::from_utf8(&encoded).unwrap();
    for member in [
        r#""deliveryAttempts":1"#,
        r#""lastHttpStatusCode":404"#,
        r#""deadLetterReason":"#,
        r#""metadataVersion":"1""#,
    ] {
        assert!(text.contains(member), "{member} in {text}");
    }
    match decode(&encoded, 1 << 20, 10).unwrap() {
        EventGridBody::Events(again) => assert_eq!(again, decoded),
        other @ EventGridBody::Validation { .. } => panic!("{other:?}"),
    }
}

#[test]
fn encoding_cloudevents_drops_extensions_and_fills_defaults() {
    let event = Event {
        specversion: "1.0".into(),
        id: "1".into(),
        source: "/src".into(),
        ty: "t".into(),
        datacontenttype: Some("text/plain".into()),
        dataschema: None,
        subject: None,
        time: None,
        extensions: vec![("other".into(), ExtensionValue::Bool(true))],
        data_version: None,
        data: Some(Bytes::from_static(b"hello")),
    };
    let encoded = encode([&event]);
    let value: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
    let object = &value[0];
    assert_eq!(object["topic"], "/src");
    assert_eq!(object["subject"], "");
    assert_eq!(object["data"], "hello");
    assert_eq!(object["dataVersion"], "");
    assert!(object.get("other").is_none());
    let time = object["eventTime"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    let mut binary = event;
    binary.data = Some(Bytes::from_static(&[0xff, 0]));
    let value: serde_json::Value = serde_json::from_slice(&encode([&binary])).unwrap();
    assert_eq!(value[0]["data"], "/wA=");
}

/// Found by the round-trip checks of the fuzz targets: a repeated dead-letter member was read as two extensions of the same
/// name, an event that structured mode (and so the NATS spool's record) cannot carry.
#[test]
fn a_repeated_dead_letter_member_is_rejected() {
    let body = format!(
        "[{}]",
        minimal(r#","deliveryAttempts":1,"deliveryAttempts":2"#)
    );
    let error = decode(body.as_bytes(), 1 << 20, 100).expect_err("a repeated member");
    assert_eq!(
        error.attribute.as_deref(),
        Some("deliveryAttempts"),
        "{error}"
    );
    assert_eq!(error.index, Some(0), "{error}");
    assert!(error.message.contains("duplicate"), "{error}");
}
