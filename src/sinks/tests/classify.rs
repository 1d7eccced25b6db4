use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::sinks::classify::{classify, retry_after};

fn outcome(code: u16) -> Option<(bool, &'static str)> {
    let status = StatusCode::from_u16(code).unwrap();
    classify(status, &HeaderMap::new(), SystemTime::now())
        .err()
        .map(|e| (e.retryable, e.outcome))
}

#[test]
fn statuses_map_to_event_grid_outcomes() {
    for code in 200..=204 {
        assert_eq!(outcome(code), None, "{code} is success");
    }
    let table = [
        (205, true, "GenericError"),
        (301, true, "GenericError"),
        (400, false, "BadRequest"),
        (401, false, "Unauthorized"),
        (403, false, "Forbidden"),
        (404, true, "NotFound"),
        (408, true, "TimedOut"),
        (410, false, "Disabled"),
        (413, false, "PayloadTooLarge"),
        (415, true, "GenericError"),
        (429, true, "Busy"),
        (500, true, "GenericError"),
        (503, true, "Busy"),
        (507, true, "Full"),
    ];
    for (code, retryable, name) in table {
        assert_eq!(outcome(code), Some((retryable, name)), "status {code}");
    }
}

#[test]
fn retry_after_reads_seconds_and_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static(" 7 "));
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));

    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    headers.insert("retry-after", later.parse().unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));

    let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
    headers.insert("retry-after", past.parse().unwrap());
    assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));

    headers.insert("retry-after", HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&headers, now), None);
}

#[test]
fn retry_after_only_counts_for_429_and_503() {
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from_static("3"));
    let now = SystemTime::now();
    let busy = classify(StatusCode::TOO_MANY_REQUESTS, &headers, now).unwrap_err();
    assert_eq!(busy.retry_after, Some(Duration::from_secs(3)));
    assert_eq!(busy.status, Some(429));
    let error = classify(StatusCode::INTERNAL_SERVER_ERROR, &headers, now).unwrap_err();
    assert_eq!(error.retry_after, None);
}
