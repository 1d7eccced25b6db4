//! The JetStream spool against a real NATS server (required; see `support::nats_server`): two daemons
//! sharing one stream, an instance killed with deliveries in flight, retries and dead letters
//! kept in JetStream, ingress de-duplication through the stream's duplicate window, a batch
//! that leaves once full although its worker leases ahead, and an instance riding out
//! restarts of its NATS server.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::client::try_post;
use crate::support::daemon::event;
use crate::support::nats::{unique, url, Streams};
use crate::support::nats_server::NatsServer;
use crate::support::process::{free_port, Daemon};
use crate::support::{request, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(20);
const BATCH: usize = 100;
const TOKEN: &str = "nats-token";

/// One instance's `routes.yaml`: its http sink marks each request with `x-instance`.
fn instance_config(dir: &Path, n: u8, port: u16, stream: &str, sink: &TestSink) -> PathBuf {
    let path = dir.join(format!("instance-{n}.yaml"));
    let yaml = format!(
        r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:0
spool: {{ backend: nats, path: "{dir}/spool-{n}", nats: {{ url: "{nats}", stream: {stream}, ack_wait: 1s }} }}
sinks:
  hook:
    http: {{ url: "{url}", timeout: 5s, headers: {{ x-instance: "{n}" }} }}
    concurrency: 16
routes: [{{ name: all, to: [hook] }}]
"#,
        dir = dir.display(),
        url = sink.url(),
        nats = url(),
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Two daemons on one stream prefix, listening on `ports`.
async fn two_instances(dir: &Path, stream: &str, sink: &TestSink) -> ([u16; 2], [Daemon; 2]) {
    let ports = [free_port(), free_port()];
    let a = instance_config(dir, 1, ports[0], stream, sink);
    let b = instance_config(dir, 2, ports[1], stream, sink);
    let daemons = [
        Daemon::start(&a, ports[0]).await,
        Daemon::start(&b, ports[1]).await,
    ];
    (ports, daemons)
}

/// Posts `ids` as one CloudEvents batch; whether it was acknowledged.
async fn post_batch(port: u16, ids: &[String]) -> bool {
    let events: Vec<Value> = ids.iter().map(|id| event(id, "T")).collect();
    let status = try_post(
        &format!("http://127.0.0.1:{port}/events"),
        &[("content-type", "application/cloudevents-batch+json")],
        Bytes::from(Value::Array(events).to_string()),
    )
    .await;
    status.is_some_and(|s| s.is_success())
}

fn batch_ids(batch: usize) -> Vec<String> {
    (0..BATCH)
        .map(|i| format!("e{}", batch * BATCH + i))
        .collect()
}

/// How many requests for each event id each instance made.
fn by_instance(sink: &TestSink) -> HashMap<String, [usize; 2]> {
    let mut seen: HashMap<String, [usize; 2]> = HashMap::new();
    for r in sink.received() {
        let id = r.header("ce-id").expect("ce-id").to_owned();
        let slot = match r.header("x-instance") {
            Some("1") => 0,
            Some("2") => 1,
            other => panic!("request from an unknown instance {other:?}"),
        };
        seen.entry(id).or_default()[slot] += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_deliver_each_event_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stream = unique("sy-it-share");
    let _streams = Streams::spool(&stream);
    let sink = TestSink::start().await;
    let (ports, daemons) = two_instances(dir.path(), &stream, &sink).await;

    const BATCHES: usize = 100;
    // Even batches go to instance 1 and odd ones to instance 2, both at once.
    let senders = ports.into_iter().enumerate().map(|(n, port)| async move {
        for batch in (n..BATCHES).step_by(2) {
            assert!(
                post_batch(port, &batch_ids(batch)).await,
                "batch {batch} refused"
            );
        }
    });
    futures_util::future::join_all(senders).await;
    let total = BATCHES * BATCH;
    wait_until("every event delivered", Duration::from_secs(60), || {
        sink.count() >= total
    })
    .await;
    // Anything delivered twice would arrive within an ack wait (1 s) of the first copy.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let seen = by_instance(&sink);
    assert_eq!(seen.len(), total, "every event delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| n[0] + n[1] > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for instance in 0..2 {
        let share = seen.values().filter(|n| n[instance] == 1).count();
        eprintln!("instance {} delivered {share} of {total}", instance + 1);
        assert!(
            share * 10 >= total * 3,
            "instance {} delivered only {share} of {total}",
            instance + 1
        );
    }
    drop(daemons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_its_deliveries_to_the_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stream = unique("sy-it-kill");
    let _streams = Streams::spool(&stream);
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200).delay(Duration::from_millis(20)));
    let (ports, [mut first, second]) = two_instances(dir.path(), &stream, &sink).await;

    const BATCHES: usize = 20;
    let sender = tokio::spawn(async move {
        let mut acked = HashSet::new();
        for batch in 0..BATCHES {
            let ids = batch_ids(batch);
            // A batch the killed instance cannot take goes to the other one.
            for port in [ports[batch % 2], ports[(batch + 1) % 2]] {
                if post_batch(port, &ids).await {
                    acked.extend(ids);
                    break;
                }
            }
        }
        acked
    });
    wait_until("instance 1 delivering", WAIT, || {
        sink.count_matching(|r| r.header("x-instance") == Some("1")) >= 200
    })
    .await;
    first.kill9();
    let from_first: HashSet<String> = by_instance(&sink)
        .into_iter()
        .filter(|(_, n)| n[0] > 0)
        .map(|(id, _)| id)
        .collect();
    let acked = sender.await.expect("sender");
    assert!(
        acked.len() >= BATCHES * BATCH / 2,
        "only {} acknowledged",
        acked.len()
    );

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = by_instance(&sink);
        let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 {
            break;
        }
        let now = tokio::time::Instant::now();
        assert!(
            now < deadline,
            "{missing} acknowledged events never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = by_instance(&sink);
    let taken_over = from_first.iter().filter(|id| seen[*id][1] > 0).count();
    assert!(
        taken_over > 0,
        "instance 2 redelivered none of instance 1's in-flight deliveries"
    );
    eprintln!(
        "acknowledged {}, requests {}, in flight at the kill and redelivered {taken_over}",
        acked.len(),
        sink.count()
    );
    drop(second);
}

/// A daemon in this process on the JetStream spool `stream`, with a dead-letter API token.
async fn in_process(stream: &str, sinks_and_more: &str) -> TestApp {
    TestApp::start(&format!(
        r#"
spool: {{ backend: nats, nats: {{ url: "{nats}", stream: {stream}, ack_wait: 1s }} }}
admin: {{ token: {TOKEN} }}
{sinks_and_more}
routes: [{{ name: all, to: [hook] }}]
"#,
        nats = url()
    ))
    .await
}

async fn admin(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let url = format!("{}{path}", app.admin);
    let reply = request(method, &url, &[("authorization", bearer.as_str())], "").await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let (status, body) = admin(app, Method::GET, "/api/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["dead_letters"].as_array().expect("a list").clone()
}

#[tokio::test]
async fn retries_and_dead_letters_live_in_jetstream() {
    let stream = unique("sy-it-dead");
    let _streams = Streams::spool(&stream);
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let app = in_process(
        &stream,
        &format!(
            "sinks:\n  hook: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [50ms], max_attempts: 3 }} }}",
            sink.url()
        ),
    )
    .await;

    let reply = app.send(event("dl-1", "T")).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut listed = dead_letters(&app).await;
    while listed.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
        listed = dead_letters(&app).await;
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(sink.count(), 3, "three attempts");
    let counts: Vec<_> = sink
        .received()
        .iter()
        .map(|r| r.header("aeg-delivery-count").map(str::to_owned))
        .collect();
    assert_eq!(
        counts,
        [Some("0".into()), Some("1".into()), Some("2".into())]
    );

    sink.set_default(Respond::status(200));
    let id = listed[0]["id"].as_u64().expect("an id");
    let path = format!("/api/v1/dead-letters/{id}/replay");
    let (status, body) = admin(&app, Method::POST, &path).await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    wait_until("the replay delivered", WAIT, || {
        sink.received().iter().any(|r| r.status == 200)
    })
    .await;
    let delivered = sink.received().into_iter().find(|r| r.status == 200);
    let delivered = delivered.expect("a 200 answer");
    assert_eq!(delivered.header("ce-id"), Some("dl-1"));
    assert_eq!(delivered.header("aeg-delivery-count"), Some("0"));
    assert!(
        dead_letters(&app).await.is_empty(),
        "replayed letter removed"
    );
    app.running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_repeated_event_is_delivered_once() {
    let stream = unique("sy-it-dedup");
    let _streams = Streams::spool(&stream);
    let sink = TestSink::start().await;
    let sinks = format!(
        "ingress: {{ dedup_window: 1m }}\nsinks:\n  hook: {{ http: {{ url: \"{}\" }}, concurrency: 1 }}",
        sink.url()
    );
    let app = in_process(&stream, &sinks).await;

    for id in ["dup-1", "dup-1", "marker"] {
        let reply = app.send(event(id, "T")).await;
        assert!(reply.status.is_success(), "{}", reply.text());
    }
    wait_until("the marker delivered", WAIT, || {
        sink.received()
            .iter()
            .any(|r| r.header("ce-id") == Some("marker"))
    })
    .await;
    let ids: Vec<_> = sink
        .received()
        .iter()
        .map(|r| r.header("ce-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["dup-1", "marker"]);
    let state = Streams::state(&stream).await;
    assert_eq!(state.last_sequence, 2, "the repeat was never stored");
    app.running.stop().await.expect("clean shutdown");
}

/// A worker on this backend leases ahead (several batches' worth); a batch's `linger` still
/// waits only until the batch is full.
#[tokio::test]
async fn a_full_batch_leaves_without_waiting_out_its_linger() {
    let stream = unique("sy-it-linger");
    let _streams = Streams::spool(&stream);
    let sink = TestSink::start().await;
    let sinks = format!(
        "sinks:\n  hook: {{ http: {{ url: \"{}\" }}, concurrency: 1, batch: {{ max_events: 5, linger: 60s }} }}",
        sink.url()
    );
    let app = in_process(&stream, &sinks).await;
    let events: Vec<Value> = (0..5).map(|i| event(&format!("full-{i}"), "T")).collect();
    app.send_batch(events).await;
    wait_until("the full batch delivered", WAIT, || sink.count() == 1).await;
    let body = sink.received()[0].json();
    let ids: Vec<&str> = body
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["full-0", "full-1", "full-2", "full-3", "full-4"]);
    app.running.stop().await.expect("clean shutdown");
}

/// A daemon on the JetStream spool `stream` whose sinks are `a` (unless removed) and `b`.
fn with_or_without_a(stream: &str, a: &TestSink, b: &TestSink, with_a: bool) -> String {
    let (a_sink, target) = match with_a {
        true => (
            format!(
                "  a: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [1h] }} }}\n",
                a.url()
            ),
            "a",
        ),
        false => (String::new(), "b"),
    };
    format!(
        "spool: {{ backend: nats, nats: {{ url: \"{}\", stream: {stream}, ack_wait: 1s }} }}\nadmin: {{ token: {TOKEN} }}\nsinks:\n{a_sink}  b: {{ http: {{ url: \"{}\" }} }}\nroutes: [{{ name: main, to: [{target}] }}]\n",
        url(),
        b.url()
    )
}

#[tokio::test]
async fn an_operator_purges_the_deliveries_of_a_removed_sink() {
    let stream = unique("sy-it-purge");
    let _streams = Streams::spool(&stream);
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(Respond::status(503));
    let app = TestApp::start_file(&with_or_without_a(&stream, &a, &b, true), false).await;
    for i in 0..3 {
        let reply = app.send(event(&format!("o-{i}"), "T")).await;
        assert!(reply.status.is_success(), "{}", reply.text());
    }
    wait_until("three failed first attempts", WAIT, || a.count() == 3).await;
    app.rewrite(&with_or_without_a(&stream, &a, &b, false));
    let (status, body) = admin(&app, Method::POST, "/api/v1/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("the orphaned backlog counted", WAIT, || {
        app.running.spool_depth("a") == 3
    })
    .await;

    let purge = |sink: &str| format!("/api/v1/sinks/{sink}/deliveries");
    let (status, body) = admin(&app, Method::DELETE, &purge("a")).await;
    assert_eq!((status, body["purged"].as_u64()), (StatusCode::OK, Some(3)));
    assert_eq!(app.running.spool_depth("a"), 0);
    assert_eq!(Streams::state(&stream).await.messages, 0);
    let (status, body) = admin(&app, Method::DELETE, &purge("a")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = admin(&app, Method::DELETE, &purge("b")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    app.running.stop().await.expect("clean shutdown");
}

/// Posts small batches of fresh events to `port` every [`POST_EVERY`] until `stop`, each
/// post on its own (at most [`POSTS_IN_FLIGHT`] at once, so one waiting for NATS holds up
/// no other); the ids of every acknowledged batch (2xx) go to `acked`, and each 503 is
/// counted in `refused`.
async fn post_until(
    port: u16,
    stop: tokio_util::sync::CancellationToken,
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
) {
    const PER_POST: usize = 5;
    let url = Arc::new(format!("http://127.0.0.1:{port}/events"));
    let slots = Arc::new(tokio::sync::Semaphore::new(POSTS_IN_FLIGHT));
    let mut posts = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut tick = tokio::time::interval(POST_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tick.tick().await;
        let slot = slots.clone().acquire_owned().await.expect("open semaphore");
        let ids: Vec<String> = (next..next + PER_POST).map(|n| format!("r{n}")).collect();
        next += PER_POST;
        let (url, acked, refused) = (url.clone(), acked.clone(), refused.clone());
        posts.spawn(async move {
            let _slot = slot;
            let events: Vec<Value> = ids.iter().map(|id| event(id, "T")).collect();
            let body = Bytes::from(Value::Array(events).to_string());
            let content_type = [("content-type", "application/cloudevents-batch+json")];
            let post = try_post(&url, &content_type, body);
            match tokio::time::timeout(Duration::from_secs(10), post).await {
                Ok(Some(status)) if status.is_success() => {
                    acked.lock().expect("acked ids").extend(ids);
                }
                Ok(Some(StatusCode::SERVICE_UNAVAILABLE)) => {
                    refused.fetch_add(1, AtomicOrdering::Relaxed);
                }
                // Neither accepted nor refused: the events may or may not be stored.
                _ => {}
            }
        });
    }
    while posts.join_next().await.is_some() {}
}

/// Most posts of [`post_until`] waiting for an answer at once.
const POSTS_IN_FLIGHT: usize = 64;

/// How often [`post_until`] posts (5 events each time: 100 events/s).
const POST_EVERY: Duration = Duration::from_millis(50);

/// The acknowledged ids not delivered yet.
fn undelivered(acked: &[String], sink: &TestSink) -> Vec<String> {
    let delivered: HashSet<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect();
    acked
        .iter()
        .filter(|id| !delivered.contains(*id))
        .cloned()
        .collect()
}

/// Waits up to `limit` for every id of `acked` to reach `sink`; panics with `what`, the
/// missing ids and the state of `consumer` on `nats` otherwise.
async fn wait_delivered(
    what: &str,
    acked: &[String],
    sink: &TestSink,
    limit: Duration,
    (nats, stream, consumer): (&str, &str, &str),
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let missing = undelivered(acked, sink);
        if missing.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let client = async_nats::connect(nats).await.expect("connect");
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream(stream).await.expect("stream");
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(consumer).await.expect("consumer");
            let info = consumer.info().await.expect("consumer info");
            panic!(
                "{what}: {} of {} acknowledged events not delivered within {limit:?}, e.g. \
                 {:?}; the consumer has {} pending, {} in flight, {} pull requests waiting",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(5)],
                info.num_pending,
                info.num_ack_pending,
                info.num_waiting
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_each_restart_of_the_nats_server() {
    const CYCLES: usize = 5;
    /// The spool's `ack_wait`: a delivery whose ack was lost comes back after it.
    const ACK_WAIT: Duration = Duration::from_secs(2);
    /// How long every acknowledged event may take to be delivered once NATS is back.
    const RESUMED_WITHIN: Duration = Duration::from_secs(10);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(&dir.path().join("nats"));
    let sink = TestSink::start().await;
    let port = free_port();
    let config = dir.path().join("routes.yaml");
    let yaml = format!(
        r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:0
spool: {{ backend: nats, nats: {{ url: "{nats}", stream: sy-it-restart, ack_wait: {ack_wait}s }} }}
sinks:
  hook:
    http: {{ url: "{url}", timeout: 5s }}
    concurrency: 16
routes: [{{ name: all, to: [hook] }}]
"#,
        nats = server.url(),
        ack_wait = ACK_WAIT.as_secs(),
        url = sink.url(),
    );
    std::fs::write(&config, yaml).expect("write config");
    let daemon = Daemon::start(&config, port).await;
    let nats = server.url();
    let consumer = (nats.as_str(), "sy-it-restart", "sy-it-restart-hook");

    let stop = tokio_util::sync::CancellationToken::new();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let poster = tokio::spawn(post_until(
        port,
        stop.clone(),
        acked.clone(),
        refused.clone(),
    ));
    let acked_now = || acked.lock().expect("acked ids").clone();
    wait_until("events accepted", WAIT, || acked_now().len() >= 50).await;

    for cycle in 1..=CYCLES {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let refused_before = refused.load(AtomicOrdering::Relaxed);
        server.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let acked_before_restart = acked_now().len();
        server.restart();
        assert!(
            refused.load(AtomicOrdering::Relaxed) > refused_before,
            "cycle {cycle}: ingress answered no 503 while NATS was down"
        );
        // Once events are accepted again, every one acknowledged so far (those of the last
        // moments before the kill and the first after the restart too) is delivered.
        wait_until("ingress accepting again", WAIT, || {
            acked_now().len() > acked_before_restart + 20
        })
        .await;
        let what = format!("after restart {cycle}");
        wait_delivered(&what, &acked_now(), &sink, RESUMED_WITHIN, consumer).await;
    }
    stop.cancel();
    poster.await.expect("poster");
    let acked = acked_now();
    wait_delivered("in the end", &acked, &sink, RESUMED_WITHIN, consumer).await;
    eprintln!(
        "{CYCLES} restarts of NATS: {} events acknowledged, {} requests refused, {} deliveries",
        acked.len(),
        refused.load(AtomicOrdering::Relaxed),
        sink.count()
    );
    drop(daemon);
}
