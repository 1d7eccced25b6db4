//! The SQLite file of the embedded spool: opening and checking it, its schema, and the reads
//! the lease path needs.
//!
//! Imports the spool's own records only. Every error here names the file.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use super::bounds::SEEN_ENTRY_OVERHEAD;
use super::lanes;
use super::record::{decode_event, from_millis, FRAMING};
use super::{Delivery, DeliveryId, Priority};

/// Schema version written to `PRAGMA user_version`; a file with a larger one is refused, a
/// file with a smaller one is migrated on open.
pub(super) const SCHEMA_VERSION: i64 = 5;

/// How long a statement waits for a lock held by the other connection (a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    pending INTEGER NOT NULL,
    record BLOB NOT NULL,
    data BLOB
);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    event INTEGER NOT NULL REFERENCES events (id),
    route TEXT NOT NULL,
    sink TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL,
    not_before INTEGER NOT NULL,
    last_outcome TEXT,
    last_status INTEGER,
    last_attempt_at INTEGER
);
CREATE INDEX deliveries_lease ON deliveries (sink, not_before);
";

/// Version 2: the dead-letter store and the duplicate-suppression window. Dead letters keep
/// their event row referenced; AUTOINCREMENT keeps a purged id from coming back.
const SCHEMA_V2: &str = "
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event INTEGER NOT NULL REFERENCES events (id),
    route TEXT NOT NULL,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_outcome TEXT,
    last_status INTEGER,
    accepted_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    dead_lettered_at INTEGER NOT NULL
);
CREATE INDEX dead_letters_time ON dead_letters (dead_lettered_at);
CREATE TABLE seen (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source, id)
);
CREATE INDEX seen_expiry ON seen (expires_at);
";

/// Version 3: priority lanes (0 high, 1 normal, 2 low; rows from before are normal) and the
/// ordering key of `ordering: subject` routes. A lane's lease order is (`not_before`, id).
const SCHEMA_V3: &str = "
ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
DROP INDEX deliveries_lease;
CREATE INDEX deliveries_lane ON deliveries (sink, priority, not_before, id);
";

/// Version 4: journaled deliveries copied into the database (when nacked or dead-lettered)
/// whose journal records may still be on disk; recovery leaves them out of the journal.
const SCHEMA_V4: &str = "
CREATE TABLE journal_moved (id INTEGER PRIMARY KEY);
";

/// Version 5: each sink's deliveries by the time they were accepted, so the oldest one is
/// one index probe away (the backlog-age gauge).
const SCHEMA_V5: &str = "
CREATE INDEX deliveries_age ON deliveries (sink, accepted_at);
";

