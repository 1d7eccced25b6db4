//! `switchyard events list|show`: the delivery history of a running daemon, through its
//! admin API (`/api/v1/events`).
//!
//! `list` prints a table, one line per delivery of each event, newest event first; `show`
//! prints the event and every attempt. With `-o json` both print the API's JSON.

use std::process::ExitCode;

use hyper::Method;
use serde_json::{json, Value};

use super::dead_letters::call;
use super::query::{filter_params, page_params, print_page, table};
use super::{list, print_json, print_table, text, AdminArgs, Output, OutputArg};

/// `switchyard events`.
#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List events and what became of their deliveries, newest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        filter: Filter,
        /// Most events to list (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// List events older than this key (the `next` cursor of the previous page).
        #[arg(long)]
        cursor: Option<u64>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print one event with each of its deliveries and every attempt.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// The event's key (the KEY column of `list`).
        key: u64,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// What `list` selects.
#[derive(Debug, clap::Args)]
struct Filter {
    /// Only events with this `source`.
    #[arg(long)]
    source: Option<String>,
    /// Only events with this `id`.
    #[arg(long)]
    id: Option<String>,
    /// Only events of this `type`.
    #[arg(long = "type", value_name = "TYPE")]
    ty: Option<String>,
    /// Only events with an attempt at this sink.
    #[arg(long)]
    sink: Option<String>,
    /// Only events with an attempt of this outcome (delivered, retrying, dead-lettered,
    /// expired).
    #[arg(long)]
    outcome: Option<String>,
    /// Only events with an attempt at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only events with an attempt before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
}

impl Filter {
    fn params(&self) -> Vec<(&'static str, String)> {
        filter_params([
            ("source", &self.source),
            ("id", &self.id),
            ("type", &self.ty),
            ("sink", &self.sink),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
        ])
    }
}

/// Runs an `events` subcommand.
pub(crate) fn events(args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let outcome = match &args.command {
        Command::List {
            admin,
            filter,
            limit,
            cursor,
            output,
        } => {
            let params = page_params(filter.params(), *limit, ("cursor", *cursor));
            let reply = call(admin, Method::GET, "/api/v1/events", &params)?;
            if let Some(reply) = &reply {
                match output.output {
                    Output::Json => print_json(reply)?,
                    Output::Text => print_list(reply),
                }
            }
            reply.map(|_| ())
        }
        Command::Show { admin, key, output } => {
            let reply = call(admin, Method::GET, &format!("/api/v1/events/{key}"), &[])?;
            if let Some(reply) = &reply {
                match output.output {
                    Output::Json => print_json(reply)?,
                    Output::Text => print_event(reply),
                }
            }
            reply.map(|_| ())
        }
    };
    Ok(outcome.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS))
}

fn print_list(reply: &Value) {
    let header = [
        "KEY", "TYPE", "ID", "SOURCE", "SINK", "ROUTE", "ATTEMPTS", "OUTCOME", "STATUS", "TIME",
    ];
    let mut rows = table(&header);
    for event in list(reply, "events") {
        for delivery in list(event, "deliveries") {
            rows.push(vec![
                text(&event["key"]),
                text(&event["type"]),
                text(&event["id"]),
                text(&event["source"]),
                text(&delivery["sink"]),
                text(&delivery["route"]),
                text(&delivery["attempts"]),
                text(&delivery["outcome"]),
                text(&delivery["status"]),
                text(&delivery["time"]),
            ]);
        }
    }
    print_page(&rows, "cursor", reply["next"].as_u64());
}

fn print_event(reply: &Value) {
    let event = &reply["event"];
    println!(
        "event {} (type {}, source {}), key {}",
        text(&reply["id"]),
        text(&reply["type"]),
        text(&reply["source"]),
        text(&reply["key"])
    );
    if !event.is_null() {
        let pretty = serde_json::to_string_pretty(event).unwrap_or_else(|_| event.to_string());
        println!("{pretty}");
    }
    let header = [
        "SINK",
        "ROUTE",
        "ATTEMPT",
        "TIME",
        "DURATION_MS",
        "OUTCOME",
        "STATUS",
        "ERROR",
    ];
    let mut rows = table(&header);
    for delivery in list(reply, "deliveries") {
        for attempt in list(delivery, "attempt_log") {
            let duration = attempt["duration_ms"]
                .as_f64()
                .map(|d| json!((d * 10.0).round() / 10.0));
            rows.push(vec![
                text(&delivery["sink"]),
                text(&delivery["route"]),
                text(&attempt["attempt"]),
                text(&attempt["time"]),
                text(&duration.unwrap_or(Value::Null)),
                text(&attempt["outcome"]),
                text(&attempt["status"]),
                text(&attempt["error"]),
            ]);
        }
    }
    print_table(&rows);
}
