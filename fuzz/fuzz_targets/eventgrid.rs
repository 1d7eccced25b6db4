//! The Event Grid schema: an array of events (or one object), the validation handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::event::eventgrid::{decode, encode, EventGridBody, VALIDATION_EVENT_TYPE};
use switchyard::event::Event;
use switchyard_fuzz::check_round_trips;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = decode(data, 4096, 16) else {
        return;
    };
    let EventGridBody::Events(events) = body else {
        return;
    };
    assert!(events.len() <= 16);
    for event in &events {
        // What the mapping to CloudEvents promises of every event it decodes.
        assert_eq!(event.specversion, "1.0");
        assert!(!event.id.is_empty() && !event.ty.is_empty() && !event.source.is_empty());
        assert!(event.subject.is_some() && event.time.is_some());
        assert_eq!(event.datacontenttype.is_some(), event.data.is_some());
        // CloudEvents has no `dataVersion`: the rest must survive every HTTP mode.
        check_round_trips(&Event {
            data_version: None,
            ..event.clone()
        });
    }
    // Encoding back into the schema gives the same events; an absent `dataVersion` is
    // written empty, as the schema requires the member.
    let again = match decode(&encode(&events), usize::MAX, usize::MAX) {
        Ok(EventGridBody::Events(again)) => again,
        Ok(EventGridBody::Validation { .. }) => {
            assert!(events.len() == 1 && events[0].ty == VALIDATION_EVENT_TYPE);
            return;
        }
        Err(e) => panic!("encoded events do not decode: {e}"),
    };
    // The schema writes the dead-letter members in its own order.
    let blank = |mut e: Event| {
        e.data_version = e.data_version.filter(|v| !v.is_empty());
        e.extensions.sort_by(|a, b| a.0.cmp(&b.0));
        e
    };
    let again: Vec<_> = again.into_iter().map(blank).collect();
    let events: Vec<_> = events.into_iter().map(blank).collect();
    assert_eq!(again, events);
});
