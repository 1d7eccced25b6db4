//! The `switchyard` binary's commands that talk to a running daemon over HTTP: `send`
//! publishes one CloudEvent to ingress; `sinks` and `routes` read the admin API (as tables,
//! or with `-o json` as the API's JSON);
//! `purge-sink` deletes the deliveries kept for a removed sink; `dead-letter`
//! ([`dead_letters`]) lists, replays and purges dead letters; `events` ([`events`]) reads
//! the delivery history; `sagas` ([`sagas`]) lists, shows and aborts saga instances;
//! `health` ([`health`]) asks the admin server's probes; `replay` ([`replay`]) delivers
//! retained events to a sink again.
//!
//! Part of the binary, not the library (`lib.rs` does not declare it). Bad arguments exit
//! 64; a failed exchange or a non-2xx answer exits 1.

mod dead_letters;
mod events;
mod health;
mod query;
mod replay;
mod sagas;
pub(crate) mod spool;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::builder::NonEmptyStringValueParser;
use clap::ValueEnum;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

use switchyard::config::DEFAULT_ADMIN_LISTEN;
use switchyard::event::{http as ce_http, Event};
use switchyard::outbound::{Client, ClientOptions, Proxy, SystemRoots};

pub(crate) use dead_letters::{dead_letter, DeadLetterArgs};
pub(crate) use events::{events, EventsArgs};
pub(crate) use health::{health, HealthArgs};
pub(crate) use replay::{replay, ReplayArgs};
pub(crate) use sagas::{sagas, SagasArgs};

/// Exit code for bad arguments (EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Longest wait for a complete answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `switchyard send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    /// Ingress URL, e.g. http://127.0.0.1:8080/events.
    #[arg(long)]
    url: String,
    /// The event's `type`.
    #[arg(long = "type", value_name = "TYPE")]
    ty: String,
    /// The event's `source`.
    #[arg(long)]
    source: String,
    /// The event's `subject`.
    #[arg(long)]
    subject: Option<String>,
    /// The event's `id` (default: a random UUID).
    #[arg(long)]
    id: Option<String>,
    /// Payload: JSON text, or @FILE to read it from a file. JSON goes as application/json,
    /// anything else as text/plain.
    #[arg(long)]
    data: Option<String>,
    /// CloudEvents HTTP mode.
    #[arg(long, value_enum, default_value_t = SendMode::Binary)]
    mode: SendMode,
    /// Bearer token, for an ingress that requires one.
    #[arg(long)]
    token: Option<String>,
    /// PEM file of CA certificates trusted besides the system's roots (an https:// URL with
    /// a private or self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// How `send` puts the event on the wire.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SendMode {
    /// Attributes in `ce-*` headers, the payload as the body.
    Binary,
    /// One `application/cloudevents+json` document.
    Structured,
}

/// How to reach a running daemon's admin API; shared by every command that talks to it.
#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// Admin server URL.
    #[arg(long, env = "SWITCHYARD_ADMIN_URL", default_value_t = default_admin_url(),
          value_parser = NonEmptyStringValueParser::new())]
    admin: String,
    /// The admin token (`admin.token` in routes.yaml).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of CA certificates trusted besides the system's roots (an https:// admin
    /// server with a private or self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// The admin server's URL when `admin_listen` is left at its default.
pub(crate) fn default_admin_url() -> String {
    format!("http://{DEFAULT_ADMIN_LISTEN}")
}

/// `-o, --output`: how a command that reads prints what it read.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct OutputArg {
    /// Output format: `text` for people, `json` for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// The output formats of the commands that read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Tables and summaries.
    Text,
    /// One JSON document on stdout: the admin API's answer as it came, or, for `check` and
    /// `explain`, the shapes docs/operations.md documents.
    Json,
}

/// `switchyard sinks` and `switchyard routes`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    output: OutputArg,
}

/// Prints a JSON value as one line on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Publishes one event and prints the answer's status and body.
pub(crate) fn send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let (url, headers, body) = match prepare(args) {
        Ok(prepared) => prepared,
        Err(e) => return Ok(usage(&e)),
    };
    let (status, body) = exchange(Method::POST, url, headers, body, args.ca.as_deref())?;
    println!("{status}");
    if !body.is_empty() {
        println!("{}", String::from_utf8_lossy(&body));
    }
    Ok(exit_for(status))
}

