//! Reload triggers: a bounded request channel shared by the file watcher, SIGHUP and the
//! admin API, and the file watcher itself. The reload is carried out by the app, which owns
//! what must be swapped.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
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

/// How long a file must stay the same to count as completely written: the watcher waits
/// this long after the last change, and a reload reads the file twice this far apart.
pub const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// A request to reload, with where to send the outcome.
#[derive(Debug)]
pub struct ReloadRequest {
    /// What asked for it (`SIGHUP`, `file change`, `admin API`), for the log.
    pub cause: &'static str,
    /// Skip the reload when the file holds what was last loaded (the watcher sees events that
    /// change nothing: a touch, a save without edits).
    pub if_changed: bool,
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
        self.enqueue(cause, false);
    }

    /// Like [`ReloadTrigger::request`], but the reload is skipped when the file's bytes are
    /// those last loaded.
    pub fn request_if_changed(&self, cause: &'static str) {
        self.enqueue(cause, true);
    }

    fn enqueue(&self, cause: &'static str, if_changed: bool) {
        let request = ReloadRequest {
            cause,
            if_changed,
            reply: None,
        };
        // A full queue already holds a reload that will read the latest file.
        let _queued = self.tx.try_send(request).is_ok();
    }

    /// Requests a reload and waits for its outcome.
    pub async fn reload(&self, cause: &'static str) -> Result<ReloadSummary, ReloadFailed> {
        let (reply, outcome) = oneshot::channel();
        let request = ReloadRequest {
            cause,
            if_changed: false,
            reply: Some(reply),
        };
        let stopped = || ReloadFailed("the daemon is shutting down".to_owned());
        self.tx.send(request).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Watches `path` and requests a reload shortly after it changes. The watcher stops when
/// the returned value is dropped.
///
/// The directory is watched, not the file, because the file is usually replaced rather than
/// written in place: an editor writes a temporary file and renames it over the name, and the
/// kubelet updates a mounted ConfigMap by swapping a symbolic link (`routes.yaml ->
/// ..data/routes.yaml`, where `..data` is a link to a timestamped directory that it replaces
/// by renaming a new link over it), so no event names the file at all. Events naming the file,
/// or the first step of a relative link target (`..data`), count; the reload then skips a file
/// whose bytes did not change.
pub fn watch_file(
    path: &Path,
    trigger: ReloadTrigger,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let watcher = watch_files(&[path.to_path_buf()], tx.clone())?;
    // A change made after the configuration was loaded but before the watch began shows up
    // as a difference from the loaded bytes: look once now.
    let _first_look = tx.try_send(()).is_ok();
    tokio::spawn(debounce(rx, trigger));
    Ok(watcher)
}

/// Watches the directories of `files` and sends on `changed` (one pending signal is enough)
/// when an event names one of them, or the first step of a relative link target (see
/// [`watch_file`]). The watcher stops when the returned value is dropped.
pub fn watch_files(
    files: &[PathBuf],
    changed: mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::{EventKind, RecursiveMode, Watcher};

    let names: Vec<OsString> = files.iter().flat_map(|f| watched_names(f)).collect();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|name| names.iter().any(|n| n == name));
        if relevant {
            let _pending = changed.try_send(()).is_ok();
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// The names in the file's directory whose change may change the file: its own, and, when it
/// is a symbolic link with a relative target, the target's first step (the kubelet's `..data`).
fn watched_names(path: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = path.file_name().map(OsString::from).into_iter().collect();
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(Component::Normal(first)) = target.components().next() {
            names.push(first.to_os_string());
        }
    }
    names
}

/// Waits for changes to settle (an editor's save is several events) before asking.
async fn debounce(mut changes: mpsc::Receiver<()>, trigger: ReloadTrigger) {
    while changes.recv().await.is_some() {
        loop {
            match tokio::time::timeout(RELOAD_SETTLE, changes.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_settled) => break,
            }
        }
        trigger.request_if_changed("file change");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_through_a_directory_link_also_watches_that_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let plain = dir.path().join("plain.yaml");
        std::fs::write(&plain, "sinks: {}\n").expect("write");
        assert_eq!(watched_names(&plain), [OsString::from("plain.yaml")]);
        let linked = dir.path().join("routes.yaml");
        std::os::unix::fs::symlink("..data/routes.yaml", &linked).expect("link");
        assert_eq!(
            watched_names(&linked),
            [OsString::from("routes.yaml"), OsString::from("..data")]
        );
        let absolute = dir.path().join("abs.yaml");
        std::os::unix::fs::symlink(&plain, &absolute).expect("link");
        assert_eq!(watched_names(&absolute), [OsString::from("abs.yaml")]);
    }
}
