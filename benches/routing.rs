//! Route-matching throughput against a 10,000-route table (`cargo bench --bench routing`).
//!
//! The table is compiled from generated YAML through the same loader the daemon uses. It
//! mixes the route kinds a real table has, in rotation:
//!
//! - exact event types (`Org17.Item.Created`, sometimes two types per route);
//! - wildcard type prefixes (`Org18.Item.*`, `Org19.*`);
//! - exact types plus a subject filter (`begins_with` / `ends_with`);
//! - a type prefix plus Event Grid advanced filters on `data.*` keys and on an attribute;
//! - source-only routes (`/org/23/*`), filed under the source index;
//! - a few catch-all routes with an advanced filter, which every event is checked against.
//!
//! Each benchmark matches one representative event (about 1 KiB, as ingress would see it)
//! with `RouteTable::targets` and reports events per second (one element per iteration).
//! `mixed` cycles through all of them. `bench/run.sh` reads the `bencher` output format.
//!
//! Three tables are measured. In group `routing` the catch-all routes filter on an attribute
//! (`subject`); in group `routing_data` they filter on a `data.*` key, so every event's
//! JSON data is parsed once: the price of one such route in a table. In group `routing_sql`
//! every third route of the `routing` table filters with a CESQL expression instead (`sql`,
//! [`sql_route`]): pinning the type with `=`, `LIKE '…%'` or `IN`, or beside `match.types`;
//! its events carry the extension attributes the expressions read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard::cesql::Expr;
use switchyard::event::{http::decode_structured, Event};
use switchyard::routing::{RouteTable, Target};

/// Routes in the table.
const ROUTES: usize = 10_000;

/// One route in this many has no type and no source: a catch-all with an advanced filter.
const CATCH_ALL_EVERY: usize = 2_500;

/// The table's flavour: what the catch-all routes test, and whether a third use `sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Subject,
    Data,
    Sql,
}

/// Whether route `i` is a catch-all.
fn is_catch_all(i: usize) -> bool {
    i % CATCH_ALL_EVERY == CATCH_ALL_EVERY - 1
}

/// In the `Sql` table, the routes with `i % 3 == 2` use `sql`, in four kinds by `(i / 3) % 4`.
fn is_sql(table: Table, i: usize) -> bool {
    table == Table::Sql && i % 3 == 2 && !is_catch_all(i)
}

/// The `match` body and `sql` of CESQL route `i`.
fn sql_route(i: usize) -> (String, String) {
    match (i / 3) % 4 {
        0 => (
            String::new(),
            format!("type = 'Org{i}.Item.Created' AND subject LIKE '/orders/%'"),
        ),
        1 => (
            String::new(),
            format!("type LIKE 'Org{i}.%' AND region IN ('eu', 'us')"),
        ),
        2 => (
            String::new(),
            format!("type IN ('Org{i}.Item.Created', 'Org{i}.Item.Updated') AND INT(priority) > 1"),
        ),
        _ => (
            format!("types: [\"Org{i}.*\"]"),
            "region = 'eu' AND (EXISTS tenant OR subject <> '')".to_owned(),
        ),
    }
}

fn table_yaml(table: Table) -> String {
    let mut yaml =
        String::from("listen: 127.0.0.1:0\nsinks:\n  a: { log: {} }\n  b: { log: {} }\nroutes:\n");
    for i in 0..ROUTES {
        let sink = if i % 2 == 0 { "a" } else { "b" };
        if is_sql(table, i) {
            let (body, sql) = sql_route(i);
            writeln!(
                yaml,
                "  - {{ name: r{i}, match: {{ {body} }}, sql: \"{sql}\", to: [{sink}] }}"
            )
            .expect("writing to a String cannot fail");
            continue;
        }
        let body = if is_catch_all(i) {
            if table == Table::Data {
                "advanced: [{ key: data.priority, op: NumberGreaterThan, value: 1000 }]"
            } else {
                "advanced: [{ key: subject, op: StringBeginsWith, values: [/audit/] }]"
            }
            .to_owned()
        } else {
            match i % 6 {
                0 => format!("types: [\"Org{i}.Item.Created\", \"Org{i}.Item.Deleted\"]"),
                1 => format!("types: [\"Org{i}.Item.*\"]"),
                2 => format!(
                    "types: [\"Org{i}.Item.Created\"], \
                     subject: {{ begins_with: \"/tenants/{i}/\", ends_with: \".json\" }}"
                ),
                3 => format!(
                    "types: [\"Org{i}.*\"], advanced: [\
                     {{ key: data.total, op: NumberGreaterThan, value: {i} }}, \
                     {{ key: data.region, op: StringIn, values: [eu, us] }}, \
                     {{ key: subject, op: StringBeginsWith, values: [/orders/] }}]"
                ),
                4 => format!("types: [\"Org{i}.Item.Created\"], source: \"/org/{i}/*\""),
                _ => format!("source: [\"/org/{i}/*\", \"/legacy/{i}\"]"),
            }
        };
        writeln!(
            yaml,
            "  - {{ name: r{i}, match: {{ {body} }}, to: [{sink}] }}"
        )
        .expect("writing to a String cannot fail");
    }
    yaml
}

/// A structured CloudEvent of about 1 KiB with the given attributes.
fn event(ty: &str, source: &str, subject: &str) -> Event {
    event_with(ty, source, subject, "")
}

