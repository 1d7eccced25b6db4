//! The human-readable listing printed by `switchyard check`: what the daemon would serve.
//!
//! Secrets never appear: credentials are counted, header values and URL queries are left out,
//! and of a command only the program is shown. Imports nothing internal outside `config`.

use std::time::Duration;

use super::units::format_duration;
use super::DeliveryOrder;
use super::{
    AuthRule, Config, ConnectionLimits, HttpFormat, MatchConfig, RouteConfig, SignConfig,
    SinkConfig, SinkKind, SourceConfig, SpoolBackend, TlsServerConfig, Verify,
};
use super::{HttpSinkConfig, ProxySetting};

impl Config {
    /// A human-readable listing of this configuration (for `switchyard check`); never shows secrets.
    pub fn summary(&self) -> String {
        let mut lines = vec![
            format!("listen          {}", self.listen),
            format!(
                "spool           {} (path {})",
                backend(self.spool.backend),
                self.spool.path.display()
            ),
            format!("shutdown_grace  {}", format_duration(self.shutdown_grace)),
            format!("ingress         {}", self.ingress_line()),
            format!("admin           {}", self.admin_line()),
            format!(
                "connections     {}",
                connections_line(self.ingress.connections)
            ),
        ];
        let servers = [("ingress", &self.ingress.tls), ("admin", &self.admin.tls)];
        for (server, tls) in servers {
            if let Some(tls) = tls {
                lines.push(format!("{:<16}{}", format!("{server} tls"), tls_line(tls)));
            }
        }
        lines.push(String::new());
        lines.push(format!("routes ({}):", self.routes.len()));
        lines.extend(self.routes.iter().flat_map(route_lines));
        lines.push(String::new());
        lines.push(format!("sinks ({}):", self.sinks.len()));
        for sink in self.sinks.values() {
            lines.extend(sink_lines(sink));
            let reply = sink.delivery.reply;
            if reply.enabled {
                let max_hops = reply.max_hops.unwrap_or(self.max_hops);
                lines.push(format!("    reply         on, max_hops {max_hops}"));
            }
        }
        if !self.schedules.is_empty() {
            lines.push(String::new());
            lines.push(format!("schedules ({}):", self.schedules.len()));
            lines.extend(self.schedules.iter().map(|s| {
                format!(
                    "  {}  \"{}\" {}{} -> type {}",
                    s.name,
                    s.cron.pattern,
                    s.timezone,
                    if s.catch_up { ", catch_up" } else { "" },
                    s.event.ty
                )
            }));
        }
        if !self.sagas.is_empty() {
            lines.push(String::new());
            lines.push(format!("sagas ({}):", self.sagas.len()));
            for saga in &self.sagas {
                lines.push(format!(
                    "  {}  timeout {}, retention {}",
                    saga.name,
                    format_duration(saga.timeout),
                    format_duration(self.saga_retention)
                ));
                lines.extend(saga.steps.iter().map(|step| {
                    let undo = step.compensate.as_deref().unwrap_or("none");
                    format!("    {:<12}  to {}, compensate {undo}", step.name, step.to)
                }));
            }
        }
        if !self.sources.is_empty() {
            lines.push(String::new());
            lines.push(format!("sources ({}):", self.sources.len()));
            lines.extend(self.sources.values().map(source_line));
        }
        lines.push(String::new());
        lines.join("\n")
    }

    fn admin_line(&self) -> String {
        let guard = match (&self.admin.token, self.admin.allow_unauthenticated) {
            (Some(_), _) => "token required",
            (None, true) => "no token (allow_unauthenticated)",
            (None, false) => "no token (loopback only)",
        };
        format!("{}; {guard}", self.admin.listen)
    }

    fn ingress_line(&self) -> String {
        let ingress = &self.ingress;
        let auth = match ingress.auth.len() {
            0 => "none".to_owned(),
            n => {
                let kinds: Vec<&str> = ingress.auth.iter().map(auth_kind).collect();
                format!("{n} credential(s): {}", kinds.join(", "))
            }
        };
        let rate = ingress
            .allowed_rate
            .map_or("*".to_owned(), |r| format!("{r}/min"));
        format!(
            "max event {}, max request {}, max batch {} events; auth {auth}; origins {}; rate {rate}",
            size(ingress.max_event_bytes as u64),
            size(ingress.max_request_bytes as u64),
            ingress.max_batch_events,
            ingress.allowed_origins.join(", "),
        )
    }
}

