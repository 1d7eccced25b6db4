//! `switchyard sagas list|show|abort`: saga instances of a running daemon, through its admin
//! API (`/api/v1/sagas`).
//!
//! `list` prints a table, one line per instance, oldest first; `show` prints an instance and
//! each of its steps and compensations; `abort` starts compensating a running instance.
//! With `-o json` each prints the API's JSON.

use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use super::dead_letters::{call, encode};
use super::query::{filter_params, page_params, print_page, table};
use super::{list, print_json, print_table, text, AdminArgs, Output, OutputArg};

/// `switchyard sagas`.
#[derive(Debug, clap::Args)]
pub(crate) struct SagasArgs {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List saga instances, oldest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only instances of this saga.
        #[arg(long)]
        name: Option<String>,
        /// Only instances in this state (running, compensating, completed, compensated,
        /// failed).
        #[arg(long)]
        state: Option<String>,
        /// Only instances started at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Most instances to list (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// List instances after this cursor (the `next` of the previous page).
        #[arg(long)]
        after: Option<u64>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Print one instance with each of its steps and compensations.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        /// The instance id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Start compensating a running instance now.
    Abort {
        #[command(flatten)]
        admin: AdminArgs,
        /// The instance id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// Runs a `sagas` subcommand.
pub(crate) fn sagas(args: &SagasArgs) -> anyhow::Result<ExitCode> {
    let outcome = match &args.command {
        Command::List {
            admin,
            name,
            state,
            since,
            limit,
            after,
            output,
        } => {
            let filters = filter_params([("name", name), ("state", state), ("since", since)]);
            let params = page_params(filters, *limit, ("after", *after));
            let reply = call(admin, Method::GET, "/api/v1/sagas", &params)?;
            show_with(reply.as_ref(), *output, print_list)?;
            reply.map(|_| ())
        }
        Command::Show { admin, id, output } => {
            let path = format!("/api/v1/sagas/{}", encode(id));
            let reply = call(admin, Method::GET, &path, &[])?;
            show_with(reply.as_ref(), *output, print_instance)?;
            reply.map(|_| ())
        }
        Command::Abort { admin, id, output } => {
            let path = format!("/api/v1/sagas/{}/abort", encode(id));
            let reply = call(admin, Method::POST, &path, &[])?;
            show_with(reply.as_ref(), *output, print_instance)?;
            reply.map(|_| ())
        }
    };
    Ok(outcome.map_or(ExitCode::FAILURE, |()| ExitCode::SUCCESS))
}

fn show_with(reply: Option<&Value>, output: OutputArg, print: fn(&Value)) -> anyhow::Result<()> {
    match (reply, output.output) {
        (Some(reply), Output::Json) => print_json(reply),
        (Some(reply), Output::Text) => {
            print(reply);
            Ok(())
        }
        (None, _) => Ok(()),
    }
}

fn print_list(reply: &Value) {
    let header = ["ID", "SAGA", "STATE", "STEP", "STARTED", "FINISHED"];
    let mut rows = table(&header);
    for saga in list(reply, "sagas") {
        rows.push(vec![
            text(&saga["id"]),
            text(&saga["saga"]),
            text(&saga["state"]),
            text(&saga["step"]),
            text(&saga["started"]),
            text(&saga["finished"]),
        ]);
    }
    print_page(&rows, "after", reply["next"].as_u64());
}

fn print_instance(reply: &Value) {
    println!(
        "saga {} instance {}: {} (started {}, deadline {})",
        text(&reply["saga"]),
        text(&reply["id"]),
        text(&reply["state"]),
        text(&reply["started"]),
        text(&reply["deadline"]),
    );
    if let Some(reason) = reply["reason"].as_str() {
        println!("reason: {reason}");
    }
    let failed = list(reply, "failed_compensations");
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().map(text).collect();
        println!("failed compensations: {}", names.join(", "));
    }
    let header = [
        "STEP", "KIND", "SINK", "STARTED", "FINISHED", "ATTEMPTS", "OUTCOME", "STATUS", "REPLY",
    ];
    let mut rows = table(&header);
    for step in list(reply, "steps") {
        rows.push(vec![
            text(&step["name"]),
            text(&step["kind"]),
            text(&step["sink"]),
            text(&step["started"]),
            text(&step["finished"]),
            text(&step["attempts"]),
            text(&step["outcome"]),
            text(&step["status"]),
            text(&step["reply_id"]),
        ]);
    }
    print_table(&rows);
}
