//! Conversion to the CloudEvents SDK's `Event`, the type embedding programs' handlers see.

use cloudevents::event::{
    AttributesWriter, Data, EventBuilder as _, EventBuilderV03, EventBuilderV10, TryIntoUrl,
};

use super::{is_textual_media_type, Event, ExtensionValue};

/// Converts an event into a `cloudevents::Event`.
///
/// A `0.3` event becomes an SDK 0.3 event, anything else a 1.0 event. Never panics: a `time`
/// that is not RFC 3339 or a `dataschema` that is not an absolute URI is left out (the SDK
/// types cannot hold them), and when the SDK's builder refuses the required attributes (an
/// empty `source`) they are set directly on a default (1.0) SDK event instead.
pub fn to_sdk(event: &Event) -> cloudevents::Event {
    let built = if event.specversion == "0.3" {
        build_v03(event)
    } else {
        build_v10(event)
    };
    let mut sdk = built.unwrap_or_else(|_| fallback(event));
    let time = event.time.as_deref();
    let time = time.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    sdk.set_time(time.map(|t| t.to_utc()));
    let schema = event.dataschema.as_deref();
    sdk.set_dataschema(schema.and_then(|s| s.into_url().ok()));
    sdk.set_datacontenttype(event.datacontenttype.as_deref());
    if let Some(data) = sdk_data(event) {
        sdk.set_data_unchecked(data);
    }
    sdk
}

macro_rules! build_with {
    ($builder:ty, $event:expr) => {{
        let event: &Event = $event;
        let mut builder = <$builder>::new()
            .id(event.id.as_str())
            .source(event.source.as_str())
            .ty(event.ty.as_str());
        if let Some(subject) = &event.subject {
            builder = builder.subject(subject.as_str());
        }
        for (name, value) in &event.extensions {
            builder = builder.extension(name, sdk_extension(value));
        }
        builder.build()
    }};
}

fn build_v10(event: &Event) -> Result<cloudevents::Event, cloudevents::event::EventBuilderError> {
    build_with!(EventBuilderV10, event)
}

fn build_v03(event: &Event) -> Result<cloudevents::Event, cloudevents::event::EventBuilderError> {
    build_with!(EventBuilderV03, event)
}

/// A default SDK event with the attributes set without the builder's checks.
fn fallback(event: &Event) -> cloudevents::Event {
    let mut sdk = cloudevents::Event::default();
    sdk.set_id(event.id.as_str());
    sdk.set_source(event.source.as_str());
    sdk.set_type(event.ty.as_str());
    sdk.set_subject(event.subject.as_deref());
    for (name, value) in &event.extensions {
        sdk.set_extension(name, sdk_extension(value));
    }
    sdk
}

fn sdk_extension(value: &ExtensionValue) -> cloudevents::event::ExtensionValue {
    match value {
        ExtensionValue::String(s) => s.as_str().into(),
        ExtensionValue::Integer(i) => (*i).into(),
        ExtensionValue::Bool(b) => (*b).into(),
    }
}

/// JSON when JSON-typed and valid, a string for textual UTF-8, bytes otherwise.
fn sdk_data(event: &Event) -> Option<Data> {
    let bytes = event.data.as_deref()?;
    if event.data_is_json() {
        if let Ok(value) = serde_json::from_slice(bytes) {
            return Some(Data::Json(value));
        }
    }
    let textual = event
        .datacontenttype
        .as_deref()
        .is_some_and(is_textual_media_type);
    if let (true, Ok(text)) = (textual, std::str::from_utf8(bytes)) {
        return Some(Data::String(text.to_owned()));
    }
    Some(Data::Binary(bytes.to_vec()))
}