/// The request `send` makes; an error here is a usage error.
fn prepare(args: &SendArgs) -> anyhow::Result<(Uri, HeaderMap, Bytes)> {
    let url: Uri = args.url.parse().context("--url is not a valid URL")?;
    let event = event(args)?;
    let mut headers = HeaderMap::new();
    let body = match args.mode {
        SendMode::Binary => ce_http::encode_binary(&event, &mut headers),
        SendMode::Structured => {
            let ct = HeaderValue::from_static("application/cloudevents+json; charset=utf-8");
            headers.insert(CONTENT_TYPE, ct);
            Bytes::from(ce_http::encode_structured(&event))
        }
    };
    bearer(args.token.as_deref(), &mut headers)?;
    Ok((url, headers, body))
}

fn event(args: &SendArgs) -> anyhow::Result<Event> {
    let data = match args.data.as_deref() {
        Some(text) => Some(match text.strip_prefix('@') {
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
            None => text.as_bytes().to_vec(),
        }),
        None => None,
    };
    let content_type = data.as_deref().map(|d| {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(d).is_ok();
        if json {
            "application/json"
        } else {
            "text/plain"
        }
        .to_owned()
    });
    Ok(Event {
        specversion: "1.0".to_owned(),
        id: args
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        source: args.source.clone(),
        ty: args.ty.clone(),
        datacontenttype: content_type,
        dataschema: None,
        subject: args.subject.clone(),
        time: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        extensions: Vec::new(),
        data_version: None,
        data: data.map(Bytes::from),
    })
}

/// `switchyard sinks [pause|resume NAME]`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SinksArgs {
    #[command(flatten)]
    read: ReadArgs,
    #[command(subcommand)]
    action: Option<SinksAction>,
}

/// What to do with one sink.
#[derive(Debug, clap::Subcommand)]
enum SinksAction {
    /// Stop delivering to the sink: its deliveries stay queued, none is attempted, across
    /// reloads and restarts (not with the `memory` spool), until `resume`.
    Pause(SinkNameArgs),
    /// Deliver to a paused sink again.
    Resume(SinkNameArgs),
}

/// The admin server and one sink's name.
#[derive(Debug, clap::Args)]
struct SinkNameArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The sink, as named in the running configuration.
    name: String,
}

/// Lists the sinks, or pauses or resumes one.
pub(crate) fn sinks_command(args: &SinksArgs) -> anyhow::Result<ExitCode> {
    let (action, target) = match &args.action {
        Some(SinksAction::Pause(target)) => ("pause", target),
        Some(SinksAction::Resume(target)) => ("resume", target),
        None => return sinks(&args.read),
    };
    let path = format!(
        "/api/v1/sinks/{}/{action}",
        dead_letters::encode(&target.name)
    );
    let Some(reply) = dead_letters::call(&target.admin, Method::POST, &path, &[])? else {
        return Ok(ExitCode::FAILURE);
    };
    let state = match reply["paused"].as_bool() {
        Some(true) => "paused",
        _ => "delivering",
    };
    let already = match reply["changed"].as_bool() {
        Some(false) => " (already)",
        _ => "",
    };
    println!("{} {state}{already}", target.name);
    Ok(ExitCode::SUCCESS)
}

