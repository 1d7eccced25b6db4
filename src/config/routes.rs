//! Reading `routes:`: names, `match` (types, sources, subject, advanced filters), `sql`,
//! `to`, `priority`, `ordering` and `transform`, each error with its YAML path.

use std::collections::{BTreeMap, BTreeSet};

use crate::cesql::{Expr, Type};

use super::env::{Node, Obj};
use super::model::{self, Operand, Reader};
use super::validate::{self, sink_ref};
use super::{
    AdvancedFilter, Condition, DeliveryOrder, MatchConfig, Priority, RouteConfig, SubjectFilter,
};

/// Reads the `routes:` list; `names` are the defined sinks.
pub(super) fn routes(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
    names: &[String],
) -> Option<Vec<RouteConfig>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    rd.each(node, |rd, n| route(rd, n, names, &mut seen))
}

fn route(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
    names: &[String],
    seen: &mut BTreeMap<String, String>,
) -> Option<RouteConfig> {
    let o = rd.object(node, &model::ROUTE)?;
    let name = rd.required(&o, "name", |rd, n| {
        let name = rd.text(n)?;
        match seen.get(&name) {
            Some(first) => rd.fail(
                &n.path,
                format!("duplicate route name `{name}` (first at {first})"),
            ),
            None => {
                seen.insert(name.clone(), n.path.clone());
                Some(name)
            }
        }
    });
    let filter = rd
        .section(&o, "match", &model::MATCH)
        .and_then(|o| filter(rd, &o));
    let to = rd.required(&o, "to", |rd, n| {
        let targets = rd.some(n, "needs at least one sink", |rd, n| sink_ref(rd, n, names))?;
        let unique: BTreeSet<&String> = targets.iter().collect();
        if unique.len() < targets.len() {
            return rd.fail(&n.path, "names a sink twice");
        }
        Some(targets)
    });
    let priority = rd.or(o.get("priority"), Priority::Normal, |rd, n| {
        let choices = Priority::ALL.map(|p| (p.name(), p));
        rd.choice(n, "priority", &choices)
    });
    let ordering = rd.or(o.get("ordering"), DeliveryOrder::Any, |rd, n| {
        rd.choice(n, "ordering", &[("subject", DeliveryOrder::Subject)])
    });
    let sql = rd.or(o.get("sql"), None, |rd, n| sql(rd, n).map(Some));
    let transform = rd.or(o.get("transform"), None, |rd, n| {
        validate::program(rd, n).map(Some)
    });
    Some(RouteConfig {
        name: name?,
        filter: filter?,
        sql: sql?,
        to: to?,
        priority: priority?,
        ordering: ordering?,
        transform: transform?,
    })
}

