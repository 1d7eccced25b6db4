//! The narrow waist between ingress and delivery: route events and store every matched
//! (event, sink) delivery in the spool, all or nothing.
//!
//! Imports `routing`, `spool`, `saga`, `event` and `telemetry`; nothing of the delivery side.
//! An event a saga matches starts an instance: the saga store records it, and its first
//! step's delivery is stored with the event's other deliveries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use crate::config::SagaConfig;
use crate::config::{DeliveryOrder, Live};
use crate::event::Event;
use crate::routing::{RouteTable, SqlError, Target};
use crate::saga::{Next, Sagas};
use crate::spool::{NewDelivery, Spool, SpoolError, SpoolHandle};
use crate::telemetry::{Counters, Format};

/// Routes events and stores their deliveries.
#[derive(Debug, Clone)]
pub struct Acceptor {
    routes: Live<RouteTable>,
    spool: Arc<SpoolHandle>,
    counters: Arc<Counters>,
    /// `ingress.dedup_window`: a repeat of a (`source`, `id`) stored within it is dropped.
    dedup_window: Option<Duration>,
    /// Where saga instances start; `None` when no saga store was given.
    sagas: Option<Sagas>,
}

/// What an accepted request amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    /// Events in the request.
    pub events: usize,
    /// Deliveries stored.
    pub deliveries: usize,
    /// Events that matched no route (accepted and dropped).
    pub unrouted: usize,
    /// Events dropped as repeats within `ingress.dedup_window` (accepted, not stored again).
    pub duplicates: usize,
}

/// Why events could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The spool cannot take more now; the sender should retry after the given time.
    #[error("spool is full; retry after {}s", retry_after.as_secs())]
    Full {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The spool's store cannot be reached; the sender should retry after the given time.
    #[error("{store} unreachable; retry after {}s", retry_after.as_secs())]
    Unreachable {
        /// What cannot be reached, e.g. "NATS".
        store: &'static str,
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The spool is closed (shutting down).
    #[error("not accepting events: shutting down")]
    Closed,
}

impl From<SpoolError> for AcceptError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full { retry_after } => Self::Full { retry_after },
            SpoolError::Unreachable { store, retry_after } => {
                Self::Unreachable { store, retry_after }
            }
            SpoolError::Closed => Self::Closed,
        }
    }
}

impl Acceptor {
    /// An acceptor routing with `routes` into `spool`.
    pub fn new(routes: Live<RouteTable>, spool: Arc<SpoolHandle>, counters: Arc<Counters>) -> Self {
        Self {
            routes,
            spool,
            counters,
            dedup_window: None,
            sagas: None,
        }
    }

    /// Starts saga instances in `sagas` for the events a saga of the route table matches.
    pub fn sagas(mut self, sagas: Sagas) -> Self {
        self.sagas = Some(sagas);
        self
    }

    /// Drops a repeat of the same (`source`, `id`) stored within `window`; `None` turns
    /// duplicate suppression off.
    pub fn dedup_window(mut self, window: Option<Duration>) -> Self {
        self.dedup_window = window;
        self
    }

    /// Routes every event and stores all their deliveries in one spool step.
    ///
    /// Every backend stores a put all or nothing even when the caller (an HTTP request whose
    /// client hung up) is dropped part-way, so an event is never stored without all of its
    /// deliveries; its events are counted all the same.
    pub async fn accept(&self, events: Vec<Event>) -> Result<Receipt, AcceptError> {
        self.accept_from(events, None).await
    }

