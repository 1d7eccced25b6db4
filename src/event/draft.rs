//! Collects context attributes as either HTTP mode reads them, then checks them into an
//! [`Event`]: required attributes, `specversion`, `time`, names and duplicates.

use super::{DecodeError, Event, ExtensionValue};

/// The specversions switchyard reads; `0.3` names `dataschema` `schemaurl`.
const SPECVERSIONS: [&str; 2] = ["1.0", "0.3"];

/// The string-typed attributes a draft keeps apart from extensions (both versions' names;
/// [`Draft::into_event`] turns the other version's names into extensions).
const STRING_ATTRIBUTES: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "schemaurl",
    "subject",
    "time",
    "datacontentencoding",
];

/// Attributes of an event being decoded, before the checks that need all of them.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    /// Prefix of attribute names in errors (`ce-` for headers).
    prefix: &'static str,
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    schemaurl: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    datacontentencoding: Option<String>,
    extensions: Vec<(String, ExtensionValue)>,
}

impl Draft {
    /// A draft whose errors name attributes with `prefix` (`ce-` for binary mode).
    pub(crate) fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            ..Self::default()
        }
    }

    /// The slot of a string-typed attribute this decoder knows, if `name` is one.
    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            "schemaurl" => &mut self.schemaurl,
            "subject" => &mut self.subject,
            "time" => &mut self.time,
            "datacontentencoding" => &mut self.datacontentencoding,
            _ => return None,
        })
    }

    /// True when `name` is an attribute that must be a string (not an extension).
    pub(crate) fn is_string_attribute(name: &str) -> bool {
        STRING_ATTRIBUTES.contains(&name)
    }

    /// True when the draft already holds `datacontenttype`.
    pub(crate) fn has_datacontenttype(&self) -> bool {
        self.datacontenttype.is_some()
    }

    /// The `datacontenttype` read so far.
    pub(crate) fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    /// True for a 0.3 event whose `datacontentencoding` says `data` holds Base64.
    pub(crate) fn data_is_base64(&self) -> bool {
        self.specversion.as_deref() == Some("0.3")
            && self
                .datacontentencoding
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
    }

    /// Sets an attribute from its string form; names not known here become extensions.
    pub(crate) fn set_string(&mut self, name: &str, value: String) -> Result<(), DecodeError> {
        let prefix = self.prefix;
        match self.slot(name) {
            Some(Some(_)) => Err(DecodeError::attribute(
                format!("{prefix}{name}"),
                "duplicate attribute",
            )),
            Some(slot) => {
                *slot = Some(value);
                Ok(())
            }
            None => self.set_extension(name, ExtensionValue::String(value)),
        }
    }

    /// Adds an extension attribute after checking its name.
    pub(crate) fn set_extension(
        &mut self,
        name: &str,
        value: ExtensionValue,
    ) -> Result<(), DecodeError> {
        check_name(self.prefix, name)?;
        self.extensions.push((name.to_owned(), value));
        Ok(())
    }

    /// Checks the attributes and builds the event (without `data`).
    pub(crate) fn into_event(mut self) -> Result<Event, DecodeError> {
        let specversion = required(self.prefix, "specversion", self.specversion.take())?;
        if !SPECVERSIONS.contains(&specversion.as_str()) {
            return Err(self.error(
                "specversion",
                format!("unsupported specversion \"{specversion}\""),
            ));
        }
        let id = required(self.prefix, "id", self.id.take())?;
        let source = required(self.prefix, "source", self.source.take())?;
        let ty = required(self.prefix, "type", self.ty.take())?;
        if let Some(time) = &self.time {
            if chrono::DateTime::parse_from_rfc3339(time).is_err() {
                return Err(self.error("time", "must be an RFC 3339 timestamp"));
            }
        }
        if specversion == "1.0" {
            self.check_characters(&id, &source, &ty)?;
        }
        let dataschema = self.resolve_version_names(&specversion);
        self.check_duplicate_extensions()?;
        Ok(Event {
            specversion,
            id,
            source,
            ty,
            datacontenttype: self.datacontenttype,
            dataschema,
            subject: self.subject,
            time: self.time,
            extensions: self.extensions,
            data_version: None,
            data: None,
        })
    }

    /// Picks `dataschema` by version; the other version's names become extensions.
    fn resolve_version_names(&mut self, specversion: &str) -> Option<String> {
        let (schema, other_name, other) = if specversion == "0.3" {
            (self.schemaurl.take(), "dataschema", self.dataschema.take())
        } else {
            let encoding = self.datacontentencoding.take();
            if let Some(value) = encoding {
                let value = ExtensionValue::String(value);
                self.extensions
                    .push(("datacontentencoding".to_owned(), value));
            }
            (self.dataschema.take(), "schemaurl", self.schemaurl.take())
        };
        if let Some(value) = other {
            let value = ExtensionValue::String(value);
            self.extensions.push((other_name.to_owned(), value));
        }
        schema
    }

    /// Checks the context attributes of a 1.0 event for characters the specification
    /// disallows. Extensions are left as they came: the CloudEvents conformance vectors carry
    /// a newline in one, and every writer escapes them (0.3 had no such rule at all).
    fn check_characters(&self, id: &str, source: &str, ty: &str) -> Result<(), DecodeError> {
        let optional = [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
        ];
        let present = optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_deref()?)));
        [("id", id), ("source", source), ("type", ty)]
            .into_iter()
            .chain(present)
            .try_for_each(|(name, value)| check_characters(self.prefix, name, value))
    }

    fn check_duplicate_extensions(&self) -> Result<(), DecodeError> {
        let mut names: Vec<&str> = self.extensions.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        match names.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(self.error(w[0], "duplicate attribute")),
            None => Ok(()),
        }
    }

    fn error(&self, name: &str, message: impl Into<String>) -> DecodeError {
        DecodeError::attribute(format!("{}{name}", self.prefix), message)
    }
}

