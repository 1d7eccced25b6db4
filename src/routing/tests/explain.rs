//! Explanations: the first failed condition of each route, in words.

use crate::config::{Condition as C, MatchConfig, SubjectFilter};

use super::{adv, advanced, event, route, strings, types, with_data, with_subject};
use crate::routing::RouteTable;

/// The failure message of a single route with this filter for the event.
fn why(filter: MatchConfig, e: &crate::event::Event) -> Option<String> {
    let table = RouteTable::from_routes(&[route("r", &["s"], filter)]);
    table
        .explain(e)
        .routes
        .into_iter()
        .next()
        .and_then(|v| v.failed)
}

fn subject(begins: Option<&str>, ends: Option<&str>, case_sensitive: bool) -> MatchConfig {
    MatchConfig {
        subject: Some(SubjectFilter {
            begins_with: begins.map(str::to_owned),
            ends_with: ends.map(str::to_owned),
            case_sensitive,
        }),
        ..MatchConfig::default()
    }
}

#[test]
fn type_and_source_failures() {
    let e = event("Contoso.Users.Created");
    assert_eq!(
        why(types(&["Contoso.Orders.*"]), &e).as_deref(),
        Some(r#"type "Contoso.Users.Created" is not in [Contoso.Orders.*]"#)
    );
    let sources = MatchConfig {
        sources: strings(&["/orders", "/users/*"]),
        ..MatchConfig::default()
    };
    assert_eq!(
        why(sources, &e).as_deref(),
        Some(r#"source "/src" is not in [/orders, /users/*]"#)
    );
}

#[test]
fn subject_failures() {
    let e = with_subject(event("T"), "/users/1");
    assert_eq!(
        why(subject(Some("/orders/"), None, false), &e).as_deref(),
        Some(r#"subject "/users/1" does not begin with "/orders/""#)
    );
    assert_eq!(
        why(subject(Some("/Users/"), None, true), &e).as_deref(),
        Some(r#"subject "/users/1" does not begin with "/Users/" (case-sensitive)"#)
    );
    assert_eq!(
        why(subject(Some("/users/"), Some(".jpg"), false), &e).as_deref(),
        Some(r#"subject "/users/1" does not end with ".jpg""#)
    );
    assert_eq!(
        why(subject(Some("/orders/"), Some(".jpg"), false), &event("T")).as_deref(),
        Some(r#"subject is missing (begins with "/orders/", ends with ".jpg")"#)
    );
}

#[test]
fn advanced_failures() {
    let total = |doc: &str| with_data(event("T"), doc);
    let gt = || adv("data.total", C::NumberGreaterThan(100.0));
    let cases = [
        (
            "{}",
            "advanced[0]: data.total is missing (NumberGreaterThan 100)",
        ),
        (
            r#"{"total":null}"#,
            "advanced[0]: data.total is null (NumberGreaterThan 100)",
        ),
        (
            r#"{"total":50}"#,
            "advanced[0]: data.total = 50 fails NumberGreaterThan 100",
        ),
        (
            r#"{"total":"abc"}"#,
            r#"advanced[0]: data.total = "abc" is not a number (NumberGreaterThan 100)"#,
        ),
        (
            r#"{"total":["a"]}"#,
            r#"advanced[0]: data.total = ["a"] has no number element (NumberGreaterThan 100)"#,
        ),
        (
            r#"{"total":[{"a":1}]}"#,
            r#"advanced[0]: data.total = [{"a":1}] is not filterable (NumberGreaterThan 100)"#,
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(
            why(advanced(vec![gt()]), &total(doc)).as_deref(),
            Some(want),
            "{doc}"
        );
    }
    let second = advanced(vec![adv("type", C::IsNotNull), gt()]);
    assert_eq!(
        why(second, &total(r#"{"total":50}"#)).as_deref(),
        Some("advanced[1]: data.total = 50 fails NumberGreaterThan 100")
    );
}

#[test]
fn operand_lists_are_shown() {
    let e = with_data(
        event("T"),
        r#"{"c":"Green","n":7,"long":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
    );
    let one = |key: &str, c: C| why(advanced(vec![adv(key, c)]), &e);
    assert_eq!(
        one("data.c", C::StringIn(strings(&["Red", "blue"]))).as_deref(),
        Some(r#"advanced[0]: data.c = "Green" fails StringIn ["Red", "blue"]"#)
    );
    assert_eq!(
        one("data.n", C::NumberInRange(vec![(1.0, 5.0), (10.0, 20.5)])).as_deref(),
        Some("advanced[0]: data.n = 7 fails NumberInRange [[1, 5], [10, 20.5]]")
    );
    assert_eq!(
        one("data.n", C::NumberNotIn(vec![7.0, 8.0])).as_deref(),
        Some("advanced[0]: data.n = 7 fails NumberNotIn [7, 8]")
    );
    assert_eq!(
        one("data.n", C::IsNullOrUndefined).as_deref(),
        Some("advanced[0]: data.n = 7 fails IsNullOrUndefined")
    );
    assert_eq!(
        one("data.none", C::IsNotNull).as_deref(),
        Some("advanced[0]: data.none is missing (IsNotNull)")
    );
    assert_eq!(
        one("data.c", C::BoolEquals(true)).as_deref(),
        Some(r#"advanced[0]: data.c = "Green" is not a boolean (BoolEquals true)"#)
    );
    let long = one("data.long", C::StringIn(strings(&["y"]))).unwrap_or_default();
    assert!(long.contains('…') && long.len() < 140, "{long}");
}

#[test]
fn explanation_lists_every_route_in_order() {
    let table = RouteTable::from_routes(&[
        route(
            "orders",
            &["orders-api", "audit"],
            types(&["Contoso.Orders.*"]),
        ),
        route("users", &["users-api"], types(&["Contoso.Users.*"])),
        route("all", &["console"], MatchConfig::default()),
    ]);
    let explanation = table.explain(&event("Contoso.Orders.Created"));
    let names: Vec<_> = explanation
        .routes
        .iter()
        .map(|v| v.route.as_str())
        .collect();
    assert_eq!(names, ["orders", "users", "all"]);
    assert_eq!(explanation.routes[0].failed, None);
    assert_eq!(explanation.routes[0].sinks, ["orders-api", "audit"]);
    assert!(explanation.routes[1].sinks.is_empty());
    assert_eq!(
        explanation.to_string(),
        "orders: match -> orders-api, audit\n\
         users: no match: type \"Contoso.Orders.Created\" is not in [Contoso.Users.*]\n\
         all: match -> console\n"
    );
}
