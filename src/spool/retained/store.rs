//! Where retained events are kept: a run of segments, appended to at the end and dropped
//! whole from the front, on disk (`<spool.path>/retained/<number>.log`) or in memory.
//!
//! Oldest out first: a segment goes once every record in it is past `retain_delivered`, or
//! when room is wanted (see [`Store::evict_to`]). Files are written without `fsync`: a crash
//! of the process loses nothing written, a power cut may lose the last moments, and a torn
//! tail is cut off when the store is opened.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{Decoded, Head, Kept, HEADER};
use crate::spool::record::to_millis;

/// Smallest and largest segment.
const SEGMENT_MIN: u64 = 64 << 10;
const SEGMENT_MAX: u64 = 16 << 20;
/// Smallest and largest free space kept on the file system; between them an eighth of it,
/// twice the reserve the embedded spool keeps there (as the delivery history does).
const FLOOR_MIN: u64 = 512 << 10;
const FLOOR_MAX: u64 = 128 << 20;

/// Where one record is: its segment's number and its offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    segment: u64,
    offset: u64,
}

/// The segments and what they hold.
#[derive(Debug)]
pub(crate) struct Store {
    /// `None` keeps the segments in memory.
    dir: Option<PathBuf>,
    segments: VecDeque<Segment>,
    total: u64,
    next_segment: u64,
    segment_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    bytes: u64,
    /// When it was last appended to (no record in it was delivered later).
    newest: SystemTime,
    /// The records, for a store in memory.
    memory: Vec<u8>,
}

impl Store {
    /// A store in memory, in segments of about a sixteenth of `max_bytes`.
    pub(crate) fn memory(max_bytes: u64) -> Self {
        Self {
            dir: None,
            segments: VecDeque::new(),
            total: 0,
            next_segment: 1,
            segment_bytes: (max_bytes / 16).clamp(SEGMENT_MIN, SEGMENT_MAX),
        }
    }