/// Why the embedded spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory or the file could not be created or inspected.
    #[error("cannot prepare spool file {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused the file (not a database, unreadable, locked, …).
    #[error("cannot open spool database {path}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is damaged: SQLite's own check did not pass.
    #[error("spool database {path} is corrupt; SQLite's check reported: {report}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The lines `PRAGMA quick_check` returned.
        report: String,
    },
    /// The file was written by a newer switchyard.
    #[error(
        "spool database {path} has schema version {found}; this build reads up to {SCHEMA_VERSION}"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
    },
    /// A journal record fails its check and valid records follow it: not a write cut short
    /// by a crash, so what lies between cannot be read and would be lost silently.
    #[error(
        "journal segment {} is damaged at byte offset {offset}: the record there fails its check and valid records follow it ({} at byte offset {resumes_at}), so it is not a write cut short. `switchyard spool verify` shows the damage; `switchyard spool repair` sets aside what cannot be read",
        path.display(), resumes_in.display()
    )]
    JournalDamaged {
        /// The segment file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// The segment holding the next valid record.
        resumes_in: PathBuf,
        /// Where that record starts.
        resumes_at: u64,
    },
    /// The writer thread could not be started.
    #[error("cannot start the spool writer for {path}")]
    Thread {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A checked, open database: the writer's connection, one for reads and one for checkpoints.
#[derive(Debug)]
pub(super) struct Opened {
    pub(super) writer: Connection,
    pub(super) reader: Connection,
    /// Copies the WAL into the file beside the writer ([`super::checkpoint`]).
    pub(super) checkpointer: Connection,
    pub(super) path: PathBuf,
}

/// Opens (creating when absent) `<dir>/spool.db` and checks it.
pub(super) fn open(dir: &Path) -> Result<Opened, OpenError> {
    let path = dir.join("spool.db");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| OpenError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    match fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => {
            // A spool file is never empty once created (creation is atomic below), so an
            // empty one is a truncated one: refuse it rather than start afresh.
            return Err(OpenError::Corrupt {
                path,
                report: "the file is empty (truncated)".into(),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(dir, &path)?,
        Err(e) => return Err(io(&path)(e)),
    }
    let sqlite = |source| OpenError::Sqlite {
        path: path.clone(),
        source,
    };
    let writer = connect(&path).map_err(sqlite)?;
    check(&writer, &path)?;
    migrate(&writer).map_err(sqlite)?;
    let reader = connect(&path)
        .and_then(|conn| conn.execute_batch("PRAGMA query_only = 1").map(|()| conn))
        .map_err(sqlite)?;
    let checkpointer = connect(&path).map_err(sqlite)?;
    Ok(Opened {
        writer,
        reader,
        checkpointer,
        path,
    })
}

/// Creates the database under a temporary name and renames it into place, so that a crash
/// during creation never leaves a half-made `spool.db` behind.
fn create(dir: &Path, path: &Path) -> Result<(), OpenError> {
    let temp = dir.join("spool.db.new");
    let io = |source| OpenError::Io {
        path: temp.clone(),
        source,
    };
    for stale in [
        temp.clone(),
        dir.join("spool.db.new-wal"),
        dir.join("spool.db.new-shm"),
    ] {
        match fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    // Incremental auto-vacuum can only be chosen before the file is first written, which
    // switching to WAL already does: choose it on a plain connection first.
    let conn = Connection::open(&temp)
        .and_then(|c| {
            c.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
                .map(|()| c)
        })
        .and_then(|c| {
            drop(c);
            connect(&temp)
        })
        .map_err(|source| OpenError::Sqlite {
            path: temp.clone(),
            source,
        })?;
    let init = format!(
        "BEGIN; {SCHEMA} {SCHEMA_V2} {SCHEMA_V3} {SCHEMA_V4} {SCHEMA_V5} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    );
    conn.execute_batch(&init)
        .map_err(|source| OpenError::Sqlite {
            path: temp.clone(),
            source,
        })?;
    // Closing checkpoints the WAL into the file and removes it.
    conn.close().map_err(|(_, source)| OpenError::Sqlite {
        path: temp.clone(),
        source,
    })?;
    fs::rename(&temp, path).map_err(io)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| OpenError::Io {
            path: dir.to_owned(),
            source,
        })
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::default())?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets the read connection run beside the writer; FULL fsyncs the WAL on every
    // commit, which is what makes a returned `put` survive a power cut (NORMAL does not).
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    // The WAL is reused from its start after each checkpoint; the limit truncates it after a
    // burst so that it does not keep its largest size for ever.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864")?;
    Ok(conn)
}

/// Refuses a file from a newer schema or one that fails SQLite's quick check.
fn check(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_owned(),
            found: version,
        });
    }
    let mut stmt = conn.prepare("PRAGMA quick_check").map_err(sqlite)?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(sqlite)?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    Err(OpenError::Corrupt {
        path: path.to_owned(),
        report: lines.join("; "),
    })
}

/// Brings a file written by an older switchyard up to [`SCHEMA_VERSION`], in one
/// transaction. Files made before version 2 keep `auto_vacuum = NONE` (changing it needs a
/// full `VACUUM`); SQLite reuses their freed pages, so they stop growing under steady load.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"
        ))?;
    }
    if version < 3 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V3} PRAGMA user_version = 3; COMMIT;"
        ))?;
    }
    if version < 4 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V4} PRAGMA user_version = 4; COMMIT;"
        ))?;
    }
    if version < 5 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V5} PRAGMA user_version = 5; COMMIT;"
        ))?;
    }
    Ok(())
}

/// Bytes of stored events (record and payload), as `spool.max_bytes` counts them.
pub(super) fn stored_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let events: i64 = conn.query_row(
        &format!(
            "SELECT ifnull(SUM(length(record) + ifnull(length(data), 0) + {FRAMING}), 0)
             FROM events"
        ),
        [],
        |r| r.get(0),
    )?;
    let sightings: i64 = conn.query_row(
        &format!(
            "SELECT ifnull(SUM(length(CAST(source AS BLOB)) + length(CAST(id AS BLOB))
                + {SEEN_ENTRY_OVERHEAD}), 0) FROM seen"
        ),
        [],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(events.saturating_add(sightings)).unwrap_or(0))
}

/// When the oldest delivery of `sink` in the database was accepted (unix millis), by the
/// `deliveries_age` index.
pub(super) fn oldest(conn: &Connection, sink: &str) -> rusqlite::Result<Option<i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT MIN(accepted_at) FROM deliveries WHERE sink = ?1")?;
    stmt.query_row([sink], |r| r.get(0))
}

/// Rows in the duplicate-suppression table.
pub(super) fn seen_entries(conn: &Connection) -> rusqlite::Result<u64> {
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM seen", [], |r| r.get(0))?;
    Ok(u64::try_from(rows).unwrap_or(0))
}

