//! Free space on the embedded spool's file system, so that a full disk is a state the spool
//! leaves by itself.
//!
//! Draining needs disk space too: an ack appends to the journal, a retry copies its journaled
//! event into SQLite, a dead letter writes a row, and every SQLite commit writes WAL pages. So
//! puts are admitted only while the file system keeps room for that bookkeeping:
//!
//! - a high-water mark, read with `statvfs`: a put is refused (503 + `Retry-After`) unless
//!   the free space exceeds the reserve below plus twice the journaled event bytes (the
//!   database copy a retry makes, with its WAL image) plus the put itself;
//! - a reserve file, `<path>/reserve`, whose blocks are allocated ahead (`fallocate`): when a
//!   write fails anyway (another program filled the disk, an estimate fell short), the
//!   reserve is handed back so that the acks, retries and dead letters that follow find room.
//!   Puts stay refused until the reserve can be allocated again above the mark.
//!
//! The mark alone would not survive another program filling the disk; the reserve alone
//! would let puts fill the disk until retries fail. The free space is read at most every
//! [`RECHECK`] while puts arrive, and sooner when what was admitted since could cross the mark.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// Longest time a free-space reading is trusted while puts are admitted.
const RECHECK: Duration = Duration::from_millis(100);
/// Smallest and largest reserve; between them a sixteenth of the file system.
const RESERVE_MIN: u64 = 256 << 10;
const RESERVE_MAX: u64 = 64 << 20;

/// The admission check and the reserve file.
#[derive(Debug)]
pub(super) struct Space {
    dir: PathBuf,
    reserve_path: PathBuf,
    /// Bytes the reserve file holds when it is held.
    reserve: u64,
    /// The reserve file holds its bytes.
    held: bool,
    /// The last reading refused puts, or a write failed since.
    low: bool,
    /// When the free space was read, and what it was.
    checked: Option<(Instant, u64)>,
    /// Bytes admitted since.
    admitted: u64,
}

/// Free bytes for an unprivileged writer, and the file system's size.
fn statvfs(dir: &Path) -> io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)?;
    Ok((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

impl Space {
    /// Sizes the reserve from the file system under `dir` and allocates it. A reserve that
    /// cannot be allocated now (the disk is already full) is retried as puts arrive.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let (_, total) = statvfs(dir)?;
        let mut space = Self {
            dir: dir.to_owned(),
            reserve_path: dir.join("reserve"),
            reserve: (total / 16).clamp(RESERVE_MIN, RESERVE_MAX),
            held: false,
            low: true,
            checked: None,
            admitted: 0,
        };
        // A reserve left by an earlier run counts as held once it has its size again.
        if let Err(error) = space.allocate() {
            tracing::warn!(%error, path = %space.reserve_path.display(), "Cannot allocate the spool's disk reserve; puts wait until there is room");
        }
        Ok(space)
    }

    /// Whether the disk is short of space: puts are refused and spent journal segments are
    /// closed at once.
    pub(super) fn low(&self) -> bool {
        self.low
    }

    /// Whether the reserve was handed back (a write failed for lack of space, or it could not
    /// be allocated): the disk may be full to the last block.
    pub(super) fn reserve_spent(&self) -> bool {
        !self.held
    }

    /// Whether `bytes` more of puts may be stored while `journaled` event bytes sit in the
    /// journal (each may be copied into the database by a retry).
    pub(super) fn admits(&mut self, journaled: u64, bytes: u64) -> bool {
        let mark = self
            .reserve
            .saturating_add(journaled.saturating_mul(2))
            .saturating_add(bytes);
        let fresh = self.checked.filter(|(at, free)| {
            !self.low
                && at.elapsed() < RECHECK
                && self.admitted.saturating_add(bytes).saturating_mul(2) < free.saturating_sub(mark)
        });
        if fresh.is_none() {
            match statvfs(&self.dir) {
                Ok((free, _)) => {
                    self.checked = Some((Instant::now(), free));
                    self.admitted = 0;
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %self.dir.display(), "Cannot read the spool's free disk space");
                    return false;
                }
            }
        }
        let free = self.checked.map_or(0, |(_, free)| free);
        // Without the reserve, room for it is needed too before it is allocated again.
        let needed = if self.held {
            mark
        } else {
            mark.saturating_add(self.reserve)
        };
        if free < needed {
            if !self.low {
                tracing::warn!(
                    free,
                    needed,
                    "Spool disk space is short; refusing new events until deliveries free some"
                );
            }
            self.low = true;
            return false;
        }
        if !self.held {
            if let Err(error) = self.allocate() {
                tracing::debug!(%error, "Cannot allocate the spool's disk reserve yet");
                self.low = true;
                return false;
            }
            self.checked = None;
        }
        if self.low {
            tracing::info!(free, "Spool disk space is back; accepting new events");
        }
        self.low = false;
        self.admitted = self.admitted.saturating_add(bytes);
        true
    }

    /// A write failed (possibly for lack of space): hands the reserve back so that the
    /// bookkeeping that follows finds room, and refuses puts until it is allocated again.
    pub(super) fn exhausted(&mut self) {
        self.low = true;
        self.checked = None;
        if !self.held {
            return;
        }
        let released = OpenOptions::new()
            .write(true)
            .open(&self.reserve_path)
            .and_then(|f| f.set_len(0));
        match released {
            Ok(()) => {
                self.held = false;
                tracing::warn!(
                    bytes = self.reserve,
                    "A spool write failed; released the disk reserve so that deliveries can drain"
                );
            }
            Err(error) => {
                tracing::error!(%error, path = %self.reserve_path.display(), "Cannot release the spool's disk reserve");
            }
        }
    }

    /// Allocates the reserve file's blocks (the file is created when absent).
    fn allocate(&mut self) -> io::Result<()> {
        let created = !self.reserve_path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.reserve_path)?;
        if let Err(error) = fill(&file, self.reserve) {
            // Whatever part was allocated is handed back: it is not a reserve.
            file.set_len(0)?;
            return Err(error);
        }
        file.sync_all()?;
        if created {
            File::open(&self.dir)?.sync_all()?;
        }
        self.held = true;
        Ok(())
    }
}

/// Allocates `len` bytes of blocks to `file`: `fallocate`, or zeros written where the file
/// system has no `fallocate`.
fn fill(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            use std::os::unix::fs::FileExt;
            let zeros = vec![0u8; 64 << 10];
            let mut at = 0u64;
            while at < len {
                let n = zeros
                    .len()
                    .min(usize::try_from(len - at).unwrap_or(usize::MAX));
                file.write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
