//! The last emitted tick of each schedule, kept in `<spool.path>/schedules.json` so that a
//! restart knows which ticks it missed.
//!
//! The file is small and rewritten whole after each tick: written to a temporary file, synced,
//! then renamed over the old one, so a crash leaves either the old or the new version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::tick::rfc3339;

/// The file name, inside the spool directory.
pub(crate) const FILE_NAME: &str = "schedules.json";

/// The version written; a file of another version is ignored (nothing caught up).
const VERSION: u32 = 1;

/// The on-disk form: `{"version": 1, "last_ticks": {"<name>": "<RFC 3339>"}}`.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    last_ticks: BTreeMap<String, String>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// Reading or writing failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the expected shape.
    #[error("{path} is not a schedule state file: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by another version.
    #[error("{path} has version {found}, expected {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

/// Last emitted ticks by schedule name, and the file they are kept in.
#[derive(Debug)]
pub(crate) struct TickStore {
    path: PathBuf,
    // An async mutex held across the write: writes happen one at a time and in order, so an
    // older snapshot never replaces a newer one.
    ticks: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

impl TickStore {
    /// A store writing to `path`, starting from `ticks`.
    pub(crate) fn new(path: PathBuf, ticks: BTreeMap<String, DateTime<Utc>>) -> Self {
        Self {
            path,
            ticks: Mutex::new(ticks),
        }
    }

    /// The last tick recorded for `name`.
    pub(crate) async fn last(&self, name: &str) -> Option<DateTime<Utc>> {
        self.ticks.lock().await.get(name).copied()
    }

    /// Records `tick` as the last one emitted by `name` and rewrites the file.
    pub(crate) async fn record(&self, name: &str, tick: DateTime<Utc>) -> Result<(), StateError> {
        let mut ticks = self.ticks.lock().await;
        ticks.insert(name.to_owned(), tick);
        let file = StateFile {
            version: VERSION,
            last_ticks: ticks
                .iter()
                .map(|(n, t)| (n.clone(), rfc3339(*t)))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| StateError::Format {
            path: self.path.clone(),
            source,
        })?;
        write_atomically(&self.path, &bytes)
            .await
            .map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// Reads the state file; a missing file reads as empty. Entries with unreadable times are
/// skipped (those schedules catch nothing up).
pub(crate) async fn load(path: &Path) -> Result<BTreeMap<String, DateTime<Utc>>, StateError> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            let path = path.to_path_buf();
            return Err(StateError::Io { path, source });
        }
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|source| StateError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    if file.version != VERSION {
        let path = path.to_path_buf();
        return Err(StateError::Version {
            path,
            found: file.version,
        });
    }
    let ticks = file.last_ticks.into_iter().filter_map(|(name, time)| {
        let time = DateTime::parse_from_rfc3339(&time).ok()?;
        Some((name, time.with_timezone(&Utc)))
    });
    Ok(ticks.collect())
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = tokio::fs::File::create(&tmp).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}
