//! W3C trace context: the ids of a span and the `traceparent` value that names its parent.
//!
//! Imports nothing internal.

use std::fmt;

/// A 16-byte trace id, never all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceId(pub(crate) [u8; 16]);

/// An 8-byte span id, never all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanId(pub(crate) [u8; 8]);

impl TraceId {
    /// A random id, for a trace that starts here.
    pub(crate) fn random() -> Self {
        Self(nonzero(fastrand::u128(..)).to_be_bytes())
    }
}

impl SpanId {
    /// A random id, for a new span.
    pub(crate) fn random() -> Self {
        Self(nonzero(fastrand::u64(..)).to_be_bytes())
    }
}

fn nonzero<T: PartialEq + From<u8>>(n: T) -> T {
    if n == T::from(0) {
        T::from(1)
    } else {
        n
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// What a valid `traceparent` says: the trace, the parent span, and whether the caller
/// sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// The trace the span belongs to.
    pub(crate) trace_id: TraceId,
    /// The caller's span, the parent of ours.
    pub(crate) parent_id: SpanId,
    /// The `sampled` flag: the caller records this trace.
    pub(crate) sampled: bool,
}

impl TraceParent {
    /// Parses `version-traceid-parentid-flags`; `None` when it is not a valid value.
    ///
    /// Version `00` has exactly four fields. A later version may append fields after the
    /// flags, which are ignored, as the W3C recommendation asks; version `ff` is invalid.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split('-');
        let version = fields.next()?;
        let (trace, parent, flags) = (fields.next()?, fields.next()?, fields.next()?);
        let rest = fields.next();
        let [version] = hex::<1>(version)?;
        if version == 0xff || (version == 0 && rest.is_some()) {
            return None;
        }
        let trace_id = TraceId(hex(trace)?);
        let parent_id = SpanId(hex(parent)?);
        let [flags] = hex::<1>(flags)?;
        if trace_id.0 == [0; 16] || parent_id.0 == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// Exactly `2 * N` lower-case hex digits as bytes.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_version_00_value() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn ignores_fields_appended_by_a_later_version() {
        let later = format!("01{}-extra", &VALID[2..]);
        assert!(TraceParent::parse(&later).is_some());
    }

    #[test]
    fn rejects_malformed_values() {
        let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        for bad in [
            "",
            "00",
            zeros,
            zero_parent,
            &VALID.to_uppercase(),
            &VALID.replace("00-", "ff-"),
            &format!("{VALID}-extra"),
            &VALID[..54],
            "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_ids_are_hex_of_the_right_length() {
        let (trace, span) = (TraceId::random(), SpanId::random());
        assert_eq!(trace.to_string().len(), 32);
        assert_eq!(span.to_string().len(), 16);
        assert_ne!(trace.0, [0; 16]);
    }
}