fn tls_line(tls: &TlsServerConfig) -> String {
    let mut line = format!(
        "certificate {}, key {} (re-read when they change)",
        tls.cert.display(),
        tls.key.display()
    );
    if let Some(ca) = &tls.client_ca {
        line.push_str(&format!("; client certificates from {}", ca.display()));
        if !tls.client_subjects.is_empty() {
            line.push_str(&format!(" named {}", tls.client_subjects.join(", ")));
        }
    }
    line
}

fn connections_line(limits: ConnectionLimits) -> String {
    format!(
        "at most {}; headers within {}; body within {}",
        limits.max_connections,
        format_duration(limits.header_timeout),
        format_duration(limits.body_timeout),
    )
}

pub(super) fn backend(backend: SpoolBackend) -> &'static str {
    match backend {
        SpoolBackend::Memory => "memory",
        SpoolBackend::Embedded => "embedded",
        SpoolBackend::Nats => "nats",
    }
}

fn auth_kind(rule: &AuthRule) -> &'static str {
    match rule {
        AuthRule::SasKey(_) => "sas_key",
        AuthRule::Bearer(_) => "bearer",
        AuthRule::SasToken(_) => "sas_token_key",
        AuthRule::StandardWebhooks(_) => "standard_webhooks",
    }
}

fn route_lines(route: &RouteConfig) -> Vec<String> {
    let mut lines = vec![
        format!("  {}", route.name),
        format!("    match  {}", match_text(&route.filter)),
    ];
    if let Some(sql) = &route.sql {
        lines.push(format!("    sql    {}", sql.source()));
    }
    lines.push(format!("    to     {}", route.to.join(", ")));
    lines.push(format!("    lane   {}", lane_text(route)));
    lines
}

fn lane_text(route: &RouteConfig) -> String {
    let order = match route.ordering {
        DeliveryOrder::Any => "unordered",
        DeliveryOrder::Subject => "ordered by subject",
    };
    format!("priority {}, {order}", route.priority.name())
}

fn match_text(filter: &MatchConfig) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "any".to_owned()
        } else {
            items.join(", ")
        }
    };
    let mut parts = vec![
        format!("types {}", list(&filter.types)),
        format!("sources {}", list(&filter.sources)),
    ];
    if let Some(subject) = &filter.subject {
        let mut text = String::from("subject");
        if let Some(prefix) = &subject.begins_with {
            text.push_str(&format!(" begins with {prefix:?}"));
        }
        if let Some(suffix) = &subject.ends_with {
            text.push_str(&format!(" ends with {suffix:?}"));
        }
        let case = if subject.case_sensitive {
            "case-sensitive"
        } else {
            "ignoring case"
        };
        parts.push(format!("{text} ({case})"));
    }
    if !filter.advanced.is_empty() {
        parts.push(format!("{} advanced filter(s)", filter.advanced.len()));
    }
    parts.join("; ")
}

fn sink_lines(sink: &SinkConfig) -> Vec<String> {
    let retry = &sink.retry;
    let schedule: Vec<String> = retry
        .schedule
        .iter()
        .copied()
        .map(format_duration)
        .collect();
    vec![
        format!(
            "  {}: {} {}",
            sink.name,
            sink.kind.name(),
            target(&sink.kind)
        ),
        match sink.adaptive {
            Some(a) => format!(
                "    concurrency   adaptive, {} to {}",
                a.min, sink.concurrency
            ),
            None => format!("    concurrency   {}", sink.concurrency),
        },
        format!(
            "    retry         max_attempts {}, event_ttl {}, horizon {}",
            retry.max_attempts,
            format_duration(retry.event_ttl),
            horizon(retry.horizon()),
        ),
        format!(
            "    schedule      {} (the last repeats)",
            schedule.join(", ")
        ),
        format!(
            "    dead_letter   {}",
            sink.dead_letter.as_deref().unwrap_or("none")
        ),
        format!("    delivery      {}", delivery_line(sink)),
    ]
}

/// The effective delivery controls: rate, batch, breaker, fallback and retry caps.
fn delivery_line(sink: &SinkConfig) -> String {
    let d = &sink.delivery;
    let rate = d
        .rate_limit
        .map_or("unlimited".to_owned(), |r| format!("{}/s", r.per_second()));
    let batch = &d.batch;
    let breaker = d.breaker.map_or("none".to_owned(), |b| {
        let open_for = format_duration(b.open_for);
        format!(
            "open after {} failures for {open_for}",
            b.consecutive_failures
        )
    });
    let cap = |c: Option<Duration>| c.map_or("none".to_owned(), format_duration);
    format!(
        "rate {rate}; batch {} events / {} / linger {}; breaker {breaker}; fallback {}; \
         max_backoff {}; max_retry_after {}",
        batch.max_events,
        size(batch.max_bytes as u64),
        format_duration(batch.linger),
        d.fallback.as_deref().unwrap_or("none"),
        cap(sink.retry.max_backoff),
        cap(sink.retry.max_retry_after),
    )
}

