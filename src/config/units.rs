//! Parsers for durations (`200ms`, `30s`, `1h30m`), byte sizes (`1MiB`) and rates (`500/s`),
//! and the compact duration format used to print them back.
//!
//! Imports nothing internal.

use std::time::Duration;

/// Why a duration, size or rate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is empty.
    #[error("is empty")]
    Empty,
    /// A number without a unit where a unit is required.
    #[error("`{0}` needs a unit, e.g. 30s")]
    MissingUnit(String),
    /// A unit that is not one of the accepted ones.
    #[error("`{text}` has an unknown unit `{unit}` (expected one of {expected})")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit found.
        unit: String,
        /// The accepted units.
        expected: &'static str,
    },
    /// Text that is not a number followed by a unit.
    #[error("`{0}` is not a valid {1}")]
    Malformed(String, &'static str),
    /// A value too large to represent.
    #[error("`{0}` is too large")]
    Overflow(String),
    /// A rate that is zero or negative.
    #[error("`{0}` must be a positive rate")]
    NotPositive(String),
}

const DURATION_UNITS: &str = "ms, s, m, h, d";
const SIZE_UNITS: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";
const RATE_UNITS: &str = "s, m, h";

/// Parses a duration such as `200ms`, `30s`, `5m`, `1h`, `2d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty);
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(UnitError::MissingUnit(trimmed.to_owned()));
    }
    let mut rest = trimmed;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let amount: u64 = number
            .parse()
            .map_err(|_| UnitError::Malformed(trimmed.to_owned(), "duration"))?;
        let part = duration_part(amount, unit, trimmed)?;
        total = total
            .checked_add(part)
            .ok_or_else(|| UnitError::Overflow(trimmed.to_owned()))?;
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

fn duration_part(amount: u64, unit: &str, text: &str) -> Result<Duration, UnitError> {
    let overflow = || UnitError::Overflow(text.to_owned());
    let secs = |factor: u64| amount.checked_mul(factor).map(Duration::from_secs);
    match unit {
        "ms" => Ok(Duration::from_millis(amount)),
        "s" => secs(1).ok_or_else(overflow),
        "m" => secs(60).ok_or_else(overflow),
        "h" => secs(3600).ok_or_else(overflow),
        "d" => secs(86_400).ok_or_else(overflow),
        _ => Err(UnitError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
            expected: DURATION_UNITS,
        }),
    }
}

/// Parses a byte size such as `512`, `64KiB`, `1MiB`, `1GiB` or `10MB` (KB/MB/GB are 1000-based).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty);
    }
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let amount: u64 = trimmed[..digits]
        .parse()
        .map_err(|_| UnitError::Malformed(trimmed.to_owned(), "size"))?;
    let unit = trimmed[digits..].trim_start();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(UnitError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: unit.to_owned(),
                expected: SIZE_UNITS,
            })
        }
    };
    amount
        .checked_mul(factor)
        .ok_or_else(|| UnitError::Overflow(trimmed.to_owned()))
}

/// Parses a rate such as `500/s`, `30/m` or `10/h` into events per second.
pub fn parse_rate(text: &str) -> Result<f64, UnitError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty);
    }
    let Some((number, unit)) = trimmed.split_once('/') else {
        return Err(UnitError::Malformed(
            trimmed.to_owned(),
            "rate (e.g. 500/s)",
        ));
    };
    let count: f64 = number
        .trim()
        .parse()
        .map_err(|_| UnitError::Malformed(trimmed.to_owned(), "rate (e.g. 500/s)"))?;
    let per_secs = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(UnitError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: other.to_owned(),
                expected: RATE_UNITS,
            })
        }
    };
    if !count.is_finite() || count <= 0.0 {
        return Err(UnitError::NotPositive(trimmed.to_owned()));
    }
    Ok(count / per_secs)
}

/// Formats a duration compactly and exactly, the way `parse_duration` reads it (`1h30m`, `200ms`).
pub(super) fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut secs = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let millis = duration.subsec_millis();
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(secs(2 * 86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn compound_durations_add_up() {
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Ok(Duration::from_millis(93_784_005))
        );
    }

    #[test]
    fn bad_durations_are_rejected() {
        assert_eq!(
            parse_duration("30"),
            Err(UnitError::MissingUnit("30".into()))
        );
        assert_eq!(parse_duration(""), Err(UnitError::Empty));
        assert!(matches!(
            parse_duration("30x"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_duration("s"), Err(UnitError::Malformed(..))));
        assert!(matches!(
            parse_duration("1.5s"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("-1s"),
            Err(UnitError::Malformed(..))
        ));
        assert!(matches!(
            parse_duration("1h 30m"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(UnitError::Malformed(..))
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(UnitError::Overflow(_))
        ));
        assert_eq!(
            parse_duration("30").map_err(|e| e.to_string()),
            Err("`30` needs a unit, e.g. 30s".into())
        );
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 TiB"), Ok(1 << 40));
    }

    #[test]
    fn size_units_ignore_case() {
        assert_eq!(parse_size("1mib"), Ok(1_048_576));
        assert_eq!(parse_size("1MIB"), Ok(1_048_576));
        assert_eq!(parse_size("3kb"), Ok(3000));
        assert_eq!(parse_size("7b"), Ok(7));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert_eq!(parse_size(" "), Err(UnitError::Empty));
        assert!(matches!(
            parse_size("1XB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_size("MiB"), Err(UnitError::Malformed(..))));
        assert!(matches!(parse_size("-1"), Err(UnitError::Malformed(..))));
        assert!(matches!(
            parse_size("1.5MiB"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("99999999999TiB"),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn rates_become_per_second() {
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("30/m"), Ok(0.5));
        assert_eq!(parse_rate("36/h"), Ok(0.01));
        assert_eq!(parse_rate(" 2.5 / s "), Ok(2.5));
    }

    #[test]
    fn bad_rates_are_rejected() {
        assert_eq!(parse_rate(""), Err(UnitError::Empty));
        assert!(matches!(parse_rate("500"), Err(UnitError::Malformed(..))));
        assert!(matches!(parse_rate("x/s"), Err(UnitError::Malformed(..))));
        assert!(matches!(
            parse_rate("5/d"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_rate("0/s"), Err(UnitError::NotPositive(_))));
        assert!(matches!(parse_rate("-3/s"), Err(UnitError::NotPositive(_))));
        assert!(matches!(
            parse_rate("inf/s"),
            Err(UnitError::NotPositive(_))
        ));
    }

    #[test]
    fn formatted_durations_parse_back() {
        for text in ["0s", "200ms", "30s", "1m", "1h30m", "1d", "2d3h4m5s6ms"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
    }
}
