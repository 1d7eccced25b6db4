//! The Event Grid schema: decode arrays of Event Grid events, recognise the subscription
//! validation event, encode events back into the schema.

use super::{DecodeError, Event};

/// Event type of Event Grid's subscription validation event.
pub const VALIDATION_EVENT_TYPE: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

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
    let _ = (body, max_event_bytes, max_events);
    Err(DecodeError::body("not implemented"))
}

/// Encodes events as an Event Grid schema JSON array.
pub fn encode<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let _ = events.into_iter();
    Vec::new()
}
