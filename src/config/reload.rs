//! Reload triggers: a bounded request channel shared by the file watcher, SIGHUP and the
//! admin API, and the file watcher itself. The reload is carried out by the app, which owns
//! what must be swapped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// What a successful reload installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Routes now in force.
    pub routes: usize,
    /// Sinks now in force.
    pub sinks: usize,
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReloadFailed(pub String);

/// A request to reload, with where to send the outcome.
#[derive(Debug)]
pub struct ReloadRequest {
    /// What asked for it (`SIGHUP`, `file change`, `admin API`), for the log.
    pub cause: &'static str,
    /// Receives the outcome, when the asker waits for it.
    pub reply: Option<oneshot::Sender<Result<ReloadSummary, ReloadFailed>>>,
}

/// Asks the running daemon to reload its configuration file.
#[derive(Debug, Clone)]
pub struct ReloadTrigger {
    tx: mpsc::Sender<ReloadRequest>,
}

/// A trigger and the receiver the reloading task drains. A few requests may queue; more
/// are coalesced, since one reload reads the latest file anyway.
pub fn reload_channel() -> (ReloadTrigger, mpsc::Receiver<ReloadRequest>) {
    let (tx, rx) = mpsc::channel(4);
    (ReloadTrigger { tx }, rx)
}

impl ReloadTrigger {
    /// Requests a reload without waiting for it; dropped when one is already queued.
    pub fn request(&self, cause: &'static str) {
        // A full queue already holds a reload that will read the latest file.
        let _queued = self
            .tx
            .try_send(ReloadRequest { cause, reply: None })
            .is_ok();
    }

    /// Requests a reload and waits for its outcome.
    pub async fn reload(&self, cause: &'static str) -> Result<ReloadSummary, ReloadFailed> {
        let (reply, outcome) = oneshot::channel();
        let request = ReloadRequest {
            cause,
            reply: Some(reply),
        };
        let stopped = || ReloadFailed("the daemon is shutting down".to_owned());
        self.tx.send(request).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Watches `path` and requests a reload shortly after it changes. The watcher stops when
/// the returned value is dropped.
pub fn watch_file(
    path: &Path,
    trigger: ReloadTrigger,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::{EventKind, RecursiveMode, Watcher};

    // Editors often replace a file (write elsewhere, rename over it), so watch the directory
    // and pick out events that touch the file's name.
    let file = path.file_name().map(PathBuf::from);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && event
            .paths
            .iter()
            .any(|p| p.file_name().map(PathBuf::from) == file);
        if relevant {
            // One pending signal is enough; the debounce below reads the file once.
            let _pending = tx.try_send(()).is_ok();
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(debounce(rx, trigger));
    Ok(watcher)
}

/// Waits for changes to settle (an editor's save is several events) before asking.
async fn debounce(mut changes: mpsc::Receiver<()>, trigger: ReloadTrigger) {
    const SETTLE: Duration = Duration::from_millis(200);
    while changes.recv().await.is_some() {
        loop {
            match tokio::time::timeout(SETTLE, changes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_settled) => break,
            }
        }
        trigger.request("file change");
    }
}
