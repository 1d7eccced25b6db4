//! The raw tree: YAML text with the `SWITCHYARD_*` overlay laid over it (through the `config`
//! crate), and `${VAR}` interpolation inside its string values.
//!
//! Also positions in that tree ([`Node`], [`Obj`], which carry YAML paths) and the reads of
//! leaf values ([`Reader::string`] and friends), since every string passes through
//! interpolation on its way out of the tree. The environment is always passed in as a map and
//! never read or written here, so tests give their own. Imports nothing internal outside
//! `config`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use ::config::{Environment, File, FileFormat};
use serde_json::{Map as JsonMap, Value as Json};

use super::model::{self, Reader};
use super::units::{self, UnitError};
use super::{ConfigError, FieldError};

/// Prefix of the variables that override file settings (`SWITCHYARD_SPOOL__PATH`).
const PREFIX: &str = "SWITCHYARD";

/// The most digits of a list index in an overlay variable (`SWITCHYARD_ROUTES__99999__TO`):
/// the `config` crate fills a list up to the index it is given, so a longer one could ask
/// for gigabytes.
const MAX_INDEX_DIGITS: usize = 5;

/// The process environment as a map (read once per load; never modified).
pub(super) fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Why a string value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum InterpolationError {
    /// `${NAME}` without a default, and `NAME` is not set.
    #[error("environment variable {0} is not set")]
    Missing(String),
    /// `${` without its closing `}`.
    #[error("unterminated `${{` (write a literal `$` as `$$`)")]
    Unterminated,
    /// `${}` or `${:-default}`.
    #[error("empty variable name in `${{}}`")]
    EmptyName,
}

