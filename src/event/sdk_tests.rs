//! Tests of the conversion to the CloudEvents SDK's event type.

use bytes::Bytes;
use cloudevents::event::{ExtensionValue as SdkExtension, SpecVersion};
use cloudevents::{AttributesReader, Data};

use super::tests::sample_event;
use super::{to_sdk, ExtensionValue};

#[test]
fn converts_attributes_extensions_and_json_data() {
    let mut event = sample_event();
    event
        .extensions
        .push(("count".into(), ExtensionValue::Integer(5)));
    event
        .extensions
        .push(("flag".into(), ExtensionValue::Bool(false)));
    let sdk = to_sdk(&event);
    assert_eq!(sdk.specversion(), SpecVersion::V10);
    assert_eq!(sdk.id(), event.id);
    assert_eq!(sdk.source(), &event.source);
    assert_eq!(sdk.ty(), event.ty);
    assert_eq!(sdk.subject(), event.subject.as_deref());
    assert_eq!(sdk.datacontenttype(), Some("application/json"));
    assert_eq!(
        sdk.dataschema().map(|u| u.as_str()),
        event.dataschema.as_deref()
    );
    assert_eq!(
        sdk.time().map(|t| t.to_rfc3339()).as_deref(),
        Some("2018-04-05T17:31:00+00:00")
    );
    assert_eq!(
        sdk.data(),
        Some(&Data::Json(serde_json::json!({"message": "Hello World!"})))
    );
    assert_eq!(
        sdk.extension("comexampleextension1"),
        Some(&SdkExtension::String("a b%c".into()))
    );
    assert_eq!(sdk.extension("count"), Some(&SdkExtension::Integer(5)));
    assert_eq!(sdk.extension("flag"), Some(&SdkExtension::Boolean(false)));
}

#[test]
fn data_kinds_follow_the_content_type() {
    let cases: [(Option<&str>, &'static [u8], Data); 5] = [
        (Some("text/plain"), b"hi", Data::String("hi".into())),
        (
            Some("application/xml"),
            b"<a/>",
            Data::String("<a/>".into()),
        ),
        (
            Some("application/octet-stream"),
            b"hi",
            Data::Binary(b"hi".to_vec()),
        ),
        (
            Some("application/json"),
            b"{oops",
            Data::Binary(b"{oops".to_vec()),
        ),
        (None, b"[1]", Data::Json(serde_json::json!([1]))),
    ];
    for (content_type, bytes, expected) in cases {
        let mut event = sample_event();
        event.datacontenttype = content_type.map(str::to_owned);
        event.data = Some(Bytes::from_static(bytes));
        let sdk = to_sdk(&event);
        assert_eq!(sdk.data(), Some(&expected), "{content_type:?}");
        assert_eq!(sdk.datacontenttype(), content_type);
    }
    let mut event = sample_event();
    event.data = None;
    assert_eq!(to_sdk(&event).data(), None);
}

#[test]
fn version_0_3_and_odd_inputs_do_not_panic() {
    let mut event = sample_event();
    event.specversion = "0.3".into();
    let sdk = to_sdk(&event);
    assert_eq!(sdk.specversion(), SpecVersion::V03);
    assert_eq!(
        sdk.dataschema().map(|u| u.as_str()),
        event.dataschema.as_deref()
    );

    let mut odd = sample_event();
    odd.source = String::new();
    odd.time = Some("not a time".into());
    odd.dataschema = Some("relative/path".into());
    let sdk = to_sdk(&odd);
    assert_eq!(sdk.id(), odd.id);
    assert_eq!(sdk.source(), "");
    assert_eq!(sdk.time(), None);
    assert_eq!(sdk.dataschema(), None);
    assert_eq!(
        sdk.extension("comexampleextension1"),
        Some(&SdkExtension::String("a b%c".into()))
    );
}
