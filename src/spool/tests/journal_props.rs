//! The journal over generated runs of puts, acks and commits: recovery gives back exactly
//! the deliveries that were stored durably and not retired durably, each with its event.
//!
//! Segments are small, so runs roll over segments and delete spent ones as they go.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use proptest::prelude::*;

use super::super::journal::{Journal, Loc, Segments};
use super::super::record::EncodedEvent;
use super::super::{DeliveryId, NewDelivery, Priority};
use crate::event::prop_tests::config;
use crate::event::Event;

/// Small enough that a run of a few dozen puts spans several segments.
const SEGMENT_BYTES: u64 = 700;

const SINKS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    /// One event for one to three sinks (indexes into `SINKS`), in a lane.
    Put {
        sinks: Vec<usize>,
        lane: usize,
        data: Option<Vec<u8>>,
    },
    /// Retires a stored delivery: one of the two newest when `recent` (so that older ones
    /// are left behind while later segments empty), else any, by index among those stored.
    Ack { recent: bool, pick: usize },
    /// Makes everything so far durable, as the writer does before answering.
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            proptest::collection::vec(0..SINKS.len(), 1..=3),
            0..Priority::ALL.len(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        )
            .prop_map(|(sinks, lane, data)| Op::Put { sinks, lane, data }),
        3 => (any::<bool>(), any::<usize>()).prop_map(|(recent, pick)| Op::Ack { recent, pick }),
        2 => Just(Op::Commit),
    ]
}

fn event(n: usize, data: Option<Vec<u8>>) -> Event {
    Event {
        specversion: "1.0".into(),
        id: format!("e{n}"),
        source: "/props".into(),
        ty: "Prop.Put".into(),
        datacontenttype: Some("application/octet-stream".into()),
        dataschema: None,
        subject: None,
        time: None,
        extensions: Vec::new(),
        data_version: None,
        data: data.map(Bytes::from),
    }
}

/// What was put: each delivery's event, sink, lane and segment; whether its put and its
/// ack (if any) are durable.
#[derive(Debug)]
struct Put {
    event: Arc<Event>,
    sink: &'static str,
    priority: Priority,
    segment: u32,
    durable: bool,
    acked: Option<bool>,
}

/// Runs `ops` against a journal in `dir`; with `crash`, the journal is dropped without a
/// last commit. Returns what was put, by id.
fn run(dir: &std::path::Path, ops: &[Op], crash: bool) -> BTreeMap<DeliveryId, Put> {
    let (mut journal, _) =
        Journal::open(dir, &HashSet::new(), SEGMENT_BYTES, |_| {}).expect("journal opens");
    let mut puts: BTreeMap<DeliveryId, Put> = BTreeMap::new();
    let mut stored: Vec<DeliveryId> = Vec::new();
    let mut to_release: Vec<u32> = Vec::new();
    let mut next_id: DeliveryId = 1;
    let commit =
        |journal: &mut Journal, puts: &mut BTreeMap<DeliveryId, Put>, to_release: &mut Vec<u32>| {
            journal.commit().expect("commit");
            for put in puts.values_mut() {
                put.durable = true;
                if put.acked.is_some() {
                    put.acked = Some(true);
                }
            }
            for segment in to_release.drain(..) {
                journal.release(segment);
            }
        };
    for (n, op) in ops.iter().enumerate() {
        match op {
            Op::Put { sinks, lane, data } => {
                let event = Arc::new(event(n, data.clone()));
                let priority = Priority::ALL[*lane];
                let news: Vec<(DeliveryId, NewDelivery)> = sinks
                    .iter()
                    .map(|&s| {
                        let id = next_id;
                        next_id += 1;
                        let new = NewDelivery {
                            event: event.clone(),
                            route: Arc::from("props"),
                            sink: Arc::from(SINKS[s]),
                            accepted_at: SystemTime::now(),
                            not_before: SystemTime::now(),
                            priority,
                            ordering_key: None,
                        };
                        (id, new)
                    })
                    .collect();
                let pairs: Vec<(DeliveryId, &NewDelivery)> =
                    news.iter().map(|(id, new)| (*id, new)).collect();
                let encoded = EncodedEvent::encode(&event);
                let written = journal.put(&encoded, &pairs).expect("put");
                for (((id, _), (_, loc)), &s) in news.iter().zip(&written).zip(sinks) {
                    let sink = SINKS[s];
                    puts.insert(
                        *id,
                        Put {
                            event: event.clone(),
                            sink,
                            priority,
                            segment: loc.segment,
                            durable: false,
                            acked: None,
                        },
                    );
                    stored.push(*id);
                }
            }
            Op::Ack { recent, pick } => {
                if stored.is_empty() {
                    continue;
                }
                let index = if *recent {
                    stored.len() - 1 - pick % stored.len().min(2)
                } else {
                    pick % stored.len()
                };
                let id = stored.remove(index);
                let put = puts.get_mut(&id).expect("a stored delivery was put");
                journal.gone(&[(id, put.segment)]).expect("gone");
                put.acked = Some(false);
                to_release.push(put.segment);
            }
            Op::Commit => commit(&mut journal, &mut puts, &mut to_release),
        }
    }
    if !crash {
        commit(&mut journal, &mut puts, &mut to_release);
    }
    puts
}

