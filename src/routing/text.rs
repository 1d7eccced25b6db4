//! Case-insensitive string comparison against operands lower-cased at compile time.
//!
//! Imports nothing internal. ASCII values are compared byte by byte with ASCII case folding,
//! so the common case allocates nothing; a value with non-ASCII characters is lower-cased
//! once (Unicode rules) and then compared exactly.

/// Lower-cases an operand at compile time (Unicode rules).
pub(super) fn fold(s: &str) -> Box<str> {
    s.to_lowercase().into_boxed_str()
}

/// A value prepared for comparison with lower-cased operands.
#[derive(Debug)]
pub(super) enum Folded<'a> {
    /// ASCII text, compared with ASCII case folding.
    Ascii(&'a str),
    /// Non-ASCII text, already lower-cased.
    Lower(String),
}

impl<'a> Folded<'a> {
    /// Prepares `value` for comparison; allocates only for non-ASCII text.
    pub(super) fn new(value: &'a str) -> Self {
        if value.is_ascii() {
            Self::Ascii(value)
        } else {
            Self::Lower(value.to_lowercase())
        }
    }

    /// True when the value equals the lower-cased `op`, ignoring case.
    pub(super) fn eq(&self, op: &str) -> bool {
        match self {
            Self::Ascii(v) => v.as_bytes().eq_ignore_ascii_case(op.as_bytes()),
            Self::Lower(v) => v == op,
        }
    }

    /// True when the value begins with the lower-cased `op`, ignoring case.
    pub(super) fn starts_with(&self, op: &str) -> bool {
        match self {
            Self::Ascii(v) => v
                .as_bytes()
                .get(..op.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(op.as_bytes())),
            Self::Lower(v) => v.starts_with(op),
        }
    }

    /// True when the value ends with the lower-cased `op`, ignoring case.
    pub(super) fn ends_with(&self, op: &str) -> bool {
        match self {
            Self::Ascii(v) => v
                .len()
                .checked_sub(op.len())
                .and_then(|start| v.as_bytes().get(start..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(op.as_bytes())),
            Self::Lower(v) => v.ends_with(op),
        }
    }

    /// True when the value contains the lower-cased `op`, ignoring case.
    pub(super) fn contains(&self, op: &str) -> bool {
        match self {
            Self::Ascii(v) => {
                let needle = op.as_bytes();
                needle.is_empty()
                    || v.as_bytes()
                        .windows(needle.len())
                        .any(|w| w.eq_ignore_ascii_case(needle))
            }
            Self::Lower(v) => v.contains(op),
        }
    }
}

/// Longest ASCII value lower-cased on the stack instead of the heap.
const STACK_LEN: usize = 128;

/// A value lower-cased for lookups: on the stack for short ASCII text, else on the heap.
#[derive(Debug)]
pub(super) enum Lowered {
    /// Short ASCII text: a buffer and the used length.
    Stack([u8; STACK_LEN], usize),
    /// Anything else.
    Heap(String),
}

impl Lowered {
    /// Lower-cases `value` (Unicode rules; no allocation for short ASCII text).
    pub(super) fn new(value: &str) -> Self {
        if value.is_ascii() && value.len() <= STACK_LEN {
            let mut buf = [0u8; STACK_LEN];
            let used = &mut buf[..value.len()];
            used.copy_from_slice(value.as_bytes());
            used.make_ascii_lowercase();
            Self::Stack(buf, value.len())
        } else {
            Self::Heap(value.to_lowercase())
        }
    }

    /// The lower-cased text.
    pub(super) fn as_str(&self) -> &str {
        match self {
            // Lower-cased ASCII is always valid UTF-8; the fallback is never taken.
            Self::Stack(buf, len) => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            Self::Heap(s) => s,
        }
    }
}
