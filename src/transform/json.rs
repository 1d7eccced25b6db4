//! A program's values and JSON text, through serde_json both ways: reading with jaq-json's
//! `Deserialize`, writing with [`Written`]. Both are several times faster than jaq-json's own
//! reader and writer, which go character by character.

use jaq_json::{Num, Val};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

/// Reads JSON text as a program's input.
pub(super) fn read(text: &[u8]) -> Result<Val, serde_json::Error> {
    serde_json::from_slice(text)
}

/// Writes a program's output as JSON text. Fails for what JSON cannot hold: an object key
/// that is not a string, a byte string, or a number that is not finite.
pub(super) fn write(value: &Val) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Written(value))
}

/// A value serialized as JSON.
struct Written<'a>(&'a Val);

impl Serialize for Written<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Val::Null => serializer.serialize_unit(),
            Val::Bool(b) => serializer.serialize_bool(*b),
            Val::Num(n) => number(n, serializer),
            Val::TStr(s) => serializer.serialize_str(&String::from_utf8_lossy(s)),
            Val::BStr(_) => Err(S::Error::custom("a byte string has no JSON form")),
            Val::Arr(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(&Written(item))?;
                }
                seq.end()
            }
            Val::Obj(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members.iter() {
                    let Val::TStr(key) = key else {
                        return Err(S::Error::custom("an object key is not a string"));
                    };
                    map.serialize_entry(&String::from_utf8_lossy(key), &Written(value))?;
                }
                map.end()
            }
        }
    }
}

fn number<S: Serializer>(n: &Num, serializer: S) -> Result<S::Ok, S::Error> {
    match n {
        Num::Int(i) => serializer.serialize_i64(*i as i64),
        Num::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
        Num::Float(f) => Err(S::Error::custom(format!("{f} has no JSON form"))),
        // Big integers and decimals keep their digits.
        other => RawValue::from_string(other.to_string())
            .map_err(S::Error::custom)?
            .serialize(serializer),
    }
}
