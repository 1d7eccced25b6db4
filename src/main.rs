//! The `switchyard` command: serve, check a configuration, explain routing, publish an event,
//! and read a running daemon's sinks and routes through its admin API.
//!
//! The only place that uses `anyhow`: library errors get their context here.
//!
//! Exit codes: 0 success; 1 runtime failure or a non-2xx answer; 64 invalid configuration
//! or usage.

mod ops;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use switchyard::config::{self, ConfigError};
use switchyard::event::{eventgrid, http as ce_http, Event};
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
    Check(ConfigArg),
    /// Show, per route, whether the events in a JSON file match and why not.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// A structured CloudEvent, a CloudEvents batch, or Event Grid events (JSON).
        event: PathBuf,
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
    Routes(ops::AdminArgs),
    /// Delete the deliveries a running daemon keeps for a sink its configuration no longer
    /// names (in flight ones stay, except on the `nats` spool).
    #[command(after_help = EXIT_CODES)]
    PurgeSink(ops::PurgeSinkArgs),
    /// List, show, replay or purge a running daemon's dead letters.
    #[command(after_help = EXIT_CODES)]
    DeadLetter(ops::DeadLetterArgs),
    /// Exit 0 when a running daemon's admin server answers its readiness (or liveness)
    /// probe with 200, 1 with the reason otherwise: for a container HEALTHCHECK.
    #[command(after_help = EXIT_CODES)]
    Health(ops::HealthArgs),
    /// Verify or repair the embedded spool on disk (while switchyard is stopped).
    #[command(after_help = EXIT_CODES)]
    Spool(ops::spool::SpoolArgs),
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
    #[arg(long, short, default_value = "routes.yaml")]
    config: PathBuf,
}

/// Bytes of free memory glibc keeps at the top of a heap before giving it back to the system.
///
/// Its default (128 KiB, adjusted upwards only after large frees) makes the heaps of the
/// request threads and of the spool writer, which frees what they allocate, shrink and grow
/// again many times a second: each cycle an `madvise` and fresh zeroed pages. Measured end to
/// end to an HTTP sink on one core: 18.0k events/s by default, 22.1k with 4 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 << 20;

/// Sets [`TRIM_THRESHOLD`]; called first thing in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only changes glibc's allocator parameters; it is called before any other
    // thread is started, so nothing allocates concurrently.
    let _applied = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
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
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs {
        config: ConfigArg {
            config: PathBuf::from("routes.yaml"),
        },
        no_watch: false,
    }));
    let result = match command {
        Command::Serve(arg) => {
            telemetry::init_logging(format);
            serve(&arg.config.config, !arg.no_watch)
        }
        Command::Check(arg) => check(&arg.config),
        Command::Explain { config, event } => explain(&config.config, &event),
        Command::Send(args) => ops::send(&args),
        Command::Sinks(args) => ops::sinks_command(&args),
        Command::Routes(args) => ops::routes(&args),
        Command::PurgeSink(args) => ops::purge_sink(&args),
        Command::DeadLetter(args) => ops::dead_letter(&args),
        Command::Health(args) => ops::health(&args),
        Command::Spool(args) => match load_config(args.config()) {
            Some(loaded) => ops::spool::run(&args, &loaded),
            None => Ok(ExitCode::from(EXIT_CONFIG)),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
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

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(path) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    println!("{}: OK", path.display());
    print!("{}", config.summary());
    Ok(ExitCode::SUCCESS)
}

fn explain(config_path: &Path, event_path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load_config(config_path) else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let body = std::fs::read(event_path)
        .with_context(|| format!("cannot read {}", event_path.display()))?;
    let events = decode_any(&body)
        .with_context(|| format!("{} holds no valid event", event_path.display()))?;
    let table = RouteTable::from_config(&config);
    for event in &events {
        println!(
            "event {} (type {}, source {}):",
            event.id, event.ty, event.source
        );
        print!("{}", table.explain(event));
    }
    Ok(ExitCode::SUCCESS)
}

/// Decodes a file as a CloudEvents batch, Event Grid events, or one structured CloudEvent.
fn decode_any(body: &[u8]) -> anyhow::Result<Vec<Event>> {
    const LIMIT: usize = usize::MAX;
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let is_eventgrid = memchr_str(body, b"\"eventType\"");
    if is_eventgrid {
        return match eventgrid::decode(body, LIMIT, LIMIT)? {
            eventgrid::EventGridBody::Events(events) => Ok(events),
            eventgrid::EventGridBody::Validation { .. } => {
                anyhow::bail!("this is an Event Grid subscription validation event")
            }
        };
    }
    if first == Some(b'[') {
        return Ok(ce_http::decode_batch(body, LIMIT, LIMIT)?);
    }
    Ok(vec![ce_http::decode_structured(body)?])
}

fn memchr_str(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
