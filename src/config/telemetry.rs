//! Trace export settings: `telemetry: { otlp_endpoint, service_name }`, and the standard
//! OpenTelemetry environment (`OTEL_EXPORTER_OTLP_*`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`). A key set in the file wins over the environment.
//!
//! Imports nothing internal outside `config`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Uri};

use super::env::Obj;
use super::model::{Reader, Shape};

/// `telemetry:` — `otlp_endpoint` (an OpenTelemetry collector's OTLP/HTTP base URL, such as
/// `http://127.0.0.1:4318`; spans are POSTed to `{otlp_endpoint}/v1/traces`; absent, the
/// `OTEL_EXPORTER_OTLP_*` environment decides, and without that nothing is exported) and
/// `service_name` (the `service.name` of the exported spans; absent, `OTEL_SERVICE_NAME`,
/// then `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, then `switchyard`).
pub(super) const TELEMETRY: Shape = Shape {
    keys: "otlp_endpoint service_name",
    later: "",
};

/// The `service.name` of exported spans when neither the file nor the environment names one.
pub const DEFAULT_SERVICE_NAME: &str = "switchyard";
/// Time allowed for one export request when `OTEL_EXPORTER_OTLP_TIMEOUT` is absent (the
/// OpenTelemetry default).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// Finished spans that wait for export when `OTEL_BSP_MAX_QUEUE_SIZE` is absent.
const DEFAULT_QUEUE_SIZE: usize = 2048;

/// Trace export settings, the file and the environment resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `telemetry.otlp_endpoint`: base URL of the OTLP/HTTP collector, as the file gives it.
    pub otlp_endpoint: Option<Uri>,
    /// Where spans are POSTed: `{otlp_endpoint}/v1/traces`, else
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `{OTEL_EXPORTER_OTLP_ENDPOINT}/v1/traces`;
    /// `None` exports nothing (also when `OTEL_SDK_DISABLED=true`).
    pub traces_url: Option<Uri>,
    /// The `service.name` resource attribute of exported spans.
    pub service_name: String,
    /// Further resource attributes, from `OTEL_RESOURCE_ATTRIBUTES` (`service.name` left out).
    pub resource_attributes: Vec<(String, String)>,
    /// Headers sent with every export request (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS`); they often carry credentials and are never shown.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Time allowed for one export request (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds).
    pub timeout: Duration,
    /// Finished spans that may wait for export (`OTEL_BSP_MAX_QUEUE_SIZE`); past it, new
    /// spans are dropped and counted.
    pub queue_size: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            traces_url: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            resource_attributes: Vec::new(),
            headers: Vec::new(),
            timeout: DEFAULT_EXPORT_TIMEOUT,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are credentials: only their names are shown.
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TelemetryConfig")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("traces_url", &self.traces_url)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("queue_size", &self.queue_size)
            .finish()
    }
}

/// Reads `telemetry:` from the top-level mapping, then the OpenTelemetry environment.
pub(super) fn read(rd: &mut Reader<'_>, top: &Obj<'_>) -> Option<TelemetryConfig> {
    let o = rd.section(top, "telemetry", &TELEMETRY)?;
    let endpoint = rd.or(o.get("otlp_endpoint"), None, |rd, n| {
        let uri = rd.parsed(n, "URL", str::parse::<Uri>)?;
        match web_url(&uri).and_then(|()| traces_url(&uri)) {
            Ok(_) => Some(Some(uri)),
            Err(message) => rd.fail(&n.path, message),
        }
    });
    let service_name = rd.or(o.get("service_name"), None, |rd, n| {
        Reader::text(rd, n).map(Some)
    });
    let vars = rd.vars;
    let env = OtelEnv::read(vars);
    let (endpoint, service_name) = (endpoint?, service_name?);
    let env = match env {
        Ok(env) => env,
        Err((variable, message)) => return rd.fail(&format!("(environment) {variable}"), message),
    };
    let traces_url = match &endpoint {
        Some(base) => traces_url(base).ok(),
        None => env.traces_url,
    };
    let disabled = vars
        .get(SDK_DISABLED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    Some(TelemetryConfig {
        otlp_endpoint: endpoint,
        traces_url: traces_url.filter(|_| !disabled),
        service_name: service_name
            .or(env.service_name)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
        resource_attributes: env.resource_attributes,
        headers: env.headers,
        timeout: env.timeout,
        queue_size: env.queue_size,
    })
}

/// An absolute `http://` or `https://` URL without a query.
fn web_url(uri: &Uri) -> Result<(), String> {
    let web = matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some();
    if web && uri.query().is_none() {
        Ok(())
    } else {
        Err("expected an absolute http:// or https:// URL without a query".to_owned())
    }
}

/// `{base}/v1/traces`, the OTLP/HTTP path of traces under a base URL.
fn traces_url(base: &Uri) -> Result<Uri, String> {
    let text = base.to_string();
    let traces = format!("{}/v1/traces", text.trim_end_matches('/'));
    traces
        .parse::<Uri>()
        .map_err(|e| format!("invalid URL {traces}: {e}"))
}

/// What the OpenTelemetry environment variables say; an error names the variable.
#[derive(Debug, Default)]
struct OtelEnv {
    traces_url: Option<Uri>,
    service_name: Option<String>,
    resource_attributes: Vec<(String, String)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    queue_size: usize,
}

type EnvError = (&'static str, String);

impl OtelEnv {
    fn read(vars: &BTreeMap<String, String>) -> Result<Self, EnvError> {
        // An empty variable counts as unset, as the specification asks.
        let get = |name: &'static str| {
            vars.get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (name, v))
        };
        let traces_url = match (get(TRACES_ENDPOINT), get(ENDPOINT)) {
            (Some((name, url)), _) => Some(env_url(name, url, false)?),
            (None, Some((name, url))) => Some(env_url(name, url, true)?),
            (None, None) => None,
        };
        let headers = match get(TRACES_HEADERS).or(get(HEADERS)) {
            Some((name, text)) => parse_headers(text).map_err(|m| (name, m))?,
            None => Vec::new(),
        };
        let timeout = match get(TRACES_TIMEOUT).or(get(TIMEOUT)) {
            Some((name, ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err((
                        name,
                        "expected a whole number of milliseconds above 0".into(),
                    ))
                }
            },
            None => DEFAULT_EXPORT_TIMEOUT,
        };
        let queue_size = match get(QUEUE_SIZE) {
            Some((name, n)) => match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err((name, "expected a whole number above 0".into())),
            },
            None => DEFAULT_QUEUE_SIZE,
        };
        let mut resource_attributes = match get(RESOURCE_ATTRIBUTES) {
            Some((name, text)) => parse_attributes(text).map_err(|m| (name, m))?,
            None => Vec::new(),
        };
        let from_attributes = resource_attributes
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource_attributes.remove(i).1);
        let service_name = get(SERVICE_NAME).map(|(_, v)| v.to_owned());
        Ok(Self {
            traces_url,
            service_name: service_name.or(from_attributes),
            resource_attributes,
            headers,
            timeout,
            queue_size,
        })
    }
}

