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
//! sure the file system keeps [`FLOOR_MIN`]..[`FLOOR_MAX`] free, dropping its own oldest
//! segments first, and skips the write when even that is not enough.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::record::Stored;
use crate::config::HistoryConfig;

/// Smallest and largest segment.
const SEGMENT_MIN: u64 = 4 << 10;
const SEGMENT_MAX: u64 = 8 << 20;
/// Smallest and largest free space the history leaves on its file system; between them an
/// eighth of it, twice the reserve the embedded spool keeps there.
const FLOOR_MIN: u64 = 512 << 10;
const FLOOR_MAX: u64 = 128 << 20;

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

/// The segments and what they hold.
#[derive(Debug)]
pub(super) struct Store {
    /// `None` keeps the segments in memory.
    dir: Option<PathBuf>,
    segments: VecDeque<Segment>,
    total: u64,
    next_seq: u64,
    segment_bytes: u64,
    config: HistoryConfig,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    bytes: u64,
    /// When it was last appended to.
    newest: SystemTime,
    /// The records, for a store in memory.
    memory: Vec<u8>,
}

impl Store {
    /// A store in memory.
    pub(super) fn memory(config: HistoryConfig) -> Self {
        Self {
            dir: None,
            segments: VecDeque::new(),
            total: 0,
            next_seq: 1,
            segment_bytes: segment_bytes(config.max_bytes),
            config,
        }
    }

    /// Opens (or creates) the store in `dir`, cutting off a torn tail.
    pub(super) fn open(dir: &Path, config: HistoryConfig) -> Result<Self, HistoryError> {
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| HistoryError { path, source }
        };
        fs::create_dir_all(dir).map_err(fail(dir))?;
        let mut store = Self {
            dir: Some(dir.to_owned()),
            ..Self::memory(config)
        };
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(fail(dir))? {
            let entry = entry.map_err(fail(dir))?;
            let name = entry.file_name();
            let first = name.to_str().and_then(|n| n.strip_suffix(".log"));
            if let Some(first_seq) = first.and_then(|n| n.parse::<u64>().ok()) {
                found.push((first_seq, entry.metadata().map_err(fail(&entry.path()))?));
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        for (first_seq, meta) in found {
            store.total += meta.len();
            store.segments.push_back(Segment {
                first_seq,
                bytes: meta.len(),
                newest: meta.modified().unwrap_or_else(|_| SystemTime::now()),
                memory: Vec::new(),
            });
        }
        store.repair_tail().map_err(fail(dir))?;
        Ok(store)
    }

    /// Reads the last segment to find the next sequence number, cutting off what follows
    /// its last whole record.
    fn repair_tail(&mut self) -> io::Result<()> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        let path = self.path(last.first_seq);
        let bytes = fs::read(&path)?;
        let (mut at, mut next) = (0, last.first_seq);
        while let Some((record, len)) = Stored::decode(&bytes[at..], false) {
            at += len;
            next = record.seq + 1;
        }
        if at < bytes.len() {
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(at as u64)?;
            let cut = bytes.len() - at;
            tracing::warn!(path = %path.display(), bytes = cut, "Delivery history ended in a torn record; cut it off");
            self.total -= cut as u64;
            if let Some(last) = self.segments.back_mut() {
                last.bytes = at as u64;
            }
        }
        self.next_seq = next;
        Ok(())
    }

    fn path(&self, first_seq: u64) -> PathBuf {
        let dir = self.dir.as_deref().unwrap_or(Path::new("."));
        dir.join(format!("{first_seq:020}.log"))
    }