/// A structured CloudEvent of about 1 KiB with the given attributes and extensions (JSON
/// members, each followed by a comma).
fn event_with(ty: &str, source: &str, subject: &str, extensions: &str) -> Event {
    let padding = "x".repeat(760);
    let json = format!(
        r#"{{"specversion":"1.0","id":"5f1c8a2e-1","source":"{source}","type":"{ty}",{extensions}
        "subject":"{subject}","time":"2026-11-02T10:00:00Z",
        "datacontenttype":"application/json",
        "data":{{"total":4200,"region":"eu","priority":3,"customer":"c-981","note":"{padding}"}}}}"#
    );
    decode_structured(json.as_bytes()).expect("the benchmark events are valid CloudEvents")
}

fn events() -> Vec<(&'static str, Event)> {
    vec![
        // One exact-type route matches.
        ("exact", event("Org600.Item.Created", "/shop", "/orders/1")),
        // One wildcard-prefix route matches.
        ("prefix", event("Org601.Item.Updated", "/shop", "/orders/1")),
        // Type and subject filter match.
        (
            "subject",
            event("Org602.Item.Created", "/shop", "/tenants/602/a.json"),
        ),
        // Type prefix matches; advanced filters parse `data` and hold.
        (
            "advanced",
            event("Org603.Item.Created", "/shop", "/orders/7"),
        ),
        // Filed by source.
        ("source", event("Other.Thing", "/org/605/eu", "/orders/1")),
        // Nothing but the catch-all routes are candidates; nothing matches.
        ("miss", event("Unknown.Type", "/nowhere", "/x")),
    ]
}

/// The events of the `Sql` table: those of the others, with extensions, and one per CESQL
/// route kind, each matching one such route.
fn sql_events() -> Vec<(&'static str, Event)> {
    const EXTENSIONS: &str = r#""region":"eu","priority":"3","#;
    let route = |kind: usize| {
        (700..)
            .find(|&i| is_sql(Table::Sql, i) && (i / 3) % 4 == kind)
            .expect("every kind occurs")
    };
    let mut events: Vec<_> = events()
        .into_iter()
        .map(|(name, e)| {
            let subject = e.subject.as_deref().unwrap_or("");
            (name, event_with(&e.ty, &e.source, subject, EXTENSIONS))
        })
        .collect();
    let sql = [
        ("sql_eq", "Item.Created"),
        ("sql_like", "Item.Updated"),
        ("sql_in", "Item.Updated"),
        ("sql_types", "Item.Created"),
    ];
    for (kind, (name, suffix)) in sql.into_iter().enumerate() {
        let ty = format!("Org{}.{suffix}", route(kind));
        events.push((name, event_with(&ty, "/shop", "/orders/1", EXTENSIONS)));
    }
    events
}

/// What one CESQL filter costs on its own: parsing (once per configuration) and evaluating
/// against an event (once per candidate route and event).
fn cesql(c: &mut Criterion) {
    const SQL: &str = "type LIKE 'Contoso.Orders.%' AND subject <> '' AND EXISTS priority \
                       AND INT(retries) < 3 AND region IN ('eu', 'uk')";
    let event = event_with(
        "Contoso.Orders.Created",
        "/shop",
        "/orders/1",
        r#""priority":"high","retries":"1","region":"eu","#,
    );
    let expr = Expr::parse(SQL).expect("valid CESQL");
    assert_eq!(expr.filter(&event), Ok(true));
    let mut group = c.benchmark_group("cesql");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| b.iter(|| Expr::parse(black_box(SQL)).is_ok()));
    group.bench_function("evaluate", |b| {
        b.iter(|| expr.filter(black_box(&event)).is_ok_and(|m| m));
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    cesql(c);
    measure(c, "routing", Table::Subject);
    measure(c, "routing_data", Table::Data);
    measure(c, "routing_sql", Table::Sql);
}

fn measure(c: &mut Criterion, group_name: &str, flavour: Table) {
    let yaml = table_yaml(flavour);
    let config = switchyard::config::load_str(&yaml, Path::new("bench.yaml"), &BTreeMap::new())
        .expect("the generated table is a valid configuration");
    let table = RouteTable::from_config(&config);
    assert_eq!(table.len(), ROUTES);
    let events = match flavour {
        Table::Sql => sql_events(),
        Table::Subject | Table::Data => events(),
    };
    if flavour == Table::Sql {
        let sql_routes = (0..ROUTES).filter(|&i| is_sql(flavour, i)).count();
        assert!(
            sql_routes >= ROUTES / 3 - 1,
            "a third of the routes use sql"
        );
        for (name, event) in &events {
            let mut out = Vec::new();
            table.targets(event, &mut out);
            assert!(
                !name.starts_with("sql_") || !out.is_empty(),
                "event {name} matches its CESQL route"
            );
        }
    }

    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    let mut out: Vec<Target> = Vec::with_capacity(16);
    for (name, event) in &events {
        group.bench_function(*name, |b| {
            b.iter(|| {
                out.clear();
                table.targets(black_box(event), &mut out);
                black_box(out.len())
            });
        });
    }
    let mut next = 0;
    group.bench_function("mixed", |b| {
        b.iter(|| {
            let (_, event) = &events[next % events.len()];
            next += 1;
            out.clear();
            table.targets(black_box(event), &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
