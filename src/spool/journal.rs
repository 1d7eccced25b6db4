//! The embedded spool's journal: append-only segment files holding the deliveries of plain
//! puts from the moment they are accepted until they are acked.
//!
//! Most deliveries are acked soon after they are stored. Writing them into SQLite costs a
//! B-tree insert, WAL page images that are rewritten while a page fills, a checkpoint copy
//! and a delete; the journal writes each event once, as one framed record appended to the
//! current segment, and an ack appends eight bytes. A group's records go out in one write and
//! one `fdatasync` before any of its puts is answered. A delivery that needs more than a
//! queue — a retry, a dead letter, an ordering key, duplicate suppression — lives in SQLite:
//! a journaled delivery that is nacked or dead-lettered is first copied into SQLite with its
//! id (the copy is recorded in `journal_moved` in the same transaction), and its journal
//! entry is then retired.
//!
//! In memory each journaled delivery costs one 32-byte index entry in its sink's lane (see
//! `cache`). A segment file is deleted once none of its deliveries is stored any more and its
//! gone records retire nothing still on disk; a sparse old segment has its last deliveries
//! moved into SQLite ([`Journal::sparse`]) so that it can go.
//!
//! Framing: `len: u32 | crc32(body): u32 | body`, little-endian. Bodies:
//! - put: `1 | n: u16 | n × (id: u64, lane: u8, accepted_at: i64, not_before: i64,
//!   route: u16-prefixed, sink: u16-prefixed) | record: u32-prefixed | data flag: u8 |
//!   data: u32-prefixed when the flag is 1`;
//! - gone: `2 | n: u32 | n × id: u64`.
//!
//! Recovery reads the segments in order. A record that does not frame or check is a write
//! torn by a crash (never acknowledged) only when no valid record follows it, in its segment
//! or a later one: that tail is cut off. Anywhere else it is damage, and opening fails with
//! the file and offset ([`OpenError::JournalDamaged`]); `spool verify` and `spool repair`
//! ([`inspect`], [`rewrite`]) read past it. Writing continues in a new segment at start; a
//! failed write cuts the active segment back to its last commit and keeps it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::db::{Key, OpenError};
use super::lanes;
use super::record::{decode_event, from_millis, to_millis, EncodedEvent};
use super::{Delivery, DeliveryId, NewDelivery, Priority};

/// A segment is closed and a new one started once it holds this many bytes.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// Segments kept on disk before a sparse one is emptied (see [`Journal::sparse`]).
const KEPT_SEGMENTS: usize = 4;
/// Bytes of a record's frame before its body.
const FRAME: usize = 8;
/// Largest body a record may have: larger lengths are read as a torn write.
const MAX_BODY: usize = 1 << 30;

const PUT: u8 = 1;
const GONE: u8 = 2;

/// Where a journaled delivery's record lies, and its event's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    /// Segment sequence number.
    pub(super) segment: u32,
    /// Offset of the record's frame in the segment.
    pub(super) offset: u32,
    /// Length of the record, frame included.
    pub(super) len: u32,
    /// Bytes of the event (record and payload), as `spool.max_bytes` counts them; counted
    /// once for all the deliveries of a record.
    pub(super) bytes: u32,
}

/// Why a journal record could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    /// The segment file could not be read.
    #[error("cannot read journal segment {path}")]
    Io {
        /// The segment file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a record of this delivery.
    #[error(
        "journal segment {path} holds no readable record for delivery {id} at offset {offset}"
    )]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// The delivery asked for.
        id: DeliveryId,
        /// Where its record was expected.
        offset: u32,
    },
    /// The record frames and checks, but its event does not decode.
    #[error("journal record of delivery {id} holds an unreadable event")]
    Event {
        /// The delivery asked for.
        id: DeliveryId,
        /// What the decoder reported.
        #[source]
        source: serde_json::Error,
    },
}

fn segment_name(seq: u32) -> String {
    format!("{seq:010}.log")
}

fn segment_seq(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".log")?.parse().ok()
}

/// Read access to the segment files, shared by the lease path; handles are opened once.
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    open: Mutex<HashMap<u32, Arc<File>>>,
}

