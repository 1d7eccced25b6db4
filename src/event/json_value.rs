//! Whether bytes hold exactly one JSON value, found without building it.
//!
//! An event's `data` under a JSON content type is embedded as is wherever the event is written
//! as JSON (a `file` line, a structured-mode request), so it is checked first; the check runs
//! once per written event. [`value_text`] accepts exactly what
//! `serde_json::from_slice::<&RawValue>` accepts and gives the same text: strict JSON grammar,
//! any nesting depth, `\u` escapes not paired up (a lone surrogate passes), UTF-8 checked over
//! the value. Nesting deeper than 128 levels is left to serde_json itself.

use super::json::must_escape;

/// Levels of nesting followed here; deeper values are checked by serde_json.
const MAX_DEPTH: u32 = u128::BITS;

/// The text of the one JSON value `bytes` holds, without the whitespace around it, or `None`
/// when `bytes` holds no value, more than one, or anything that is not JSON. The text is
/// UTF-8.
pub(crate) fn value_text(bytes: &[u8]) -> Option<&[u8]> {
    let start = skip_whitespace(bytes, 0);
    let mut non_ascii = false;
    let end = match value_end(bytes, start, &mut non_ascii) {
        Scan::End(end) => end,
        Scan::Invalid => return None,
        Scan::TooDeep => return deep_value_text(bytes),
    };
    if skip_whitespace(bytes, end) != bytes.len() {
        return None;
    }
    let text = &bytes[start..end];
    // Outside strings every byte is ASCII or the scan failed; ASCII strings need no UTF-8 check.
    (!non_ascii || std::str::from_utf8(text).is_ok()).then_some(text)
}

/// serde_json's answer, for values nested deeper than [`MAX_DEPTH`].
#[cold]
fn deep_value_text(bytes: &[u8]) -> Option<&[u8]> {
    serde_json::from_slice::<&serde_json::value::RawValue>(bytes)
        .ok()
        .map(|raw| raw.get().as_bytes())
}

/// How a scan of one value ended.
enum Scan {
    /// The value ends just before this index.
    End(usize),
    /// Not JSON.
    Invalid,
    /// Nested deeper than [`MAX_DEPTH`]; not decided.
    TooDeep,
}

/// Scans the value starting at `at` (no whitespace before it): arrays and objects with a bit
/// per open level (set for an object), strings, numbers and literals as serde_json reads them.
/// `non_ascii` is set when a string holds a byte outside ASCII.
fn value_end(bytes: &[u8], mut at: usize, non_ascii: &mut bool) -> Scan {
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    loop {
        // A value starts at `at`.
        let Some(&first) = bytes.get(at) else {
            return Scan::Invalid;
        };
        let step = match first {
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return Scan::TooDeep;
                }
                let object = first == b'{';
                objects = (objects & !(1 << depth)) | (u128::from(object) << depth);
                depth += 1;
                at = skip_whitespace(bytes, at + 1);
                let close = if object { b'}' } else { b']' };
                if bytes.get(at) == Some(&close) {
                    depth -= 1;
                    Some(at + 1)
                } else if object {
                    // Its first value follows the first key.
                    let Some(next) = key_end(bytes, at, non_ascii) else {
                        return Scan::Invalid;
                    };
                    at = skip_whitespace(bytes, next);
                    continue;
                } else {
                    continue;
                }
            }
            b'"' => string_end(bytes, at + 1, non_ascii),
            b'-' => number_end(bytes, at + 1),
            b'0'..=b'9' => number_end(bytes, at),
            b't' => literal_end(bytes, at, b"true"),
            b'f' => literal_end(bytes, at, b"false"),
            b'n' => literal_end(bytes, at, b"null"),
            _ => None,
        };
        let Some(mut end) = step else {
            return Scan::Invalid;
        };
        // A value ended at `end`: close containers until one goes on, or the top one ends.
        loop {
            if depth == 0 {
                return Scan::End(end);
            }
            let object = objects >> (depth - 1) & 1 == 1;
            end = skip_whitespace(bytes, end);
            match (bytes.get(end), object) {
                (Some(b','), false) => {
                    at = skip_whitespace(bytes, end + 1);
                    break;
                }
                (Some(b','), true) => {
                    match key_end(bytes, skip_whitespace(bytes, end + 1), non_ascii) {
                        Some(next) => {
                            at = skip_whitespace(bytes, next);
                            break;
                        }
                        None => return Scan::Invalid,
                    }
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    depth -= 1;
                    end += 1;
                }
                _ => return Scan::Invalid,
            }
        }
    }
}

/// After a key's opening position `at`: the index just past `"key"`, whitespace and `:`.
fn key_end(bytes: &[u8], at: usize, non_ascii: &mut bool) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let after = skip_whitespace(bytes, string_end(bytes, at + 1, non_ascii)?);
    (bytes.get(after) == Some(&b':')).then_some(after + 1)
}

