//! `switchyard spool verify` and `switchyard spool repair`: the embedded spool's state read
//! without changing anything, and damage set aside so that the daemon can start again.
//!
//! Both refuse to run while a process holds the spool (`journal/lock`). Verify reads every
//! journal segment through, resuming after each stretch of bytes that is not a record, and
//! runs SQLite's `PRAGMA integrity_check` on `spool.db` through a read-only connection.
//! Repair copies each damaged segment whole into `<path>/quarantine/` (nothing is deleted),
//! then rewrites it with every valid record it holds, before and after the damage. What the
//! damaged bytes held is counted when they are one record whose frame length still fits
//! (read without its checksum, so its ids may be wrong); otherwise it is reported as not
//! counted. A damaged database is reported, never changed.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::journal::{self, Guess, SegmentScan};
use super::DeliveryId;

/// Why the spool could not be checked or repaired.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// A running process holds the spool.
    #[error("the spool in {0} is in use ({0}/journal/lock is held): stop switchyard first")]
    InUse(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The state of the database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseState {
    /// No `spool.db` (nothing was stored in it yet).
    Missing,
    /// `PRAGMA integrity_check` answered `ok`.
    Ok,
    /// It answered something else (its lines, joined).
    Damaged(String),
    /// SQLite could not open or read it.
    Unreadable(String),
}

/// One journal segment as verify found it.
#[derive(Debug)]
pub struct SegmentState {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// Valid records.
    pub records: u64,
    /// Deliveries its put records hold and acks its gone records hold.
    pub deliveries: u64,
    /// Acks (deliveries retired) it records.
    pub acks: u64,
    /// Stretches of bytes that are not records: (offset, end, torn tail).
    pub damage: Vec<(u64, u64, bool)>,
}

/// What verify found.
#[derive(Debug)]
pub struct Verification {
    /// The spool directory.
    pub dir: PathBuf,
    /// Every segment, oldest first.
    pub segments: Vec<SegmentState>,
    /// The database.
    pub database: DatabaseState,
    /// Stored deliveries the damaged records held (counted ones only).
    pub lost_deliveries: u64,
    /// Acks the damaged records held whose deliveries are still in the journal: those
    /// deliveries will be delivered again.
    pub lost_acks: u64,
    /// Damaged stretches whose content could not be counted.
    pub uncounted: usize,
}

impl Verification {
    /// Whether the daemon would refuse to start: journal damage other than a torn tail, or a
    /// database that does not pass its check.
    pub fn damaged(&self) -> bool {
        let journal = self
            .segments
            .iter()
            .any(|s| s.damage.iter().any(|(_, _, torn)| !torn));
        journal
            || matches!(
                self.database,
                DatabaseState::Damaged(_) | DatabaseState::Unreadable(_)
            )
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "spool {}", self.dir.display())?;
        if self.segments.is_empty() {
            writeln!(f, "journal: no segments")?;
        }
        for s in &self.segments {
            let state = if s.damage.is_empty() {
                "ok".to_owned()
            } else {
                let parts: Vec<String> = s
                    .damage
                    .iter()
                    .map(|(offset, end, torn)| {
                        if *torn {
                            format!("torn tail at byte offset {offset} ({} bytes, a write cut short; cut off at start)", end - offset)
                        } else {
                            format!("DAMAGED at byte offset {offset}: {} bytes unreadable, valid records resume at {end}", end - offset)
                        }
                    })
                    .collect();
                parts.join("; ")
            };
            writeln!(
                f,
                "{}: {} bytes, {} records ({} deliveries put, {} acked): {state}",
                s.path.display(),
                s.bytes,
                s.records,
                s.deliveries,
                s.acks
            )?;
        }
        let db = self.dir.join("spool.db");
        match &self.database {
            DatabaseState::Missing => writeln!(f, "{}: absent", db.display())?,
            DatabaseState::Ok => writeln!(f, "{}: ok (integrity_check)", db.display())?,
            DatabaseState::Damaged(report) => {
                writeln!(f, "{}: DAMAGED, integrity_check: {report}", db.display())?;
            }
            DatabaseState::Unreadable(why) => {
                writeln!(f, "{}: UNREADABLE: {why}", db.display())?;
            }
        }
        if self.damaged() {
            write!(
                f,
                "damage: deliveries lost: {}; acks lost: {} (their deliveries would be delivered again)",
                self.lost_deliveries, self.lost_acks
            )?;
            if self.uncounted > 0 {
                write!(
                    f,
                    ", and {} damaged stretches whose content could not be counted",
                    self.uncounted
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// What repair did.
#[derive(Debug)]
pub struct Repair {
    /// The state before.
    pub before: Verification,
    /// Copies of the segments that were rewritten, in `<path>/quarantine/`.
    pub quarantined: Vec<PathBuf>,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.before)?;
        for q in &self.quarantined {
            writeln!(f, "set aside: {}", q.display())?;
        }
        if self.quarantined.is_empty() {
            writeln!(f, "journal: nothing to repair")?;
        } else {
            write!(
                f,
                "repaired: deliveries lost: {}; acks lost: {} (their deliveries will be delivered again)",
                self.before.lost_deliveries, self.before.lost_acks
            )?;
            if self.before.uncounted > 0 {
                write!(
                    f,
                    "; {} damaged stretches could not be counted: more deliveries may be lost",
                    self.before.uncounted
                )?;
            }
            writeln!(f)?;
        }
        match &self.before.database {
            DatabaseState::Damaged(_) | DatabaseState::Unreadable(_) => writeln!(
                f,
                "spool.db was not changed: repair does not rewrite the database; restore it from a backup or move it aside"
            ),
            _ => Ok(()),
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MaintenanceError + '_ {
    move |source| MaintenanceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Holds `journal/lock` so that no daemon opens the spool meanwhile; `None` without a journal.
fn lock(dir: &Path) -> Result<Option<File>, MaintenanceError> {
    let path = dir.join("journal").join("lock");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Err(MaintenanceError::InUse(dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(io_at(&path)(e)),
    }
}

/// Checks `spool.db` read-only and reads the journaled deliveries it holds copies of.
fn check_database(dir: &Path) -> (DatabaseState, HashSet<DeliveryId>) {
    let path = dir.join("spool.db");
    if !path.exists() {
        return (DatabaseState::Missing, HashSet::new());
    }
    // Without a WAL, an immutable connection reads the file without creating any.
    let has_wal = fs::metadata(dir.join("spool.db-wal")).is_ok_and(|m| m.len() > 0);
    let opened = if has_wal {
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    } else {
        let escaped = path
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        Connection::open_with_flags(
            format!("file:{escaped}?mode=ro&immutable=1"),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
    };
    let conn = match opened {
        Ok(conn) => conn,
        Err(e) => return (DatabaseState::Unreadable(e.to_string()), HashSet::new()),
    };
    let lines = conn.prepare("PRAGMA integrity_check").and_then(|mut stmt| {
        stmt.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    });
    let state = match lines {
        Ok(lines) if lines.len() == 1 && lines.first().is_some_and(|l| l == "ok") => {
            DatabaseState::Ok
        }
        Ok(lines) => DatabaseState::Damaged(lines.join("; ")),
        Err(e) => DatabaseState::Unreadable(e.to_string()),
    };
    let moved = conn
        .prepare("SELECT id FROM journal_moved")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, i64>(0))?
                .map(|id| id.map(|id| u64::try_from(id).unwrap_or(0)))
                .collect::<rusqlite::Result<HashSet<_>>>()
        })
        .unwrap_or_default();
    (state, moved)
}

/// Reads every segment and the database; changes nothing.
fn examine(dir: &Path) -> Result<(Verification, Vec<SegmentScan>), MaintenanceError> {
    let journal_dir = dir.join("journal");
    let files = match journal::segment_files(&journal_dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_at(&journal_dir)(e)),
    };
    let mut scans = Vec::with_capacity(files.len());
    for path in &files {
        scans.push(journal::inspect(path).map_err(io_at(path))?);
    }
    let (database, moved) = check_database(dir);
    // The journal ends after the last valid record: damage past it is a torn tail.
    let last_valid = scans.iter().rposition(|s| s.records > 0);
    let torn = |index: usize, end: u64, len: u64| match last_valid {
        None => true,
        Some(last) => index > last || (index == last && end == len),
    };
    let gone: HashSet<DeliveryId> = scans.iter().flat_map(|s| s.gone.iter().copied()).collect();
    let put: HashSet<DeliveryId> = scans.iter().flat_map(|s| s.puts.iter().copied()).collect();
    let mut verification = Verification {
        dir: dir.to_owned(),
        segments: Vec::with_capacity(scans.len()),
        database,
        lost_deliveries: 0,
        lost_acks: 0,
        uncounted: 0,
    };
    for (index, scan) in scans.iter().enumerate() {
        let mut damage = Vec::with_capacity(scan.damage.len());
        for bad in &scan.damage {
            let is_torn = torn(index, bad.end, scan.len);
            damage.push((bad.offset, bad.end, is_torn));
            if is_torn {
                continue;
            }
            match &bad.guess {
                Guess::Put(ids) => {
                    verification.lost_deliveries += ids
                        .iter()
                        .filter(|id| !gone.contains(id) && !moved.contains(id))
                        .count() as u64;
                }
                Guess::Gone(ids) => {
                    verification.lost_acks += ids
                        .iter()
                        .filter(|id| put.contains(id) && !gone.contains(id) && !moved.contains(id))
                        .count() as u64;
                }
                Guess::Unknown => verification.uncounted += 1,
            }
        }
        verification.segments.push(SegmentState {
            path: scan.path.clone(),
            bytes: scan.len,
            records: scan.records,
            deliveries: scan.puts.len() as u64,
            acks: scan.gone.len() as u64,
            damage,
        });
    }
    Ok((verification, scans))
}

/// Reports the state of every journal segment and of the database in `dir`, changing
/// nothing.
pub fn verify(dir: &Path) -> Result<Verification, MaintenanceError> {
    let _lock = lock(dir)?;
    examine(dir).map(|(verification, _)| verification)
}

/// Sets aside what cannot be read: each segment with bytes that are not records is copied
/// whole into `<dir>/quarantine/` and rewritten with its valid records only (a segment with
/// none is moved there). The database is checked, never changed.
pub fn repair(dir: &Path) -> Result<Repair, MaintenanceError> {
    let _lock = lock(dir)?;
    let (before, scans) = examine(dir)?;
    let quarantine = dir.join("quarantine");
    let mut quarantined = Vec::new();
    for scan in scans.iter().filter(|s| !s.damage.is_empty()) {
        fs::create_dir_all(&quarantine).map_err(io_at(&quarantine))?;
        let name = scan
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut target = quarantine.join(&name);
        for n in 1.. {
            if !target.exists() {
                break;
            }
            target = quarantine.join(format!("{name}.{n}"));
        }
        if scan.records == 0 {
            fs::rename(&scan.path, &target).map_err(io_at(&target))?;
        } else {
            let copy = || -> io::Result<()> {
                let mut from = File::open(&scan.path)?;
                let mut to = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                io::copy(&mut from, &mut to)?;
                to.sync_all()
            };
            copy().map_err(io_at(&target))?;
            journal::sync_dir(&quarantine).map_err(io_at(&quarantine))?;
            journal::rewrite(scan).map_err(io_at(&scan.path))?;
        }
        journal::sync_dir(&quarantine).map_err(io_at(&quarantine))?;
        if let Some(parent) = scan.path.parent() {
            journal::sync_dir(parent).map_err(io_at(parent))?;
        }
        quarantined.push(target);
    }
    Ok(Repair {
        before,
        quarantined,
    })
}