impl Segments {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, seq: u32) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    fn file(&self, seq: u32) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = open.get(&seq) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(self.path(seq))?);
        open.insert(seq, file.clone());
        Ok(file)
    }

    /// Drops the handle of a deleted segment.
    pub(super) fn forget(&self, seq: u32) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&seq);
    }

    /// Reads the delivery `id` of `sink` from its record.
    pub(super) fn read(
        &self,
        loc: Loc,
        id: DeliveryId,
        sink: &Arc<str>,
    ) -> Result<Delivery, ReadError> {
        let io_error = |source| ReadError::Io {
            path: self.path(loc.segment),
            source,
        };
        let file = self.file(loc.segment).map_err(io_error)?;
        let mut buf = vec![0; loc.len as usize];
        file.read_exact_at(&mut buf, u64::from(loc.offset))
            .map_err(io_error)?;
        let damaged = || ReadError::Damaged {
            path: self.path(loc.segment),
            id,
            offset: loc.offset,
        };
        let body = unframe(&buf).ok_or_else(damaged)?;
        let put = Put::parse(body).ok_or_else(damaged)?;
        let (_, meta) = put
            .deliveries
            .iter()
            .find(|(_, m)| m.id == id)
            .ok_or_else(damaged)?;
        let event = decode_event(put.record, put.data.map(<[u8]>::to_vec))
            .map_err(|source| ReadError::Event { id, source })?;
        Ok(Delivery {
            id,
            event: Arc::new(event),
            route: Arc::from(meta.route),
            sink: sink.clone(),
            attempts: 0,
            accepted_at: from_millis(meta.accepted_at),
            not_before: from_millis(meta.not_before),
            last_outcome: None,
            last_status: None,
            last_attempt_at: None,
            priority: lanes::priority(usize::from(meta.lane)),
            ordering_key: None,
        })
    }
}

/// What the bytes at the start of a buffer hold, read as one journal record.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// A whole record that checks: its body, and its length with the frame.
    Record {
        /// The record's body.
        body: &'a [u8],
        /// Bytes of the frame and the body.
        len: usize,
    },
    /// The buffer ends before the record it starts does.
    Short {
        /// Bytes the record needs, frame included, once its frame is whole.
        needed: Option<usize>,
    },
    /// Not a record: a length out of range, or a body that fails its check.
    Bad,
}

/// Decodes the record framed at the start of `buf`: `len: u32 | crc32(body): u32 | body`.
/// Every reader of the journal (recovery, the lease path, `spool verify` and `repair`) goes
/// through this one function.
pub(super) fn decode_frame(buf: &[u8]) -> Frame<'_> {
    let header = |range: std::ops::Range<usize>| {
        buf.get(range)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let (Some(len), Some(crc)) = (header(0..4), header(4..8)) else {
        return Frame::Short { needed: None };
    };
    let len = len as usize;
    if len == 0 || len > MAX_BODY {
        return Frame::Bad;
    }
    let Some(body) = buf.get(FRAME..FRAME + len) else {
        return Frame::Short {
            needed: Some(FRAME + len),
        };
    };
    if crc32fast::hash(body) != crc {
        return Frame::Bad;
    }
    Frame::Record {
        body,
        len: FRAME + len,
    }
}

/// The body of a record inside its frame, when the frame is whole and checks.
fn unframe(buf: &[u8]) -> Option<&[u8]> {
    match decode_frame(buf) {
        Frame::Record { body, .. } => Some(body),
        _ => None,
    }
}

/// Whether a body that checks is a record this journal writes (a put or a gone record that
/// parses), which tells a real record from bytes that happen to check.
fn is_record(body: &[u8]) -> bool {
    match body.first() {
        Some(&PUT) => Put::parse(body).is_some(),
        Some(&GONE) => gone_ids(body).is_some(),
        _ => false,
    }
}

/// The ids a gone record retires.
fn gone_ids(body: &[u8]) -> Option<Vec<DeliveryId>> {
    let mut r = Reader(body.get(1..)?);
    let n = r.u32()? as usize;
    let ids = (0..n).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
    r.0.is_empty().then_some(ids)
}

/// The offset, at or after `from`, of the first valid record in `buf`: where reading can
/// resume after a record that does not frame or check. The length the damaged record's frame
/// claims is tried first, then every offset.
fn next_record(buf: &[u8], from: usize) -> Option<usize> {
    let valid = |at: usize| match decode_frame(buf.get(at..).unwrap_or_default()) {
        Frame::Record { body, .. } => is_record(body),
        _ => false,
    };
    let claimed = from
        .checked_sub(1)
        .and_then(|bad| buf.get(bad..bad + 4))
        .and_then(|b| b.try_into().ok())
        .map(|b| u32::from_le_bytes(b) as usize + FRAME + from - 1);
    if let Some(at) = claimed.filter(|at| *at > from && *at < buf.len()) {
        if valid(at) {
            return Some(at);
        }
    }
    (from..buf.len()).find(|at| valid(*at))
}

/// One delivery as a put record lists it.
#[derive(Debug)]
struct Meta<'a> {
    id: DeliveryId,
    lane: u8,
    accepted_at: i64,
    not_before: i64,
    route: &'a str,
    sink: &'a str,
}

/// A parsed put record, borrowing from its bytes.
#[derive(Debug)]
struct Put<'a> {
    /// Each delivery with the key it is leased by.
    deliveries: Vec<(Key, Meta<'a>)>,
    record: &'a [u8],
    data: Option<&'a [u8]>,
}

