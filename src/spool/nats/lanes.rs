//! Priority lanes of the `nats` spool: one durable pull consumer per (sink, lane), and how a
//! lease spreads over them.
//!
//! A lease asks, without waiting, only the lanes the sink's [`LanePicker`] would take from:
//! the picker chooses the lane of every delivery the lease may still take, and each chosen
//! lane gets one request for as many messages as it was given, all lanes of a round at
//! once. A lane that answers short has no more due work for the rest of this lease, and the
//! picker chooses again without it. An empty lane the picker tries costs one request that
//! answers at once: a sink whose work is all normal pays about two or three requests per
//! lease instead of one.
//!
//! Only when every lane is empty does a lease wait: one long poll per lane at once (three
//! open pull requests per idle sink and instance, renewed every [`LONG_POLL`]). The first to
//! bring a message ends the wait and the other requests are dropped. JetStream hands no
//! message to a pull request whose subscriber has gone, so a dropped poll strands nothing;
//! only a message already on its way to it at that instant waits for `ack_wait`. Waiting
//! this way also wakes the lease for a retry or redelivery coming due, which a wake-up on
//! new publishes alone would miss.
//!
//! A pull request or its answer lost with a connection (a server restart, a network cut)
//! would leave the request waiting forever: a request ends when the client reports its
//! connection lost, and at the latest by its deadline: its expiry plus [`PULL_MARGIN`], or
//! [`NO_WAIT_PULL_TIMEOUT`] for a request that does not wait. It ends with what it has, or
//! with an error when that is nothing.
//!
//! A lease cancelled mid-way (a batch linger, shutdown) gives what it had fetched back to
//! JetStream for redelivery at once; its no-wait requests run as tasks of their own, so
//! that one cut short gives back what it brings as well.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use super::conn::{NatsError, NO_WAIT_PULL_TIMEOUT, PULL_MARGIN};
use super::unavailable;
use crate::spool::lanes::{LanePicker, LANES};
use crate::spool::SpoolError;

/// Longest single pull request while every lane is empty.
const LONG_POLL: Duration = Duration::from_secs(5);

/// One sink's lane consumers (high, normal, low) and its lane picker, which every lease of
/// the sink on this instance shares.
pub(super) struct SinkLanes {
    consumers: [PullConsumer; LANES],
    picker: Mutex<LanePicker>,
    /// Changes each time the client loses its connection.
    lost: watch::Receiver<u64>,
}

impl SinkLanes {
    /// The lanes of one sink, by lane index.
    pub(super) fn new(consumers: [PullConsumer; LANES], lost: watch::Receiver<u64>) -> Self {
        Self {
            consumers,
            picker: Mutex::new(LanePicker::default()),
            lost,
        }
    }

