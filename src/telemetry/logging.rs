//! The process-wide `tracing` subscriber: log lines on stderr, plus the layer that records
//! delivery spans for OTLP export.
//!
//! Imports nothing internal outside `telemetry`.
//!
//! Field values often hold what senders chose (an event's id, subject, source, type, or an
//! error quoting them). Text lines escape every control character in every field value and
//! in the message, so a value with a line break or an ANSI escape cannot forge a log line or
//! repaint the terminal; JSON lines are escaped by the JSON encoder.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use super::otlp::otlp_layer;

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (for a terminal).
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Installs the global `tracing` subscriber; `RUST_LOG` overrides the default `info` level.
/// Returns false when one was already installed (as in tests that start several daemons).
///
/// `RUST_LOG` filters the log lines only: delivery spans reach the export layer whatever
/// the log level, once a daemon with `telemetry.otlp_endpoint` starts.
pub fn init_logging(format: LogFormat) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.fmt_fields(EscapedFields).boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(otlp_layer())
        .try_init()
        .is_ok()
}

/// Formats the fields of text log lines as `tracing-subscriber`'s default does (the message,
/// then `name=value` pairs), with control characters in values escaped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes one record's fields, separated by spaces.
struct FieldVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    fn write_field(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            if self.writer.has_ansi_escapes() {
                write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
            } else {
                write!(self.writer, "{name}=")?;
            }
        }
        write!(Escaping(&mut self.writer), "{value:?}")
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `log.*` fields carry the metadata of records from the `log` crate, shown already.
        if self.result.is_ok() && !field.name().starts_with("log.") {
            self.result = self.write_field(field.name(), value);
        }
    }
}

/// Passes text through, escaping control characters (and the Unicode line and paragraph
/// separators) so that what it writes stays on one line and holds no terminal escape.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let escaped = rest[at..].chars().next().unwrap_or_default();
            match escaped {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = &rest[at + escaped.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log output collected in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` logs through text lines (with or without ANSI styling).
    fn text_of(ansi: bool, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(ansi)
            .fmt_fields(EscapedFields);
        let subscriber = tracing_subscriber::registry().with(lines);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const FORGED: &str = "a\n2026-12-06T00:00:00Z INFO forged\r\x1b[31mred\u{2028}x\u{85}";

    #[test]
    fn display_fields_and_the_message_stay_on_one_line() {
        for ansi in [false, true] {
            let text = text_of(ansi, || {
                let span = tracing::info_span!("delivery", event_id = %FORGED);
                span.in_scope(|| {
                    tracing::info!(id = %FORGED, subject = FORGED, detail = ?FORGED, "got {FORGED}");
                });
            });
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(!text.contains(['\r', '\u{2028}', '\u{85}']), "{text:?}");
            assert_eq!(
                text.matches('\x1b').count() > 0,
                ansi,
                "only styling: {text:?}"
            );
            assert!(!text.contains("\x1b[31m"), "{text:?}");
            // The Display field, the span field and the message are escaped as Debug escapes
            // the two string fields, only not quoted.
            let escaped = "a\\n2026-12-06T00:00:00Z INFO forged\\r\\u{1b}[31mred\\u{2028}x\\u{85}";
            assert_eq!(text.matches(escaped).count(), 5, "{text}");
            assert_eq!(text.matches(&format!("\"{escaped}\"")).count(), 2, "{text}");
        }
    }

    #[test]
    fn plain_fields_read_as_before() {
        let text = text_of(false, || {
            tracing::info!(r#type = "T", count = 3, ok = true, name = %"orders", "Event received");
        });
        let line = text.trim_end();
        assert!(
            line.ends_with(r#"Event received type="T" count=3 ok=true name=orders"#),
            "{line}"
        );
    }
}