/// A cursor over a record body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str16(&mut self) -> Option<&'a str> {
        let n = usize::from(self.u16()?);
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl<'a> Put<'a> {
    fn parse(body: &'a [u8]) -> Option<Self> {
        let mut r = Reader(body);
        if r.u8()? != PUT {
            return None;
        }
        let n = usize::from(r.u16()?);
        let mut deliveries = Vec::with_capacity(n);
        for _ in 0..n {
            let meta = Meta {
                id: r.u64()?,
                lane: r.u8()?,
                accepted_at: r.i64()?,
                not_before: r.i64()?,
                route: r.str16()?,
                sink: r.str16()?,
            };
            deliveries.push(((meta.not_before, meta.id), meta));
        }
        let record = r.bytes32()?;
        let data = match r.u8()? {
            0 => None,
            _ => Some(r.bytes32()?),
        };
        Some(Self {
            deliveries,
            record,
            data,
        })
    }
}

fn put_str16(buf: &mut Vec<u8>, s: &str) -> Option<()> {
    buf.extend_from_slice(&u16::try_from(s.len()).ok()?.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Some(())
}

fn put_bytes32(buf: &mut Vec<u8>, b: &[u8]) -> Option<()> {
    buf.extend_from_slice(&u32::try_from(b.len()).ok()?.to_le_bytes());
    buf.extend_from_slice(b);
    Some(())
}

/// Whether an event fits a put record, with `deliveries` deliveries.
pub(super) fn fits_event(event: &EncodedEvent, deliveries: usize) -> bool {
    deliveries <= usize::from(u16::MAX)
        && event.record.len() < MAX_BODY / 4
        && event.data.as_ref().is_none_or(|d| d.len() < MAX_BODY / 2)
}

/// Whether a delivery can be journaled: a plain one (no ordering key), with names the record
/// format holds.
pub(super) fn fits_delivery(delivery: &NewDelivery) -> bool {
    delivery.ordering_key.is_none()
        && delivery.route.len() <= usize::from(u16::MAX)
        && delivery.sink.len() <= usize::from(u16::MAX)
}

/// A journaled delivery found by recovery.
#[derive(Debug)]
pub(super) struct Recovered<'a> {
    /// Its sink.
    pub(super) sink: &'a str,
    /// Its lane.
    pub(super) priority: Priority,
    /// Its lease position.
    pub(super) key: Key,
    /// Where its record lies.
    pub(super) loc: Loc,
}

/// What recovery found besides the deliveries: the largest id, the event bytes stored, and
/// the records with more than one stored delivery (by segment and offset: how many).
#[derive(Debug, Default)]
pub(super) struct Recovery {
    /// The largest delivery id any segment holds.
    pub(super) max_id: DeliveryId,
    /// Event bytes of the records with a stored delivery.
    pub(super) bytes: u64,
    /// Records with more than one stored delivery: how many.
    pub(super) fanout: crate::maps::HashMap<(u32, u32), u32>,
}

/// Reads a segment's records in order, calling `each(offset, body)` for every one that frames
/// and checks, up to the first that does not; returns the file's length and where the
/// records end.
fn scan(path: &Path, mut each: impl FnMut(u32, &[u8])) -> io::Result<(u64, u64)> {
    const CHUNK: usize = 1 << 20;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut pos = 0usize;
    let mut offset = 0u64;
    let mut eof = false;
    loop {
        let needed = match decode_frame(buf.get(pos..).unwrap_or_default()) {
            Frame::Record { body, len: n } => {
                each(u32::try_from(offset).unwrap_or(u32::MAX), body);
                pos += n;
                offset += n as u64;
                continue;
            }
            Frame::Bad => break,
            Frame::Short { .. } if eof => break,
            // A length that runs past the end of the file is a torn write, not a reason to
            // read on.
            Frame::Short { needed: Some(n) } if offset + n as u64 > len => break,
            Frame::Short { needed } => needed.unwrap_or(FRAME),
        };
        buf.drain(..pos);
        pos = 0;
        let have = buf.len();
        buf.resize(have + CHUNK.max(needed.saturating_sub(have)), 0);
        let mut filled = have;
        while filled < buf.len() {
            let n = file.read(buf.get_mut(filled..).unwrap_or_default())?;
            if n == 0 {
                eof = true;
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
    }
    Ok((len, offset))
}

/// Whether `path` holds a valid record at or after `from`.
fn record_after(path: &Path, from: u64) -> io::Result<Option<u64>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if from >= len {
        return Ok(None);
    }
    let start = from.saturating_sub(1);
    let mut rest = vec![0; usize::try_from(len - start).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut rest, start)?;
    let skip = usize::try_from(from - start).unwrap_or(0);
    Ok(next_record(&rest, skip).map(|at| start + at as u64))
}

/// One segment as [`inspect`] read it, records and damage, without changing it.
#[derive(Debug)]
pub(super) struct SegmentScan {
    /// The segment file.
    pub(super) path: PathBuf,
    /// Its length.
    pub(super) len: u64,
    /// Records that frame, check and parse.
    pub(super) records: u64,
    /// The deliveries its put records hold.
    pub(super) puts: Vec<DeliveryId>,
    /// The deliveries its gone records retire.
    pub(super) gone: Vec<DeliveryId>,
    /// Byte ranges that do not read as records, in order.
    pub(super) damage: Vec<BadRange>,
}

/// Bytes of a segment that do not read as records: from `offset` to `end`, where the next
/// valid record starts (or the file ends).
#[derive(Debug)]
pub(super) struct BadRange {
    /// First bad byte.
    pub(super) offset: u64,
    /// Where reading resumed.
    pub(super) end: u64,
    /// What the bytes held, read without their checksum when their frame's length fits.
    pub(super) guess: Guess,
}

/// What a damaged record held, as far as can be told.
#[derive(Debug)]
pub(super) enum Guess {
    /// A put of these deliveries.
    Put(Vec<DeliveryId>),
    /// Acks of these deliveries.
    Gone(Vec<DeliveryId>),
    /// Unknown: not one record whose length fits, or a body that does not parse.
    Unknown,
}

/// Reads a damaged record without its checksum, when it is exactly one frame long.
fn guess(bytes: &[u8]) -> Guess {
    let Some(len) = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
    else {
        return Guess::Unknown;
    };
    let body = match bytes.get(FRAME..) {
        Some(body) if body.len() == len as usize => body,
        _ => return Guess::Unknown,
    };
    match body.first() {
        Some(&PUT) => Put::parse(body).map_or(Guess::Unknown, |p| {
            Guess::Put(p.deliveries.iter().map(|(_, m)| m.id).collect())
        }),
        Some(&GONE) => gone_ids(body).map_or(Guess::Unknown, Guess::Gone),
        _ => Guess::Unknown,
    }
}

/// The segment files in `dir`, oldest first.
pub(super) fn segment_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(seq) = segment_seq(&path) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs
        .into_iter()
        .map(|s| dir.join(segment_name(s)))
        .collect())
}

