//! The `ce-` header value codec: any bytes decode or fail cleanly; any text survives
//! encoding then decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::{percent_decode, percent_encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = percent_decode(data) {
        assert_eq!(
            percent_decode(percent_encode(&text).as_bytes()).ok(),
            Some(text.clone())
        );
    }
    let text = String::from_utf8_lossy(data);
    let encoded = percent_encode(&text);
    assert!(
        encoded
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"'),
        "{encoded}"
    );
    assert_eq!(
        percent_decode(encoded.as_bytes()).ok().as_deref(),
        Some(&*text)
    );
});