/// Prints the sinks of a running daemon as a table.
fn sinks(args: &ReadArgs) -> anyhow::Result<ExitCode> {
    let Some(reply) = admin_get(&args.admin, "/api/v1/sinks")? else {
        return Ok(ExitCode::FAILURE);
    };
    if args.output.output == Output::Json {
        print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "NAME",
        "KIND",
        "CONCURRENCY",
        "IN_FLIGHT",
        "BACKLOG",
        "PAUSED",
        "LAST_ERROR",
    ]
    .map(str::to_owned)
    .to_vec()];
    for sink in list(&reply, "sinks") {
        let last_error = match &sink["last_error"] {
            Value::Object(e) => format!("{} {}", text(&e["at"]), text(&e["message"])),
            _ => "-".to_owned(),
        };
        rows.push(vec![
            text(&sink["name"]),
            text(&sink["kind"]),
            text(&sink["concurrency"]),
            text(&sink["in_flight"]),
            text(&sink["backlog"]),
            match sink["paused"].as_bool() {
                Some(true) => "yes".to_owned(),
                _ => "no".to_owned(),
            },
            last_error,
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// `switchyard purge-sink`.
#[derive(Debug, clap::Args)]
pub(crate) struct PurgeSinkArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The sink; the running configuration must no longer name it.
    name: String,
}

/// Deletes the deliveries kept for a sink that a reload removed (those being delivered right
/// now stay) and prints how many.
pub(crate) fn purge_sink(args: &PurgeSinkArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/api/v1/sinks/{}/deliveries",
        dead_letters::encode(&args.name)
    );
    let Some(reply) = dead_letters::call(&args.admin, Method::DELETE, &path, &[])? else {
        return Ok(ExitCode::FAILURE);
    };
    println!("purged {}", text(&reply["purged"]));
    Ok(ExitCode::SUCCESS)
}

/// Prints the routing table of a running daemon.
pub(crate) fn routes(args: &ReadArgs) -> anyhow::Result<ExitCode> {
    let Some(reply) = admin_get(&args.admin, "/api/v1/routes")? else {
        return Ok(ExitCode::FAILURE);
    };
    if args.output.output == Output::Json {
        print_json(&reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["NAME", "TO", "MATCH"].map(str::to_owned).to_vec()];
    for route in list(&reply, "routes") {
        let to: Vec<String> = list(route, "to").iter().map(text).collect();
        rows.push(vec![
            text(&route["name"]),
            to.join(","),
            match_text(&route["match"]),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

fn match_text(filter: &Value) -> String {
    let patterns = |key: &str| {
        let items: Vec<String> = list(filter, key).iter().map(text).collect();
        (!items.is_empty()).then(|| format!("{key} {}", items.join(",")))
    };
    let subject = filter["subject"].as_object().map(|s| {
        let part = |key: &str| {
            s.get(key)
                .and_then(Value::as_str)
                .map(|v| format!(" {key} {v:?}"))
        };
        let parts = [part("begins_with"), part("ends_with")];
        format!("subject{}", parts.into_iter().flatten().collect::<String>())
    });
    let advanced = list(filter, "advanced")
        .iter()
        .map(|f| format!("{} {}", text(&f["key"]), text(&f["op"])))
        .collect::<Vec<_>>();
    let advanced = (!advanced.is_empty()).then(|| advanced.join(" and "));
    let parts: Vec<String> = [patterns("types"), patterns("sources"), subject, advanced]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        "every event".to_owned()
    } else {
        parts.join("; ")
    }
}

/// GETs an admin path; prints a non-2xx answer on stderr and gives `None`.
fn admin_get(args: &AdminArgs, path: &str) -> anyhow::Result<Option<Value>> {
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let url: Uri = url.parse().context("--admin is not a valid URL")?;
    let mut headers = HeaderMap::new();
    bearer(args.token.as_deref(), &mut headers)?;
    let (status, body) = exchange(Method::GET, url, headers, Bytes::new(), args.ca.as_deref())?;
    if !status.is_success() {
        let body = String::from_utf8_lossy(&body);
        eprintln!("switchyard: admin API answered {status}: {}", body.trim());
        return Ok(None);
    }
    let value =
        serde_json::from_slice(&body).context("the admin API answered with invalid JSON")?;
    Ok(Some(value))
}

pub(super) fn bearer(token: Option<&str>, headers: &mut HeaderMap) -> anyhow::Result<()> {
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("--token holds characters a header cannot carry")?;
        headers.insert(AUTHORIZATION, value);
    }
    Ok(())
}

/// One request, answered within [`TIMEOUT`]: plain HTTP, or HTTPS trusting the system's roots
/// and `ca`; through the environment's proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as
/// curl would.
pub(super) fn exchange(
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    ca: Option<&Path>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    exchange_within(TIMEOUT, Proxy::Environment, method, url, headers, body, ca)
}

/// Like [`exchange`], the answer and its body each awaited at most `timeout`, through
/// `proxy`.
pub(super) fn exchange_within(
    timeout: Duration,
    proxy: Proxy,
    method: Method,
    url: Uri,
    headers: HeaderMap,
    body: Bytes,
    ca: Option<&Path>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let options = ClientOptions {
        extra_roots: ca.map(read_ca).transpose()?.unwrap_or_default(),
        proxy,
        ..ClientOptions::default()
    };
    let what = format!("{method} {url}");
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))?;
    *request.headers_mut() = headers;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(async {
        let roots = if request.uri().scheme_str() == Some("https") {
            SystemRoots::load()
        } else {
            SystemRoots::none()
        };
        let client = Client::new(&options, &roots)?;
        let response = tokio::time::timeout(timeout, client.send(request))
            .await
            .context("no answer in time")??;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(timeout, body.collect())
            .await
            .context("no complete answer in time")??;
        anyhow::Ok((parts.status, body.to_bytes()))
    });
    answer.with_context(|| what)
}

/// The certificates of a `--ca` file.
fn read_ca(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let what = || format!("--ca {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(what)?
        .collect::<Result<Vec<_>, _>>()
        .with_context(what)?;
    if certs.is_empty() {
        anyhow::bail!("--ca {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn exit_for(status: StatusCode) -> ExitCode {
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage(error: &anyhow::Error) -> ExitCode {
    eprintln!("switchyard: {error:#}");
    ExitCode::from(EXIT_USAGE)
}

pub(super) fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value[key].as_array().map_or(&[], Vec::as_slice)
}

pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// Prints rows as left-aligned columns, the last one unpadded.
pub(super) fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}