/// Reads one segment through, resuming after every stretch of bytes that is not a record.
pub(super) fn inspect(path: &Path) -> io::Result<SegmentScan> {
    let buf = fs::read(path)?;
    let mut scan = SegmentScan {
        path: path.to_owned(),
        len: buf.len() as u64,
        records: 0,
        puts: Vec::new(),
        gone: Vec::new(),
        damage: Vec::new(),
    };
    let mut at = 0usize;
    while at < buf.len() {
        let rest = buf.get(at..).unwrap_or_default();
        if let Frame::Record { body, len } = decode_frame(rest) {
            if is_record(body) {
                scan.records += 1;
                if let Some(put) = Put::parse(body).filter(|_| body.first() == Some(&PUT)) {
                    scan.puts.extend(put.deliveries.iter().map(|(_, m)| m.id));
                } else if let Some(ids) = gone_ids(body) {
                    scan.gone.extend(ids);
                }
                at += len;
                continue;
            }
        }
        let end = next_record(&buf, at + 1).unwrap_or(buf.len());
        scan.damage.push(BadRange {
            offset: at as u64,
            end: end as u64,
            guess: guess(buf.get(at..end).unwrap_or_default()),
        });
        at = end;
    }
    Ok(scan)
}

/// Rewrites a segment with only the bytes outside `scan.damage` (every valid record, in
/// order): a new file synced and renamed over the old one, the directory synced.
pub(super) fn rewrite(scan: &SegmentScan) -> io::Result<()> {
    let buf = fs::read(&scan.path)?;
    let mut kept = Vec::with_capacity(buf.len());
    let mut at = 0usize;
    for bad in &scan.damage {
        let offset = usize::try_from(bad.offset).unwrap_or(usize::MAX);
        kept.extend_from_slice(buf.get(at..offset).unwrap_or_default());
        at = usize::try_from(bad.end).unwrap_or(usize::MAX);
    }
    kept.extend_from_slice(buf.get(at..).unwrap_or_default());
    let temp = scan.path.with_extension("log.repair");
    {
        let mut file = File::create(&temp)?;
        io::Write::write_all(&mut file, &kept)?;
        file.sync_all()?;
    }
    fs::rename(&temp, &scan.path)?;
    match scan.path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// The writer's side of the journal: the segment being appended to and the live count of
/// every segment.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    active: File,
    active_seq: u32,
    /// Bytes in the active segment, written or buffered.
    active_len: u64,
    /// Bytes of the active segment written to its file.
    written: u64,
    /// Bytes of the active segment as of the last commit: whole records, synced.
    committed: u64,
    /// A failed write dropped records appended since the last commit: that commit fails.
    lost: bool,
    /// The active segment may hold bytes past `committed` that could not be cut off yet:
    /// nothing is written after them until they are.
    uncut: bool,
    /// Space is short: a segment whose deliveries are all gone is closed at once, even the
    /// active one, so that its file can go (set with [`Journal::short_of_space`]).
    pub(super) eager: bool,
    /// Bytes appended since the last commit, not yet written.
    buf: Vec<u8>,
    /// Segments whose buffered bytes are written but not yet synced (besides the active).
    unsynced: Vec<(u32, File)>,
    /// Every segment on disk, the active one included.
    segs: BTreeMap<u32, Seg>,
    /// Size at which a segment is closed ([`SEGMENT_BYTES`] but in tests).
    segment_bytes: u64,
    /// Held (locked) while the journal is open.
    _lock: File,
}

