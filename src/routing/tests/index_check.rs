//! The indexed matcher against a naive one written here from the rules, on generated routes
//! and events.

use fastrand::Rng;

use crate::cesql::Expr;
use crate::config::{Condition, MatchConfig, RouteConfig, SubjectFilter};
use crate::event::Event;
use crate::routing::RouteTable;

use super::{adv, event, route, targets_of, with_data, with_subject};

const WORDS: [&str; 4] = ["Contoso", "Orders", "Users", "Créé"];
const SOURCES: [&str; 4] = ["/a", "/a/b", "/B/c", "/d"];
/// Types written exactly in the CESQL filters and sent as they are (CESQL compares case).
const SQL_TYPES: [&str; 3] = ["Contoso.Orders", "Contoso.Users.Créé", "Orders"];

/// A random CESQL filter: pinning the type (`=`, `IN`, `LIKE 'prefix%'`) or not (`OR`);
/// a missing subject makes some raise an error.
fn gen_sql(rng: &mut Rng) -> Expr {
    let t = |rng: &mut Rng| SQL_TYPES[rng.usize(..SQL_TYPES.len())];
    let pin = match rng.u8(..4) {
        0 => format!("type = '{}'", t(rng)),
        1 => format!("type IN ('{}', '{}')", t(rng), t(rng)),
        2 => {
            let t = t(rng);
            let cut = t
                .char_indices()
                .nth(rng.usize(1..t.chars().count()))
                .map_or(0, |(i, _)| i);
            format!("type LIKE '{}%'", &t[..cut])
        }
        _ => format!("type = '{}' OR subject = '/y/1'", t(rng)),
    };
    let sql = match rng.u8(..3) {
        0 => format!("{pin} AND EXISTS subject"),
        1 => format!("source <> '/d' AND {pin}"),
        _ => pin,
    };
    Expr::parse(&sql).expect("generated CESQL parses")
}

/// A random type such as `Contoso.Orders` in random letter case.
fn ty(rng: &mut Rng) -> String {
    let n = rng.usize(1..=3);
    let parts: Vec<&str> = (0..n).map(|_| WORDS[rng.usize(..WORDS.len())]).collect();
    shuffle_case(rng, &parts.join("."))
}

fn shuffle_case(rng: &mut Rng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.bool() {
                c.to_uppercase().collect::<String>()
            } else {
                c.to_lowercase().collect()
            }
        })
        .collect()
}

/// A random pattern: exact, a cut-off prefix with `*`, or `*`.
fn pattern(rng: &mut Rng, value: String) -> String {
    match rng.u8(..10) {
        0 => "*".to_owned(),
        1..=4 => {
            let cut = value
                .char_indices()
                .nth(rng.usize(..=value.chars().count()))
                .map_or(value.len(), |(i, _)| i);
            format!("{}*", &value[..cut])
        }
        _ => value,
    }
}

/// A random route; `sql_rng` decides its CESQL filter, so that the other parts are drawn as
/// they were before routes had one.
fn gen_route(rng: &mut Rng, sql_rng: &mut Rng, i: usize) -> RouteConfig {
    let types = (0..rng.usize(0..=3))
        .map(|_| {
            let t = ty(rng);
            pattern(rng, t)
        })
        .collect();
    let sources = if rng.u8(..4) == 0 {
        (0..rng.usize(1..=2))
            .map(|_| {
                let s = SOURCES[rng.usize(..4)].to_owned();
                pattern(rng, s)
            })
            .collect()
    } else {
        Vec::new()
    };
    let subject = (rng.u8(..4) == 0).then(|| SubjectFilter {
        begins_with: rng.bool().then(|| shuffle_case(rng, "/x")),
        ends_with: rng.bool().then(|| shuffle_case(rng, "1")),
        case_sensitive: rng.bool(),
    });
    let advanced = if rng.u8(..4) == 0 {
        vec![adv(
            "data.n",
            Condition::NumberGreaterThan(f64::from(rng.u8(..10))),
        )]
    } else {
        Vec::new()
    };
    let filter = MatchConfig {
        types,
        sources,
        subject,
        advanced,
    };
    let name = format!("r{i}");
    let sinks: Vec<String> = (0..rng.usize(1..=2)).map(|k| format!("s{k}")).collect();
    let sinks: Vec<&str> = sinks.iter().map(String::as_str).collect();
    RouteConfig {
        sql: (sql_rng.u8(..3) == 0).then(|| gen_sql(sql_rng)),
        ..route(&name, &sinks, filter)
    }
}

fn gen_event(rng: &mut Rng, sql_rng: &mut Rng) -> Event {
    let mut e = event(&ty(rng));
    if sql_rng.u8(..3) == 0 {
        e.ty = SQL_TYPES[sql_rng.usize(..SQL_TYPES.len())].to_owned();
    }
    let source = SOURCES[rng.usize(..SOURCES.len())];
    e.source = shuffle_case(rng, source);
    if rng.bool() {
        let subject = ["/x/1", "/y/1", "/x/2"][rng.usize(..3)];
        e = with_subject(e, &shuffle_case(rng, subject));
    }
    match rng.u8(..3) {
        0 => with_data(e, &format!(r#"{{"n":{}}}"#, rng.u8(..10))),
        1 => with_data(e, "not json"),
        _ => e,
    }
}

/// The rules, written as directly as possible.
fn naive_list(patterns: &[String], value: &str) -> bool {
    let value = value.to_lowercase();
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => value.starts_with(&prefix.to_lowercase()),
            None => value == p.to_lowercase(),
        })
}

