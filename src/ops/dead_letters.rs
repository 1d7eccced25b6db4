//! `switchyard dead-letter list|show|replay|purge`: the dead-letter store of a running daemon,
//! through its admin API (`/api/v1/dead-letters`).
//!
//! Tables and counts go to stdout (`list` and `show` print the API's JSON with `-o json`);
//! a failure is one line on stderr and exit 1.

use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use hyper::{HeaderMap, Method, Uri};
use serde_json::{json, Value};

use super::query::{filter_params, page_params, print_page, table};
use super::{bearer, exchange, list, print_json, text, AdminArgs, Output, OutputArg};

/// `switchyard dead-letter`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeadLetterArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        filter: Filter,
        /// Most records to list (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// List records after this id (the `next` cursor of the previous page).
        #[arg(long)]
        after: Option<u64>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print one dead letter, with its event, as JSON (indented for `text`, one line for
    /// `json`).
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// The record's id.
        id: u64,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Queue dead letters again for their sinks: one by id, or every one the filters select.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        /// The record's id; without it, the filters choose.
        id: Option<u64>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete one dead letter.
    Purge {
        #[command(flatten)]
        admin: AdminArgs,
        /// The record's id.
        id: u64,
    },
}

/// The filters `list` and `replay` share.
#[derive(Debug, clap::Args)]
struct Filter {
    /// Only records of this route.
    #[arg(long)]
    route: Option<String>,
    /// Only records of this sink.
    #[arg(long)]
    sink: Option<String>,
    /// Only records with this reason (e.g. MaxDeliveryAttemptsExceeded).
    #[arg(long)]
    reason: Option<String>,
    /// Only records dead-lettered at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
}

impl Filter {
    fn params(&self) -> Vec<(&'static str, String)> {
        filter_params([
            ("route", &self.route),
            ("sink", &self.sink),
            ("reason", &self.reason),
            ("since", &self.since),
        ])
    }
}

/// Runs a `dead-letter` subcommand.
pub(crate) fn dead_letter(args: &DeadLetterArgs) -> anyhow::Result<ExitCode> {
    const BASE: &str = "/api/v1/dead-letters";
    let outcome = match &args.command {
        Command::List {
            admin,
            filter,
            limit,
            after,
            output,
        } => {
            let pages = Pages {
                admin,
                filter,
                limit: *limit,
            };
            let fetched = pages.fetch(*after)?;
            if let Some((records, next)) = &fetched {
                if output.output == Output::Json {
                    // The API's shape: the records and the cursor of what is left.
                    print_json(&json!({ "dead_letters": records, "next": next }))?;
                } else {
                    print_list(records, *next);
                }
            }
            fetched.map(|_| ())
        }
        Command::Show { admin, id, output } => {
            let reply = call(admin, Method::GET, &format!("{BASE}/{id}"), &[])?;
            if let Some(reply) = &reply {
                if output.output == Output::Json {
                    print_json(reply)?;
                } else {
                    println!("{}", pretty(reply));
                }
            }
            reply.map(|_| ())
        }
        Command::Replay { admin, id, filter } => {
            let (path, params) = match id {
                Some(id) => (format!("{BASE}/{id}/replay"), Vec::new()),
                None => (format!("{BASE}/replay"), filter.params()),
            };
            call(admin, Method::POST, &path, &params)?
                .map(|reply| println!("replayed {}", text(&reply["replayed"])))
        }
        Command::Purge { admin, id } => call(admin, Method::DELETE, &format!("{BASE}/{id}"), &[])?
            .map(|_| println!("purged {id}")),
    };
    Ok(outcome.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS))
}

/// A listing that may span pages: the API ends a page early when its records are large.
struct Pages<'a> {
    admin: &'a AdminArgs,
    filter: &'a Filter,
    limit: usize,
}

impl Pages<'_> {
    /// Up to `limit` records after `after`, following `next` from page to page; with the
    /// cursor of what is left, if anything. `None` when a request failed (already reported).
    fn fetch(&self, mut after: Option<u64>) -> anyhow::Result<Option<(Vec<Value>, Option<u64>)>> {
        let mut records: Vec<Value> = Vec::new();
        loop {
            let wanted = self.limit.saturating_sub(records.len());
            let params = page_params(self.filter.params(), wanted, ("after", after));
            let Some(reply) = call(self.admin, Method::GET, "/api/v1/dead-letters", &params)?
            else {
                return Ok(None);
            };
            let page = list(&reply, "dead_letters");
            records.extend_from_slice(page);
            let next = reply["next"].as_u64();
            // A page with no records cannot move the cursor: stop rather than loop.
            if next.is_none() || page.is_empty() || records.len() >= self.limit {
                return Ok(Some((records, next)));
            }
            after = next;
        }
    }
}

/// One admin request; prints a non-2xx answer as one line on stderr and gives `None`.
pub(super) fn call(
    args: &AdminArgs,
    method: Method,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<Option<Value>> {
    let mut url = format!("{}{path}", args.admin.trim_end_matches('/'));
    for (i, (key, value)) in params.iter().enumerate() {
        let sep = if i == 0 { '?' } else { '&' };
        url.push_str(&format!("{sep}{key}={}", encode(value)));
    }
    let url: Uri = url.parse().context("--admin is not a valid URL")?;
    let mut headers = HeaderMap::new();
    bearer(args.token.as_deref(), &mut headers)?;
    let (status, body) = exchange(method, url, headers, Bytes::new(), args.ca.as_deref())?;
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = match value.get("error").and_then(Value::as_str) {
            Some(error) => error.to_owned(),
            None => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        eprintln!("switchyard: admin API answered {status}: {message}");
        return Ok(None);
    }
    Ok(Some(value))
}

/// Percent-encodes a query value or a path segment (everything but unreserved characters).
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn print_list(records: &[Value], next: Option<u64>) {
    let header = [
        "ID",
        "ROUTE",
        "SINK",
        "REASON",
        "ATTEMPTS",
        "STATUS",
        "DEAD_LETTERED",
        "EVENT",
    ];
    let mut rows = table(&header);
    for record in records {
        let event = &record["event"];
        rows.push(vec![
            text(&record["id"]),
            text(&record["route"]),
            text(&record["sink"]),
            text(&record["reason"]),
            text(&record["attempts"]),
            text(&record["last_status"]),
            text(&record["dead_lettered_time"]),
            format!("{} {}", text(&event["type"]), text(&event["id"])),
        ]);
    }
    print_page(&rows, "after", next);
}