/// What the writer knows of one segment file.
#[derive(Debug, Default)]
struct Seg {
    /// Deliveries put in it that are still stored.
    live: u64,
    /// Deliveries put in it.
    puts: u64,
    /// Older segments holding puts that its gone records retire: while one of them is on
    /// disk this file must stay, or recovery would bring those deliveries back.
    refs: BTreeSet<u32>,
    /// The smallest delivery id put in it.
    first_id: Option<DeliveryId>,
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Cuts the journal's torn tail — the bytes from `offset` in `path`, and every later segment
/// (none holds a valid record) — so that records written from now on never follow bytes
/// that do not read as one.
fn cut_torn_tail(path: &Path, offset: u64, seqs: &[u32], dir: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    tracing::warn!(
        segment = %path.display(),
        offset,
        ignored = len.saturating_sub(offset),
        "Journal ends in bytes that are not a whole record (a write cut short, never acknowledged); cut off"
    );
    file.set_len(offset)?;
    file.sync_all()?;
    let first = segment_seq(path).unwrap_or(u32::MAX);
    for seq in seqs.iter().filter(|s| **s > first) {
        let later = OpenOptions::new()
            .write(true)
            .open(dir.join(segment_name(*seq)))?;
        later.set_len(0)?;
        later.sync_all()?;
    }
    Ok(())
}

impl Journal {
    /// Opens `dir` (creating it), hands every delivery its segments still hold, except the
    /// ids in `moved` (now stored in SQLite), to `each`, and starts a new segment.
    pub(super) fn open(
        dir: &Path,
        moved: &HashSet<DeliveryId>,
        segment_bytes: u64,
        mut each: impl FnMut(Recovered<'_>),
    ) -> Result<(Self, Recovery), OpenError> {
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(failed(dir))?;
        // One process at a time: two writers would append to and delete each other's files.
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(failed(&lock_path))?;
        lock.try_lock()
            .map_err(|e| match e {
                fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another process has this spool open",
                ),
                fs::TryLockError::Error(e) => e,
            })
            .map_err(failed(&lock_path))?;
        let seqs: Vec<u32> = segment_files(dir)
            .map_err(failed(dir))?
            .iter()
            .filter_map(|p| segment_seq(p))
            .collect();
        // Two passes, streaming: first the retired ids and each segment's id range, then the
        // deliveries still stored, handed to `each` without being collected.
        let mut gone: HashSet<DeliveryId> = HashSet::new();
        let mut segs: BTreeMap<u32, Seg> = BTreeMap::new();
        let mut ranges: BTreeMap<u32, (DeliveryId, DeliveryId)> = BTreeMap::new();
        let mut retired: BTreeMap<u32, (DeliveryId, DeliveryId)> = BTreeMap::new();
        let mut max_id = 0;
        // The first bytes found that are not a record: (segment, offset).
        let mut torn: Option<(PathBuf, u64)> = None;
        let damaged =
            |path: &Path, offset: u64, resumes: (PathBuf, u64)| OpenError::JournalDamaged {
                path: path.to_owned(),
                offset,
                resumes_in: resumes.0,
                resumes_at: resumes.1,
            };
        for &seq in &seqs {
            let path = dir.join(segment_name(seq));
            segs.insert(seq, Seg::default());
            let widen = |r: &mut (DeliveryId, DeliveryId), id: DeliveryId| {
                *r = (r.0.min(id), r.1.max(id));
            };
            let (len, end) = scan(&path, |_, body| match body.first() {
                Some(&PUT) => {
                    for (_, meta) in Put::parse(body).map(|p| p.deliveries).unwrap_or_default() {
                        max_id = max_id.max(meta.id);
                        widen(ranges.entry(seq).or_insert((meta.id, meta.id)), meta.id);
                        if let Some(seg) = segs.get_mut(&seq) {
                            seg.puts += 1;
                        }
                    }
                }
                Some(&GONE) => {
                    let mut r = Reader(body.get(1..).unwrap_or_default());
                    for _ in 0..r.u32().unwrap_or(0) {
                        let Some(id) = r.u64() else { break };
                        // An id a gone record names is never handed out again, even when
                        // its put was set aside by a repair.
                        max_id = max_id.max(id);
                        gone.insert(id);
                        widen(retired.entry(seq).or_insert((id, id)), id);
                    }
                }
                _ => {}
            })
            .map_err(failed(&path))?;
            // Bytes that do not read as a record are a write cut short only when nothing
            // valid follows them, in this segment or a later one.
            if let Some((bad, offset)) = &torn {
                let later = if end > 0 {
                    Some(0)
                } else {
                    record_after(&path, 0).map_err(failed(&path))?
                };
                if let Some(at) = later {
                    return Err(damaged(bad, *offset, (path, at)));
                }
            }
            if end < len {
                if let Some(at) = record_after(&path, end + 1).map_err(failed(&path))? {
                    return Err(damaged(&path, end, (path.clone(), at)));
                }
                torn.get_or_insert((path, end));
            }
        }
        if let Some((path, offset)) = torn {
            cut_torn_tail(&path, offset, &seqs, dir).map_err(failed(&path))?;
        }
        // A segment's acks may retire deliveries of every older segment whose ids they span.
        for (seq, (low, high)) in &retired {
            let older = ranges.range(..*seq);
            let hit: Vec<u32> = older
                .filter(|(_, (first, last))| first <= high && last >= low)
                .map(|(s, _)| *s)
                .collect();
            if let Some(seg) = segs.get_mut(seq) {
                seg.refs.extend(hit);
            }
        }
        let mut recovery = Recovery {
            max_id,
            ..Recovery::default()
        };
        for &seq in &seqs {
            let path = dir.join(segment_name(seq));
            let Some(seg) = segs.get_mut(&seq) else {
                continue;
            };
            seg.first_id = ranges.get(&seq).map(|(first, _)| *first);
            scan(&path, |offset, body| {
                if body.first() != Some(&PUT) {
                    return;
                }
                let Some(put) = Put::parse(body) else { return };
                let loc = Loc {
                    segment: seq,
                    offset,
                    len: u32::try_from(FRAME + body.len()).unwrap_or(u32::MAX),
                    bytes: event_bytes(put.record.len() + put.data.map_or(0, <[u8]>::len)),
                };
                let mut live = 0;
                for (key, meta) in &put.deliveries {
                    if gone.contains(&meta.id) || moved.contains(&meta.id) {
                        continue;
                    }
                    live += 1;
                    let priority = lanes::priority(usize::from(meta.lane));
                    each(Recovered {
                        sink: meta.sink,
                        priority,
                        key: *key,
                        loc,
                    });
                }
                if live > 0 {
                    seg.live += u64::from(live);
                    recovery.bytes += u64::from(loc.bytes);
                    if live > 1 {
                        recovery.fanout.insert((seq, offset), live);
                    }
                }
            })
            .map_err(failed(&path))?;
        }
        drop(gone);
        let active_seq = seqs.last().map_or(1, |s| s.saturating_add(1));
        let path = dir.join(segment_name(active_seq));
        let active = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(failed(&path))?;
        sync_dir(dir).map_err(failed(dir))?;
        segs.insert(active_seq, Seg::default());
        let mut journal = Self {
            dir: dir.to_owned(),
            active,
            active_seq,
            active_len: 0,
            written: 0,
            committed: 0,
            lost: false,
            uncut: false,
            eager: false,
            buf: Vec::new(),
            unsynced: Vec::new(),
            segs,
            segment_bytes,
            _lock: lock,
        };
        journal.sweep();
        Ok((journal, recovery))
    }

