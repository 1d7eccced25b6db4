//! Where records are kept: a run of segments, appended to at the end and dropped whole from
//! the front, on disk (`<spool.path>/history/<first seq>.log`) or in memory.
//!
//! Oldest out first: a segment goes once every record in it is past `history_ttl`, or while
//! the segments together hold more than `history_max_bytes`. A segment holds about an
//! eighth of the bound, so what is kept stays between seven eighths of it and the bound.
//! Files are written without `fsync`: a crash of the process loses nothing written, a power
//! cut may lose the last moments, and a torn tail is cut off when the store is opened.
//!
//! On a short disk the history gives way to the spool beside it: before each write it makes
//! sure the file system keeps a floor of free space (see [`Segments::make_room`]), dropping
//! its own oldest segments first, and skips the write when even that is not enough.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::record::{Fields, Stored};
use crate::config::HistoryConfig;
use crate::segments::{Messages, OpenError, Segments};

/// Smallest and largest segment.
const SEGMENT_MIN: u64 = 4 << 10;
const SEGMENT_MAX: u64 = 8 << 20;

/// What the history says in its warnings.
static MESSAGES: Messages = Messages {
    torn: "Delivery history ended in a torn record; cut it off",
    remove: "Cannot remove an old delivery history file",
    read: "Cannot read a delivery history file",
};

/// Why the history store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("delivery history {path}: {source}")]
pub struct HistoryError {
    /// The file or directory.
    path: PathBuf,
    /// Why.
    #[source]
    source: io::Error,
}

impl From<OpenError> for HistoryError {
    fn from(OpenError { path, source }: OpenError) -> Self {
        Self { path, source }
    }
}

/// The segments, each named by the sequence number of its first record, and what they hold.
#[derive(Debug)]
pub(super) struct Store {
    segments: Segments,
    next_seq: u64,
    config: HistoryConfig,
}

impl Store {
    /// A store in memory.
    pub(super) fn memory(config: HistoryConfig) -> Self {
        Self {
            segments: Segments::memory(segment_bytes(config.max_bytes), &MESSAGES),
            next_seq: 1,
            config,
        }
    }

    /// Opens (or creates) the store in `dir`, cutting off a torn tail.
    pub(super) fn open(dir: &Path, config: HistoryConfig) -> Result<Self, HistoryError> {
        let segments = Segments::open(dir, segment_bytes(config.max_bytes), &MESSAGES)?;
        let mut store = Self {
            segments,
            next_seq: 1,
            config,
        };
        store.repair_tail().map_err(|source| HistoryError {
            path: dir.to_owned(),
            source,
        })?;
        Ok(store)
    }

    /// Reads the last segment to find the next sequence number, cutting off what follows
    /// its last whole record.
    fn repair_tail(&mut self) -> io::Result<()> {
        let Some(last) = self.segments.last() else {
            return Ok(());
        };
        let mut next = last.key;
        self.segments.repair_tail(|bytes| {
            let (record, len) = Stored::decode(bytes, false)?;
            next = record.seq + 1;
            Some(len)
        })?;
        self.next_seq = next;
        Ok(())
    }

    /// Appends records (numbering them), then drops what is past the bounds. Skips them
    /// when the disk is short (see [`Segments::make_room`]); `Ok(false)` then.
    pub(super) fn append(&mut self, records: &[Fields<'_>], now: SystemTime) -> io::Result<bool> {
        let wanted: usize = records.iter().map(Fields::size_hint).sum();
        if !self.segments.make_room(wanted as u64, 0) {
            return Ok(false);
        }
        let mut pending = Vec::with_capacity(wanted);
        for record in records {
            let seq = self.next_seq;
            self.next_seq += 1;
            if self.segments.full(pending.len() as u64) {
                self.segments.write(&pending, now)?;
                pending.clear();
                self.segments.start(seq, now);
            }
            record.encode(seq, &mut pending);
        }
        self.segments.write(&pending, now)?;
        self.prune(now);
        Ok(true)
    }

    /// Drops segments past the TTL, then the oldest while over the size bound (the last
    /// one stays, unless it is past the TTL too).
    pub(super) fn prune(&mut self, now: SystemTime) {
        let cutoff = now.checked_sub(self.config.ttl).unwrap_or(UNIX_EPOCH);
        while let Some(first) = self.segments.first() {
            let expired = first.newest < cutoff;
            let over = self.segments.bytes() > self.config.max_bytes && self.segments.len() > 1;
            if !expired && !over {
                break;
            }
            self.segments.drop_first();
        }
    }

    /// Bytes the records take.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        self.segments.bytes()
    }

