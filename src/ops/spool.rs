//! `switchyard spool verify|repair --config F`: the embedded spool's state on disk, read
//! while no daemon runs on it.
//!
//! `verify` changes nothing and exits 1 when the daemon would refuse to start (a damaged
//! journal record or database); `repair` sets aside what cannot be read and says how many
//! deliveries that lost, exiting 1 when something is still damaged (the database, which it
//! does not rewrite).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use switchyard::config::{Config, SpoolBackend};
use switchyard::spool;

/// Exit code for a configuration this command cannot work on (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// `switchyard spool`.
#[derive(Debug, clap::Args)]
pub(crate) struct SpoolArgs {
    #[command(subcommand)]
    action: SpoolAction,
}

/// What to do with the spool.
#[derive(Debug, Clone, clap::Subcommand)]
enum SpoolAction {
    /// Report the state of every journal segment and of spool.db, changing nothing; exit 1
    /// when switchyard would refuse to start on it.
    Verify(SpoolConfigArg),
    /// Move what cannot be read into <spool.path>/quarantine/, keep every valid record, and
    /// print how many deliveries were lost.
    Repair(SpoolConfigArg),
}

#[derive(Debug, Clone, clap::Args)]
struct SpoolConfigArg {
    /// Path of the routes file (its `spool.path` is the spool).
    #[arg(long, short, env = "SWITCHYARD_CONFIG", default_value = "routes.yaml")]
    config: PathBuf,
}

impl SpoolArgs {
    /// The configuration file to read the spool's location from.
    pub(crate) fn config(&self) -> &Path {
        match &self.action {
            SpoolAction::Verify(arg) | SpoolAction::Repair(arg) => &arg.config,
        }
    }
}

/// Runs `action` on the spool `config` names.
pub(crate) fn run(args: &SpoolArgs, config: &Config) -> anyhow::Result<ExitCode> {
    if config.spool.backend != SpoolBackend::Embedded {
        eprintln!("spool.backend is not `embedded`: there is no spool on disk to check");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let dir = &config.spool.path;
    match args.action {
        SpoolAction::Verify(_) => {
            let verification = spool::verify(dir)?;
            print!("{verification}");
            Ok(if verification.damaged() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        SpoolAction::Repair(_) => {
            let repair = spool::repair(dir)?;
            print!("{repair}");
            let database_ok = matches!(
                repair.before.database,
                spool::DatabaseState::Ok | spool::DatabaseState::Missing
            );
            Ok(if database_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