    /// Opens (or creates) the store in `dir`, cutting off a torn tail.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut store = Self {
            dir: Some(dir.to_owned()),
            ..Self::memory(max_bytes)
        };
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let number = name.to_str().and_then(|n| n.strip_suffix(".log"));
            if let Some(number) = number.and_then(|n| n.parse::<u64>().ok()) {
                found.push((number, entry.metadata()?));
            }
        }
        found.sort_by_key(|(number, _)| *number);
        for (number, meta) in found {
            store.total += meta.len();
            store.next_segment = number + 1;
            store.segments.push_back(Segment {
                number,
                bytes: meta.len(),
                newest: meta.modified().unwrap_or_else(|_| SystemTime::now()),
                memory: Vec::new(),
            });
        }
        store.repair_tail()?;
        Ok(store)
    }

    /// Cuts off what follows the last whole record of the last segment.
    fn repair_tail(&mut self) -> io::Result<()> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        let path = self.path(last.number);
        let bytes = fs::read(&path)?;
        let mut at = 0;
        while let Some((_, len)) = Kept::decode(&bytes[at..], false) {
            at += len;
        }
        if at < bytes.len() {
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(at as u64)?;
            let cut = (bytes.len() - at) as u64;
            tracing::warn!(path = %path.display(), bytes = cut, "Retained events ended in a torn record; cut it off");
            self.total -= cut;
            if let Some(last) = self.segments.back_mut() {
                last.bytes = at as u64;
            }
        }
        Ok(())
    }

    fn path(&self, number: u64) -> PathBuf {
        let dir = self.dir.as_deref().unwrap_or(Path::new("."));
        dir.join(format!("{number:020}.log"))
    }

    /// Bytes the records take.
    pub(crate) fn bytes(&self) -> u64 {
        self.total
    }

    /// Appends encoded records (whole records only), starting a new segment when the last
    /// one is full.
    pub(crate) fn append(&mut self, records: &[u8], now: SystemTime) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= self.segment_bytes);
        if full {
            self.segments.push_back(Segment {
                number: self.next_segment,
                bytes: 0,
                newest: now,
                memory: Vec::new(),
            });
            self.next_segment += 1;
        }
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        if self.dir.is_some() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(last.number))?;
            file.write_all(records)?;
        }
        let in_memory = self.dir.is_none();
        if let Some(last) = self.segments.back_mut() {
            last.bytes += records.len() as u64;
            last.newest = now;
            if in_memory {
                last.memory.extend_from_slice(records);
            }
        }
        self.total += records.len() as u64;
        Ok(())
    }

    /// Drops the segments whose every record was delivered before `cutoff`; returns the
    /// bytes freed.
    pub(crate) fn expire(&mut self, cutoff: SystemTime) -> u64 {
        let mut freed = 0;
        while self.segments.front().is_some_and(|s| s.newest < cutoff) {
            freed += self.drop_first();
        }
        freed
    }

    /// Whether the file system keeps its floor of free space plus `wanted` more bytes, after
    /// dropping the oldest segments if need be: the floor is [`FLOOR_MIN`]..[`FLOOR_MAX`] and
    /// twice `spool_bytes` (room for the spool to copy what it holds, as its own admission
    /// asks). Always true in memory, or when the file system cannot be asked.
    pub(crate) fn make_room(&mut self, wanted: u64, spool_bytes: u64) -> bool {
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
        let floor = (total / 8).clamp(FLOOR_MIN, FLOOR_MAX) + spool_bytes.saturating_mul(2);
        while free < floor.saturating_add(wanted) {
            if self.segments.is_empty() {
                return false;
            }
            free += self.drop_first();
        }
        true
    }

    /// Drops the oldest segments until at most `limit` bytes are kept; returns the bytes
    /// freed.
    pub(crate) fn evict_to(&mut self, limit: u64) -> u64 {
        let mut freed = 0;
        while self.total > limit && !self.segments.is_empty() {
            freed += self.drop_first();
        }
        freed
    }

    fn drop_first(&mut self) -> u64 {
        let Some(first) = self.segments.pop_front() else {
            return 0;
        };
        self.total -= first.bytes;
        if self.dir.is_some() {
            let path = self.path(first.number);
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "Cannot remove a file of retained events");
            }
        }
        first.bytes
    }

    /// The place of every record delivered at or after `cutoff` whose head `wanted` selects,
    /// oldest first.
    pub(crate) fn scan(
        &self,
        cutoff: SystemTime,
        mut wanted: impl FnMut(&Head) -> bool,
    ) -> Vec<Pos> {
        let cutoff_ms = to_millis(cutoff);
        let mut found = Vec::new();
        for segment in &self.segments {
            if segment.newest < cutoff {
                continue;
            }
            let read;
            let bytes = match &self.dir {
                None => &segment.memory,
                Some(_) => match fs::read(self.path(segment.number)) {
                    Ok(bytes) => {
                        read = bytes;
                        &read
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cannot read a file of retained events");
                        continue;
                    }
                },
            };
            let mut at = 0;
            while let Some((Decoded::Head(head), len)) = Kept::decode(&bytes[at..], false) {
                if head.delivered_ms >= cutoff_ms && wanted(&head) {
                    found.push(Pos {
                        segment: segment.number,
                        offset: at as u64,
                    });
                }
                at += len;
            }
        }
        found
    }

    /// The record at `pos`; `None` when its segment is gone (expired or evicted since).
    pub(crate) fn read(&self, pos: Pos) -> Option<Kept> {
        let segment = self.segments.iter().find(|s| s.number == pos.segment)?;
        let start = usize::try_from(pos.offset).ok()?;
        let decoded = match &self.dir {
            None => Kept::decode(segment.memory.get(start..)?, true),
            Some(_) => {
                let bytes = read_record(&self.path(pos.segment), pos.offset).ok()?;
                Kept::decode(&bytes, true)
            }
        };
        match decoded {
            Some((Decoded::Whole(kept), _)) => Some(kept),
            _ => None,
        }
    }
}

/// The bytes of the record at `offset` in the file at `path`.
fn read_record(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; HEADER];
    file.read_exact(&mut header)?;
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[1..]);
    let len = u32::from_le_bytes(len) as usize;
    let mut bytes = vec![0u8; HEADER + len];
    bytes[..HEADER].copy_from_slice(&header);
    file.read_exact(&mut bytes[HEADER..])?;
    Ok(bytes)
}

/// The earliest delivery time still kept for `ttl` as of `now`.
pub(crate) fn cutoff(now: SystemTime, ttl: std::time::Duration) -> SystemTime {
    now.checked_sub(ttl).unwrap_or(UNIX_EPOCH)
}