    /// Every record within the TTL, oldest first; events are decoded only for the records
    /// `wants_event` selects.
    pub(super) fn scan(
        &self,
        now: SystemTime,
        mut wants_event: impl FnMut(&Stored) -> bool,
        mut each: impl FnMut(Stored),
    ) {
        let cutoff = now.checked_sub(self.config.ttl).unwrap_or(UNIX_EPOCH);
        let cutoff_ms = millis(cutoff);
        self.segments.each_since(cutoff, |_, bytes| {
            let mut at = 0;
            while let Some((light, len)) = Stored::decode(&bytes[at..], false) {
                if light.at_ms >= cutoff_ms {
                    match wants_event(&light) {
                        true => {
                            if let Some((full, _)) = Stored::decode(&bytes[at..], true) {
                                each(full);
                            }
                        }
                        false => each(light),
                    }
                }
                at += len;
            }
        });
    }
}

/// A segment's size for a bound of `max_bytes`.
fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(SEGMENT_MIN, SEGMENT_MAX)
}

/// Milliseconds since the epoch.
pub(super) fn millis(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

    use super::*;
    use crate::history::AttemptOutcome;

    fn record(id: &str) -> Stored {
        Stored {
            seq: 0,
            at_ms: millis(SystemTime::now()),
            duration_us: Some(10),
            attempt: 1,
            outcome: AttemptOutcome::Delivered,
            status: None,
            route: "r".into(),
            sink: "s".into(),
            source: "/src".into(),
            id: id.into(),
            ty: "T".into(),
            detail: None,
            event: None,
        }
    }

    fn ids(store: &Store) -> Vec<String> {
        let mut ids = Vec::new();
        store.scan(SystemTime::now(), |_| false, |r| ids.push(r.id));
        ids
    }

    #[test]
    fn the_oldest_segments_go_first_past_the_bound() {
        let config = HistoryConfig {
            ttl: Duration::from_secs(60),
            max_bytes: 32 << 10,
        };
        let mut store = Store::memory(config);
        for i in 0..2000 {
            let appended = store.append(&[record(&i.to_string()).fields()], SystemTime::now());
            assert!(appended.expect("append"));
        }
        assert!(store.bytes() <= 32 << 10, "{}", store.bytes());
        let kept = ids(&store);
        assert_eq!(kept.last().map(String::as_str), Some("1999"));
        assert!(!kept.contains(&"0".to_owned()));
        let first: usize = kept[0].parse().expect("a number");
        assert_eq!(kept.len(), 2000 - first, "kept records are contiguous");
    }

    #[test]
    fn records_past_the_ttl_are_dropped_and_a_torn_file_tail_is_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let config = HistoryConfig {
            ttl: Duration::from_secs(60),
            max_bytes: 1 << 20,
        };
        let mut store = Store::open(dir.path(), config).expect("open");
        let long_ago = SystemTime::now() - Duration::from_secs(120);
        let mut old = record("old");
        old.at_ms = millis(long_ago);
        store.append(&[old.fields()], long_ago).expect("append");
        assert!(ids(&store).is_empty(), "past the TTL when read");
        store.prune(SystemTime::now());
        assert_eq!(store.bytes(), 0);
        store
            .append(
                &[record("a").fields(), record("b").fields()],
                SystemTime::now(),
            )
            .expect("append");
        let file = store
            .segments
            .path(store.segments.first().expect("a segment").key);
        drop(store);
        let len = fs::metadata(&file).expect("file").len();
        OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_len(len - 3))
            .expect("tear");
        let mut store = Store::open(dir.path(), config).expect("reopen");
        assert_eq!(ids(&store), ["a"]);
        store
            .append(&[record("c").fields()], SystemTime::now())
            .expect("append");
        assert_eq!(ids(&store), ["a", "c"]);
    }
}