    /// A pull on `lane`; see [`fetch`].
    async fn fetch(
        &self,
        lane: usize,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<Message>, SpoolError> {
        let mut lost = self.lost.clone();
        lost.borrow_and_update();
        fetch(&self.consumers[lane], max, wait, lost).await
    }

    fn picker(&self) -> MutexGuard<'_, LanePicker> {
        // A plain counter: a panic elsewhere leaves it usable.
        self.picker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `max` messages for one lease, high lane first: the due ones as the picker
    /// spreads them or, when every lane is empty, what comes first within [`LONG_POLL`]
    /// (possibly nothing).
    pub(super) async fn messages(self: &Arc<Self>, max: usize) -> Result<Vec<Message>, SpoolError> {
        let mut taken = Taken::default();
        self.take_due(max, &mut taken).await?;
        if taken.0.is_empty() {
            self.wait_any(&mut taken).await?;
            if !taken.0.is_empty() && max > 1 {
                // The rest is a bonus: a failure leaves it to the next lease.
                self.take_due(max - 1, &mut taken).await.ok();
            }
        }
        let mut messages = std::mem::take(&mut taken.0);
        messages.sort_by_key(|(lane, _)| *lane);
        Ok(messages.into_iter().map(|(_, m)| m).collect())
    }

    /// Fetches, without waiting, up to `max` messages spread over the lanes as the picker
    /// chooses, the lanes of one round at once. A failure after something was fetched ends
    /// the lease with what it has.
    async fn take_due(self: &Arc<Self>, max: usize, taken: &mut Taken) -> Result<(), SpoolError> {
        let had = taken.0.len();
        let mut plan = LeasePlan::new(*self.picker(), max);
        while let Some(want) = plan.next() {
            let fetches: Vec<_> = (0..LANES)
                .filter(|&lane| want[lane] > 0)
                .map(|lane| (lane, self.spawn_fetch(lane, want[lane])))
                .collect();
            let mut failed = None;
            for (lane, fetch) in fetches {
                match fetch.await.map_err(|e| unavailable(&e)).and_then(|got| got) {
                    Ok(mut got) => {
                        plan.fetched(lane, want[lane], got.0.len());
                        taken.0.append(&mut got.0);
                    }
                    Err(error) => failed = Some(error),
                }
            }
            match failed {
                Some(error) if taken.0.len() == had => return Err(error),
                Some(_) => break,
                None => {}
            }
        }
        *self.picker() = plan.picker;
        Ok(())
    }

    /// Fetches without waiting in a task of its own, so that a lease cancelled meanwhile
    /// does not cut the fetch short. What it fetched travels as [`Taken`], so it is given
    /// back whether the lease is gone before the answer is sent or after it, unread.
    fn spawn_fetch(
        self: &Arc<Self>,
        lane: usize,
        max: usize,
    ) -> oneshot::Receiver<Result<Taken, SpoolError>> {
        let (tx, rx) = oneshot::channel();
        let lanes = self.clone();
        tokio::spawn(async move {
            let fetched = lanes.fetch(lane, max, None).await;
            let fetched = fetched.map(|got| Taken(got.into_iter().map(|m| (lane, m)).collect()));
            // Refused, the answer is dropped here, and its messages given back.
            let _unread = tx.send(fetched);
        });
        rx
    }

    /// Waits up to [`LONG_POLL`] for a message on any lane and takes the first to come.
    async fn wait_any(&self, taken: &mut Taken) -> Result<(), SpoolError> {
        let polls = (0..LANES).map(|lane| {
            Box::pin(async move { (lane, self.fetch(lane, 1, Some(LONG_POLL)).await) })
        });
        let ((lane, got), _, _others) = futures_util::future::select_all(polls).await;
        let got = got?;
        if !got.is_empty() {
            // Every lane was empty before: this one alone had due work.
            let mut due = [false; LANES];
            due[lane] = true;
            self.picker().pick(due);
            taken.0.extend(got.into_iter().map(|m| (lane, m)));
        }
        Ok(())
    }
}

/// Messages taken for a lease that has not returned yet, with their lanes. Dropped before
/// the lease returns them (it was cancelled), they are given back to JetStream at once
/// rather than left to `ack_wait`.
#[derive(Default)]
struct Taken(Vec<(usize, Message)>);

impl Drop for Taken {
    fn drop(&mut self) {
        let messages: Vec<Message> = self.0.drain(..).map(|(_, m)| m).collect();
        if messages.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(give_back(messages));
        }
    }
}

/// Returns messages to JetStream for redelivery now.
async fn give_back(messages: Vec<Message>) {
    for message in messages {
        if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%error, "Giving a message back to JetStream failed");
        }
    }
}

/// Fetches what is waiting, up to `max`; with `wait`, holds the request open until at
/// least one message comes or `wait` passes. Ends by its deadline (see the module doc): with
/// what came by then, or with an error when nothing did; so does a failure part-way and a
/// change of `lost` (the connection it was sent on is gone).
async fn fetch(
    consumer: &PullConsumer,
    max: usize,
    wait: Option<Duration>,
    mut lost: watch::Receiver<u64>,
) -> Result<Vec<Message>, SpoolError> {
    let limit = wait.map_or(NO_WAIT_PULL_TIMEOUT, |wait| wait + PULL_MARGIN);
    let deadline = tokio::time::Instant::now() + limit;
    let timed_out = || unavailable(&NatsError::PullTimedOut(limit));
    let request = async {
        match wait {
            Some(wait) => {
                consumer
                    .batch()
                    .max_messages(1)
                    .expires(wait)
                    .messages()
                    .await
            }
            None => consumer.fetch().max_messages(max).messages().await,
        }
    };
    let mut batch = tokio::time::timeout_at(deadline, request)
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| unavailable(&e))?;
    let mut out = Vec::new();
    loop {
        let failed = tokio::select! {
            next = batch.next() => match next {
                Some(Ok(message)) => {
                    out.push(message);
                    continue;
                }
                None => return Ok(out),
                Some(Err(error)) => unavailable(&*error),
            },
            () = tokio::time::sleep_until(deadline) => timed_out(),
            // A closed sender (the spool is going away) ends nothing.
            Ok(()) = lost.changed() => unavailable(&NatsError::PullCut),
        };
        // What came is leased; the rest of the request is left to JetStream.
        return match out.is_empty() {
            true => Err(failed),
            false => Ok(out),
        };
    }
}

