//! The Event Grid schema: decode arrays of Event Grid events, recognise the subscription
//! validation event, encode events back into the schema.

use base64::Engine as _;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use super::draft::check_characters;
use super::http::collect_batch;
use super::json::{self, ExtensionJson, BASE64};
use super::{DecodeError, Event};

/// Event type of Event Grid's subscription validation event.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// The `source` of an Event Grid event that arrives without a `topic`.
pub const DEFAULT_SOURCE: &str = "/switchyard";

/// Dead-letter fields: extension attribute name and Event Grid member name. These are the
/// only extensions the schema carries.
const DEAD_LETTER_FIELDS: [(&str, &str); 6] = [
    ("deadletterreason", "deadLetterReason"),
    ("deliveryattempts", "deliveryAttempts"),
    ("lastdeliveryoutcome", "lastDeliveryOutcome"),
    ("lasthttpstatuscode", "lastHttpStatusCode"),
    ("publishtime", "publishTime"),
    ("lastdeliveryattempttime", "lastDeliveryAttemptTime"),
];

/// What an Event Grid schema body contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventGridBody {
    /// Ordinary events.
    Events(Vec<Event>),
    /// A subscription validation handshake carrying `data.validationCode`.
    Validation {
        /// The code to echo as `validationResponse`.
        code: String,
    },
}

/// Decodes an Event Grid schema body (a JSON array, or a single object).
/// An event over `max_event_bytes` or more than `max_events` events is a `TooLarge` error.
pub fn decode(
    body: &[u8],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<EventGridBody, DecodeError> {
    let events = match json::parse_object_array(body, max_events) {
        // One pass over a well-formed array within its limits.
        Some(elements) if elements.iter().all(|(_, size)| *size <= max_event_bytes) => {
            collect_batch(
                elements
                    .into_iter()
                    .map(|(members, _)| decode_members(members)),
            )?
        }
        _ => decode_checked(body, max_event_bytes, max_events)?,
    };
    if let [event] = events.as_slice() {
        if let Some(code) = validation_code(event) {
            return Ok(EventGridBody::Validation { code });
        }
    }
    Ok(EventGridBody::Events(events))
}

/// Reads a body element by element, so that an error says what is wrong and where.
fn decode_checked(
    body: &[u8],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<Vec<Event>, DecodeError> {
    let elements = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            vec![serde_json::from_slice::<&RawValue>(body).map_err(|e| json::json_error(&e))?]
        }
        _ => json::parse_array(body)?,
    };
    super::http::check_batch_limits(&elements, max_event_bytes, max_events)?;
    collect_batch(
        elements
            .iter()
            .map(|raw| decode_event(raw.get().as_bytes())),
    )
}

/// The members of one Event Grid event that switchyard reads.
#[derive(Debug, Default)]
struct Wire<'a> {
    id: Option<&'a RawValue>,
    event_type: Option<&'a RawValue>,
    subject: Option<&'a RawValue>,
    event_time: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    data_version: Option<&'a RawValue>,
    topic: Option<&'a RawValue>,
    metadata_version: Option<&'a RawValue>,
    dead_letter: Vec<(&'static str, &'static str, &'a RawValue)>,
}

impl<'a> Wire<'a> {
    /// Picks the known members; unknown ones are ignored and `null` counts as absent.
    fn read(members: json::Members<'a>) -> Result<Self, DecodeError> {
        let mut wire = Self::default();
        for (name, raw) in members.0 {
            if json::is_null(raw) {
                continue;
            }
            let slot = match name.as_ref() {
                "id" => &mut wire.id,
                "eventType" => &mut wire.event_type,
                "subject" => &mut wire.subject,
                "eventTime" => &mut wire.event_time,
                "data" => &mut wire.data,
                "dataVersion" => &mut wire.data_version,
                "topic" => &mut wire.topic,
                "metadataVersion" => &mut wire.metadata_version,
                other => {
                    if let Some((ext, member)) = DEAD_LETTER_FIELDS.iter().find(|f| f.1 == other) {
                        // Two would make an event with a repeated attribute, which no
                        // CloudEvents encoding can carry.
                        if wire.dead_letter.iter().any(|(_, m, _)| m == member) {
                            return Err(DecodeError::attribute(other, "duplicate member"));
                        }
                        wire.dead_letter.push((ext, member, raw));
                    }
                    continue;
                }
            };
            if slot.is_some() {
                return Err(DecodeError::attribute(name.as_ref(), "duplicate member"));
            }
            *slot = Some(raw);
        }
        Ok(wire)
    }
}

/// Decodes one Event Grid event object.
fn decode_event(text: &[u8]) -> Result<Event, DecodeError> {
    decode_members(json::parse_members(text)?)
}

