//! CESQL filters in the route table: AND with `match`, the type index, errors and
//! explanations.

use crate::cesql::{ErrorKind, Expr};
use crate::config::{MatchConfig, RouteConfig};
use crate::event::ExtensionValue;
use crate::routing::{RouteTable, SqlError};

use super::{event, route, targets_of, types, with_subject};

fn sql_route(name: &str, filter: MatchConfig, sql: &str) -> RouteConfig {
    RouteConfig {
        sql: Some(Expr::parse(sql).expect("valid CESQL")),
        ..route(name, &["s"], filter)
    }
}

fn names(table: &RouteTable, e: &crate::event::Event) -> Vec<String> {
    targets_of(table, e).into_iter().map(|(r, _)| r).collect()
}

#[test]
fn sql_is_anded_with_match() {
    let table = RouteTable::from_routes(&[
        sql_route("both", types(&["Contoso.*"]), "subject LIKE '/orders/%'"),
        sql_route(
            "sql-only",
            MatchConfig::default(),
            "EXISTS priority AND priority = 'high'",
        ),
    ]);
    let mut e = with_subject(event("Contoso.Orders.Created"), "/orders/1");
    assert_eq!(names(&table, &e), ["both"]);
    e.set_extension("priority", ExtensionValue::String("high".into()));
    assert_eq!(names(&table, &e), ["both", "sql-only"]);
    e.ty = "Fabrikam.Created".into();
    assert_eq!(names(&table, &e), ["sql-only"]);
}

#[test]
fn pinned_types_go_through_the_index_and_still_match_exactly() {
    let table = RouteTable::from_routes(&[
        sql_route(
            "exact",
            MatchConfig::default(),
            "type = 'A.Created' AND myint > 1",
        ),
        sql_route(
            "in",
            MatchConfig::default(),
            "type IN ('A.Created', 'B.Created')",
        ),
        sql_route("prefix", MatchConfig::default(), "type LIKE 'A.%'"),
        sql_route(
            "open",
            MatchConfig::default(),
            "type = 'A.Created' OR type = 'C'",
        ),
    ]);
    for (i, pinned) in [true, true, true, false].into_iter().enumerate() {
        assert_eq!(table.routes[i].sql_types.is_some(), pinned, "route {i}");
    }
    let mut e = event("A.Created");
    e.set_extension("myint", ExtensionValue::Integer(2));
    assert_eq!(names(&table, &e), ["exact", "in", "prefix", "open"]);
    // The index folds case; CESQL's `=` does not.
    assert_eq!(names(&table, &event("a.created")), Vec::<String>::new());
    assert_eq!(names(&table, &event("B.Created")), ["in"]);
    assert_eq!(names(&table, &event("C")), ["open"]);
}

#[test]
fn evaluation_errors_do_not_match_and_are_reported() {
    let table = RouteTable::from_routes(&[
        sql_route("missing", MatchConfig::default(), "priority = 'high'"),
        sql_route("cast", MatchConfig::default(), "INT(myext) > 1"),
        sql_route("fine", MatchConfig::default(), "NOT EXISTS priority"),
    ]);
    let mut e = event("t");
    e.set_extension("myext", ExtensionValue::String("ten".into()));
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    table.targets_reporting(&e, &mut out, &mut errors);
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].route, "fine");
    let kinds: Vec<(&str, ErrorKind, usize)> = errors
        .iter()
        .map(|e: &SqlError| (&*e.route, e.kind, e.column))
        .collect();
    assert_eq!(
        kinds,
        [
            ("missing", ErrorKind::MissingAttribute, 1),
            ("cast", ErrorKind::Cast, 1)
        ]
    );
}

#[test]
fn explain_shows_the_value_and_the_error_of_every_sql_route() {
    let table = RouteTable::from_routes(&[
        sql_route("typed", types(&["Other"]), "subject <> ''"),
        sql_route("err", MatchConfig::default(), "priority = 'high'"),
        route("plain", &["s"], MatchConfig::default()),
    ]);
    let e = with_subject(event("t"), "/a");
    let text = table.explain(&e).to_string();
    assert_eq!(
        text,
        "typed: no match: type \"t\" is not in [Other]\n  sql `subject <> ''` = true\n\
         err: no match: sql raised an error (its value does not count)\n  \
         sql `priority = 'high'` = false (error: missing attribute error at column 1 \
         (`priority`): the event has no such attribute)\n\
         plain: match -> s\n"
    );
}