/// Parses `text` as YAML and overlays the `SWITCHYARD_*` variables of `vars` that name a
/// top-level key; other `SWITCHYARD_*` variables (`SWITCHYARD_LOG_FORMAT`, secrets meant for
/// `${…}`) are left alone.
pub(super) fn merged_tree(
    text: &str,
    origin: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Json, ConfigError> {
    refuse_subscripted_keys(text)?;
    let overlay: ::config::Map<String, String> = vars
        .iter()
        .filter_map(|(name, value)| overlay_name(name).map(|key| (name, key, value)))
        .map(|(name, key, value)| match long_index(&key) {
            Some(index) => Err(ConfigError::Syntax {
                path: origin.to_path_buf(),
                message: format!(
                    "{name}: list index {index} has more than {MAX_INDEX_DIGITS} digits"
                ),
            }),
            None => Ok((key, value.clone())),
        })
        .collect::<Result<_, _>>()?;
    let file = build(text, origin, None)?;
    if overlay.is_empty() {
        return Ok(file);
    }
    let mut merged = build(text, origin, Some(overlay))?;
    fold_case(&mut merged, &file);
    Ok(merged)
}

fn build(
    text: &str,
    origin: &Path,
    overlay: Option<::config::Map<String, String>>,
) -> Result<Json, ConfigError> {
    let mut builder =
        ::config::Config::builder().add_source(File::from_str(text, FileFormat::Yaml));
    if let Some(vars) = overlay {
        let env = Environment::with_prefix(PREFIX)
            .prefix_separator("_")
            .separator("__")
            .source(Some(vars));
        builder = builder.add_source(env);
    }
    let syntax = |e: ::config::ConfigError| ConfigError::Syntax {
        path: origin.to_path_buf(),
        message: e.to_string(),
    };
    builder
        .build()
        .map_err(syntax)?
        .try_deserialize()
        .map_err(syntax)
}

/// Refuses top-level keys with a list subscript (`routes[7]:`, `-[43333333]:`): the `config`
/// crate reads each top-level key as a path and would fill a list up to the index, which a
/// typing error or a file caught mid-write could make gigabytes long. Such a key is unknown
/// anyway; a text that is not YAML is left for the crate to report.
fn refuse_subscripted_keys(text: &str) -> Result<(), ConfigError> {
    let Ok(docs) = yaml_rust2::YamlLoader::load_from_str(text) else {
        return Ok(());
    };
    let Some(yaml_rust2::Yaml::Hash(map)) = docs.first() else {
        return Ok(());
    };
    let errors: Vec<FieldError> = map
        .keys()
        .filter_map(|key| match key {
            yaml_rust2::Yaml::String(key) | yaml_rust2::Yaml::Real(key) => Some(key),
            _ => None,
        })
        .filter(|key| key.contains(['[', ']']))
        .map(|key| FieldError {
            path: key.clone(),
            message: format!("unknown key (allowed here: {})", model::ROOT.allowed()),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

/// The first subscript of an overlay key (as [`overlay_name`] writes it) longer than
/// [`MAX_INDEX_DIGITS`].
fn long_index(key: &str) -> Option<&str> {
    key.split('[')
        .skip(1)
        .filter_map(|part| part.split(']').next())
        .find(|index| index.len() > MAX_INDEX_DIGITS)
}

/// The name to hand the `config` crate for an overlay variable, or `None` to ignore it.
///
/// All-digit segments become subscripts (`SWITCHYARD_ROUTES__0__NAME` → `routes[0].name`),
/// because the crate would otherwise turn the list into a mapping.
fn overlay_name(name: &str) -> Option<String> {
    let rest = name
        .get(..PREFIX.len() + 1)
        .filter(|head| head.eq_ignore_ascii_case(&format!("{PREFIX}_")))
        .map(|_| &name[PREFIX.len() + 1..])?;
    let mut segments = rest.split("__");
    let first = segments.next()?;
    let top = first.to_ascii_lowercase();
    if !model::ROOT.knows(&top) && !model::ROOT.is_later(&top) {
        return None;
    }
    let mut out = format!("{PREFIX}_{first}");
    for segment in segments {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            out.push_str("__");
            out.push_str(segment);
        }
    }
    Some(out)
}

/// Moves keys the overlay created in lower case onto the file's key of the same name in
/// another case: YAML keys keep their case (a sink `Orders`), the crate lower-cases
/// environment keys (`sinks.orders.concurrency`).
fn fold_case(merged: &mut Json, file: &Json) {
    match (merged, file) {
        (Json::Object(merged), Json::Object(file)) => {
            let strays: Vec<(String, String)> = merged
                .keys()
                .filter(|key| !file.contains_key(*key))
                .filter_map(|key| {
                    let mut same = file.keys().filter(|k| k.eq_ignore_ascii_case(key));
                    match (same.next(), same.next()) {
                        (Some(target), None) => Some((key.clone(), target.clone())),
                        _ => None,
                    }
                })
                .collect();
            for (stray, target) in strays {
                if let Some(value) = merged.remove(&stray) {
                    deep_merge(merged.entry(target).or_insert(Json::Null), value);
                }
            }
            for (key, value) in merged.iter_mut() {
                if let Some(original) = file.get(key) {
                    fold_case(value, original);
                }
            }
        }
        (Json::Array(merged), Json::Array(file)) => {
            for (value, original) in merged.iter_mut().zip(file) {
                fold_case(value, original);
            }
        }
        _ => {}
    }
}

fn deep_merge(into: &mut Json, from: Json) {
    match (into, from) {
        (Json::Object(into), Json::Object(from)) => {
            for (key, value) in from {
                deep_merge(into.entry(key).or_insert(Json::Null), value);
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Replaces `${NAME}` and `${NAME:-default}` with values from `vars`; `$$` is a literal `$`.
///
/// The default applies when the variable is unset or empty, as in the shell.
pub(super) fn interpolate(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(InterpolationError::Unterminated)?;
            out.push_str(&lookup(&tail[..end], vars)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, InterpolationError> {
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    if name.is_empty() {
        return Err(InterpolationError::EmptyName);
    }
    match (vars.get(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Some(value), _) => Ok(value.clone()),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(InterpolationError::Missing(name.to_owned())),
    }
}

// === Positions in the tree ===

/// A value of the raw tree and its YAML path (`sinks.orders-api.retry.schedule[2]`).
#[derive(Debug, Clone)]
pub(super) struct Node<'v> {
    /// Where the value is.
    pub(super) path: String,
    /// The value.
    pub(super) value: &'v Json,
}

impl<'v> Node<'v> {
    /// The whole document.
    pub(super) fn root(value: &'v Json) -> Self {
        Self {
            path: String::new(),
            value,
        }
    }

    /// The path of `key` below this node.
    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// A mapping whose keys were checked against its shape; absent or null reads as empty.
#[derive(Debug, Clone)]
pub(super) struct Obj<'v> {
    /// Where the mapping is.
    pub(super) path: String,
    /// The mapping; `None` when absent or null.
    pub(super) map: Option<&'v JsonMap<String, Json>>,
}

impl<'v> Obj<'v> {
    /// The value under `key`, if present and not null.
    pub(super) fn get(&self, key: &str) -> Option<Node<'v>> {
        let value = self.map?.get(key).filter(|v| !v.is_null())?;
        Some(Node {
            path: self.key_path(key),
            value,
        })
    }

    /// Whether `key` is present, even with a null value (`log:` names the kind `log`).
    pub(super) fn has(&self, key: &str) -> bool {
        self.map.is_some_and(|m| m.contains_key(key))
    }

    /// The path of `key` in this mapping.
    pub(super) fn key_path(&self, key: &str) -> String {
        Node {
            path: self.path.clone(),
            value: &Json::Null,
        }
        .key_path(key)
    }
}

// === Leaf values ===

/// Reads of leaf values. Strings go through `${VAR}` interpolation, and numbers and booleans
/// also accept strings, because that is all the `SWITCHYARD_*` overlay can give.
impl Reader<'_> {
    /// Reads a string, with `${VAR}` interpolated.
    pub(super) fn string(&mut self, node: &Node<'_>) -> Option<String> {
        let Json::String(raw) = node.value else {
            self.mismatch(node, "a string");
            return None;
        };
        match interpolate(raw, self.vars) {
            Ok(text) => Some(text),
            Err(e) => {
                self.error(&node.path, e.to_string());
                None
            }
        }
    }

    /// Reads a string that must not be empty (after interpolation).
    pub(super) fn text(&mut self, node: &Node<'_>) -> Option<String> {
        let text = self.string(node)?;
        if text.is_empty() {
            self.error(&node.path, "must not be empty");
            return None;
        }
        Some(text)
    }

    /// Reads a string that must be one of the names in `choices`.
    pub(super) fn choice<T: Copy>(
        &mut self,
        node: &Node<'_>,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(node)?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*value);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let message = format!("unknown {what} `{text}` (expected {})", names.join(" | "));
        self.fail(&node.path, message)
    }

    /// Reads a string and parses it, reporting `what` and the parser's reason on failure.
    pub(super) fn parsed<T, E: Display>(
        &mut self,
        node: &Node<'_>,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let text = self.string(node)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                self.error(&node.path, format!("invalid {what}: {e}"));
                None
            }
        }
    }

    /// Reads a whole number in `range`; a string of digits counts (environment values are strings).
    pub(super) fn integer<T: TryFrom<u64>>(
        &mut self,
        node: &Node<'_>,
        range: RangeInclusive<u64>,
    ) -> Option<T> {
        let number = match node.value {
            Json::Number(n) => n.as_u64(),
            Json::String(_) => self.string(node)?.trim().parse().ok(),
            _ => None,
        };
        let value = number
            .filter(|n| range.contains(n))
            .and_then(|n| T::try_from(n).ok());
        if value.is_none() {
            let expected = format!("an integer in {}..={}", range.start(), range.end());
            self.mismatch(node, &expected);
        }
        value
    }

    /// Reads a number (for advanced filters).
    pub(super) fn number(&mut self, node: &Node<'_>) -> Option<f64> {
        let value = node.value.as_f64().filter(|n| n.is_finite());
        if value.is_none() {
            self.mismatch(node, "a number");
        }
        value
    }

    /// Reads `true` or `false`; the strings `"true"`/`"false"` count (environment values).
    pub(super) fn boolean(&mut self, node: &Node<'_>) -> Option<bool> {
        let value = match node.value {
            Json::Bool(b) => Some(*b),
            Json::String(_) => self.string(node)?.trim().parse().ok(),
            _ => None,
        };
        if value.is_none() {
            self.mismatch(node, "true or false");
        }
        value
    }

    /// Reads a duration such as `30s`; a bare number is an error because it has no unit.
    pub(super) fn duration(&mut self, node: &Node<'_>) -> Option<Duration> {
        match node.value {
            Json::String(_) => self.parsed(node, "duration", units::parse_duration),
            Json::Number(n) => {
                self.error(
                    &node.path,
                    UnitError::MissingUnit(n.to_string()).to_string(),
                );
                None
            }
            _ => {
                self.mismatch(node, "a duration such as 30s");
                None
            }
        }
    }

    /// Reads a byte size such as `1MiB`; a bare number is a count of bytes.
    pub(super) fn size(&mut self, node: &Node<'_>) -> Option<u64> {
        match node.value {
            Json::String(_) => self.parsed(node, "size", units::parse_size),
            Json::Number(_) => self.integer(node, 0..=u64::MAX),
            _ => {
                self.mismatch(node, "a size such as 1MiB");
                None
            }
        }
    }
}
