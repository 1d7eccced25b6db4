//! Where retained events are kept: a run of segments, appended to at the end and dropped
//! whole from the front, on disk (`<spool.path>/retained/<number>.log`) or in memory.
//!
//! Oldest out first: a segment goes once every record in it is past `retain_delivered`, or
//! when room is wanted (see [`Store::evict_to`]). Files are written without `fsync`: a crash
//! of the process loses nothing written, a power cut may lose the last moments, and a torn
//! tail is cut off when the store is opened.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{Decoded, Head, Kept, HEADER};
use crate::segments::{Messages, Segments};
use crate::spool::record::to_millis;

/// Smallest and largest segment.
const SEGMENT_MIN: u64 = 64 << 10;
const SEGMENT_MAX: u64 = 16 << 20;

/// What the store says in its warnings.
static MESSAGES: Messages = Messages {
    torn: "Retained events ended in a torn record; cut it off",
    remove: "Cannot remove a file of retained events",
    read: "Cannot read a file of retained events",
};

/// Where one record is: its segment's number and its offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    segment: u64,
    offset: u64,
}

/// The segments, numbered in order, and what they hold.
#[derive(Debug)]
pub(crate) struct Store {
    segments: Segments,
    next_segment: u64,
}

impl Store {
    /// A store in memory, in segments of about a sixteenth of `max_bytes`.
    pub(crate) fn memory(max_bytes: u64) -> Self {
        Self {
            segments: Segments::memory(segment_bytes(max_bytes), &MESSAGES),
            next_segment: 1,
        }
    }

    /// Opens (or creates) the store in `dir`, cutting off a torn tail.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        let mut segments = Segments::open(dir, segment_bytes(max_bytes), &MESSAGES)
            .map_err(|error| error.source)?;
        segments.repair_tail(|bytes| Kept::decode(bytes, false).map(|(_, len)| len))?;
        let next_segment = segments.last().map_or(1, |last| last.key + 1);
        Ok(Self {
            segments,
            next_segment,
        })
    }

    /// Bytes the records take.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.bytes()
    }

    /// Appends encoded records (whole records only), starting a new segment when the last
    /// one is full.
    pub(crate) fn append(&mut self, records: &[u8], now: SystemTime) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.segments.full(0) {
            self.segments.start(self.next_segment, now);
            self.next_segment += 1;
        }
        self.segments.write(records, now)
    }

    /// Drops the segments whose every record was delivered before `cutoff`; returns the
    /// bytes freed.
    pub(crate) fn expire(&mut self, cutoff: SystemTime) -> u64 {
        let mut freed = 0;
        while self.segments.first().is_some_and(|s| s.newest < cutoff) {
            freed += self.segments.drop_first();
        }
        freed
    }

    /// Whether the file system keeps its floor of free space plus `wanted` more bytes, after
    /// dropping the oldest segments if need be: the floor is that of
    /// [`Segments::make_room`] and twice `spool_bytes` (room for the spool to copy what it
    /// holds, as its own admission asks). Always true in memory, or when the file system
    /// cannot be asked.
    pub(crate) fn make_room(&mut self, wanted: u64, spool_bytes: u64) -> bool {
        self.segments
            .make_room(wanted, spool_bytes.saturating_mul(2))
    }

    /// Drops the oldest segments until at most `limit` bytes are kept; returns the bytes
    /// freed.
    pub(crate) fn evict_to(&mut self, limit: u64) -> u64 {
        let mut freed = 0;
        while self.segments.bytes() > limit && !self.segments.is_empty() {
            freed += self.segments.drop_first();
        }
        freed
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
        self.segments.each_since(cutoff, |segment, bytes| {
            let mut at = 0;
            while let Some((Decoded::Head(head), len)) = Kept::decode(&bytes[at..], false) {
                if head.delivered_ms >= cutoff_ms && wanted(&head) {
                    found.push(Pos {
                        segment: segment.key,
                        offset: at as u64,
                    });
                }
                at += len;
            }
        });
        found
    }

    /// The record at `pos`; `None` when its segment is gone (expired or evicted since).
    pub(crate) fn read(&self, pos: Pos) -> Option<Kept> {
        let segment = self.segments.iter().find(|s| s.key == pos.segment)?;
        let start = usize::try_from(pos.offset).ok()?;
        let decoded = match self.segments.in_memory() {
            true => Kept::decode(segment.memory.get(start..)?, true),
            false => {
                let bytes = read_record(&self.segments.path(pos.segment), pos.offset).ok()?;
                Kept::decode(&bytes, true)
            }
        };
        match decoded {
            Some((Decoded::Whole(kept), _)) => Some(kept),
            _ => None,
        }
    }
}

/// A segment's size for a bound of `max_bytes`.
fn segment_bytes(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(SEGMENT_MIN, SEGMENT_MAX)
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
