//! The `switchyard` command: serve, check a configuration, explain routing, publish an event,
//! read a running daemon's sinks and routes through its admin API, and print shell
//! completions. Commands that read print text, or one JSON document with `-o json`.
//!
//! `--admin`, `--token` and `--config` may come from `SWITCHYARD_ADMIN_URL`,
//! `SWITCHYARD_ADMIN_TOKEN` and `SWITCHYARD_CONFIG`; `--admin` defaults to the admin
//! server's default address.
//!
//! The only place that uses `anyhow`: library errors get their context here.
//!
//! Exit codes: 0 success; 1 runtime failure or a non-2xx answer; 64 invalid configuration
//! or usage.

mod ops;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

use switchyard::config::{self, ConfigError};
use switchyard::event::{http as ce_http, Event};
use switchyard::routing::RouteTable;
use switchyard::telemetry::{self, LogFormat};
use switchyard::Switchyard;

/// Exit code for an invalid configuration or usage (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// The exit codes, as `--help` shows them.
const EXIT_CODES: &str =
    "Exit codes: 0 success, 1 runtime failure or a non-2xx answer, 64 invalid configuration or usage.";

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Event router: CloudEvents and Event Grid webhooks in, durable routed delivery out.",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve ingress and deliver events (the default command). SIGHUP, `POST
    /// /api/v1/reload` and (unless --no-watch) a change of the file reload the configuration.
    Serve(ServeArgs),
    /// Validate a configuration: print every error (exit 64) or a summary.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        output: ops::OutputArg,
    },
    /// Show, per route, whether the events in a JSON file match and why not.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// A structured CloudEvent, a CloudEvents batch, or Event Grid events (JSON).
        event: PathBuf,
        /// Also show what each matched sink would receive, after the route's and the sink's
        /// `transform` (or the transform's error).
        #[arg(long)]
        transform: bool,
        #[command(flatten)]
        output: ops::OutputArg,
    },
    /// Publish one CloudEvent to an ingress URL; print the answer's status and body.
    #[command(after_help = EXIT_CODES)]
    Send(ops::SendArgs),
    /// Print each sink's state (in flight, backlog, paused, last error) from a running
    /// daemon, or pause or resume one.
    #[command(after_help = EXIT_CODES)]
    Sinks(ops::SinksArgs),
    /// Print the routing table of a running daemon.
    #[command(after_help = EXIT_CODES)]
    Routes(ops::ReadArgs),
    /// Delete the deliveries a running daemon keeps for a sink its configuration no longer
    /// names (in flight ones stay, except on the `nats` spool).
    #[command(after_help = EXIT_CODES)]
    PurgeSink(ops::PurgeSinkArgs),
    /// List, show, replay or purge a running daemon's dead letters.
    #[command(after_help = EXIT_CODES)]
    DeadLetter(ops::DeadLetterArgs),
    /// List or show a running daemon's delivery history: every attempt of every delivery.
    #[command(after_help = EXIT_CODES)]
    Events(ops::EventsArgs),
    /// Deliver the events a running daemon retained (spool.retain_delivered) to a sink again,
    /// by time range; `replay status ID` follows one.
    #[command(after_help = EXIT_CODES)]
    Replay(ops::ReplayArgs),
    /// List, show or abort a running daemon's saga instances.
    #[command(after_help = EXIT_CODES)]
    Sagas(ops::SagasArgs),
    /// Exit 0 when a running daemon's admin server answers its readiness (or liveness)
    /// probe with 200, 1 with the reason otherwise: for a container HEALTHCHECK.
    #[command(after_help = EXIT_CODES)]
    Health(ops::HealthArgs),
    /// Verify or repair the embedded spool on disk (while switchyard is stopped).
    #[command(after_help = EXIT_CODES)]
    Spool(ops::spool::SpoolArgs),
    /// Print a shell completion script, e.g. `switchyard completions bash >
    /// /etc/bash_completion.d/switchyard`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the JSON Schema (draft-07) of routes.yaml, for editors: `switchyard schema >
    /// routes.schema.json`.
    Schema,
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Do not reload when the configuration file changes (SIGHUP and the admin API still do).
    #[arg(long)]
    no_watch: bool,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// Path of the routes file.
    #[arg(long, short, env = CONFIG_ENV, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// The allocator of the daemon and of the commands: jemalloc, whose background thread returns