    /// [`Acceptor::accept`] for events that came in over ingress in `format`: they are also
    /// counted as accepted in that format once stored.
    pub async fn accept_from(
        &self,
        events: Vec<Event>,
        format: Option<Format>,
    ) -> Result<Receipt, AcceptError> {
        let now = SystemTime::now();
        let mut receipt = Receipt {
            events: events.len(),
            ..Receipt::default()
        };
        // The whole request is routed under one table, even if a reload swaps it meanwhile.
        let routes = self.routes.get();
        let mut targets: Vec<Target> = Vec::new();
        let mut sql_errors: Vec<SqlError> = Vec::new();
        let mut deliveries = Vec::new();
        // Routes matched, once per event, counted once the deliveries are stored.
        let mut routed: Vec<Arc<str>> = Vec::new();
        // Events bound for a backend that keeps them in memory while they are queued get data
        // of their own: a binary-mode event's data is a slice of its connection's read buffer,
        // and would keep all of it alive (several KiB per queued event). The other backends
        // copy the event into their store, and a copy here would only cost time.
        let own_data = self.spool.keeps_events();
        let mut starts: Vec<(Arc<SagaConfig>, Arc<Event>)> = Vec::new();
        let mut matched: Vec<Arc<SagaConfig>> = Vec::new();
        for mut event in events {
            targets.clear();
            routes.targets_reporting(&event, &mut targets, &mut sql_errors);
            for error in sql_errors.drain(..) {
                self.sql_error(&event, &error, now);
            }
            if self.sagas.is_some() {
                routes.sagas(&event, &mut matched);
            }
            if targets.is_empty() && matched.is_empty() {
                receipt.unrouted += 1;
                continue;
            }
            if targets.is_empty() {
                if own_data {
                    event.own_data();
                }
                let event = Arc::new(event);
                starts.extend(matched.drain(..).map(|saga| (saga, event.clone())));
                continue;
            }
            let first = routed.len();
            for t in &targets {
                if !routed[first..].contains(&t.route) {
                    routed.push(t.route.clone());
                }
            }
            // Only an ordered route needs the subject; events without one are unordered.
            let ordered = targets.iter().any(|t| t.ordering == DeliveryOrder::Subject);
            let subject: Option<Arc<str>> = match ordered {
                true => event.subject.as_deref().map(Arc::from),
                false => None,
            };
            if own_data {
                event.own_data();
            }
            let event = Arc::new(event);
            starts.extend(matched.drain(..).map(|saga| (saga, event.clone())));
            deliveries.extend(targets.drain(..).map(|t| NewDelivery {
                event: event.clone(),
                route: t.route,
                sink: t.sink,
                accepted_at: now,
                not_before: now,
                priority: t.priority,
                ordering_key: match t.ordering {
                    DeliveryOrder::Subject => subject.clone(),
                    DeliveryOrder::Any => None,
                },
            }));
        }
        let started = self.start_sagas(starts, &mut deliveries).await?;
        receipt.deliveries = deliveries.len();
        let counted = Counted {
            counters: self.counters.clone(),
            format,
            events: receipt.events,
            unrouted: receipt.unrouted,
            routed,
        };
        if deliveries.is_empty() {
            counted.count();
            return Ok(receipt);
        }
        let store = store_and_count(
            self.spool.clone(),
            deliveries,
            self.dedup_window,
            counted,
            started,
        );
        // Finished even when this future is dropped meanwhile (its client hung up), so that
        // the count is taken where the spool confirms the store: the spool finishes such a
        // store, and its events are routed like any other.
        receipt.duplicates = Finish::new(store).await?;
        Ok(receipt)
    }

    /// Records a saga instance for each (saga, event) and adds its first step's delivery.
    async fn start_sagas(
        &self,
        starts: Vec<(Arc<SagaConfig>, Arc<Event>)>,
        deliveries: &mut Vec<NewDelivery>,
    ) -> Result<Option<Started>, AcceptError> {
        let Some(sagas) = self.sagas.as_ref().filter(|_| !starts.is_empty()) else {
            return Ok(None);
        };
        // Boxed, as below: the saga store's futures are large, and only a request that
        // starts a saga should pay for them.
        let nexts = Box::pin(sagas.start(starts)).await.map_err(|error| {
            tracing::error!(%error, "Cannot record saga instances; the events are refused");
            AcceptError::Unreachable {
                store: "saga store",
                retry_after: crate::spool::FULL_RETRY_AFTER,
            }
        })?;
        for next in &nexts {
            deliveries.extend(next.deliveries.iter().cloned());
        }
        Ok(Some(Started {
            sagas: sagas.clone(),
            nexts,
        }))
    }

    /// Counts a CESQL evaluation error and logs it, at most once a second.
    fn sql_error(&self, event: &Event, error: &SqlError, now: SystemTime) {
        if self
            .counters
            .sql_error(&error.route, error.kind.label(), now)
        {
            tracing::debug!(
                route = %error.route,
                event_id = %event.id,
                %error,
                "A route's sql filter raised an error; the route did not match."
            );
        }
    }
}

/// Stores the deliveries and counts the request once they are stored; returns how many
/// events were dropped as duplicates.
async fn store_and_count(
    spool: Arc<SpoolHandle>,
    deliveries: Vec<NewDelivery>,
    window: Option<Duration>,
    counted: Counted,
    started: Option<Started>,
) -> Result<usize, SpoolError> {
    let stored = match window {
        Some(window) => spool.put_unique(deliveries, window).await,
        None => spool.put(deliveries).await.map(|()| 0),
    };
    if let Some(started) = started {
        Box::pin(started.settle(stored.is_ok())).await;
    }
    let duplicates = stored?;
    counted.count();
    Ok(duplicates)
}

/// A boxed future that runs to completion even when whoever awaits it is dropped first: the
/// rest of it then runs in a task of its own. While its caller stays, it costs one box and no
/// task (no spawn, no wake-up of a waiting caller).
struct Finish<T: 'static> {
    future: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: 'static> Finish<T> {
    fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            future: Some(Box::pin(future)),
        }
    }
}

impl<T: 'static> Future for Finish<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            // Only a caller that polls again after `Ready` gets here.
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        this.future = None;
        Poll::Ready(output)
    }
}

impl<T: 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        let Some(rest) = self.future.take() else {
            return;
        };
        // Without a runtime (it is shutting down) nothing is left to finish the rest on.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _unheard = rest.await;
            });
        }
    }
}

