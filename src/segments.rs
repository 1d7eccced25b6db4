//! A run of segment files, appended to at the end and dropped whole from the front, on disk
//! (`<dir>/<key>.log`, the key zero-padded to twenty digits) or in memory: what the delivery
//! history and the retained events share. Each store keeps its own record format; here a
//! segment is bytes under a number (its key), when it was last appended to, and its size.
//!
//! Files are written without `fsync`: a crash of the process loses nothing written, a power
//! cut may lose the last moments, and [`Segments::repair_tail`] cuts off a torn tail.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Smallest and largest free space a store leaves on its file system; between them an eighth
/// of it, twice the reserve the embedded spool keeps there.
const FLOOR_MIN: u64 = 512 << 10;
const FLOOR_MAX: u64 = 128 << 20;

/// What a store says in its warnings.
#[derive(Debug)]
pub(crate) struct Messages {
    /// The last segment ended in a torn record, cut off.
    pub(crate) torn: &'static str,
    /// A dropped segment's file could not be removed.
    pub(crate) remove: &'static str,
    /// A segment's file could not be read.
    pub(crate) read: &'static str,
}

/// Why the segments in a directory could not be opened.
#[derive(Debug)]
pub(crate) struct OpenError {
    /// The file or directory.
    pub(crate) path: PathBuf,
    /// Why.
    pub(crate) source: io::Error,
}

/// The segments and what they hold.
#[derive(Debug)]
pub(crate) struct Segments {
    /// `None` keeps the segments in memory.
    dir: Option<PathBuf>,
    segments: VecDeque<Segment>,
    total: u64,
    segment_bytes: u64,
    messages: &'static Messages,
}

/// One segment.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Its number, and its file's name.
    pub(crate) key: u64,
    /// Bytes it holds.
    pub(crate) bytes: u64,
    /// When it was last appended to.
    pub(crate) newest: SystemTime,
    /// The records, for a store in memory.
    pub(crate) memory: Vec<u8>,
}

impl Segments {
    /// Segments in memory, each of about `segment_bytes`.
    pub(crate) fn memory(segment_bytes: u64, messages: &'static Messages) -> Self {
        Self {
            dir: None,
            segments: VecDeque::new(),
            total: 0,
            segment_bytes,
            messages,
        }
    }

