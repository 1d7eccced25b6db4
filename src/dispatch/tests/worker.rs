use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BreakerPolicy, Config, FileSinkConfig, HttpFormat, SinkConfig, SinkKind};
use crate::control::Pauses;
use crate::dispatch::{deliver_one, start, DispatchContext, Outcome};
use crate::sinks::tests::support::{config, event, http_config, sink, wait_until, Receiver, Reply};
use crate::sinks::{build, Handlers};
use crate::spool::{MemorySpool, NewDelivery, Spool, SpoolHandle};
use crate::telemetry::Counters;

/// A running dispatcher over a memory spool; stops and drains on `shutdown`.
struct Running {
    ctx: DispatchContext,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    fn start(config: Config) -> Self {
        let ctx = context(config);
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        start(&ctx, &stop, &tracker);
        Self { ctx, stop, tracker }
    }

    async fn put(&self, sink: &str, ids: impl IntoIterator<Item = String>) {
        let now = SystemTime::now();
        let deliveries = ids
            .into_iter()
            .map(|id| NewDelivery {
                event: Arc::new(event(&id)),
                route: Arc::from("orders"),
                sink: Arc::from(sink),
                accepted_at: now,
                not_before: now,
                priority: Default::default(),
                ordering_key: None,
            })
            .collect();
        self.ctx.spool.put(deliveries).await.unwrap();
    }

    fn count(&self, counter: impl Fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
        Counters::get(counter(&self.ctx.counters))
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .expect("workers stop when told");
    }
}

fn context(config: Config) -> DispatchContext {
    let sinks = build(&config, &Handlers::default()).unwrap();
    let spool = Arc::new(SpoolHandle::Memory(MemorySpool::new()));
    let counters = Arc::new(Counters::default());
    let routes = crate::config::Live::fixed(crate::routing::RouteTable::from_config(&config));
    DispatchContext {
        replies: crate::accept::Acceptor::new(routes, spool.clone(), counters.clone()),
        spool,
        sinks: Arc::new(sinks),
        config: Arc::new(config),
        counters,
        pauses: Arc::new(Pauses::default()),
        history: crate::history::History::off(),
        retained: crate::spool::Retained::off(),
        sagas: None,
    }
}

fn http_sink(name: &str, receiver: &Receiver, concurrency: usize) -> SinkConfig {
    let http = http_config(
        &receiver.url,
        HttpFormat::CloudEventsBinary,
        Duration::from_secs(5),
    );
    sink(name, SinkKind::Http(http), concurrency)
}

