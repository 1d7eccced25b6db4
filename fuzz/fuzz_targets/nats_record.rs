//! The NATS spool's message: a versioned delivery record holding a structured CloudEvent;
//! and the sink names carried in subject tokens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::{
    decode_nats_dead_letter, decode_nats_delivery, encode_nats_delivery, nats_sink_of, nats_token,
};
use switchyard_fuzz::json_view;

fuzz_target!(|data: &[u8]| {
    let _ = decode_nats_dead_letter(data, 7);
    if let Ok(d) = decode_nats_delivery(data, 7) {
        let again =
            decode_nats_delivery(&encode_nats_delivery(&d), 7).expect("an encoded record decodes");
        assert_eq!(*again.event, json_view(&d.event));
        assert_eq!((&again.route, &again.sink), (&d.route, &d.sink));
        assert_eq!(
            (again.attempts, again.accepted_at, again.not_before),
            (d.attempts, d.accepted_at, d.not_before)
        );
        assert_eq!(
            (
                &again.last_outcome,
                again.last_status,
                again.last_attempt_at
            ),
            (&d.last_outcome, d.last_status, d.last_attempt_at)
        );
        assert_eq!(
            (again.priority, &again.ordering_key),
            (d.priority, &d.ordering_key)
        );
    }
    let text = String::from_utf8_lossy(data);
    let _ = nats_sink_of(&text);
    let token = nats_token(&text);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    assert_eq!(nats_sink_of(&token).as_deref(), Some(&*text));
});