/// freed memory to the system off the request path, within about a second (built with
/// `dirty_decay_ms:1000`, a thread-cache collection every 1 MiB allocated and 16-page slabs
/// for the small size classes; see `.cargo/config.toml`).
///
/// A request and its delivery make some eighty allocations, many of them larger than glibc's
/// per-thread cache holds; end to end on one core jemalloc took 10–20% less CPU per event.
/// Without the background thread the purging ran on the request path, and the p99 at a fixed
/// rate went from a few milliseconds to tens or hundreds (docs/performance.md has both).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let (log_format, command) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => {
            // Help and version go to stdout and succeed; a usage error exits 64.
            let _printed = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let format = match log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let result = match command {
        Command::Serve(arg) => {
            telemetry::init_logging(format);
            serve(&arg.config.config, !arg.no_watch)
        }
        Command::Check { config, output } => check(&config.config, output.output),
        Command::Explain {
            config,
            event,
            transform,
            output,
        } => explain(&config.config, &event, transform, output.output),
        Command::Send(args) => ops::send(&args),
        Command::Sinks(args) => ops::sinks_command(&args),
        Command::Routes(args) => ops::routes(&args),
        Command::PurgeSink(args) => ops::purge_sink(&args),
        Command::DeadLetter(args) => ops::dead_letter(&args),
        Command::Events(args) => ops::events(&args),
        Command::Replay(args) => ops::replay(&args),
        Command::Sagas(args) => ops::sagas(&args),
        Command::Health(args) => ops::health(&args),
        Command::Spool(args) => match load_config(args.config()) {
            Some(loaded) => ops::spool::run(&args, &loaded),
            None => Ok(ExitCode::from(EXIT_CONFIG)),
        },
        Command::Completions { shell } => completions(shell),
        Command::Schema => print_schema(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The routes file when neither `--config` nor [`CONFIG_ENV`] names one.
const DEFAULT_CONFIG: &str = "routes.yaml";
/// The environment variable that stands in for `--config`.
const CONFIG_ENV: &str = "SWITCHYARD_CONFIG";

/// Parses the command line; a bare `switchyard` is `switchyard serve`, its `--config` read as
/// clap reads it for `serve` (from [`CONFIG_ENV`] or the default).
fn parse() -> Result<(LogFormatArg, Command), clap::Error> {
    let cli = Cli::try_parse()?;
    match cli.command {
        Some(command) => Ok((cli.log_format, command)),
        None => match Cli::try_parse_from(["switchyard", "serve"])?.command {
            Some(serve) => Ok((cli.log_format, serve)),
            None => Err(Cli::command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "no command to run",
            )),
        },
    }
}

/// Loads a configuration, printing every error; `None` means exit 64.
fn load_config(path: &Path) -> Option<config::Config> {
    load_config_source(path).map(|(config, _)| config)
}

/// Loads the configuration and returns the text it was read from.
fn load_config_source(path: &Path) -> Option<(config::Config, String)> {
    let loaded = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
        .and_then(|text| config::load_text(&text, path).map(|config| (config, text)));
    match loaded {
        Ok(loaded) => Some(loaded),
        Err(e @ ConfigError::Invalid(_)) => {
            eprintln!("{}: {e}", path.display());
            None
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn check(path: &Path, output: ops::Output) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(path) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    match output {
        ops::Output::Json => ops::print_json(&config.check_summary())?,
        ops::Output::Text => {
            println!("{}: OK", path.display());
            print!("{}", config.summary());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `explain -o json` prints: every event of the file, in order.
#[derive(serde::Serialize)]
struct Explained<'a> {
    events: Vec<ExplainedEvent<'a>>,
}

/// One event's verdicts, as `explain -o json` prints them.
#[derive(serde::Serialize)]
struct ExplainedEvent<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    source: &'a str,
    routes: Vec<switchyard::routing::RouteVerdict>,
    /// With `--transform`: what each matched sink would receive.
    #[serde(skip_serializing_if = "Option::is_none")]
    sinks: Option<Vec<SinkView>>,
}

/// What one matched sink would receive: the event after its transforms, or their error.
#[derive(serde::Serialize)]
struct SinkView {
    route: String,
    sink: String,
    /// The structured CloudEvent, as the JSON format writes it (attribute order kept).
    event: Option<Box<serde_json::value::RawValue>>,
    error: Option<String>,
}

/// What each (route, sink) the event matches would hand its sink, in table order.
fn sink_views(config: &config::Config, table: &RouteTable, event: &Event) -> Vec<SinkView> {
    let mut targets = Vec::new();
    table.targets(event, &mut targets);
    targets
        .iter()
        .map(|t| {
            let result = switchyard::transform::preview(config, event, &t.route, &t.sink);
            let (event, error) = match result {
                Ok(e) => {
                    let text =
                        String::from_utf8_lossy(&ce_http::encode_structured(&e)).into_owned();
                    (serde_json::value::RawValue::from_string(text).ok(), None)
                }
                Err(e) => (None, Some(e.to_string())),
            };
            SinkView {
                route: t.route.to_string(),
                sink: t.sink.to_string(),
                event,
                error,
            }
        })
        .collect()
}

fn explain(
    config_path: &Path,
    event_path: &Path,
    transform: bool,
    output: ops::Output,
) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(config_path) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let body = std::fs::read(event_path)
        .with_context(|| format!("cannot read {}", event_path.display()))?;
    let events = decode_any(&body)
        .with_context(|| format!("{} holds no valid event", event_path.display()))?;
    let table = RouteTable::from_config(&config);
    if output == ops::Output::Json {
        let events = events
            .iter()
            .map(|event| ExplainedEvent {
                id: &event.id,
                ty: &event.ty,
                source: &event.source,
                routes: table.explain(event).routes,
                sinks: transform.then(|| sink_views(&config, &table, event)),
            })
            .collect();
        ops::print_json(&Explained { events })?;
        return Ok(ExitCode::SUCCESS);
    }
    for event in &events {
        println!(
            "event {} (type {}, source {}):",
            event.id, event.ty, event.source
        );
        print!("{}", table.explain(event));
        let views = match transform {
            true => sink_views(&config, &table, event),
            false => Vec::new(),
        };
        for view in &views {
            let (route, sink) = (&view.route, &view.sink);
            match (&view.event, &view.error) {
                (Some(event), _) => println!("  {route} -> {sink} receives: {event}"),
                (None, error) => {
                    println!("  {route} -> {sink}: {}", error.as_deref().unwrap_or(""))
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the completion script for `shell` on stdout.
fn completions(shell: CompletionShell) -> anyhow::Result<ExitCode> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "switchyard", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Prints the JSON Schema of `routes.yaml` on stdout.
fn print_schema() -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(config::SCHEMA.as_bytes())
        .and_then(|()| out.flush())
        .context("write the schema to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Decodes a file as a CloudEvents batch, Event Grid events, or one structured CloudEvent.
fn decode_any(body: &[u8]) -> anyhow::Result<Vec<Event>> {
    Ok(switchyard::event::decode_document(body)?)
}

fn serve(path: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    let Some((config, text)) = load_config_source(path) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    raise_open_file_limit(switchyard::open_files_wanted(&config));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Listen for SIGHUP before the daemon is reachable, so no hangup can hit the
        // default action (exit) in between.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let running = Switchyard::new(config)
            .config_file(path, watch)
            .config_source(text)
            .start()
            .await
            .context("cannot start switchyard")?;
        let token = running.shutdown_token();
        tokio::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "Shutdown requested");
            token.cancel();
        });
        match (running.reload_trigger(), hangups) {
            (Some(trigger), Ok(hangups)) => {
                tokio::spawn(reload_on_sighup(hangups, trigger));
            }
            (_, Err(error)) => {
                tracing::warn!(%error, "Cannot listen for SIGHUP; reload through the admin API");
            }
            (None, Ok(_)) => {}
        }
        running
            .wait()
            .await
            .context("switchyard stopped with an error")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Raises the soft limit on open files to the hard limit (the soft default, often 1024, is
/// below what the connection caps allow), and warns when even that is short of `wanted`: past
/// the limit, spool files, sink sockets and exec pipes fail to open.
fn raise_open_file_limit(wanted: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    // The soft limit is never above the hard one; `None` is unlimited.
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "Cannot raise the open-file limit");
            limit.current = before;
        }
    }
    if let Some(allowed) = limit.current.filter(|&n| n < wanted) {
        tracing::warn!(
            allowed,
            wanted,
            "The open-file limit is below what the connection limits and sinks may use; \
             raise it (ulimit -n, LimitNOFILE) or lower ingress.max_connections"
        );
    }
}

/// Requests a configuration reload on every SIGHUP.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    trigger: switchyard::config::ReloadTrigger,
) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading the configuration");
        trigger.request("SIGHUP");
    }
}

/// Waits for SIGTERM or SIGINT and names the one that came.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            // Without signal handlers only Ctrl-C through the portable API remains.
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "Cannot wait for a shutdown signal");
                std::future::pending::<()>().await;
            }
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--NAME` argument of the subcommand at `path`.
    fn arg(path: &[&str], name: &str) -> clap::Arg {
        let mut command = Cli::command();
        for sub in path {
            command = command
                .find_subcommand(sub)
                .unwrap_or_else(|| panic!("no subcommand {sub}"))
                .clone();
        }
        let found = command
            .get_arguments()
            .find(|a| a.get_id() == name)
            .cloned();
        found.unwrap_or_else(|| panic!("{path:?} has no --{name}"))
    }

    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_defaults_to_the_default_admin_listen_address_and_reads_the_environment() {
        assert_eq!(ops::default_admin_url(), "http://127.0.0.1:9090");
        let admin_commands: [&[&str]; 9] = [
            &["sinks"],
            &["routes"],
            &["purge-sink"],
            &["health"],
            &["dead-letter", "list"],
            &["dead-letter", "show"],
            &["dead-letter", "replay"],
            &["events", "list"],
            &["events", "show"],
        ];
        for path in admin_commands {
            let admin = arg(path, "admin");
            assert_eq!(
                admin.get_default_values(),
                ["http://127.0.0.1:9090"],
                "{path:?}"
            );
            assert_eq!(
                admin.get_env().and_then(|e| e.to_str()),
                Some("SWITCHYARD_ADMIN_URL"),
                "{path:?}"
            );
            let token = arg(path, "token");
            assert_eq!(
                token.get_env().and_then(|e| e.to_str()),
                Some("SWITCHYARD_ADMIN_TOKEN"),
                "{path:?}"
            );
        }
    }

    #[test]
    fn config_reads_the_environment_everywhere() {
        let config_commands: [&[&str]; 5] = [
            &["serve"],
            &["check"],
            &["explain"],
            &["spool", "verify"],
            &["spool", "repair"],
        ];
        for path in config_commands {
            let config = arg(path, "config");
            assert_eq!(config.get_default_values(), ["routes.yaml"], "{path:?}");
            assert_eq!(
                config.get_env().and_then(|e| e.to_str()),
                Some(CONFIG_ENV),
                "{path:?}"
            );
        }
    }

    #[test]
    fn an_explicit_admin_wins_and_output_parses() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "sinks",
            "--admin",
            "http://10.0.0.1:1",
            "-o",
            "json",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        assert!(shown.contains("http://10.0.0.1:1"), "{shown}");
        assert!(shown.contains("Json"), "{shown}");
        let bad = Cli::try_parse_from(["switchyard", "routes", "-o", "yaml"]);
        assert!(bad.is_err());
    }
}
