//! Trace export settings: `telemetry: { otlp_endpoint, service_name }`.
//!
//! Imports nothing internal outside `config`.

use axum::http::Uri;

use super::env::Obj;
use super::model::{Reader, Shape};

/// `telemetry:` — `otlp_endpoint` (an OpenTelemetry collector's OTLP/HTTP base URL, such as
/// `http://127.0.0.1:4318`; spans are POSTed to `{otlp_endpoint}/v1/traces`; absent, nothing
/// is exported) and `service_name` (the `service.name` of the exported spans, default
/// `switchyard`).
pub(super) const TELEMETRY: Shape = Shape {
    keys: "otlp_endpoint service_name",
    later: "",
};

/// The `service.name` of exported spans when `service_name` is absent.
pub const DEFAULT_SERVICE_NAME: &str = "switchyard";

/// Trace export settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Base URL of the OTLP/HTTP collector; `None` exports nothing.
    pub otlp_endpoint: Option<Uri>,
    /// The `service.name` resource attribute of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
        }
    }
}

/// Reads `telemetry:` from the top-level mapping.
pub(super) fn read(rd: &mut Reader<'_>, top: &Obj<'_>) -> Option<TelemetryConfig> {
    let o = rd.section(top, "telemetry", &TELEMETRY)?;
    let endpoint = rd.or(o.get("otlp_endpoint"), None, |rd, n| {
        let uri = rd.parsed(n, "URL", str::parse::<Uri>)?;
        let web = matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some();
        if !web || uri.query().is_some() {
            return rd.fail(
                &n.path,
                "expected an absolute http:// or https:// URL without a query",
            );
        }
        // The exporter appends `/v1/traces`; that URL must parse too.
        let base = uri.to_string();
        let traces = format!("{}/v1/traces", base.trim_end_matches('/'));
        match traces.parse::<Uri>() {
            Ok(_) => Some(Some(uri)),
            Err(e) => rd.fail(&n.path, format!("invalid URL {traces}: {e}")),
        }
    });
    let service_name = rd.or(
        o.get("service_name"),
        DEFAULT_SERVICE_NAME.to_owned(),
        Reader::text,
    );
    Some(TelemetryConfig {
        otlp_endpoint: endpoint?,
        service_name: service_name?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load_text as load;

    #[test]
    fn exports_nothing_by_default() {
        let config = load("sinks: {}\n", &[]).unwrap();
        assert_eq!(config.telemetry, TelemetryConfig::default());
        assert_eq!(config.telemetry.service_name, "switchyard");
        let empty = load("telemetry: {}\n", &[]).unwrap();
        assert_eq!(empty.telemetry.otlp_endpoint, None);
    }

    #[test]
    fn reads_the_endpoint_and_the_service_name() {
        let yaml =
            "telemetry: { otlp_endpoint: \"http://${OTEL_HOST}:4318\", service_name: edge }\n";
        let config = load(yaml, &[("OTEL_HOST", "127.0.0.1")]).unwrap();
        let endpoint = config.telemetry.otlp_endpoint.unwrap();
        assert_eq!(endpoint.to_string(), "http://127.0.0.1:4318/");
        assert_eq!(config.telemetry.service_name, "edge");
        let tls = load(
            "telemetry: { otlp_endpoint: https://otel.example/base/ }\n",
            &[],
        );
        assert!(tls.unwrap().telemetry.otlp_endpoint.is_some());
    }

    #[test]
    fn the_environment_can_set_the_endpoint() {
        let vars = [(
            "SWITCHYARD_TELEMETRY__OTLP_ENDPOINT",
            "http://collector:4318",
        )];
        let config = load("sinks: {}\n", &vars).unwrap();
        let endpoint = config.telemetry.otlp_endpoint.unwrap();
        assert_eq!(endpoint.host(), Some("collector"));
    }

    #[test]
    fn reports_bad_endpoints_an_empty_name_and_unknown_keys() {
        for (endpoint, fragment) in [
            (
                "127.0.0.1:4318",
                "expected an absolute http:// or https:// URL",
            ),
            (
                "ftp://collector:21",
                "expected an absolute http:// or https:// URL",
            ),
            ("http://collector:4318/?a=b", "without a query"),
            ("http://exa mple", "invalid URL"),
        ] {
            let yaml = format!("telemetry: {{ otlp_endpoint: \"{endpoint}\" }}\n");
            let error = load(&yaml, &[]).unwrap_err();
            let line = error
                .lines()
                .find(|l| l.contains("telemetry.otlp_endpoint: "));
            assert!(
                line.is_some_and(|l| l.contains(fragment)),
                "{endpoint}: {error}"
            );
        }
        let error = load("telemetry: { service_name: \"\", sampler: all }\n", &[]).unwrap_err();
        assert!(
            error.contains("telemetry.service_name: must not be empty"),
            "{error}"
        );
        assert!(error.contains("telemetry.sampler: unknown key"), "{error}");
    }
}