/// Reads a CESQL filter: it must parse, call only known functions and yield a boolean.
pub(super) fn sql(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<Expr> {
    let text = rd.text(node)?;
    let expr = match Expr::parse(&text) {
        Ok(expr) => expr,
        Err(e) => return rd.fail(&node.path, format!("CESQL {e}")),
    };
    match expr.static_type() {
        Some(ty) if ty != Type::Bool => rd.fail(
            &node.path,
            format!(
                "CESQL: the expression yields a {}, a filter needs a boolean",
                ty.name()
            ),
        ),
        _ => Some(expr),
    }
}

pub(super) fn filter(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<MatchConfig> {
    let types = rd.or(o.get("types"), Vec::new(), |rd, n| rd.each(n, pattern));
    let sources = rd.or(o.get("source"), Vec::new(), |rd, n| {
        match n.value.is_string() {
            true => pattern(rd, n).map(|s| vec![s]),
            false => rd.each(n, pattern),
        }
    });
    let subject = rd.or(o.get("subject"), None, |rd, n| subject(rd, n).map(Some));
    let advanced = rd.or(o.get("advanced"), Vec::new(), |rd, n| rd.each(n, advanced));
    Some(MatchConfig {
        types: types?,
        sources: sources?,
        subject: subject?,
        advanced: advanced?,
    })
}

/// Reads a type or source pattern: exact, or with `*` as its last character.
fn pattern(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<String> {
    let text = rd.text(node)?;
    match text.find('*') {
        Some(at) if at + 1 != text.len() => rd.fail(
            &node.path,
            format!("`{text}`: `*` is allowed only as the last character"),
        ),
        _ => Some(text),
    }
}

fn subject(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<SubjectFilter> {
    let o = rd.object(node, &model::SUBJECT)?;
    let begins_with = rd.or(o.get("begins_with"), None, |rd, n| rd.text(n).map(Some));
    let ends_with = rd.or(o.get("ends_with"), None, |rd, n| rd.text(n).map(Some));
    let case_sensitive = rd.or(o.get("case_sensitive"), false, Reader::boolean);
    if o.get("begins_with").is_none() && o.get("ends_with").is_none() {
        return rd.fail(&node.path, "needs begins_with, ends_with or both");
    }
    Some(SubjectFilter {
        begins_with: begins_with?,
        ends_with: ends_with?,
        case_sensitive: case_sensitive?,
    })
}

// === Advanced filters ===

fn advanced(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<AdvancedFilter> {
    let o = rd.object(node, &model::ADVANCED)?;
    let key = rd.required(&o, "key", Reader::text);
    let op = rd.required(&o, "op", |rd, n| {
        let name = rd.string(n)?;
        if let Some((op, operand)) = model::OPERATORS.iter().find(|(op, _)| *op == name) {
            return Some((*op, operand));
        }
        let valid: Vec<&str> = model::OPERATORS.iter().map(|(op, _)| *op).collect();
        let valid = valid.join(", ");
        rd.fail(
            &n.path,
            format!("unknown operator `{name}` (expected one of {valid})"),
        )
    });
    let condition = op.and_then(|(op, operand)| condition(rd, &o, op, operand));
    Some(AdvancedFilter {
        key: key?,
        condition: condition?,
    })
}

fn condition(rd: &mut Reader<'_>, o: &Obj<'_>, op: &str, operand: &Operand) -> Option<Condition> {
    let single = matches!(operand, Operand::Number(_) | Operand::Bool(_));
    let node = match (o.get("value"), o.get("values")) {
        (None, None) => None,
        (Some(n), None) | (None, Some(n)) if matches!(operand, Operand::Nothing(_)) => {
            return rd.fail(&n.path, format!("{op} takes no value"));
        }
        (_, Some(n)) if single => {
            return rd.fail(&n.path, format!("{op} takes one `value`, not `values`"));
        }
        (Some(_), Some(n)) => return rd.fail(&n.path, "give `value` or `values`, not both"),
        (Some(n), None) | (None, Some(n)) => Some(n),
    };
    let Some(node) = node else {
        let wanted = if single { "value" } else { "values" };
        return match operand {
            Operand::Nothing(condition) => Some(condition.clone()),
            _ => rd.fail(&o.path, format!("{op} needs `{wanted}`")),
        };
    };
    let scalar = !node.value.is_array();
    match operand {
        Operand::Number(make) => rd.number(&node).map(make),
        Operand::Bool(make) => rd.boolean(&node).map(make),
        Operand::Numbers(make) => operands(rd, &node, scalar, Reader::number).map(make),
        Operand::Strings(make) => operands(rd, &node, scalar, Reader::string).map(make),
        Operand::Ranges(make) => {
            let pair = node
                .value
                .as_array()
                .is_some_and(|a| a.iter().all(|v| v.is_number()));
            operands(rd, &node, pair, range).map(make)
        }
        Operand::Nothing(condition) => Some(condition.clone()),
    }
}

/// Reads the operands of a list or range operator; `single` reads one operand as a list of one.
fn operands<'a, 'v, T>(
    rd: &mut Reader<'a>,
    node: &Node<'v>,
    single: bool,
    read: impl FnMut(&mut Reader<'a>, &Node<'v>) -> Option<T>,
) -> Option<Vec<T>> {
    let mut read = read;
    if single {
        return read(rd, node).map(|one| vec![one]);
    }
    rd.some(node, "needs at least one value", read)
}

/// Reads one `[low, high]` range of a range operator.
fn range(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<(f64, f64)> {
    let bounds = rd.list(node)?;
    let [low, high] = &bounds[..] else {
        return rd.fail(&node.path, "expected a range [low, high]");
    };
    let (low, high) = (rd.number(low), rd.number(high));
    let (low, high) = (low?, high?);
    if low > high {
        return rd.fail(&node.path, format!("range [{low}, {high}] has low > high"));
    }
    Some((low, high))
}
