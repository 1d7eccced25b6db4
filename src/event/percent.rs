//! Header value codec of the CloudEvents HTTP binding: RFC 7230 quoted strings and
//! percent-encoding. Imports nothing internal beyond the event module's error type.

use std::borrow::Cow;

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

use super::DecodeError;

/// What the binding says to encode: space, `"`, `%` and everything outside U+0021–U+007E.
/// `utf8_percent_encode` always encodes non-ASCII bytes; `CONTROLS` covers U+0000–U+001F
/// and U+007F.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Percent-encodes an attribute value for a `ce-` header (upper-case hex).
pub(crate) fn encode(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, HEADER_VALUE).into()
}

/// Decodes a `ce-` header value: undoes quoted-string syntax, then exactly one round of
/// percent-decoding. `header` names the header in errors. A `%` not followed by two hex
/// digits is refused: a sender following the binding encodes `%` itself as `%25`.
pub(crate) fn decode(header: &str, raw: &[u8]) -> Result<String, DecodeError> {
    let unquoted = unquote(header, raw)?;
    let invalid = || DecodeError::attribute(header, "percent-decodes to invalid UTF-8");
    if !unquoted.contains(&b'%') {
        // Nothing escaped: the text as it came (most values), without the decoder's pass.
        return String::from_utf8(unquoted.into_owned()).map_err(|_| invalid());
    }
    check_escapes(header, &unquoted)?;
    percent_decode(&unquoted)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| invalid())
}

/// Checks that every `%` starts a `%XY` escape with two hex digits.
fn check_escapes(header: &str, bytes: &[u8]) -> Result<(), DecodeError> {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let escape = rest.get(at + 1..at + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            return Err(DecodeError::attribute(
                header,
                "malformed percent-encoding: `%` must be followed by two hex digits (send `%` as %25)",
            ));
        }
        rest = &rest[at + 3..];
    }
    Ok(())
}

/// Undoes RFC 7230 `quoted-string` syntax (with `\` escapes) when the value is quoted.
fn unquote<'a>(header: &str, raw: &'a [u8]) -> Result<Cow<'a, [u8]>, DecodeError> {
    let Some(rest) = raw.strip_prefix(b"\"") else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = Vec::with_capacity(rest.len());
    let mut bytes = rest.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped) => out.push(escaped),
                None => break,
            },
            b'"' if bytes.as_slice().is_empty() => return Ok(Cow::Owned(out)),
            b'"' => {
                return Err(DecodeError::attribute(
                    header,
                    "quoted string has text after its closing quote",
                ))
            }
            _ => out.push(b),
        }
    }
    Err(DecodeError::attribute(header, "unterminated quoted string"))
}
