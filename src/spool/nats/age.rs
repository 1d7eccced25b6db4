//! The backlog age and stored bytes of the JetStream backend, read from the server every
//! [`AGE_REFRESH`] for the synchronous [`crate::spool::Spool::oldest`] and
//! [`crate::spool::Spool::used_bytes`].
//!
//! A sink's age is read from the first message still stored on each of its lane subjects
//! (the work queue removes what is acked), one request per lane of each sink with a backlog.
//! That message is the oldest *published*: a retry is republished behind later deliveries,
//! so a delivery that has been retrying longer than the first message has waited can hide
//! behind it. The figure is a lower bound that grows while nothing is delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::stream;

use super::conn::Names;
use super::record::Record;
use crate::spool::Priority;

/// How often ages and bytes are read from JetStream.
pub(super) const AGE_REFRESH: Duration = Duration::from_secs(5);

/// The last ages and byte count read.
#[derive(Debug, Default)]
pub(super) struct Ages {
    oldest: Mutex<HashMap<String, SystemTime>>,
    /// Bytes in the work stream plus one, 0 before the first read.
    bytes: AtomicU64,
}

impl Ages {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SystemTime>> {
        // Plain values: a panic elsewhere leaves them usable.
        self.oldest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the oldest delivery of `sink` seen at the last read was accepted.
    pub(super) fn oldest(&self, sink: &str) -> Option<SystemTime> {
        self.lock().get(sink).copied()
    }

    /// Bytes in the work stream at the last read; `None` before the first.
    pub(super) fn bytes(&self) -> Option<u64> {
        self.bytes.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Reads the oldest message of each lane of `sinks` and the work stream's size.
    pub(super) async fn refresh(&self, work: &stream::Stream, names: &Names, sinks: Vec<String>) {
        let mut oldest = HashMap::new();
        for sink in sinks {
            for priority in [Priority::High, Priority::Normal, Priority::Low] {
                let subject = names.work_subject(&sink, priority);
                let Ok(message) = work.get_first_raw_message_by_subject(subject, 1).await else {
                    continue;
                };
                let Ok(record) = Record::parse(&message.payload) else {
                    continue;
                };
                let at = record.accepted_at();
                oldest
                    .entry(sink.clone())
                    .and_modify(|t: &mut SystemTime| *t = (*t).min(at))
                    .or_insert(at);
            }
        }
        // The size first: whoever sees this read's ages sees its size too.
        if let Ok(info) = work.get_info().await {
            self.bytes
                .store(info.state.bytes.saturating_add(1), Ordering::Relaxed);
        }
        *self.lock() = oldest;
    }
}
