//! Routing tests: simple filters and table order here; operators, explanations and the index
//! cross-check in the sibling files.

mod explain;
mod index_check;
mod keys;
mod operators;
mod sql;

use bytes::Bytes;

use crate::config::{
    AdvancedFilter, Condition, DeliveryOrder, MatchConfig, Priority, RouteConfig, SubjectFilter,
};
use crate::event::{Event, ExtensionValue};

use super::filter::CompiledRoute;
use super::key::LazyData;
use super::{RouteTable, Target};

/// A minimal event of the given type from `/src`, without subject or data.
fn event(ty: &str) -> Event {
    Event {
        specversion: "1.0".to_owned(),
        id: "id-1".to_owned(),
        source: "/src".to_owned(),
        ty: ty.to_owned(),
        datacontenttype: None,
        dataschema: None,
        subject: None,
        time: None,
        extensions: Vec::new(),
        data_version: None,
        data: None,
    }
}

/// The event with `data` set to these bytes.
fn with_data(mut e: Event, data: &str) -> Event {
    e.data = Some(Bytes::from(data.to_owned()));
    e
}

/// The event with a subject.
fn with_subject(mut e: Event, subject: &str) -> Event {
    e.subject = Some(subject.to_owned());
    e
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn route(name: &str, to: &[&str], filter: MatchConfig) -> RouteConfig {
    RouteConfig {
        name: name.to_owned(),
        filter,
        sql: None,
        to: strings(to),
        priority: Priority::default(),
        ordering: DeliveryOrder::default(),
        transform: None,
    }
}

fn types(list: &[&str]) -> MatchConfig {
    MatchConfig {
        types: strings(list),
        ..MatchConfig::default()
    }
}

fn adv(key: &str, condition: Condition) -> AdvancedFilter {
    AdvancedFilter {
        key: key.to_owned(),
        condition,
    }
}

fn advanced(filters: Vec<AdvancedFilter>) -> MatchConfig {
    MatchConfig {
        advanced: filters,
        ..MatchConfig::default()
    }
}

/// True when a route with this filter matches the event.
fn matches(filter: MatchConfig, e: &Event) -> bool {
    let compiled = CompiledRoute::compile(&route("r", &["s"], filter));
    compiled.check(e, &LazyData::new(e)).is_ok()
}

fn pairs(targets: &[Target]) -> Vec<(String, String)> {
    targets
        .iter()
        .map(|t| (t.route.to_string(), t.sink.to_string()))
        .collect()
}

fn targets_of(table: &RouteTable, e: &Event) -> Vec<(String, String)> {
    let mut out = Vec::new();
    table.targets(e, &mut out);
    pairs(&out)
}

#[test]
fn exact_types_ignore_case() {
    let f = || types(&["Contoso.Orders.Created", "Contoso.Users.Deleted"]);
    assert!(matches(f(), &event("Contoso.Orders.Created")));
    assert!(matches(f(), &event("contoso.ORDERS.created")));
    assert!(matches(f(), &event("Contoso.Users.Deleted")));
    assert!(!matches(f(), &event("Contoso.Orders.Created2")));
    assert!(!matches(f(), &event("Contoso.Orders")));
}

#[test]
fn wildcard_types() {
    let f = || types(&["Contoso.Orders.*"]);
    assert!(matches(f(), &event("Contoso.Orders.Created")));
    assert!(matches(f(), &event("CONTOSO.orders.x.y")));
    assert!(matches(f(), &event("Contoso.Orders.")));
    assert!(!matches(f(), &event("Contoso.Orders")));
    assert!(!matches(f(), &event("Contoso.Users.Created")));
    assert!(matches(types(&["*"]), &event("anything")));
    assert!(matches(types(&[]), &event("anything")));
    assert!(matches(types(&["A.B", "*"]), &event("other")));
}

#[test]
fn non_ascii_types_ignore_case() {
    assert!(matches(types(&["CAFÉ.*"]), &event("café.Ordered")));
    assert!(!matches(types(&["Straße.Ä"]), &event("STRASSE.ä")));
    assert!(matches(types(&["Straße.Ä"]), &event("straße.ä")));
}

#[test]
fn sources_follow_the_type_rules() {
    let f = || MatchConfig {
        sources: strings(&["/Orders/*", "/users"]),
        ..MatchConfig::default()
    };
    let mut e = event("t");
    for (source, expected) in [
        ("/orders/eu", true),
        ("/ORDERS/", true),
        ("/users", true),
        ("/Users", true),
        ("/users/1", false),
        ("/src", false),
    ] {
        e.source = source.to_owned();
        assert_eq!(matches(f(), &e), expected, "source {source}");
    }
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
fn subject_begins_and_ends_with() {
    let cases = [
        (Some("/orders/"), None, false, "/Orders/1", true),
        (Some("/orders/"), None, true, "/Orders/1", false),
        (Some("/orders/"), None, true, "/orders/1", true),
        (None, Some(".JPG"), false, "/a/b.jpg", true),
        (None, Some(".JPG"), true, "/a/b.jpg", false),
        (None, Some(".jpg"), true, "/a/b.jpg", true),
        (Some("/a/"), Some(".jpg"), false, "/A/b.JPG", true),
        (Some("/a/"), Some(".jpg"), false, "/b/b.jpg", false),
        (Some("/a/"), Some(".jpg"), false, "/a/b.png", false),
        (Some(""), Some(""), true, "whatever", true),
        (Some("/ÄB/"), None, false, "/äb/1", true),
    ];
    for (begins, ends, cs, subj, expected) in cases {
        let e = with_subject(event("t"), subj);
        let got = matches(subject(begins, ends, cs), &e);
        assert_eq!(got, expected, "{begins:?} {ends:?} cs={cs} on {subj}");
    }
}

#[test]
fn missing_subject_fails_a_non_empty_subject_filter() {
    let e = event("t");
    assert!(!matches(subject(Some("/a"), None, false), &e));
    assert!(!matches(subject(None, Some("x"), true), &e));
    assert!(matches(subject(Some(""), None, false), &e));
    assert!(matches(subject(None, None, false), &e));
}

#[test]
fn every_part_must_hold() {
    let f = || MatchConfig {
        types: strings(&["Contoso.*"]),
        sources: strings(&["/src"]),
        subject: Some(SubjectFilter {
            begins_with: Some("/orders/".to_owned()),
            ..SubjectFilter::default()
        }),
        advanced: vec![adv("data.total", Condition::NumberGreaterThan(100.0))],
    };
    let good = with_data(
        with_subject(event("Contoso.X"), "/orders/1"),
        r#"{"total":150}"#,
    );
    assert!(matches(f(), &good));
    let mut bad_source = good.clone();
    bad_source.source = "/other".to_owned();
    assert!(!matches(f(), &bad_source));
    assert!(!matches(f(), &with_data(good.clone(), r#"{"total":50}"#)));
    assert!(!matches(f(), &with_subject(good.clone(), "/users/1")));
    let mut bad_type = good;
    bad_type.ty = "Fabrikam.X".to_owned();
    assert!(!matches(f(), &bad_type));
}

#[test]
fn routes_fan_out_in_table_order() {
    let table = RouteTable::from_routes(&[
        route("all", &["audit", "console"], MatchConfig::default()),
        route(
            "orders",
            &["orders-api", "audit"],
            types(&["Contoso.Orders.*"]),
        ),
        route("users", &["users-api"], types(&["Contoso.Users.*"])),
        route("created", &["notify"], types(&["Contoso.Orders.Created"])),
        route(
            "by-source",
            &["src"],
            MatchConfig {
                sources: strings(&["/src"]),
                ..MatchConfig::default()
            },
        ),
    ]);
    assert_eq!(table.len(), 5);
    assert!(!table.is_empty());
    let got = targets_of(&table, &event("contoso.orders.created"));
    let want = [
        ("all", "audit"),
        ("all", "console"),
        ("orders", "orders-api"),
        ("orders", "audit"),
        ("created", "notify"),
        ("by-source", "src"),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(r, s)| ((*r).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn targets_appends_to_what_is_there() {
    let table = RouteTable::from_routes(&[route("a", &["x"], MatchConfig::default())]);
    let mut out = Vec::new();
    let e = event("t");
    table.targets(&e, &mut out);
    table.targets(&e, &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn empty_table_matches_nothing() {
    let table = RouteTable::from_routes(&[]);
    assert!(table.is_empty());
    assert!(targets_of(&table, &event("t")).is_empty());
    assert!(table.explain(&event("t")).routes.is_empty());
}

#[test]
fn invalid_json_data_still_matches_routes_without_data_filters() {
    let table = RouteTable::from_routes(&[
        route("plain", &["a"], types(&["T"])),
        route(
            "needs-data",
            &["b"],
            advanced(vec![adv("data.x", Condition::IsNotNull)]),
        ),
        route(
            "subject-key",
            &["c"],
            advanced(vec![adv("type", Condition::IsNotNull)]),
        ),
    ]);
    let e = with_data(event("T"), "{not json");
    let got = targets_of(&table, &e);
    assert_eq!(
        got,
        [
            ("plain".to_owned(), "a".to_owned()),
            ("subject-key".to_owned(), "c".to_owned())
        ]
    );
}

#[test]
fn data_is_parsed_only_when_a_data_key_is_evaluated() {
    let e = with_data(event("T"), r#"{"x":1}"#);
    let data = LazyData::new(&e);
    let no_data = CompiledRoute::compile(&route(
        "r",
        &["s"],
        MatchConfig {
            types: strings(&["T"]),
            advanced: vec![adv("subject", Condition::IsNullOrUndefined)],
            ..MatchConfig::default()
        },
    ));
    assert!(no_data.check(&e, &data).is_ok());
    assert!(!data.was_parsed());
    // A data filter behind a failing type check is never evaluated.
    let wrong_type = CompiledRoute::compile(&route(
        "r",
        &["s"],
        MatchConfig {
            types: strings(&["U"]),
            advanced: vec![adv("data.x", Condition::IsNotNull)],
            ..MatchConfig::default()
        },
    ));
    assert!(wrong_type.check(&e, &data).is_err());
    assert!(!data.was_parsed());
    let with_key = CompiledRoute::compile(&route(
        "r",
        &["s"],
        advanced(vec![adv("data.x", Condition::NumberIn(vec![1.0]))]),
    ));
    assert!(with_key.check(&e, &data).is_ok());
    assert!(data.was_parsed());
}

#[test]
fn non_json_content_type_makes_data_keys_missing() {
    let mut e = with_data(event("T"), r#"{"x":1}"#);
    e.datacontenttype = Some("text/plain".to_owned());
    let f = || advanced(vec![adv("data.x", Condition::IsNullOrUndefined)]);
    assert!(matches(f(), &e));
    e.datacontenttype = Some("application/cloudevents+json; charset=utf-8".to_owned());
    assert!(!matches(f(), &e));
}

#[test]
fn extension_values_keep_their_type() {
    let mut e = event("T");
    e.set_extension("comexampleothervalue", ExtensionValue::Integer(5));
    e.set_extension("flag", ExtensionValue::Bool(true));
    e.set_extension("region", ExtensionValue::String("West-EU".to_owned()));
    let one = |key: &str, c: Condition| matches(advanced(vec![adv(key, c)]), &e);
    assert!(one(
        "comexampleothervalue",
        Condition::NumberGreaterThan(4.0)
    ));
    assert!(one(
        "comexampleothervalue",
        Condition::StringBeginsWith(strings(&["5", "1"]))
    ));
    assert!(one(
        "ComExampleOtherValue",
        Condition::StringIn(strings(&["5"]))
    ));
    assert!(one("flag", Condition::BoolEquals(true)));
    assert!(!one("flag", Condition::StringIn(strings(&["true"]))));
    assert!(one("region", Condition::StringIn(strings(&["west-eu"]))));
    assert!(!one("region", Condition::NumberIn(vec![1.0])));
    assert!(one("region", Condition::NumberNotIn(vec![1.0])));
    assert!(one("absent", Condition::IsNullOrUndefined));
}