/// Saga instances started for a request, until their first steps are stored or refused.
struct Started {
    sagas: Sagas,
    nexts: Vec<Next>,
}

impl Started {
    /// Clears what the instances asked to be stored, or removes them when the request was
    /// refused (its sender will try again). A failure here leaves them pending, to be put at
    /// the next start: a step delivered twice rather than never.
    async fn settle(self, stored: bool) {
        let result = match stored {
            true => {
                let done = self.nexts.into_iter().map(|n| (n.instance, n.seq));
                self.sagas.flushed_all(done.collect()).await
            }
            false => {
                let ids = self.nexts.into_iter().map(|n| n.instance).collect();
                self.sagas.discard(ids).await
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "Cannot update the saga store after storing first steps");
        }
    }
}

/// What one request adds to the counters once its deliveries are stored.
struct Counted {
    counters: Arc<Counters>,
    /// The ingress format, for `switchyard_events_received_total`.
    format: Option<Format>,
    events: usize,
    unrouted: usize,
    /// Routes matched, once per event.
    routed: Vec<Arc<str>>,
}

impl Counted {
    fn count(self) {
        Counters::add(&self.counters.events_received, self.events as u64);
        if let Some(format) = self.format {
            self.counters.received(format, true, self.events as u64);
        }
        self.counters.unrouted(self.unrouted as u64);
        for route in &self.routed {
            self.counters.routed(route);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::Config;
    use crate::spool::MemorySpool;

    fn event(data: Bytes) -> Event {
        Event {
            specversion: "1.0".into(),
            id: "1".into(),
            source: "/tests".into(),
            ty: "Test.Created".into(),
            datacontenttype: Some("text/plain".into()),
            dataschema: None,
            subject: None,
            time: None,
            extensions: Vec::new(),
            data_version: None,
            data: Some(data),
        }
    }

    /// An acceptor over a memory spool that routes every event to the sink `out`.
    fn acceptor_to_one_sink() -> (Acceptor, Arc<SpoolHandle>) {
        let yaml = "sinks:\n  out:\n    log: {}\nroutes:\n  - name: all\n    match: { types: ['*'] }\n    to: [out]\n";
        let config: Config = crate::config::load_str(
            yaml,
            std::path::Path::new("routes.yaml"),
            &Default::default(),
        )
        .expect("a valid configuration");
        let spool = Arc::new(SpoolHandle::Memory(MemorySpool::new()));
        let acceptor = Acceptor::new(
            Live::fixed(RouteTable::from_config(&config)),
            spool.clone(),
            Arc::new(Counters::default()),
        );
        (acceptor, spool)
    }

    #[tokio::test]
    async fn an_event_queued_in_memory_does_not_keep_the_buffer_its_data_came_from() {
        let (acceptor, spool) = acceptor_to_one_sink();
        // As a request body arrives: a slice of a larger read buffer.
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let body = buffer.slice(100..300);
        let receipt = acceptor.accept(vec![event(body)]).await.expect("accepted");
        assert_eq!(receipt.deliveries, 1);
        let leased = spool.lease("out", 1).await.expect("leased");
        let data = leased[0].event.data.clone().expect("the data is kept");
        assert_eq!(&data[..], &[b'x'; 200][..]);
        assert!(
            !buffer.as_ptr_range().contains(&data.as_ptr()),
            "the queued event's data points into the request buffer"
        );
    }

    #[tokio::test]
    async fn events_of_a_request_dropped_while_they_are_stored_are_stored_and_counted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let spool = Arc::new(SpoolHandle::open_embedded(dir.path()).expect("spool opens"));
        let (acceptor, _) = acceptor_to_one_sink();
        let counters = Arc::new(Counters::default());
        let acceptor = Acceptor::new(acceptor.routes.clone(), spool.clone(), counters.clone());
        let mut accept = Box::pin(acceptor.accept_from(vec![event(Bytes::new())], None));
        // The first poll routes the event and hands it to the spool's writer thread, which
        // answers only once it is on disk: the client hangs up before that.
        let first = std::future::poll_fn(|cx| Poll::Ready(accept.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        drop(accept);
        let leased = tokio::time::timeout(Duration::from_secs(10), spool.lease("out", 1))
            .await
            .expect("the delivery is stored")
            .expect("leased");
        assert_eq!(leased.len(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Counters::get(&counters.events_received) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stored event was never counted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(Counters::get(&counters.events_received), 1);
    }

    #[tokio::test]
    async fn the_accept_future_stays_small_when_no_saga_is_started() {
        // Every request's future holds this one and is moved whole into its task: a saga
        // store's futures (several KB) laid out inline in it were copied on every request.
        let (acceptor, _) = acceptor_to_one_sink();
        let accept = acceptor.accept_from(vec![event(Bytes::new())], None);
        let size = std::mem::size_of_val(&accept);
        assert!(size <= 2048, "the accept future takes {size} bytes");
    }
}