    /// Opens (or creates) the segments in `dir`, oldest first; the tail is not yet repaired.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        messages: &'static Messages,
    ) -> Result<Self, OpenError> {
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError { path, source }
        };
        fs::create_dir_all(dir).map_err(fail(dir))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(fail(dir))? {
            let entry = entry.map_err(fail(dir))?;
            let name = entry.file_name();
            let key = name.to_str().and_then(|n| n.strip_suffix(".log"));
            if let Some(key) = key.and_then(|n| n.parse::<u64>().ok()) {
                found.push((key, entry.metadata().map_err(fail(&entry.path()))?));
            }
        }
        found.sort_by_key(|(key, _)| *key);
        let mut segments = Self {
            dir: Some(dir.to_owned()),
            ..Self::memory(segment_bytes, messages)
        };
        for (key, meta) in found {
            segments.total += meta.len();
            segments.segments.push_back(Segment {
                key,
                bytes: meta.len(),
                newest: meta.modified().unwrap_or_else(|_| SystemTime::now()),
                memory: Vec::new(),
            });
        }
        Ok(segments)
    }

    /// Reads the last segment's file, records by record (`whole` gives the length of the
    /// whole record at the start of what it is handed, `None` past the last), and cuts off
    /// what follows the last whole record. Nothing to do in memory or without segments.
    pub(crate) fn repair_tail(
        &mut self,
        mut whole: impl FnMut(&[u8]) -> Option<usize>,
    ) -> io::Result<()> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        if self.dir.is_none() {
            return Ok(());
        }
        let path = self.path(last.key);
        let bytes = fs::read(&path)?;
        let mut at = 0;
        while let Some(len) = whole(&bytes[at..]) {
            at += len;
        }
        if at < bytes.len() {
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(at as u64)?;
            let cut = (bytes.len() - at) as u64;
            tracing::warn!(path = %path.display(), bytes = cut, "{}", self.messages.torn);
            self.total -= cut;
            if let Some(last) = self.segments.back_mut() {
                last.bytes = at as u64;
            }
        }
        Ok(())
    }

    /// The file of the segment `key`.
    pub(crate) fn path(&self, key: u64) -> PathBuf {
        let dir = self.dir.as_deref().unwrap_or(Path::new("."));
        dir.join(format!("{key:020}.log"))
    }

    /// Whether the segments are kept in memory.
    pub(crate) fn in_memory(&self) -> bool {
        self.dir.is_none()
    }

    /// Bytes the segments hold.
    pub(crate) fn bytes(&self) -> u64 {
        self.total
    }

    /// How many segments there are.
    pub(crate) fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether there are no segments.
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// The oldest segment.
    pub(crate) fn first(&self) -> Option<&Segment> {
        self.segments.front()
    }

    /// The newest segment.
    pub(crate) fn last(&self) -> Option<&Segment> {
        self.segments.back()
    }

    /// Whether the last segment, with `pending` more bytes, is full (or there is none).
    pub(crate) fn full(&self, pending: u64) -> bool {
        self.segments
            .back()
            .is_none_or(|s| s.bytes + pending >= self.segment_bytes)
    }

    /// Starts an empty segment `key` at the end.
    pub(crate) fn start(&mut self, key: u64, now: SystemTime) {
        self.segments.push_back(Segment {
            key,
            bytes: 0,
            newest: now,
            memory: Vec::new(),
        });
    }

    /// Appends `bytes` (whole records) to the last segment; nothing without one.
    pub(crate) fn write(&mut self, bytes: &[u8], now: SystemTime) -> io::Result<()> {
        let Some(last) = self.segments.back() else {
            return Ok(());
        };
        if bytes.is_empty() {
            return Ok(());
        }
        if self.dir.is_some() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(last.key))?;
            file.write_all(bytes)?;
        }
        let in_memory = self.dir.is_none();
        if let Some(last) = self.segments.back_mut() {
            last.bytes += bytes.len() as u64;
            last.newest = now;
            if in_memory {
                last.memory.extend_from_slice(bytes);
            }
        }
        self.total += bytes.len() as u64;
        Ok(())
    }

    /// Whether the file system keeps its floor of free space ([`FLOOR_MIN`]..[`FLOOR_MAX`]
    /// plus `extra_floor`) and `wanted` more bytes, after dropping the oldest segments if
    /// need be. Always true in memory, or when the file system cannot be asked.
    pub(crate) fn make_room(&mut self, wanted: u64, extra_floor: u64) -> bool {
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
        let floor = (total / 8).clamp(FLOOR_MIN, FLOOR_MAX) + extra_floor;
        while free < floor.saturating_add(wanted) {
            if self.segments.is_empty() {
                return false;
            }
            free += self.drop_first();
        }
        true
    }

    /// Drops the oldest segment (and its file); returns the bytes freed.
    pub(crate) fn drop_first(&mut self) -> u64 {
        let Some(first) = self.segments.pop_front() else {
            return 0;
        };
        self.total -= first.bytes;
        if self.dir.is_some() {
            let path = self.path(first.key);
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "{}", self.messages.remove);
            }
        }
        first.bytes
    }

    /// Calls `each` with every segment last appended to at or after `cutoff` and its bytes,
    /// oldest first; a file that cannot be read is passed over with a warning.
    pub(crate) fn each_since(&self, cutoff: SystemTime, mut each: impl FnMut(&Segment, &[u8])) {
        for segment in &self.segments {
            if segment.newest < cutoff {
                continue;
            }
            match &self.dir {
                None => each(segment, &segment.memory),
                Some(_) => match fs::read(self.path(segment.key)) {
                    Ok(bytes) => each(segment, &bytes),
                    Err(error) => {
                        tracing::warn!(%error, "{}", self.messages.read);
                    }
                },
            }
        }
    }
}
