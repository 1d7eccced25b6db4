//! Parsers for durations (`200ms`, `30s`, `1h`), sizes (`1MiB`) and rates (`500/s`).

use std::time::Duration;

/// Parses a duration such as `200ms`, `30s`, `5m`, `1h` or `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let _ = text;
    Err("not implemented".into())
}

/// Parses a byte size such as `512`, `64KiB`, `1MiB`, `1GiB`, `10MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let _ = text;
    Err("not implemented".into())
}

/// Parses a rate such as `500/s` or `30/m` into events per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let _ = text;
    Err("not implemented".into())
}
