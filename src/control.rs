//! Runtime control of sinks: which sinks an operator paused (`POST /api/v1/sinks/{name}/pause`),
//! shared by the admin API, which sets it, and the dispatcher, which honours it.
//!
//! A paused sink keeps its deliveries in the spool and attempts none. The set of paused sinks
//! outlives reloads (it is kept here, not in a configuration generation) and, with a state
//! file, restarts: `<spool.path>/paused.json`, rewritten whole on each change (a temporary
//! file, synced, renamed over the old one, the directory synced), so a crash leaves either the
//! old or the new set. The `memory` spool has no file: its pauses end with the process.
//!
//! Imports `telemetry` only.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::telemetry;

/// The state file's name, inside the spool directory.
pub const FILE_NAME: &str = "paused.json";

/// The version written; a file of another version is refused.
const VERSION: u32 = 1;

/// The on-disk form: `{"version": 1, "paused": ["<sink>", ...]}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    paused: BTreeSet<String>,
}

/// Why the pause state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    /// Reading or writing the file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a pause state file.
    #[error("{path} is not a pause state file: {source}")]
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

/// One sink's pause switch: an atomic the dispatcher reads before each lease, and a wake-up
/// for a worker waiting while paused.
#[derive(Debug, Default)]
pub struct PauseFlag {
    paused: AtomicBool,
    changed: Notify,
}

impl PauseFlag {
    /// Whether the sink is paused now.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Completes at the next pause or resume; create it before looking at [`Self::is_paused`].
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Every sink's pause switch, and the file that keeps the paused ones.
#[derive(Debug, Default)]
pub struct Pauses {
    /// `None`: not kept across restarts.
    file: Option<PathBuf>,
    flags: Mutex<HashMap<String, Arc<PauseFlag>>>,
    // Held across the write, so writes happen one at a time and the last one wins.
    persisted: tokio::sync::Mutex<BTreeSet<String>>,
}

impl Pauses {
    /// Pauses kept in `dir`/[`FILE_NAME`] (read now, if it exists), or in memory only.
    pub fn open(dir: Option<&Path>) -> Result<Self, PauseError> {
        let Some(dir) = dir else {
            return Ok(Self::default());
        };
        let file = dir.join(FILE_NAME);
        let paused = load(&file)?;
        if !paused.is_empty() {
            tracing::warn!(sinks = ?paused, path = %file.display(), "Sinks paused before the restart stay paused");
        }
        let flags = paused
            .iter()
            .map(|name| {
                let flag = PauseFlag::default();
                flag.paused.store(true, Ordering::Release);
                (name.clone(), Arc::new(flag))
            })
            .collect();
        Ok(Self {
            file: Some(file),
            flags: Mutex::new(flags),
            persisted: tokio::sync::Mutex::new(paused),
        })
    }

    /// The switch of `sink` (created on first use), with its gauge set.
    pub fn flag(&self, sink: &str) -> Arc<PauseFlag> {
        let mut flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        let flag = flags.entry(sink.to_owned()).or_default().clone();
        drop(flags);
        telemetry::sink_paused(sink, flag.is_paused());
        flag
    }

    /// Whether `sink` is paused now.
    pub fn is_paused(&self, sink: &str) -> bool {
        let flags = self.flags.lock().unwrap_or_else(|e| e.into_inner());
        flags.get(sink).is_some_and(|f| f.is_paused())
    }

    /// Pauses or resumes `sink`: recorded in the file first, then in force. Returns whether
    /// anything changed.
    pub async fn set(&self, sink: &str, paused: bool) -> Result<bool, PauseError> {
        let mut persisted = self.persisted.lock().await;
        let mut next = persisted.clone();
        let changed = match paused {
            true => next.insert(sink.to_owned()),
            false => next.remove(sink),
        };
        if changed {
            if let Some(file) = &self.file {
                let (file, set) = (file.clone(), next.clone());
                tokio::task::spawn_blocking(move || store(&file, set))
                    .await
                    .map_err(|e| PauseError::Io {
                        path: self.file.clone().unwrap_or_default(),
                        source: std::io::Error::other(e),
                    })??;
            }
            *persisted = next;
        }
        self.flag(sink).set(paused);
        telemetry::sink_paused(sink, paused);
        Ok(changed)
    }
}

fn load(path: &Path) -> Result<BTreeSet<String>, PauseError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => {
            let path = path.to_owned();
            return Err(PauseError::Io { path, source });
        }
    };
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|source| PauseError::Format {
        path: path.to_owned(),
        source,
    })?;
    if state.version != VERSION {
        let path = path.to_owned();
        return Err(PauseError::Version {
            path,
            found: state.version,
        });
    }
    Ok(state.paused)
}

/// Writes `paused` to `path`: a temporary file, synced, renamed over it, the directory synced.
fn store(path: &Path, paused: BTreeSet<String>) -> Result<(), PauseError> {
    let io = |source| PauseError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let state = StateFile {
        version: VERSION,
        paused,
    };
    let bytes = serde_json::to_vec_pretty(&state).map_err(|e| io(std::io::Error::other(e)))?;
    let temp = path.with_extension("json.tmp");
    let mut file = File::create(&temp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&temp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_is_kept_in_the_file_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let pauses = Pauses::open(Some(dir.path())).unwrap();
        let flag = pauses.flag("hook");
        assert!(pauses.set("hook", true).await.unwrap());
        assert!(flag.is_paused());
        assert!(!pauses.set("hook", true).await.unwrap());
        pauses.set("other", true).await.unwrap();
        pauses.set("other", false).await.unwrap();

        let reopened = Pauses::open(Some(dir.path())).unwrap();
        assert!(reopened.is_paused("hook"));
        assert!(reopened.flag("hook").is_paused());
        assert!(!reopened.is_paused("other"));
        reopened.set("hook", false).await.unwrap();
        assert!(!Pauses::open(Some(dir.path())).unwrap().is_paused("hook"));
    }

    #[tokio::test]
    async fn a_resume_wakes_a_waiter() {
        let pauses = Pauses::open(None).unwrap();
        pauses.set("hook", true).await.unwrap();
        let flag = pauses.flag("hook");
        let changed = flag.changed();
        pauses.set("hook", false).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), changed)
            .await
            .unwrap();
        assert!(!flag.is_paused());
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"version\": 1").unwrap();
        let error = Pauses::open(Some(dir.path())).unwrap_err();
        assert!(matches!(error, PauseError::Format { .. }), "{error}");
        fs::write(
            dir.path().join(FILE_NAME),
            br#"{"version": 9, "paused": []}"#,
        )
        .unwrap();
        let error = Pauses::open(Some(dir.path())).unwrap_err();
        assert!(
            matches!(error, PauseError::Version { found: 9, .. }),
            "{error}"
        );
    }
}