/// The traces URL an endpoint variable names: the signal's variable as given, the
/// general one with `/v1/traces` appended.
fn env_url(name: &'static str, text: &str, append: bool) -> Result<Uri, EnvError> {
    let uri = text
        .parse::<Uri>()
        .map_err(|e| (name, format!("invalid URL: {e}")))?;
    web_url(&uri).map_err(|m| (name, m))?;
    if append {
        traces_url(&uri).map_err(|m| (name, m))
    } else {
        Ok(uri)
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C Baggage form the
/// OpenTelemetry specification gives the header and resource variables). Never quotes a
/// value in an error: header values are credentials.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("entry {} has no `=`", out.len() + 1));
        };
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {} is not UTF-8", key.trim()))?;
        out.push((key.trim().to_owned(), value.into_owned()));
    }
    Ok(out)
}

fn parse_headers(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    pairs(text)?
        .into_iter()
        .map(|(key, value)| {
            let name = HeaderName::try_from(key.as_str())
                .map_err(|_| format!("{key:?} is not a header name"))?;
            let mut value = HeaderValue::try_from(value)
                .map_err(|_| format!("the value of {key} is not a valid header value"))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

fn parse_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let attributes = pairs(text)?;
    match attributes.iter().find(|(k, _)| k.is_empty()) {
        Some(_) => Err("an attribute has an empty key".to_owned()),
        None => Ok(attributes),
    }
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
        let url = config.telemetry.traces_url.unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:4318/v1/traces");
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

    #[test]
    fn reads_the_standard_environment() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-token=s3cr%20et, x-tenant = a",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "edge"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=ignored,deployment.environment=prod",
            ),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ];
        let t = load("sinks: {}\n", &vars).unwrap().telemetry;
        assert_eq!(t.otlp_endpoint, None);
        let url = t.traces_url.as_ref().unwrap();
        assert_eq!(url.to_string(), "http://collector:4318/v1/traces");
        let headers: Vec<(&str, &str)> = t
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(headers, [("x-token", "s3cr et"), ("x-tenant", "a")]);
        assert_eq!(t.timeout, Duration::from_millis(2500));
        assert_eq!(t.service_name, "edge");
        let attributes = [("deployment.environment".to_owned(), "prod".to_owned())];
        assert_eq!(t.resource_attributes, attributes);
        assert_eq!(t.queue_size, 64);
        // Header values are credentials: never in the debug form.
        assert!(!format!("{t:?}").contains("s3cr"), "{t:?}");
    }

    #[test]
    fn the_file_wins_over_the_environment() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://env:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes"),
        ];
        let env_only = load("sinks: {}\n", &vars).unwrap().telemetry;
        let url = env_only.traces_url.unwrap();
        assert_eq!(url.to_string(), "http://env:4318/custom");
        assert_eq!(env_only.service_name, "from-attributes");
        let yaml = "telemetry: { otlp_endpoint: \"http://file:4318\", service_name: edge }\n";
        let both = load(yaml, &vars).unwrap().telemetry;
        let url = both.traces_url.unwrap();
        assert_eq!(url.to_string(), "http://file:4318/v1/traces");
        assert_eq!(both.service_name, "edge");
        let disabled = [("OTEL_SDK_DISABLED", "true")];
        let off = load(yaml, &disabled).unwrap().telemetry;
        assert_eq!(off.traces_url, None);
    }

    #[test]
    fn reports_bad_environment_values_without_quoting_headers() {
        for (name, value, fragment) in [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector:4318",
                "absolute http",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-token", "has no `=`"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-token=bad\u{1}secret",
                "not a valid header value",
            ),
            ("OTEL_RESOURCE_ATTRIBUTES", "=v", "empty key"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "above 0"),
        ] {
            let error = load("sinks: {}\n", &[(name, value)]).unwrap_err();
            let line = error.lines().find(|l| l.contains(name));
            assert!(
                line.is_some_and(|l| l.contains(fragment)),
                "{name}: {error}"
            );
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