#[tokio::test]
async fn failures_are_retried_until_delivered() {
    let receiver = Receiver::start(|n| Reply::status(if n < 2 { 500 } else { 200 })).await;
    let running = Running::start(config(vec![http_sink("api", &receiver, 2)]));
    running.put("api", ["ev-1".to_owned()]).await;
    wait_until("delivery", || {
        running.count(|c| &c.deliveries_succeeded) == 1
    })
    .await;
    assert_eq!(receiver.hits(), 3);
    let counts: Vec<_> = receiver
        .requests()
        .iter()
        .map(|(h, _)| h["aeg-delivery-count"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(counts, ["0", "1", "2"]);
    assert_eq!(running.count(|c| &c.deliveries_retried), 2);
    assert_eq!(running.ctx.spool.depth("api"), 0);
    running.shutdown().await;
    assert_eq!(receiver.hits(), 3, "delivered once");
}

#[tokio::test]
async fn bad_request_dead_letters_to_the_dead_letter_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.jsonl");
    let receiver = Receiver::start(|_| Reply::status(400)).await;
    let mut api = http_sink("api", &receiver, 1);
    api.dead_letter = Some("dead".into());
    let dead = sink(
        "dead",
        SinkKind::File(FileSinkConfig { path: path.clone() }),
        1,
    );
    let running = Running::start(config(vec![api, dead]));
    running.put("api", ["ev-400".to_owned()]).await;
    wait_until("dead-letter record", || {
        running.count(|c| &c.deliveries_succeeded) == 1
    })
    .await;
    let line = std::fs::read_to_string(&path).unwrap();
    let record: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(record["id"], "ev-400");
    assert_eq!(
        record["deadletterreason"],
        "UndeliverableDueToHttpBadRequest"
    );
    assert_eq!(record["deliveryattempts"], 1);
    assert_eq!(record["lastdeliveryoutcome"], "BadRequest");
    assert_eq!(record["lasthttpstatuscode"], 400);
    assert!(record["publishtime"].is_string() && record["lastdeliveryattempttime"].is_string());
    assert_eq!(receiver.hits(), 1, "a 400 is not retried");
    assert_eq!(running.count(|c| &c.deliveries_dead_lettered), 1);
    assert_eq!(running.count(|c| &c.dead_letters_dropped), 0);
    running.shutdown().await;
}

#[tokio::test]
async fn without_a_dead_letter_sink_the_event_is_dropped_and_counted() {
    let receiver = Receiver::start(|_| Reply::status(403)).await;
    let running = Running::start(config(vec![http_sink("api", &receiver, 1)]));
    running.put("api", ["ev-403".to_owned()]).await;
    wait_until("drop", || running.count(|c| &c.dead_letters_dropped) == 1).await;
    assert_eq!(running.count(|c| &c.deliveries_dead_lettered), 1);
    assert_eq!(running.ctx.spool.depth("api"), 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_never_exceeds_the_sink_limit() {
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(100))).await;
    let running = Running::start(config(vec![http_sink("api", &receiver, 3)]));
    running.put("api", (0..12).map(|i| format!("ev-{i}"))).await;
    wait_until("all delivered", || {
        running.count(|c| &c.deliveries_succeeded) == 12
    })
    .await;
    assert_eq!(receiver.max_in_flight(), 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_does_not_delay_another() {
    let stalled = Receiver::start(|_| Reply::status(200).after(Duration::from_secs(3))).await;
    let healthy = Receiver::start(|_| Reply::status(200)).await;
    let mut slow = http_sink("slow", &stalled, 1);
    if let SinkKind::Http(http) = &mut slow.kind {
        http.timeout = Duration::from_secs(10);
    }
    let running = Running::start(config(vec![slow, http_sink("fast", &healthy, 1)]));
    running.put("slow", (0..3).map(|i| format!("s-{i}"))).await;
    running.put("fast", (0..5).map(|i| format!("f-{i}"))).await;
    wait_until("fast sink drained", || healthy.hits() == 5).await;
    assert_eq!(
        stalled.hits(),
        1,
        "the slow sink is still on its first delivery"
    );
    running.stop.cancel();
}

#[tokio::test]
async fn expired_delivery_is_dead_lettered_without_an_attempt() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let config = config(vec![http_sink("api", &receiver, 1)]);
    let sink_config = config.sinks["api"].clone();
    let ctx = context(config);
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    let new = NewDelivery {
        event: Arc::new(event("old")),
        route: Arc::from("orders"),
        sink: Arc::from("api"),
        accepted_at: long_ago,
        not_before: long_ago,
        priority: Default::default(),
        ordering_key: None,
    };
    ctx.spool.put(vec![new]).await.unwrap();
    let delivery = ctx.spool.lease("api", 1).await.unwrap().remove(0);
    let sink = ctx.sinks.get("api").unwrap();
    let outcome = deliver_one(&ctx, sink.as_ref(), &sink_config, delivery)
        .await
        .unwrap();
    let expected = Outcome::DeadLettered {
        reason: "TimeToLiveExceeded",
        forwarded_to: None,
    };
    assert_eq!(outcome, expected);
    assert_eq!(receiver.hits(), 0);
    assert_eq!(ctx.spool.depth("api"), 0);
}

#[tokio::test]
async fn a_worker_that_stops_untold_is_reported_and_a_told_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let mut ctx = context(config(vec![http_sink("api", &receiver, 1)]));
    let embedded = crate::spool::EmbeddedSpool::open(dir.path()).unwrap();
    ctx.spool = Arc::new(SpoolHandle::Embedded(embedded));
    let stats = ctx.counters.sink("api");

    let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
    start(&ctx, &stop, &tracker);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!(
        stats.worker_stopped(),
        None,
        "stopping when told is no failure"
    );

    let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
    start(&ctx, &stop, &tracker);
    let SpoolHandle::Embedded(spool) = &*ctx.spool else {
        unreachable!("the spool is embedded")
    };
    spool.close().await.unwrap();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("the worker ends when the spool closes");
    let reason = stats.worker_stopped().expect("the stop is reported");
    assert!(reason.contains("stopped"), "{reason}");
}

#[tokio::test]
async fn a_stopped_worker_hands_back_what_it_had_not_attempted() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let mut api = http_sink("api", &receiver, 4);
    api.delivery.rate_limit = Some(crate::config::RateLimit::parse("2/s").unwrap());
    let running = Running::start(config(vec![api]));
    running.put("api", (0..6).map(|i| format!("ev-{i}"))).await;
    wait_until("the first request", || receiver.hits() == 1).await;
    // The worker now holds the rest, leased, waiting for rate tokens.
    let spool = running.ctx.spool.clone();
    running.shutdown().await;
    let sent = receiver.hits();
    let left = tokio::time::timeout(Duration::from_secs(2), spool.lease("api", 10))
        .await
        .expect("what the worker held is leasable at once")
        .unwrap();
    assert_eq!(left.len() + sent, 6);
    assert!(left.iter().all(|d| d.attempts == 0), "no attempt counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_finishes_the_requests_it_started() {
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_millis(300))).await;
    let running = Running::start(config(vec![http_sink("api", &receiver, 3)]));
    running.put("api", (0..3).map(|i| format!("ev-{i}"))).await;
    wait_until("three requests in flight", || receiver.hits() == 3).await;
    assert_eq!(running.count(|c| &c.deliveries_succeeded), 0);
    let (counters, spool) = (running.ctx.counters.clone(), running.ctx.spool.clone());
    running.shutdown().await;
    assert_eq!(
        Counters::get(&counters.deliveries_succeeded),
        3,
        "every request started before the stop is answered and acked"
    );
    assert_eq!(spool.depth("api"), 0);
}