fn naive_matches(r: &RouteConfig, e: &Event) -> bool {
    let f = &r.filter;
    let subject_ok = f.subject.as_ref().is_none_or(|s| {
        let fold = |x: &str| {
            if s.case_sensitive {
                x.to_owned()
            } else {
                x.to_lowercase()
            }
        };
        let begins = s.begins_with.as_deref().unwrap_or("");
        let ends = s.ends_with.as_deref().unwrap_or("");
        match &e.subject {
            None => begins.is_empty() && ends.is_empty(),
            Some(subj) => {
                fold(subj).starts_with(&fold(begins)) && fold(subj).ends_with(&fold(ends))
            }
        }
    });
    let advanced_ok = f.advanced.iter().all(|a| {
        let Condition::NumberGreaterThan(limit) = a.condition else {
            return false;
        };
        let doc: Option<serde_json::Value> =
            e.data.as_ref().and_then(|d| serde_json::from_slice(d).ok());
        doc.and_then(|d| d.get("n").and_then(serde_json::Value::as_f64))
            .is_some_and(|n| n > limit)
    });
    // The evaluator itself is checked by the test kit; here it decides for the naive side.
    let sql_ok = r.sql.as_ref().is_none_or(|sql| sql.filter(e) == Ok(true));
    naive_list(&f.types, &e.ty)
        && naive_list(&f.sources, &e.source)
        && subject_ok
        && advanced_ok
        && sql_ok
}

fn naive_targets(routes: &[RouteConfig], e: &Event) -> Vec<(String, String)> {
    routes
        .iter()
        .filter(|r| naive_matches(r, e))
        .flat_map(|r| r.to.iter().map(|s| (r.name.clone(), s.clone())))
        .collect()
}

#[test]
fn indexed_matching_agrees_with_naive_matching() {
    let mut rng = Rng::with_seed(0x5eed);
    let mut sql_rng = Rng::with_seed(0xce59_1eed);
    let (mut matched, mut unmatched, mut by_sql) = (0, 0, 0);
    for round in 0..20 {
        let routes: Vec<RouteConfig> = (0..rng.usize(1..300))
            .map(|i| gen_route(&mut rng, &mut sql_rng, i))
            .collect();
        let table = RouteTable::from_routes(&routes);
        for _ in 0..200 {
            let e = gen_event(&mut rng, &mut sql_rng);
            let want = naive_targets(&routes, &e);
            if want.is_empty() {
                unmatched += 1;
            } else {
                matched += 1;
            }
            by_sql += want
                .iter()
                .filter(|(name, _)| routes.iter().any(|r| &r.name == name && r.sql.is_some()))
                .count();
            assert_eq!(targets_of(&table, &e), want, "round {round}, event {e:?}");
            let explained: Vec<_> = table
                .explain(&e)
                .routes
                .into_iter()
                .filter(|v| v.failed.is_none())
                .flat_map(|v| v.sinks.into_iter().map(move |s| (v.route.clone(), s)))
                .collect();
            assert_eq!(explained, want, "explain disagrees, round {round}");
        }
    }
    // The generator must exercise both outcomes.
    assert!(
        matched > 500 && unmatched > 20 && by_sql > 500,
        "{matched} matched, {unmatched} unmatched, {by_sql} deliveries by CESQL routes"
    );
}

#[test]
fn one_route_under_several_patterns_is_emitted_once() {
    let types = |t: &[&str]| MatchConfig {
        types: t.iter().map(|s| (*s).to_owned()).collect(),
        ..MatchConfig::default()
    };
    let routes = [
        route("both", &["s"], types(&["A.B", "a.*", "A.*", "a.b"])),
        route("catch", &["c"], MatchConfig::default()),
        route(
            "src",
            &["t"],
            MatchConfig {
                sources: vec!["/s*".to_owned(), "/SRC".to_owned()],
                ..MatchConfig::default()
            },
        ),
    ];
    let table = RouteTable::from_routes(&routes);
    let got = targets_of(&table, &event("a.b"));
    let names: Vec<_> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["both", "catch", "src"]);
}

#[test]
fn the_index_narrows_candidates() {
    let mut routes: Vec<RouteConfig> = (0..1000)
        .map(|i| {
            let filter = MatchConfig {
                types: vec![format!("Contoso.Type{i}")],
                ..MatchConfig::default()
            };
            route(&format!("r{i}"), &["s"], filter)
        })
        .collect();
    let prefix = MatchConfig {
        types: vec!["contoso.type99*".to_owned()],
        ..MatchConfig::default()
    };
    routes.push(route("prefix", &["p"], prefix));
    let table = RouteTable::from_routes(&routes);
    let mut candidates = Vec::new();
    table
        .index
        .candidates(&event("CONTOSO.TYPE990"), &mut candidates);
    assert_eq!(candidates, [990, 1000]);
    table
        .index
        .candidates(&event("Contoso.Type5"), &mut candidates);
    assert_eq!(candidates, [5]);
    table
        .index
        .candidates(&event("Fabrikam.Type5"), &mut candidates);
    assert!(candidates.is_empty());
}