/// The first index at or after `at` that is not JSON whitespace.
fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// After an opening quote at `at - 1`: the index just past the closing quote. Control
/// characters are refused; escapes must be JSON's (`\u` with four hex digits, unpaired or not).
/// Sets `non_ascii` when the string holds a byte outside ASCII.
fn string_end(bytes: &[u8], mut at: usize, non_ascii: &mut bool) -> Option<usize> {
    loop {
        at = plain_run_end(bytes, at, non_ascii);
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => {
                at = match *bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at + 2,
                    b'u' => {
                        let hex = bytes.get(at + 2..at + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        at + 6
                    }
                    _ => return None,
                };
            }
            _ => return None,
        }
    }
}

/// The first index at or after `at` holding `"`, `\` or a control character (or the end);
/// sets `non_ascii` when a byte before it is outside ASCII.
///
/// The first bytes are looked at one by one (most strings, member names above all, are
/// short). Past them, the next `"` or `\` is found by `memchr` and the bytes before it are
/// checked in one pass for the lowest and highest byte, which compiles to vector
/// instructions: long strings, the usual bulk of a payload, cost a fraction of an
/// instruction per byte.
fn plain_run_end(bytes: &[u8], at: usize, non_ascii: &mut bool) -> usize {
    const SHORT: usize = 16;
    let short_end = bytes.len().min(at + SHORT);
    let mut high = 0;
    for (index, &b) in bytes.iter().enumerate().take(short_end).skip(at) {
        if must_escape(b) {
            *non_ascii |= high >= 0x80;
            return index;
        }
        high |= b;
    }
    *non_ascii |= high >= 0x80;
    let rest = &bytes[short_end..];
    let run = &rest[..memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len())];
    let (lowest, highest) = run
        .iter()
        .fold((u8::MAX, 0), |(lo, hi), &b| (lo.min(b), hi.max(b)));
    *non_ascii |= highest >= 0x80;
    if lowest < 0x20 {
        // A control character stands before the quote: the run ends there.
        return short_end + run.iter().take_while(|&&b| b >= 0x20).count();
    }
    short_end + run.len()
}

/// After an optional minus sign: the index just past the number at `at`, or `None` when the
/// number is malformed (no digit, an empty fraction or exponent).
fn number_end(bytes: &[u8], at: usize) -> Option<usize> {
    let digits_from = |from: usize| {
        let mut end = from;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        end
    };
    // A zero followed by a digit ends the number at the zero; the digit is then out of place
    // wherever the number stands.
    let mut end = match *bytes.get(at)? {
        b'0' => at + 1,
        b'1'..=b'9' => digits_from(at + 1),
        _ => return None,
    };
    if bytes.get(end) == Some(&b'.') {
        let fraction_end = digits_from(end + 1);
        if fraction_end == end + 1 {
            return None;
        }
        end = fraction_end;
    }
    if let Some(b'e' | b'E') = bytes.get(end) {
        end += 1;
        if let Some(b'+' | b'-') = bytes.get(end) {
            end += 1;
        }
        let exponent_end = digits_from(end);
        if exponent_end == end {
            return None;
        }
        end = exponent_end;
    }
    Some(end)
}