#[tokio::test]
async fn a_paused_sink_holds_no_lease_and_attempts_nothing_until_resumed() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let running = Running::start(config(vec![http_sink("api", &receiver, 2)]));
    // The worker may already be waiting in a lease when the pause comes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.ctx.pauses.set("api", true).await.unwrap();
    running.put("api", (0..5).map(|i| format!("ev-{i}"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.hits(), 0, "nothing attempted while paused");
    assert_eq!(running.count(|c| &c.deliveries_retried), 0);
    let leased = running.ctx.spool.lease("api", 10).await.unwrap();
    assert_eq!(
        leased.len(),
        5,
        "the paused worker handed back what it leased"
    );
    for delivery in leased {
        running.ctx.spool.release(delivery);
    }

    running.ctx.pauses.set("api", false).await.unwrap();
    wait_until("all delivered", || {
        running.count(|c| &c.deliveries_succeeded) == 5
    })
    .await;
    running.shutdown().await;
    assert_eq!(receiver.hits(), 5, "each delivered once");
}

#[tokio::test]
async fn a_pause_behind_an_open_breaker_leaves_the_probe_for_after_the_resume() {
    let receiver = Receiver::start(|n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    let mut api = http_sink("api", &receiver, 1);
    api.delivery.breaker = Some(BreakerPolicy {
        consecutive_failures: 1,
        open_for: Duration::from_millis(100),
    });
    let running = Running::start(config(vec![api]));
    running
        .put("api", ["ev-1".to_owned(), "ev-2".to_owned()])
        .await;
    wait_until("the first failure", || receiver.hits() == 1).await;
    running.ctx.pauses.set("api", true).await.unwrap();
    // Long past `open_for`: a probe would be due, but a paused sink sends none.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.hits(), 1, "no probe while paused");

    running.ctx.pauses.set("api", false).await.unwrap();
    wait_until("both delivered", || {
        running.count(|c| &c.deliveries_succeeded) == 2
    })
    .await;
    running.shutdown().await;
}