/// Decodes one Event Grid event from the members of its object.
fn decode_members(members: json::Members<'_>) -> Result<Event, DecodeError> {
    let wire = Wire::read(members)?;
    let id = required(wire.id, "id")?;
    let ty = required(wire.event_type, "eventType")?;
    let subject = optional(wire.subject, "subject")?
        .ok_or_else(|| DecodeError::attribute("subject", "missing required member"))?;
    let time = optional(wire.event_time, "eventTime")?
        .ok_or_else(|| DecodeError::attribute("eventTime", "missing required member"))?;
    if chrono::DateTime::parse_from_rfc3339(&time).is_err() {
        return Err(DecodeError::attribute(
            "eventTime",
            "must be an RFC 3339 timestamp",
        ));
    }
    if let Some(version) = optional(wire.metadata_version, "metadataVersion")? {
        if version != "1" {
            return Err(DecodeError::attribute("metadataVersion", "must be \"1\""));
        }
    }
    let source = optional(wire.topic, "topic")?
        .filter(|topic| !topic.is_empty())
        .unwrap_or_else(|| DEFAULT_SOURCE.to_owned());
    // These become the attributes of a CloudEvents 1.0 event, so its character rules apply.
    for (member, value) in [
        ("id", &id),
        ("eventType", &ty),
        ("subject", &subject),
        ("topic", &source),
    ] {
        check_characters("", member, value)?;
    }
    let mut event = Event {
        specversion: "1.0".to_owned(),
        id,
        source,
        ty,
        datacontenttype: wire.data.map(|_| "application/json".to_owned()),
        dataschema: None,
        subject: Some(subject),
        time: Some(time),
        extensions: Vec::new(),
        data_version: optional(wire.data_version, "dataVersion")?,
        data: wire
            .data
            .map(|raw| Bytes::copy_from_slice(raw.get().as_bytes())),
    };
    for (ext, member, raw) in wire.dead_letter {
        if let Some(value) = json::extension_value(member, raw)? {
            event.extensions.push((ext.to_owned(), value));
        }
    }
    Ok(event)
}

fn optional(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, DecodeError> {
    match raw {
        Some(raw) => json::string_value(name, raw),
        None => Ok(None),
    }
}

fn required(raw: Option<&RawValue>, name: &str) -> Result<String, DecodeError> {
    match optional(raw, name)? {
        None => Err(DecodeError::attribute(name, "missing required member")),
        Some(v) if v.is_empty() => Err(DecodeError::attribute(name, "must be a non-empty string")),
        Some(v) => Ok(v),
    }
}

/// The `data.validationCode` of a subscription validation event.
fn validation_code(event: &Event) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ValidationData {
        #[serde(rename = "validationCode")]
        code: Option<String>,
    }
    if event.ty != VALIDATION_EVENT_TYPE {
        return None;
    }
    let data: ValidationData = serde_json::from_slice(event.data.as_deref()?).ok()?;
    data.code
}

/// Encodes events as an Event Grid schema JSON array.
///
/// Extension attributes are dropped except the dead-letter fields. `data` that is not JSON
/// becomes a JSON string (Base64 when it is not UTF-8); an event without `time` gets the
/// current time.
pub fn encode<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    json::to_array(events, |event, out| {
        serde_json::to_writer(out, &EventGridJson(event))
            .expect("serializing to a Vec cannot fail: every map key is a string");
    })
}

/// Serializes an event as one Event Grid schema object.
struct EventGridJson<'a>(&'a Event);

impl Serialize for EventGridJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &event.id)?;
        map.serialize_entry("topic", &event.source)?;
        map.serialize_entry("subject", event.subject.as_deref().unwrap_or(""))?;
        map.serialize_entry("eventType", &event.ty)?;
        match &event.time {
            Some(time) => map.serialize_entry("eventTime", time)?,
            None => map.serialize_entry(
                "eventTime",
                &Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            )?,
        }
        if let Some(data) = event.data.as_deref() {
            if let Ok(raw) = serde_json::from_slice::<&RawValue>(data) {
                map.serialize_entry("data", raw)?;
            } else if let Ok(text) = std::str::from_utf8(data) {
                map.serialize_entry("data", text)?;
            } else {
                map.serialize_entry("data", &BASE64.encode(data))?;
            }
        }
        map.serialize_entry("dataVersion", event.data_version.as_deref().unwrap_or(""))?;
        map.serialize_entry("metadataVersion", "1")?;
        for (ext, member) in DEAD_LETTER_FIELDS {
            if let Some(value) = event.extension(ext) {
                map.serialize_entry(member, &ExtensionJson(value))?;
            }
        }
        map.end()
    }
}