/// How one lease spreads over the lanes. The picker counts a lease only for a message in
/// hand, so a lane it tried and found empty is not counted as leased from, and leasing one
/// at a time matches the picker of the other backends exactly.
#[derive(Debug)]
struct LeasePlan {
    picker: LanePicker,
    /// Fetched messages the picker has not counted yet, by lane.
    fetched: [usize; LANES],
    /// Lanes that may hold more due messages (none has answered short yet).
    open: [bool; LANES],
    /// Messages the lease may still fetch.
    room: usize,
}

impl LeasePlan {
    fn new(picker: LanePicker, max: usize) -> Self {
        Self {
            picker,
            fetched: [0; LANES],
            open: [true; LANES],
            room: max,
        }
    }

    /// Lanes with due work, as far as the lease knows.
    fn due(&self, fetched: &[usize; LANES]) -> [bool; LANES] {
        std::array::from_fn(|l| fetched[l] > 0 || self.open[l])
    }

    /// How many messages to fetch next from each lane; `None` once the lease is complete.
    fn next(&mut self) -> Option<[usize; LANES]> {
        self.count_fetched();
        let mut trial = self.picker;
        let mut fetched = self.fetched;
        let mut want = [0; LANES];
        while want.iter().sum::<usize>() < self.room {
            let Some(lane) = trial.pick(self.due(&fetched)) else {
                break;
            };
            match fetched[lane] {
                0 => want[lane] += 1,
                _ => fetched[lane] -= 1,
            }
        }
        (want != [0; LANES]).then_some(want)
    }

    /// Records that asking `lane` for `asked` messages brought `got`.
    fn fetched(&mut self, lane: usize, asked: usize, got: usize) {
        self.fetched[lane] += got;
        self.room = self.room.saturating_sub(got);
        if got < asked {
            self.open[lane] = false;
        }
    }

    /// Counts the leases of fetched messages for as long as the picker chooses a lane that
    /// has one in hand.
    fn count_fetched(&mut self) {
        loop {
            let mut trial = self.picker;
            match trial.pick(self.due(&self.fetched)) {
                Some(lane) if self.fetched[lane] > 0 => {
                    self.fetched[lane] -= 1;
                    self.picker = trial;
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a plan against lanes holding `backlog` messages; returns what it took by lane
    /// and how many requests it made.
    fn lease(picker: &mut LanePicker, backlog: &mut [usize; LANES], max: usize) -> [usize; 4] {
        let mut plan = LeasePlan::new(*picker, max);
        let mut taken = [0; 4];
        while let Some(want) = plan.next() {
            for lane in (0..LANES).filter(|&l| want[l] > 0) {
                let got = want[lane].min(backlog[lane]);
                backlog[lane] -= got;
                taken[lane] += got;
                taken[3] += 1;
                plan.fetched(lane, want[lane], got);
            }
        }
        *picker = plan.picker;
        taken
    }

    #[test]
    fn one_at_a_time_the_plan_leases_as_the_picker_does() {
        let (mut plan_picker, mut picker) = (LanePicker::default(), LanePicker::default());
        let mut backlog = [5, 0, 20];
        for _ in 0..25 {
            let due = std::array::from_fn(|l| backlog[l] > 0);
            let expected = picker.pick(due).expect("a lane is due");
            let taken = lease(&mut plan_picker, &mut backlog, 1);
            assert_eq!(taken[expected], 1, "{taken:?}");
        }
        assert_eq!(backlog, [0, 0, 0]);
    }

    #[test]
    fn a_batch_takes_four_two_one_in_one_request_per_lane() {
        let mut picker = LanePicker::default();
        let mut backlog = [1000; LANES];
        assert_eq!(lease(&mut picker, &mut backlog, 70), [40, 20, 10, 3]);
    }

    #[test]
    fn a_short_lane_leaves_its_share_to_the_others() {
        let mut picker = LanePicker::default();
        let mut backlog = [3, 0, 100];
        assert_eq!(lease(&mut picker, &mut backlog, 10), [3, 0, 7, 4]);
        let mut backlog = [0, 0, 0];
        assert_eq!(lease(&mut picker, &mut backlog, 10), [0, 0, 0, 3]);
    }
}
