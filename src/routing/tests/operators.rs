//! One table per advanced operator: a match, a miss, a missing key, `null`, arrays with any
//! and no element matching, and values of the wrong type.

use crate::config::Condition;
use crate::config::Condition as C;

use super::{adv, advanced, event, matches, strings, with_data};

/// The key every case filters on.
const KEY: &str = "data.v";

/// Checks `condition` on `data.v` for each `(data document, expected)` pair.
fn table(condition: &Condition, cases: &[(&str, bool)]) {
    for (doc, expected) in cases {
        let e = with_data(event("T"), doc);
        let got = matches(advanced(vec![adv(KEY, condition.clone())]), &e);
        assert_eq!(got, *expected, "{condition:?} on {doc}");
    }
}

const MISSING: &str = "{}";
const NULL: &str = r#"{"v":null}"#;
const OBJECTS: &str = r#"{"v":[{"v":5}]}"#;

#[test]
fn number_in() {
    table(
        &C::NumberIn(vec![5.0, 7.0]),
        &[
            (r#"{"v":5}"#, true),
            (r#"{"v":5.0}"#, true),
            (r#"{"v":6}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[1,7]}"#, true),
            (r#"{"v":[1,2]}"#, false),
            (r#"{"v":["5",7]}"#, true),
            (r#"{"v":"5"}"#, false),
            (r#"{"v":["5"]}"#, false),
            (OBJECTS, false),
        ],
    );
}

#[test]
fn number_not_in() {
    table(
        &C::NumberNotIn(vec![5.0, 7.0]),
        &[
            (r#"{"v":6}"#, true),
            (r#"{"v":5}"#, false),
            (MISSING, true),
            (NULL, true),
            (r#"{"v":[1,7]}"#, false),
            (r#"{"v":[1,2]}"#, true),
            (r#"{"v":"5"}"#, true),
            (r#"{"v":["5"]}"#, true),
            (OBJECTS, true),
        ],
    );
}

#[test]
fn number_less_than() {
    table(
        &C::NumberLessThan(10.0),
        &[
            (r#"{"v":5}"#, true),
            (r#"{"v":10}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[20,3]}"#, true),
            (r#"{"v":[20,30]}"#, false),
            (r#"{"v":"5"}"#, false),
            (r#"{"v":true}"#, false),
        ],
    );
}

#[test]
fn number_greater_than() {
    table(
        &C::NumberGreaterThan(10.0),
        &[
            (r#"{"v":10.5}"#, true),
            (r#"{"v":10}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[1,11]}"#, true),
            (r#"{"v":[1,2]}"#, false),
            (r#"{"v":"50"}"#, false),
            (r#"{"v":{"a":50}}"#, false),
        ],
    );
}

#[test]
fn number_less_than_or_equals() {
    table(
        &C::NumberLessThanOrEquals(10.0),
        &[
            (r#"{"v":10}"#, true),
            (r#"{"v":10.5}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[99,10]}"#, true),
            (r#"{"v":[11]}"#, false),
            (r#"{"v":"1"}"#, false),
        ],
    );
}

#[test]
fn number_greater_than_or_equals() {
    table(
        &C::NumberGreaterThanOrEquals(10.0),
        &[
            (r#"{"v":10}"#, true),
            (r#"{"v":9.99}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[1,10]}"#, true),
            (r#"{"v":[1]}"#, false),
            (r#"{"v":"10"}"#, false),
        ],
    );
}

#[test]
fn number_in_range() {
    table(
        &C::NumberInRange(vec![(1.0, 5.0), (10.0, 20.0)]),
        &[
            (r#"{"v":5}"#, true),
            (r#"{"v":10}"#, true),
            (r#"{"v":7}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[7,15]}"#, true),
            (r#"{"v":[7,8]}"#, false),
            (r#"{"v":"3"}"#, false),
        ],
    );
}

#[test]
fn number_not_in_range() {
    // Missing counts as outside every range, as NumberNotIn does.
    table(
        &C::NumberNotInRange(vec![(1.0, 5.0), (10.0, 20.0)]),
        &[
            (r#"{"v":7}"#, true),
            (r#"{"v":1}"#, false),
            (MISSING, true),
            (NULL, true),
            (r#"{"v":[7,15]}"#, false),
            (r#"{"v":[7,8]}"#, true),
            (r#"{"v":"3"}"#, true),
        ],
    );
}

#[test]
fn bool_equals() {
    table(
        &C::BoolEquals(true),
        &[
            (r#"{"v":true}"#, true),
            (r#"{"v":false}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":[false,true]}"#, true),
            (r#"{"v":[false]}"#, false),
            (r#"{"v":"true"}"#, false),
            (r#"{"v":1}"#, false),
        ],
    );
    table(
        &C::BoolEquals(false),
        &[(r#"{"v":false}"#, true), (MISSING, false)],
    );
}

#[test]
fn string_in() {
    table(
        &C::StringIn(strings(&["Red", "blue"])),
        &[
            (r#"{"v":"red"}"#, true),
            (r#"{"v":"RED"}"#, true),
            (r#"{"v":"green"}"#, false),
            (r#"{"v":"redder"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["x","BLUE"]}"#, true),
            (r#"{"v":["x"]}"#, false),
            (r#"{"v":5}"#, false),
            (r#"{"v":[1,2]}"#, false),
            (OBJECTS, false),
        ],
    );
}

#[test]
fn string_not_in() {
    table(
        &C::StringNotIn(strings(&["Red", "blue"])),
        &[
            (r#"{"v":"green"}"#, true),
            (r#"{"v":"rED"}"#, false),
            (MISSING, true),
            (NULL, true),
            (r#"{"v":["x","Blue"]}"#, false),
            (r#"{"v":["x","y"]}"#, true),
            (r#"{"v":5}"#, true),
            (OBJECTS, true),
        ],
    );
}

#[test]
fn string_contains() {
    table(
        &C::StringContains(strings(&["ELL", "zz"])),
        &[
            (r#"{"v":"hello"}"#, true),
            (r#"{"v":"help"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["a","shell"]}"#, true),
            (r#"{"v":["a","b"]}"#, false),
            (r#"{"v":5}"#, false),
        ],
    );
}

#[test]
fn string_not_contains() {
    table(
        &C::StringNotContains(strings(&["ell"])),
        &[
            (r#"{"v":"help"}"#, true),
            (r#"{"v":"HELLO"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["a","shell"]}"#, false),
            (r#"{"v":["a","b"]}"#, true),
            (r#"{"v":5}"#, false),
        ],
    );
}

#[test]
fn string_begins_with() {
    table(
        &C::StringBeginsWith(strings(&["Ab"])),
        &[
            (r#"{"v":"ABc"}"#, true),
            (r#"{"v":"cab"}"#, false),
            (r#"{"v":"a"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["x","abz"]}"#, true),
            (r#"{"v":["x"]}"#, false),
            (r#"{"v":5}"#, false),
        ],
    );
}

#[test]
fn string_not_begins_with() {
    table(
        &C::StringNotBeginsWith(strings(&["ab"])),
        &[
            (r#"{"v":"cab"}"#, true),
            (r#"{"v":"Abc"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["x","ABZ"]}"#, false),
            (r#"{"v":["x","y"]}"#, true),
            (r#"{"v":5}"#, false),
        ],
    );
}

#[test]
fn string_ends_with() {
    table(
        &C::StringEndsWith(strings(&[".JPG", ".png"])),
        &[
            (r#"{"v":"a.jpg"}"#, true),
            (r#"{"v":"a.jpeg"}"#, false),
            (r#"{"v":"g"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["x","b.PNG"]}"#, true),
            (r#"{"v":["x"]}"#, false),
            (r#"{"v":5}"#, false),
        ],
    );
}

#[test]
fn string_not_ends_with() {
    table(
        &C::StringNotEndsWith(strings(&[".jpg"])),
        &[
            (r#"{"v":"a.png"}"#, true),
            (r#"{"v":"A.JPG"}"#, false),
            (MISSING, false),
            (NULL, false),
            (r#"{"v":["x","b.jpg"]}"#, false),
            (r#"{"v":["x","y"]}"#, true),
            (r#"{"v":5}"#, false),
        ],
    );
}

#[test]
fn is_null_or_undefined() {
    table(
        &C::IsNullOrUndefined,
        &[
            (MISSING, true),
            (NULL, true),
            (r#"{"v":0}"#, false),
            (r#"{"v":""}"#, false),
            (r#"{"v":[]}"#, false),
            (r#"{"v":[null]}"#, false),
            (r#"{"v":{"a":1}}"#, false),
            (OBJECTS, true),
            ("not json", true),
        ],
    );
}

#[test]
fn is_not_null() {
    table(
        &C::IsNotNull,
        &[
            (MISSING, false),
            (NULL, false),
            (r#"{"v":0}"#, true),
            (r#"{"v":false}"#, true),
            (r#"{"v":[]}"#, true),
            (r#"{"v":{"a":1}}"#, true),
            (OBJECTS, false),
            ("not json", false),
        ],
    );
}

#[test]
fn string_comparisons_ignore_case_beyond_ascii() {
    table(
        &C::StringIn(strings(&["ÄPFEL"])),
        &[(r#"{"v":"äpfel"}"#, true), (r#"{"v":"apfel"}"#, false)],
    );
    table(
        &C::StringContains(strings(&["É"])),
        &[(r#"{"v":"Café"}"#, true)],
    );
    table(
        &C::StringBeginsWith(strings(&["straße"])),
        &[(r#"{"v":"STRAßE 1"}"#, true)],
    );
    table(
        &C::StringEndsWith(strings(&["ÖL"])),
        &[(r#"{"v":"Heizöl"}"#, true)],
    );
}

#[test]
fn several_filters_are_anded() {
    let e = with_data(event("T"), r#"{"a":1,"b":"x"}"#);
    let both = |b: &str| {
        advanced(vec![
            adv("data.a", C::NumberIn(vec![1.0])),
            adv("data.b", C::StringIn(strings(&[b]))),
        ])
    };
    assert!(matches(both("X"), &e));
    assert!(!matches(both("y"), &e));
}
