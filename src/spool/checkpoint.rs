//! The embedded spool's checkpointer thread: copies committed WAL pages into the database
//! file beside the writer, so that no commit (and no sender's acknowledgement) waits for it.
//!
//! The writer connection's WAL hook ([`install`]) replaces SQLite's automatic checkpoint: after
//! each commit it wakes this thread once the WAL holds [`WAKE_PAGES`] pages. The thread runs
//! passive checkpoints, which never block the writer. SQLite starts the WAL over from its
//! beginning only at a write transaction that finds it fully copied, which a busy writer
//! rarely lets a second thread achieve (it is nearly always inside a transaction begun before
//! the pass ended): so once a pass leaves at most [`FINISH_PAGES`] behind, the writer copies
//! that small rest itself right after its next commit, and the transaction after it starts
//! the WAL over. Should the WAL still reach [`HARD_LIMIT_PAGES`], the writer checkpoints
//! everything itself, as SQLite's automatic checkpoint would, which bounds the WAL at the cost
//! of that commit's latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::wal::CheckpointMode;
use rusqlite::Connection;

/// WAL pages after which the checkpointer is woken.
const WAKE_PAGES: u64 = 256;
/// Pages a pass may leave behind for the writer to copy (about one busy commit's worth).
const FINISH_PAGES: i64 = 128;
/// WAL pages after which the writer checkpoints by itself (64 MiB of 4 KiB pages).
const HARD_LIMIT_PAGES: u64 = 16_384;
/// Pause between passes while the writer keeps appending, so that one pass copies many
/// commits.
const PASS_PAUSE: Duration = Duration::from_millis(2);

/// What the writer and the checkpointer share.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    /// Checkpoints the writer had to run itself.
    forced: AtomicU64,
    /// Set by the checkpointer: the writer copies the rest after its next commit.
    finish: AtomicBool,
    wake: Mutex<Wake>,
    signal: Condvar,
}

#[derive(Debug, Default)]
struct Wake {
    work: bool,
    closing: bool,
}

impl Checkpoints {
    /// Checkpoints the writer ran itself because the WAL reached its hard limit.
    pub(super) fn forced(&self) -> u64 {
        self.forced.load(Ordering::Relaxed)
    }

    /// Stops the checkpointer after its current pass.
    pub(super) fn close(&self) {
        self.notify(|w| w.closing = true);
    }

    fn notify(&self, change: impl FnOnce(&mut Wake)) {
        let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut wake);
        self.signal.notify_one();
    }

    /// Waits `time` unless the spool closes meanwhile; `false` when closing.
    fn pause(&self, time: Duration) -> bool {
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        let (wake, _) = self
            .signal
            .wait_timeout_while(wake, time, |w| !w.closing)
            .unwrap_or_else(|e| e.into_inner());
        !wake.closing
    }

    /// Waits for work; `false` when closing.
    fn wait(&self) -> bool {
        let mut wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        while !wake.work && !wake.closing {
            wake = self.signal.wait(wake).unwrap_or_else(|e| e.into_inner());
        }
        wake.work = false;
        !wake.closing
    }
}

/// Replaces the writer connection's automatic checkpoint with waking `shared`'s thread.
pub(super) fn install(writer: &mut Connection, shared: Arc<Checkpoints>) -> rusqlite::Result<()> {
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
        let pages = u64::try_from(pages).unwrap_or(0);
        let full = pages >= HARD_LIMIT_PAGES;
        if full || shared.finish.swap(false, Ordering::Relaxed) {
            if full {
                shared.forced.fetch_add(1, Ordering::Relaxed);
            }
            // Busy when the checkpointer is copying right now; it then catches up by itself.
            return wal
                .checkpoint_v2(CheckpointMode::PASSIVE)
                .map(drop)
                .or(Ok(()));
        }
        // While a finish is pending the checkpointer stays idle, so that it cannot hold the
        // lock when the writer copies the rest.
        if pages >= WAKE_PAGES && !shared.finish.load(Ordering::Relaxed) {
            shared.notify(|w| w.work = true);
        }
        Ok(())
    }))
}

/// One passive checkpoint on `conn`: frames it left uncopied (0 when the WAL is all in the
/// file), or `None` when another checkpoint held the lock.
fn passive(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    // (busy, frames in the WAL, frames copied); -1 for both counts outside WAL mode.
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((busy == 0).then_some((log - copied).max(0)))
}

/// The checkpointer thread's loop; returns when the spool closes.
pub(super) fn run(conn: &Connection, shared: &Checkpoints) {
    while shared.wait() {
        if shared.finish.load(Ordering::Relaxed) {
            continue;
        }
        loop {
            match passive(conn) {
                // Even a complete pass needs the writer: it is nearly always inside a
                // transaction that began before the pass ended, and such a transaction
                // appends to the WAL instead of starting it over.
                Ok(Some(left)) if left <= FINISH_PAGES => {
                    shared.finish.store(true, Ordering::Relaxed);
                    break;
                }
                // The writer appended a lot meanwhile, or checkpointed itself: go again shortly.
                Ok(_) => {
                    if !shared.pause(PASS_PAUSE) {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Spool checkpoint failed; the WAL keeps growing until one succeeds");
                    break;
                }
            }
        }
    }
}