    /// Appends records (numbering them), then drops what is past the bounds. Skips them
    /// when the disk is short (see [`Store::make_room`]); `Ok(false)` then.
    pub(super) fn append(&mut self, records: &mut [Stored], now: SystemTime) -> io::Result<bool> {
        let wanted = records.iter().map(Stored::size_hint).sum();
        if !self.make_room(wanted) {
            return Ok(false);
        }
        let mut pending = Vec::new();
        for record in records {
            record.seq = self.next_seq;
            self.next_seq += 1;
            let full = self
                .segments
                .back()
                .is_none_or(|s| s.bytes + pending.len() as u64 >= self.segment_bytes);
            if full {
                self.write(&mut pending, now)?;
                self.segments.push_back(Segment {
                    first_seq: record.seq,
                    bytes: 0,
                    newest: now,
                    memory: Vec::new(),
                });
            }
            record.encode(&mut pending);
        }
        self.write(&mut pending, now)?;
        self.prune(now);
        Ok(true)
    }

    /// Whether `wanted` more bytes leave the file system its floor of free space, after
    /// dropping the oldest segments if need be. Always true in memory, or when the file
    /// system cannot be asked.
    fn make_room(&mut self, wanted: u64) -> bool {
        let Some(stat) = self
            .dir
            .as_deref()
            .and_then(|d| rustix::fs::statvfs(d).ok())
        else {
            return true;
        };
        let block = stat.f_frsize.max(1);
        let total = stat.f_blocks.saturating_mul(block);
        let mut free = stat.f_bavail.saturating_mul(block);
        let floor = (total / 8).clamp(FLOOR_MIN, FLOOR_MAX);
        while free < floor + wanted {
            let Some(first) = self.segments.front() else {
                return false;
            };
            free += first.bytes;
            self.drop_first();
        }
        true
    }

    /// Appends `pending` to the last segment.
    fn write(&mut self, pending: &mut Vec<u8>, now: SystemTime) -> io::Result<()> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        if pending.is_empty() {
            return Ok(());
        }
        if self.dir.is_some() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(last.first_seq))?;
            file.write_all(pending)?;
        }
        let in_memory = self.dir.is_none();
        if let Some(last) = self.segments.back_mut() {
            last.bytes += pending.len() as u64;
            last.newest = now;
            if in_memory {
                last.memory.extend_from_slice(pending);
            }
        }
        self.total += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    /// Drops segments past the TTL, then the oldest while over the size bound (the last
    /// one stays, unless it is past the TTL too).
    pub(super) fn prune(&mut self, now: SystemTime) {
        let cutoff = now.checked_sub(self.config.ttl).unwrap_or(UNIX_EPOCH);
        while let Some(first) = self.segments.front() {
            let expired = first.newest < cutoff;
            let over = self.total > self.config.max_bytes && self.segments.len() > 1;
            if !expired && !over {
                break;
            }
            self.drop_first();
        }
    }

    fn drop_first(&mut self) {
        let Some(first) = self.segments.pop_front() else {
            return;
        };
        self.total -= first.bytes;
        if self.dir.is_some() {
            let path = self.path(first.first_seq);
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "Cannot remove an old delivery history file");
            }
        }
    }

    /// Bytes the records take.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        self.total
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
        for segment in &self.segments {
            if segment.newest < cutoff {
                continue;
            }
            let read;
            let bytes = match &self.dir {
                None => &segment.memory,
                Some(_) => match fs::read(self.path(segment.first_seq)) {
                    Ok(bytes) => {
                        read = bytes;
                        &read
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cannot read a delivery history file");
                        continue;
                    }
                },
            };
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
        }
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
            let appended = store.append(&mut [record(&i.to_string())], SystemTime::now());
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
        store.append(&mut [old], long_ago).expect("append");
        assert!(ids(&store).is_empty(), "past the TTL when read");
        store.prune(SystemTime::now());
        assert_eq!(store.bytes(), 0);
        store
            .append(&mut [record("a"), record("b")], SystemTime::now())
            .expect("append");
        let file = store.path(store.segments[0].first_seq);
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
            .append(&mut [record("c")], SystemTime::now())
            .expect("append");
        assert_eq!(ids(&store), ["a", "c"]);
    }
}