    /// Appends a put record for one event and its deliveries (already given ids); returns
    /// each delivery as stored and where its record lies.
    pub(super) fn put(
        &mut self,
        event: &EncodedEvent,
        deliveries: &[(DeliveryId, &NewDelivery)],
    ) -> io::Result<Vec<(Delivery, Loc)>> {
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        let start = self.buf.len();
        let len = match self.encode_put(event, deliveries) {
            Some(()) => self.seal(start),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record too large",
            )),
        };
        let len = match len {
            Ok(len) => len,
            Err(e) => {
                self.buf.truncate(start);
                return Err(e);
            }
        };
        let event_len = event.record.len() + event.data.as_ref().map_or(0, Bytes::len);
        let loc = Loc {
            segment: self.active_seq,
            offset: u32::try_from(self.active_len).unwrap_or(u32::MAX),
            len,
            bytes: event_bytes(event_len),
        };
        self.active_len += u64::from(len);
        let seg = self.segs.entry(self.active_seq).or_default();
        seg.live += deliveries.len() as u64;
        seg.puts += deliveries.len() as u64;
        if let Some((first, _)) = deliveries.first() {
            seg.first_id.get_or_insert(*first);
        }
        let stored = deliveries.iter().map(|(id, new)| {
            // Journaled deliveries carry no ordering key (see `journalable`).
            (Delivery::stored(*id, new), loc)
        });
        Ok(stored.collect())
    }

    /// Appends a put record's frame placeholder and body to the buffer.
    fn encode_put(
        &mut self,
        event: &EncodedEvent,
        deliveries: &[(DeliveryId, &NewDelivery)],
    ) -> Option<()> {
        let buf = &mut self.buf;
        buf.extend_from_slice(&[0; FRAME]);
        buf.push(PUT);
        buf.extend_from_slice(&u16::try_from(deliveries.len()).ok()?.to_le_bytes());
        for (id, new) in deliveries {
            buf.extend_from_slice(&id.to_le_bytes());
            buf.push(u8::try_from(lanes::lane(new.priority)).ok()?);
            buf.extend_from_slice(&to_millis(new.accepted_at).to_le_bytes());
            buf.extend_from_slice(&to_millis(new.not_before).to_le_bytes());
            put_str16(buf, &new.route)?;
            put_str16(buf, &new.sink)?;
        }
        put_bytes32(buf, &event.record)?;
        match &event.data {
            None => buf.push(0),
            Some(data) => {
                buf.push(1);
                put_bytes32(buf, data)?;
            }
        }
        Some(())
    }

    /// Appends a record retiring these deliveries (each with the segment of its put).
    pub(super) fn gone(&mut self, ids: &[(DeliveryId, u32)]) -> io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FRAME]);
        self.buf.push(GONE);
        let n = u32::try_from(ids.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many ids"))?;
        self.buf.extend_from_slice(&n.to_le_bytes());
        let seg = self.segs.entry(self.active_seq).or_default();
        for (id, segment) in ids {
            self.buf.extend_from_slice(&id.to_le_bytes());
            if *segment != self.active_seq {
                seg.refs.insert(*segment);
            }
        }
        let len = self.seal(start)?;
        self.active_len += u64::from(len);
        Ok(())
    }

    /// Fills in the frame of the record that starts at `start` in the buffer; returns the
    /// record's length.
    fn seal(&mut self, start: usize) -> io::Result<u32> {
        let body = self.buf.get(start + FRAME..).unwrap_or_default();
        let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "record too large");
        let body_len = u32::try_from(body.len()).map_err(|_| too_large())?;
        if body.len() > MAX_BODY {
            return Err(too_large());
        }
        let crc = crc32fast::hash(body);
        let total = FRAME + body.len();
        if let Some(frame) = self.buf.get_mut(start..start + FRAME) {
            frame[..4].copy_from_slice(&body_len.to_le_bytes());
            frame[4..].copy_from_slice(&crc.to_le_bytes());
        }
        u32::try_from(total).map_err(|_| too_large())
    }

    /// Writes what is buffered to the active segment, keeping it for the next sync. When the
    /// write fails, what is buffered is dropped and the next commit fails.
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self
            .cut()
            .and_then(|()| self.active.write_all_at(&self.buf, self.written));
        match result {
            Ok(()) => {
                self.written += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(error) => {
                self.buf.clear();
                self.lost = true;
                self.back_to_committed();
                Err(error)
            }
        }
    }

    /// Cuts off bytes a failed write may have left past the last commit.
    fn cut(&mut self) -> io::Result<()> {
        if self.uncut {
            self.active.set_len(self.committed)?;
            self.uncut = false;
        }
        Ok(())
    }

    /// Forgets what was appended since the last commit, cutting the active segment back to
    /// it (or marking it to be cut before the next write). The segment stays the active
    /// one: a failed write never opens a new file.
    fn back_to_committed(&mut self) {
        self.written = self.committed;
        self.active_len = self.committed;
        self.uncut = true;
        if let Err(error) = self.cut() {
            tracing::warn!(%error, "Cannot cut a failed write off the journal yet; retried before the next write");
        }
    }

    /// Writes everything appended since the last commit and makes it durable. When that
    /// fails, the active segment is cut back to the last commit and stays the active one.
    pub(super) fn commit(&mut self) -> io::Result<()> {
        let result = self.flush().and_then(|()| {
            if std::mem::take(&mut self.lost) {
                return Err(io::Error::other("a failed write dropped journal records"));
            }
            for (_, file) in self.unsynced.drain(..) {
                file.sync_data()?;
            }
            self.active.sync_data()
        });
        match result {
            Ok(()) => {
                self.committed = self.written;
                Ok(())
            }
            Err(error) => {
                self.lost = false;
                self.buf.clear();
                // A segment closed by this group keeps what it wrote: its records are retired
                // by the caller's next commit (see `Writer::undone`).
                self.unsynced.clear();
                self.back_to_committed();
                Err(error)
            }
        }
    }

    /// Writes out the active segment and starts the next one.
    fn roll(&mut self) -> io::Result<()> {
        self.flush()?;
        let seq = self.active_seq.saturating_add(1);
        let path = self.dir.join(segment_name(seq));
        let next = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        if let Err(error) = sync_dir(&self.dir) {
            // Not the active segment yet: gone again, so that the next roll can create it.
            drop(next);
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(%error, segment = %path.display(), "Cannot remove a journal segment that was never used");
            }
            return Err(error);
        }
        let previous = std::mem::replace(&mut self.active, next);
        self.unsynced.push((self.active_seq, previous));
        self.active_seq = seq;
        self.active_len = 0;
        self.written = 0;
        self.committed = 0;
        self.uncut = false;
        self.segs.insert(seq, Seg::default());
        Ok(())
    }

    /// Whether `segment` is still on disk.
    pub(super) fn holds(&self, segment: u32) -> bool {
        self.segs.contains_key(&segment)
    }

    /// One delivery of `segment` is no longer stored (its retirement is durable, by a gone
    /// record or in SQLite). Returns the segments whose files were deleted as a result.
    pub(super) fn release(&mut self, segment: u32) -> Vec<u32> {
        let Some(seg) = self.segs.get_mut(&segment) else {
            return Vec::new();
        };
        seg.live = seg.live.saturating_sub(1);
        if seg.live > 0 {
            return Vec::new();
        }
        self.close_spent();
        self.sweep()
    }

    /// Whether space is short (see [`Journal::eager`]). While it is, an active segment whose
    /// deliveries all went while space was plentiful is closed: no later retirement would
    /// close it, and its file would keep the disk full. Returns the segments whose files were
    /// deleted as a result.
    pub(super) fn short_of_space(&mut self, short: bool) -> Vec<u32> {
        self.eager = short;
        if self.close_spent() {
            self.sweep()
        } else {
            Vec::new()
        }
    }

    /// Short of space, between commits: closes the active segment when it held puts and
    /// none of their deliveries is stored, so that it can be deleted. Returns whether it did.
    fn close_spent(&mut self) -> bool {
        let spent = (self.segs.get(&self.active_seq)).is_some_and(|s| s.puts > 0 && s.live == 0);
        if !(spent && self.eager && self.buf.is_empty() && self.active_len > 0) {
            return false;
        }
        match self.roll() {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "Cannot close the spent journal segment");
                false
            }
        }
    }

    /// Deletes every segment that holds no stored delivery, is not the active one, and whose
    /// gone records retire nothing still on disk; returns them.
    fn sweep(&mut self) -> Vec<u32> {
        let mut deleted = Vec::new();
        loop {
            let spent = self.segs.iter().find(|(seq, seg)| {
                **seq != self.active_seq
                    && seg.live == 0
                    && seg.refs.iter().all(|r| !self.segs.contains_key(r))
            });
            let Some((&seq, _)) = spent else {
                break;
            };
            self.segs.remove(&seq);
            // A segment closed since the last commit needs no sync once deleted, and its
            // handle would keep its blocks allocated.
            self.unsynced.retain(|(closed, _)| *closed != seq);
            let path = self.dir.join(segment_name(seq));
            if let Err(error) = fs::remove_file(&path) {
                tracing::warn!(%error, segment = %path.display(), "Cannot delete a spent journal segment");
            }
            deleted.push(seq);
        }
        if !deleted.is_empty() {
            // The deletions are made durable, so that a crash cannot bring back a file whose
            // retirements were already relied upon.
            if let Err(error) = sync_dir(&self.dir) {
                tracing::warn!(%error, dir = %self.dir.display(), "Cannot sync the journal directory");
            }
        }
        deleted
    }

    /// A segment worth emptying by moving its few stored deliveries into the database: the
    /// oldest one at most a quarter live, once more than [`KEPT_SEGMENTS`] segments are on
    /// disk and at most a quarter of all they hold is live. A delivery that stays queued
    /// (a sink whose breaker stays open, a trickle) would otherwise keep every later segment
    /// on disk, since their acks retire deliveries around it.
    pub(super) fn sparse(&self) -> Option<u32> {
        if self.segs.len() <= KEPT_SEGMENTS {
            return None;
        }
        let closed = self.segs.iter().filter(|(seq, _)| **seq != self.active_seq);
        let (puts, live) = closed
            .clone()
            .fold((0, 0), |(p, l), (_, seg)| (p + seg.puts, l + seg.live));
        if live.saturating_mul(4) > puts {
            return None;
        }
        closed
            .filter(|(_, seg)| seg.live > 0)
            .find(|(_, seg)| seg.live.saturating_mul(4) <= seg.puts)
            .map(|(seq, _)| *seq)
    }

    /// Every delivery id below this one that was ever journaled is in no segment on disk any
    /// more; `None` while the segments hold no put.
    pub(super) fn oldest_id(&self) -> Option<DeliveryId> {
        self.segs.values().filter_map(|s| s.first_id).min()
    }
}

/// Bytes a journaled event is counted at: its record and payload (`len`) and its framing,
/// as [`super::record::EncodedEvent::bytes`] counts it.
fn event_bytes(len: usize) -> u32 {
    u32::try_from(len as u64 + super::record::FRAMING).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_ends_the_segment() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&[0; FRAME]);
        buf.extend_from_slice(&[GONE, 1, 0, 0, 0]);
        buf.extend_from_slice(&7u64.to_le_bytes());
        let body_len = (buf.len() - FRAME) as u32;
        let crc = crc32fast::hash(&buf[FRAME..]);
        buf[..4].copy_from_slice(&body_len.to_le_bytes());
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(unframe(&buf).is_some());
        assert!(unframe(&buf[..buf.len() - 1]).is_none(), "cut short");
        let mut flipped = buf.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(
            unframe(&flipped).is_none(),
            "a changed byte fails the check"
        );
        assert!(unframe(&[0; 16]).is_none(), "zeros are no record");
    }
}
