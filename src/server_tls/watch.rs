//! Keeps a server's certificate current: watches the directories of its files (as the
//! configuration file is watched, so a rename over the file and the kubelet's `..data` link
//! swap are seen) and also looks every minute, in case an event was missed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::CertResolver;
use crate::config::{watch_files, RELOAD_SETTLE};

/// How often the files are looked at without an event.
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// A running watch; it stops when dropped.
#[derive(Debug)]
pub(super) struct Watch {
    _watcher: Option<notify::RecommendedWatcher>,
    /// Keeps the change channel open (and so the minutely look going) even without a watcher.
    _open: mpsc::Sender<()>,
}

impl Watch {
    /// Starts watching the files of `resolver`; a watch that cannot start is logged and the
    /// minutely look remains.
    pub(super) fn start(resolver: &Arc<CertResolver>) -> Self {
        let (tx, rx) = mpsc::channel::<()>(1);
        let files = [resolver.cert.clone(), resolver.key.clone()];
        let watcher = match watch_files(&files, tx.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(server = resolver.name, %error, "Cannot watch the TLS certificate files; they are looked at every minute");
                None
            }
        };
        tokio::spawn(reload_on_change(rx, Arc::downgrade(resolver)));
        Self {
            _watcher: watcher,
            _open: tx,
        }
    }
}

/// Reloads once changes have settled (a rotation writes two files, often in several steps),
/// and every [`LOOK_EVERY`]; ends when the watch or the server is gone.
async fn reload_on_change(mut changes: mpsc::Receiver<()>, resolver: Weak<CertResolver>) {
    let mut every = tokio::time::interval(LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.reset();
    loop {
        tokio::select! {
            changed = changes.recv() => {
                if changed.is_none() {
                    return;
                }
                loop {
                    match tokio::time::timeout(RELOAD_SETTLE, changes.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_settled) => break,
                    }
                }
            }
            _ = every.tick() => {}
        }
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let reloaded = tokio::task::spawn_blocking(move || resolver.reload()).await;
        if reloaded.is_err() {
            return;
        }
    }
}