/// Stored deliveries per sink, and the largest delivery id (0 when there is none).
pub(super) fn inventory(conn: &Connection) -> rusqlite::Result<(Vec<(String, usize)>, u64)> {
    let mut stmt = conn.prepare("SELECT sink, COUNT(*) FROM deliveries GROUP BY sink")?;
    let depths = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .map(|row| row.map(|(sink, n)| (sink, usize::try_from(n).unwrap_or(0))))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let max_id: Option<i64> = conn
        .query_row("SELECT MAX(id) FROM deliveries", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok((
        depths,
        max_id.map_or(0, |id| u64::try_from(id).unwrap_or(0)),
    ))
}

/// Ids of journaled deliveries that moved into the database.
pub(super) fn journal_moved(conn: &Connection) -> rusqlite::Result<HashSet<DeliveryId>> {
    let mut stmt = conn.prepare("SELECT id FROM journal_moved")?;
    let ids = stmt.query_map([], |r| r.get::<_, i64>(0))?;
    ids.map(|id| id.map(|id| u64::try_from(id).unwrap_or(0)))
        .collect()
}

/// Every stored delivery with an ordering key: (sink, id, route, key).
pub(super) fn ordered(
    conn: &Connection,
) -> rusqlite::Result<Vec<(String, DeliveryId, String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT sink, id, route, ordering_key FROM deliveries WHERE ordering_key IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        let id = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
        Ok((r.get(0)?, id, r.get(2)?, r.get(3)?))
    })?;
    rows.collect()
}

/// A position in a lane's lease order: (`not_before` in unix millis, delivery id).
pub(super) type Key = (i64, DeliveryId);

/// A delivery's position in its lane's lease order.
pub(super) fn key_of(delivery: &Delivery) -> Key {
    (super::record::to_millis(delivery.not_before), delivery.id)
}

/// Forgets moves of journaled deliveries below `below`, whose journal records are all gone.
pub(super) fn prune_moved(conn: &Connection, below: DeliveryId) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM journal_moved WHERE id < ?1")?
        .execute([i64::try_from(below).unwrap_or(i64::MAX)])
}

/// Why a stored delivery could not be read back.
pub(super) type RowError = Box<dyn std::error::Error + Send + Sync>;

/// One row read for the lease path: its key, and the delivery or why it could not be decoded.
pub(super) type LoadedRow = (Key, Result<Delivery, RowError>);

const COLUMNS: &str = "d.id, d.route, d.attempts, d.accepted_at, d.not_before, d.last_outcome,
    d.last_status, d.last_attempt_at, e.record, e.data, d.priority, d.ordering_key
    FROM deliveries d JOIN events e ON e.id = d.event";

/// Up to `limit` deliveries of `sink` in `priority`'s lane that come after `after` in its
/// lease order.
pub(super) fn load_after(
    conn: &Connection,
    (sink, priority): (&Arc<str>, Priority),
    after: Key,
    limit: usize,
) -> rusqlite::Result<Vec<LoadedRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}
         WHERE d.sink = ?1 AND d.priority = ?5
           AND (d.not_before > ?2 OR (d.not_before = ?2 AND d.id > ?3))
         ORDER BY d.not_before, d.id
         LIMIT ?4"
    ))?;
    let after_id = i64::try_from(after.1).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let lane = priority as i64;
    let params = rusqlite::params![sink, after.0, after_id, limit, lane];
    let rows = stmt.query_map(params, |row| read_row(row, sink))?;
    rows.collect()
}

/// The deliveries of `sink` with these ids that are still stored.
pub(super) fn load_ids(
    conn: &Connection,
    sink: &Arc<str>,
    ids: &[DeliveryId],
) -> rusqlite::Result<Vec<LoadedRow>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} WHERE d.id = ?1"))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = i64::try_from(*id).unwrap_or(i64::MAX);
        if let Some(row) = stmt.query_row([id], |row| read_row(row, sink)).optional()? {
            out.push(row);
        }
    }
    Ok(out)
}

fn read_row(row: &Row<'_>, sink: &Arc<str>) -> rusqlite::Result<LoadedRow> {
    let id = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
    let not_before: i64 = row.get(4)?;
    let record: Vec<u8> = row.get(8)?;
    let event = decode_event(&record, row.get(9)?);
    let delivery = match event {
        Err(e) => Err(e.into()),
        Ok(event) => Ok(Delivery {
            id,
            event: Arc::new(event),
            route: Arc::from(row.get::<_, String>(1)?),
            sink: sink.clone(),
            attempts: u32::try_from(row.get::<_, i64>(2)?).unwrap_or(u32::MAX),
            accepted_at: from_millis(row.get(3)?),
            not_before: from_millis(not_before),
            last_outcome: row.get(5)?,
            last_status: row
                .get::<_, Option<i64>>(6)?
                .and_then(|s| u16::try_from(s).ok()),
            last_attempt_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
            priority: lane_priority(row.get::<_, i64>(10)?),
            ordering_key: row.get::<_, Option<String>>(11)?.map(Arc::from),
        }),
    };
    Ok(((not_before, id), delivery))
}

/// The priority stored in a `priority` column; a value out of range reads as low.
fn lane_priority(stored: i64) -> Priority {
    lanes::priority(usize::try_from(stored).unwrap_or(usize::MAX))
}