/// Recovers the journal in `dir`: each delivery found, with its sink and record.
fn recover(dir: &std::path::Path) -> Vec<(DeliveryId, String, Loc)> {
    let mut found = Vec::new();
    let (journal, _) = Journal::open(dir, &HashSet::new(), SEGMENT_BYTES, |r| {
        found.push((r.key.1, r.sink.to_owned(), r.loc));
    })
    .expect("journal reopens");
    drop(journal);
    found
}

proptest! {
    #![proptest_config(config(48))]

    /// After a clean stop, recovery gives back exactly the deliveries put and not acked,
    /// each once, with its event, sink and lane; a second recovery gives the same.
    #[test]
    fn recovery_gives_back_what_was_put_and_not_acked(
        ops in proptest::collection::vec(op(), 1..48),
        crash in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = dir.path().join("journal");
        let puts = run(&journal, &ops, crash);
        let found = recover(&journal);

        let ids: Vec<DeliveryId> = found.iter().map(|(id, _, _)| *id).collect();
        let unique: BTreeSet<DeliveryId> = ids.iter().copied().collect();
        prop_assert_eq!(unique.len(), ids.len(), "a delivery recovered twice: {:?}", ids);
        // Durably put and never acked: must come back. Durably acked: must not. Anything
        // else was never answered, and may go either way.
        let must: BTreeSet<DeliveryId> = puts
            .iter()
            .filter(|(_, p)| p.durable && p.acked.is_none())
            .map(|(id, _)| *id)
            .collect();
        let may: BTreeSet<DeliveryId> = puts
            .iter()
            .filter(|(_, p)| p.acked != Some(true))
            .map(|(id, _)| *id)
            .collect();
        prop_assert!(must.is_subset(&unique), "lost: {:?}", must.difference(&unique).collect::<Vec<_>>());
        prop_assert!(unique.is_subset(&may), "brought back: {:?}", unique.difference(&may).collect::<Vec<_>>());
        if !crash {
            prop_assert_eq!(&unique, &must);
        }

        let segments = Segments::new(journal.clone());
        for (id, sink, loc) in &found {
            let put = &puts[id];
            prop_assert_eq!(sink.as_str(), put.sink);
            let read = segments.read(*loc, *id, &Arc::from(sink.as_str())).expect("record reads");
            prop_assert_eq!(&read.event, &put.event);
            prop_assert_eq!(read.priority, put.priority);
            prop_assert_eq!(&*read.route, "props");
        }

        let again: BTreeSet<DeliveryId> = recover(&journal).into_iter().map(|(id, _, _)| id).collect();
        prop_assert_eq!(again, unique, "a second recovery differs");
    }
}