/// The index just past `word` when it stands at `at`.
fn literal_end(bytes: &[u8], at: usize, word: &[u8]) -> Option<usize> {
    let end = at + word.len();
    (bytes.get(at..end) == Some(word)).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::value_text;
    use proptest::prelude::*;

    /// serde_json's answer, which [`value_text`] must give for any input.
    fn serde_text(bytes: &[u8]) -> Option<&[u8]> {
        serde_json::from_slice::<&serde_json::value::RawValue>(bytes)
            .ok()
            .map(|raw| raw.get().as_bytes())
    }

    fn same_as_serde(bytes: &[u8]) {
        assert_eq!(
            value_text(bytes),
            serde_text(bytes),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    /// Pieces of JSON and of near-JSON: every token kind, the characters that end or break
    /// them, whitespace, a control character and bytes that are not UTF-8.
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"\\",
        b"u",
        b"0",
        b"1",
        b"-",
        b"+",
        b".",
        b"e",
        b"E",
        b"a",
        b" ",
        b"\n",
        b"\t",
        b"\x01",
        b"\x7f",
        b"\xc3\xa9",
        b"\xc3",
        b"\xff",
        b"true",
        b"nul",
        b"null",
        b"\"k\":",
        b"\\u12",
        b"d800",
        b"\\n",
        b"/",
    ];

    /// Every sequence of up to four pieces: the grammar's corners, tried all at once.
    #[test]
    fn every_short_sequence_of_pieces_is_judged_as_serde_json_judges_it() {
        let mut input = Vec::new();
        let mut indices = Vec::new();
        for len in 0..=4 {
            indices.clear();
            indices.resize(len, 0);
            loop {
                input.clear();
                for &i in &indices {
                    input.extend_from_slice(PIECES[i]);
                }
                same_as_serde(&input);
                // The next sequence of `len` pieces, like an odometer.
                let Some(place) = indices.iter().rposition(|&i| i + 1 < PIECES.len()) else {
                    break;
                };
                indices[place] += 1;
                indices[place + 1..].fill(0);
            }
        }
    }

    #[test]
    fn corners_are_judged_as_serde_json_judges_them() {
        let long = "x".repeat(100);
        let cases: Vec<Vec<u8>> = vec![
            br#" {"a": [1, -2.5e+3, 0.0, -0, 1E9, true, false, null, "s\u00e9\"\\/"]} "#.to_vec(),
            br#"{"a":1,}"#.to_vec(),
            br#"[1,]"#.to_vec(),
            br#"[1 2]"#.to_vec(),
            br#"{"a" 1}"#.to_vec(),
            br#"{1:2}"#.to_vec(),
            br#""\ud800""#.to_vec(),
            br#""\uDC00\ud800x""#.to_vec(),
            br#""\u12G4""#.to_vec(),
            br#"01"#.to_vec(),
            br#"-"#.to_vec(),
            br#"1."#.to_vec(),
            br#"1e"#.to_vec(),
            br#"1e+"#.to_vec(),
            br#"{}"#.to_vec(),
            br#"[]"#.to_vec(),
            br#"[{}, [], {"": []}]"#.to_vec(),
            b"\"tab\there\"".to_vec(),
            b"\"\xed\xa0\x80\"".to_vec(),
            b"\"\xf0\x9f\x98\x80\"".to_vec(),
            format!("\"{long}\"").into_bytes(),
            format!("\"{long}\\\"{long}\"").into_bytes(),
            format!("\"{long}\x1f{long}\"").into_bytes(),
            format!("\"{long}\\q{long}\"").into_bytes(),
            format!("\"{long}\\u00e9{long}\"").into_bytes(),
            format!("\"{long}").into_bytes(),
            b"1 2".to_vec(),
            b"".to_vec(),
            b" \r\n\t ".to_vec(),
            b"\x0c1".to_vec(),
        ];
        for case in &cases {
            same_as_serde(case);
        }
        // Bytes that are not UTF-8 (a stray continuation byte, a cut sequence, an encoded
        // surrogate) at every place of a long string, and valid non-ASCII text likewise.
        for bad in [
            &b"\xff"[..],
            b"\x80",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xc3\xa9",
            b"\xe2\x82\xac",
        ] {
            for at in 0..=70 {
                let mut text = b"\"".to_vec();
                text.extend(std::iter::repeat_n(b'x', at));
                text.extend_from_slice(bad);
                text.extend(std::iter::repeat_n(b'y', 70 - at));
                text.push(b'"');
                same_as_serde(&text);
            }
        }
    }

    /// Nesting around the depth followed here (and past it, where serde_json decides).
    #[test]
    fn deep_nesting_is_judged_as_serde_json_judges_it() {
        for depth in [1, 127, 128, 129, 200, 5000] {
            let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            same_as_serde(arrays.as_bytes());
            let objects = format!("{}1{}", r#"{"k":"#.repeat(depth), "}".repeat(depth));
            same_as_serde(objects.as_bytes());
            let mixed = format!("{}1{}", r#"[{"k":"#.repeat(depth), "}]".repeat(depth));
            same_as_serde(mixed.as_bytes());
            let unclosed = format!("{}1{}", "[".repeat(depth), "]".repeat(depth - 1));
            same_as_serde(unclosed.as_bytes());
            let crossed = format!("{}1{}", r#"[{"k":"#.repeat(depth), "]}".repeat(depth));
            same_as_serde(crossed.as_bytes());
        }
    }

    /// JSON text as serde_json writes any value, pretty or not, and the same text cut short
    /// or with one byte changed: the valid case and its nearest invalid neighbours.
    fn json_and_neighbours() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        let value = leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        (
            value,
            any::<bool>(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            0..4u8,
        )
            .prop_map(|(value, pretty, place, byte, edit)| {
                let mut text = if pretty {
                    serde_json::to_vec_pretty(&value)
                } else {
                    serde_json::to_vec(&value)
                }
                .expect("a Value serializes");
                let at = place.index(text.len());
                match edit {
                    0 => {}
                    1 => text.truncate(at),
                    2 => text[at] = byte,
                    _ => text.insert(at, byte),
                }
                text
            })
    }

    proptest! {
        #[test]
        fn json_and_its_neighbours_are_judged_as_serde_json_judges_them(
            bytes in json_and_neighbours()
        ) {
            prop_assert_eq!(value_text(&bytes), serde_text(&bytes));
        }

        #[test]
        fn any_bytes_are_judged_as_serde_json_judges_them(
            bytes in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            prop_assert_eq!(value_text(&bytes), serde_text(&bytes));
        }
    }
}
