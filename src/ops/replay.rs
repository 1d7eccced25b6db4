//! `switchyard replay`: delivers the events a running daemon retained
//! (`spool.retain_delivered`) to a sink again, through its admin API (`/api/v1/replay`), and
//! `switchyard replay status ID` reads a replay's progress (`/api/v1/replays/{id}`).
//!
//! Both print a short summary, or with `-o json` the API's JSON; `--wait` polls until the
//! replay is done and prints its final progress.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Uri};
use serde_json::{json, Value};

use super::dead_letters::call;
use super::{bearer, exchange, print_json, text, AdminArgs, Output, OutputArg};

/// How often `--wait` asks for progress.
const POLL: Duration = Duration::from_millis(250);

/// `switchyard replay`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct ReplayArgs {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    start: Start,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a replay's progress.
    Status {
        /// The replay's id (printed when it started).
        id: u64,
        /// Poll until the replay is done.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// What to replay.
#[derive(Debug, clap::Args)]
struct Start {
    /// The sink to deliver to again (events that were delivered to it).
    #[arg(long, required = true)]
    sink: Option<String>,
    /// Only events received at or after this RFC 3339 time.
    #[arg(long, required = true)]
    since: Option<String>,
    /// Only events received before this RFC 3339 time.
    #[arg(long, required = true)]
    until: Option<String>,
    /// Only events that came through this route.
    #[arg(long)]
    route: Option<String>,
    /// Only events of this `type`.
    #[arg(long = "type", value_name = "TYPE")]
    ty: Option<String>,
    /// Only events with this `source`.
    #[arg(long)]
    source: Option<String>,
    /// Only events with this `subject`.
    #[arg(long)]
    subject: Option<String>,
    /// Only events for which this CloudEvents SQL expression is true.
    #[arg(long)]
    sql: Option<String>,
    /// Poll until the replay is done, then print its progress.
    #[arg(long)]
    wait: bool,
}

impl Start {
    fn body(&self) -> Value {
        let mut filter = serde_json::Map::new();
        let parts = [
            ("type", &self.ty),
            ("source", &self.source),
            ("subject", &self.subject),
            ("sql", &self.sql),
        ];
        for (key, value) in parts {
            if let Some(value) = value {
                filter.insert(key.to_owned(), json!(value));
            }
        }
        let mut body = json!({ "sink": self.sink, "since": self.since, "until": self.until });
        if let Some(route) = &self.route {
            body["route"] = json!(route);
        }
        if !filter.is_empty() {
            body["filter"] = Value::Object(filter);
        }
        body
    }
}

/// Runs `replay` or `replay status`.
pub(crate) fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let done = match &args.command {
        Some(Command::Status {
            id,
            wait,
            admin,
            output,
        }) => status(admin, *id, *wait, output.output)?,
        None => start(args)?,
    };
    Ok(if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn start(args: &ReplayArgs) -> anyhow::Result<bool> {
    let Some(reply) = post(&args.admin, "/api/v1/replay", &args.start.body())? else {
        return Ok(false);
    };
    let Some(id) = reply["id"].as_u64() else {
        anyhow::bail!("the admin API answered without a replay id: {reply}");
    };
    if args.start.wait {
        return status(&args.admin, id, true, args.output.output);
    }
    match args.output.output {
        Output::Json => print_json(&reply)?,
        Output::Text => println!(
            "replay {id}: {} events matched; follow it with `switchyard replay status {id}`",
            text(&reply["matched"])
        ),
    }
    Ok(true)
}

fn status(admin: &AdminArgs, id: u64, wait: bool, output: Output) -> anyhow::Result<bool> {
    let path = format!("/api/v1/replays/{id}");
    let reply = loop {
        let Some(reply) = call(admin, Method::GET, &path, &[])? else {
            return Ok(false);
        };
        if !wait || reply["state"] == "done" {
            break reply;
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "the command is synchronous: no runtime thread runs here"
        )]
        std::thread::sleep(POLL);
    };
    match output {
        Output::Json => print_json(&reply)?,
        Output::Text => println!(
            "replay {id} to {}: {}; matched {}, enqueued {}, delivered {}, failed {}, lost {}",
            text(&reply["sink"]),
            text(&reply["state"]),
            text(&reply["matched"]),
            text(&reply["enqueued"]),
            text(&reply["delivered"]),
            text(&reply["failed"]),
            text(&reply["lost"]),
        ),
    }
    Ok(true)
}

/// POSTs `body` as JSON; the answer's JSON, or `None` after printing the API's error.
fn post(args: &AdminArgs, path: &str, body: &Value) -> anyhow::Result<Option<Value>> {
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let url: Uri = url.parse().context("--admin is not a valid URL")?;
    let mut headers = HeaderMap::new();
    bearer(args.token.as_deref(), &mut headers)?;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = Bytes::from(serde_json::to_vec(body)?);
    let (status, answer) = exchange(Method::POST, url, headers, body, args.ca.as_deref())?;
    let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = match value.get("error").and_then(Value::as_str) {
            Some(error) => error.to_owned(),
            None => String::from_utf8_lossy(&answer).trim().to_owned(),
        };
        eprintln!("switchyard: admin API answered {status}: {message}");
        return Ok(None);
    }
    Ok(Some(value))
}