/// How an http sink signs, naming the scheme and counting secrets, never showing them.
fn sign_text(sign: Option<&SignConfig>) -> String {
    match sign {
        None => "no".to_owned(),
        Some(SignConfig::StandardWebhooks { secrets }) => {
            format!("standard_webhooks ({} secret(s))", secrets.len())
        }
        Some(SignConfig::Hmac(h)) => format!("hmac in {}", h.header),
    }
}

/// An http sink's `tls` and `proxy`, when set: file paths and the proxy's address only.
fn reach_text(http: &HttpSinkConfig) -> String {
    let mut text = String::new();
    if let Some(ca) = &http.tls.ca {
        text.push_str(&format!(", ca {}", ca.path.display()));
    }
    if let Some(client) = &http.tls.client {
        text.push_str(&format!(", client cert {}", client.cert.path.display()));
    }
    if http.proxy != ProxySetting::Environment {
        text.push_str(&format!(", proxy {}", http.proxy.describe()));
    }
    text
}

/// What a sink delivers to, without anything that may hold a secret.
pub(super) fn target(kind: &SinkKind) -> String {
    match kind {
        SinkKind::Http(http) => {
            let url = &http.url;
            let port = url.port().map_or(String::new(), |p| format!(":{p}"));
            let query = if url.query().is_some() { "?…" } else { "" };
            let headers: Vec<&str> = http.headers.iter().map(|(name, _)| name.as_str()).collect();
            format!(
                "{}://{}{port}{}{query} ({}, timeout {}, headers: {}, signed: {})",
                url.scheme_str().unwrap_or("http"),
                url.host().unwrap_or(""),
                url.path(),
                format_name(http.format),
                format_duration(http.timeout),
                if headers.is_empty() {
                    "none".to_owned()
                } else {
                    headers.join(", ")
                },
                sign_text(http.sign.as_ref()),
            ) + &reach_text(http)
        }
        SinkKind::Log(log) => format!("(level {})", log.level.as_str().to_lowercase()),
        SinkKind::File(file) => file.path.display().to_string(),
        SinkKind::Exec(exec) => {
            let program = exec.command.first().map_or("", String::as_str);
            let args = exec.command.len().saturating_sub(1);
            let env = if exec.env.is_empty() {
                "none".to_owned()
            } else {
                exec.env.join(" ")
            };
            format!(
                "{program} (+{args} args, timeout {}, env {env})",
                format_duration(exec.timeout)
            )
        }
        SinkKind::Handler(handler) => format!("`{}`", handler.name),
        SinkKind::Nats(nats) => format!(
            "{} subject {} (jetstream {}, timeout {})",
            nats.connection.servers(),
            nats.subject,
            nats.jetstream,
            format_duration(nats.timeout)
        ),
    }
}

fn format_name(format: HttpFormat) -> &'static str {
    match format {
        HttpFormat::CloudEventsBinary => "cloudevents-binary",
        HttpFormat::CloudEventsStructured => "cloudevents-structured",
        HttpFormat::EventGrid => "eventgrid",
    }
}

/// A retry horizon in its two largest units: `1d 0h`, `23h 59m`, `5m 10s`.
fn horizon(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        86_400.. => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
        3600.. => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        60.. => format!("{}m {}s", secs / 60, secs % 60),
        _ => format_duration(duration),
    }
}

/// A byte count in the largest binary unit that divides it (`1MiB`, `1500B`).
fn size(bytes: u64) -> String {
    for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// `  github  POST /hooks/github, preset github, 1 secret(s)`: the scheme, never the secrets.
fn source_line(source: &SourceConfig) -> String {
    let secrets = match &source.verify {
        Verify::Github(s) | Verify::Shopify(s) | Verify::StandardWebhooks(s) => s.len(),
        Verify::Stripe(s, _) | Verify::Slack(s, _) => s.len(),
        Verify::Hmac(_) => 1,
    };
    format!(
        "  {0}  POST /hooks/{0}, preset {1}, {secrets} secret(s)",
        source.name,
        source.preset.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_show_two_units() {
        assert_eq!(horizon(Duration::from_secs(86_400)), "1d 0h");
        assert_eq!(horizon(Duration::from_secs(86_340)), "23h 59m");
        assert_eq!(horizon(Duration::from_secs(310)), "5m 10s");
        assert_eq!(horizon(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        assert_eq!(size(1 << 20), "1MiB");
        assert_eq!(size(1536), "1536B");
        assert_eq!(size(3 << 10), "3KiB");
    }
}
