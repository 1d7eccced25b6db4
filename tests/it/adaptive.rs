//! `concurrency: adaptive`: the in-flight limit climbs while the target keeps its round trips,
//! stops near the point where a target starts to queue, and falls to its floor when the
//! target pushes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use tokio::time::Instant;

use crate::support::daemon::{event, TestApp};
use crate::support::{Respond, TestSink};

/// A target that takes `BASE` per request up to `KNEE` in flight, and `BASE × (n/KNEE)³`
/// with `n` in flight past it.
#[derive(Debug, Default)]
struct Knee {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    received: AtomicUsize,
    held_micros: AtomicU64,
}

const BASE: Duration = Duration::from_millis(20);
const KNEE: usize = 8;

async fn knee(State(sink): State<Arc<Knee>>) -> StatusCode {
    let n = sink.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    sink.most.fetch_max(n, Ordering::SeqCst);
    let hold = match n > KNEE {
        true => BASE.mul_f64((n as f64 / KNEE as f64).powi(3)),
        false => BASE,
    };
    tokio::time::sleep(hold).await;
    sink.in_flight.fetch_sub(1, Ordering::SeqCst);
    sink.held_micros
        .fetch_add(hold.as_micros() as u64, Ordering::SeqCst);
    sink.received.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

async fn start_knee() -> (Arc<Knee>, SocketAddr) {
    let sink = Arc::new(Knee::default());
    let app = Router::new().fallback(knee).with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (sink, addr)
}

fn config(url: &str, concurrency: &str) -> String {
    format!(
        r#"
spool: {{ backend: memory }}
sinks:
  target:
    http: {{ url: "{url}" }}
    concurrency: {concurrency}
    retry: {{ schedule: [50ms], max_attempts: 100 }}
routes: [{{ name: all, to: [target] }}]
"#
    )
}

/// The sink's `concurrency_limit` as the admin API shows it, once its worker has started.
async fn limit(app: &TestApp) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sinks = app.admin_get("/api/v1/sinks", None).await.json();
        let limit = sinks["sinks"][0]["concurrency_limit"]
            .as_u64()
            .unwrap_or_else(|| panic!("no concurrency_limit in {sinks}"));
        if limit > 0 || Instant::now() > deadline {
            return limit;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn send(app: &TestApp, prefix: &str, n: usize) {
    for chunk in 0..n.div_ceil(100) {
        let events = (0..100.min(n - chunk * 100))
            .map(|i| event(&format!("{prefix}-{chunk}-{i}"), "T"))
            .collect();
        app.send_batch(events).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_settles_near_where_the_target_starts_to_queue() {
    let (sink, addr) = start_knee().await;
    let app = TestApp::start(&config(&format!("http://{addr}/"), "{ min: 1, max: 64 }")).await;
    assert_eq!(
        limit(&app).await,
        1,
        "an adaptive limit starts at its minimum"
    );
    let events = 1500;
    send(&app, "k", events).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while sink.received.load(Ordering::SeqCst) < events {
        assert!(
            Instant::now() < deadline,
            "{} of {events} delivered in 60 s; limits seen {seen:?}",
            sink.received.load(Ordering::SeqCst)
        );
        seen.push(limit(&app).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mean_hold = sink.held_micros.load(Ordering::SeqCst) as f64 / events as f64 / 1000.0;
    let base = BASE.as_secs_f64() * 1000.0;
    let grown = seen.iter().copied().max().unwrap_or(0);
    // From 1, it climbs to the knee's neighbourhood: well past the floor…
    assert!(
        grown >= (KNEE as u64) / 2,
        "the limit never grew past {grown}; limits seen {seen:?}"
    );
    // …and does not sit far past it: the target's mean time per request stays near its
    // unloaded time (past the knee it grows with the cube of what is in flight).
    assert!(
        mean_hold <= 2.5 * base,
        "mean time at the target {mean_hold:.1} ms against {base} ms unloaded; most in flight {}; limits seen {seen:?}",
        sink.most.load(Ordering::SeqCst)
    );
    let metrics = app.admin_get("/metrics", None).await.text();
    assert!(
        metrics.contains("switchyard_sink_concurrency_limit{sink=\"target\"}"),
        "the limit is exported"
    );
    eprintln!(
        "adaptive against a knee at {KNEE}: mean time at the target {mean_hold:.1} ms ({base} ms unloaded), most in flight {}, limits seen {seen:?}",
        sink.most.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_back_brings_an_adaptive_limit_down_to_its_floor() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200).delay(Duration::from_millis(10)));
    let app = TestApp::start(&config(&sink.url(), "{ min: 2, max: 32 }")).await;
    send(&app, "up", 3000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while limit(&app).await < 12 {
        assert!(
            Instant::now() < deadline,
            "a fast target with a backlog did not raise the limit to 12 in 30 s (now {}, {} received)",
            limit(&app).await,
            sink.count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sink.set_default(Respond::status(503).delay(Duration::from_millis(10)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while limit(&app).await > 2 {
        assert!(
            Instant::now() < deadline,
            "503s did not bring the limit down to 2 in 30 s (now {})",
            limit(&app).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At the floor it stays, and the requests in flight follow it.
    let before = sink.count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(limit(&app).await, 2);
    assert!(sink.count() > before, "attempts go on at the floor");
    let sinks = app.admin_get("/api/v1/sinks", None).await.json();
    assert_eq!(sinks["sinks"][0]["adaptive"]["min"], 2);
    assert_eq!(sinks["sinks"][0]["adaptive"]["max"], 32);
}

#[tokio::test]
async fn a_fixed_limit_is_reported_as_it_is() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&config(&sink.url(), "7")).await;
    assert_eq!(limit(&app).await, 7);
    let sinks = app.admin_get("/api/v1/sinks", None).await.json();
    assert!(sinks["sinks"][0]["adaptive"].is_null());
}