/// A required attribute's value: present and non-empty.
fn required(prefix: &str, name: &str, value: Option<String>) -> Result<String, DecodeError> {
    let message = match value {
        Some(v) if !v.is_empty() => return Ok(v),
        Some(_) => "must be a non-empty string",
        None => "missing required attribute",
    };
    Err(DecodeError::attribute(format!("{prefix}{name}"), message))
}

/// Checks a string value against the characters CloudEvents disallows: the control
/// characters U+0000–U+001F and U+007F–U+009F, and Unicode noncharacters (surrogates cannot
/// occur in a `str`). A newline or NUL in an id would otherwise reach headers, logs, files and
/// program environments downstream.
pub(crate) fn check_characters(prefix: &str, name: &str, value: &str) -> Result<(), DecodeError> {
    // Printable ASCII, the common case, needs no per-character decoding.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    let bad = value.chars().find(|&c| {
        let n = u32::from(c);
        c.is_control() || (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE
    });
    match bad {
        None => Ok(()),
        Some(c) => Err(DecodeError::attribute(
            format!("{prefix}{name}"),
            format!(
                "contains U+{:04X}, which CloudEvents does not allow in a string",
                u32::from(c)
            ),
        )),
    }
}

/// Checks an extension name: `[a-z0-9]+`, and not the reserved `data`.
fn check_name(prefix: &str, name: &str) -> Result<(), DecodeError> {
    if !is_attribute_name(name) {
        return Err(DecodeError::attribute(
            format!("{prefix}{name}"),
            "attribute names must be 1 or more lower-case ASCII letters or digits",
        ));
    }
    if name == "data" {
        return Err(DecodeError::attribute(
            format!("{prefix}{name}"),
            "`data` is a reserved name",
        ));
    }
    Ok(())
}

/// True for a valid attribute name: one or more of `a-z` and `0-9`.
pub(crate) fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}
