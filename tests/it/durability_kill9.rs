//! Nothing acknowledged is lost: senders post while the daemon is SIGKILLed and restarted
//! again and again, with the sink down and then flapping; afterwards every event that got a
//! 2xx reaches the sink.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::support::client::try_post;
use crate::support::process::{embedded_config, free_port, Daemon};
use crate::support::{wait_until, Respond, TestSink};

const SENDERS: usize = 4;
const KILLS: usize = 5;

/// Posts events with unique ids until `stop`; records the ids that got a 2xx.
async fn sender(
    n: usize,
    url: String,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let stopped = stop.notified();
    tokio::pin!(stopped);
    for seq in 0.. {
        let id = format!("s{n}-{seq}");
        let body = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/kill9","type":"T","data":{{"seq":{seq}}}}}"#
        );
        let send = try_post(
            &url,
            &[("content-type", "application/cloudevents+json")],
            Bytes::from(body),
        );
        tokio::select! {
            () = &mut stopped => return,
            status = send => match status {
                Some(s) if s.is_success() => acked.lock().expect("acked").push(id),
                // Refused, reset, or 503 while the daemon restarts: not acknowledged.
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_repeated_sigkill() {
    let _heavy = crate::support::HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(503));
    let port = free_port();
    let config = embedded_config(
        dir.path(),
        &dir.path().join("spool"),
        port,
        &sink,
        "2s",
        &[
            "concurrency: 8",
            "retry: { schedule: [20ms, 50ms, 100ms], max_attempts: 100, event_ttl: 1h }",
        ],
    );
    let url = format!("http://127.0.0.1:{port}/events");

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut daemon = Daemon::start(&config, port).await;
    let senders: Vec<_> = (0..SENDERS)
        .map(|n| tokio::spawn(sender(n, url.clone(), acked.clone(), stop.clone())))
        .collect();

    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        if round == 2 {
            // From here the sink flaps: every other answer fails.
            sink.set_default(Respond::status(200));
            sink.script((0..2000).map(|i| Respond::status(if i % 2 == 0 { 500 } else { 200 })));
        }
        daemon.kill9();
        daemon = Daemon::start(&config, port).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_waiters();
    for s in senders {
        s.await.expect("sender task");
    }

    let acked: HashSet<String> = acked.lock().expect("acked").iter().cloned().collect();
    assert!(
        acked.len() >= 100,
        "too few events acknowledged to prove anything: {}",
        acked.len()
    );
    let delivered = || -> HashSet<String> {
        sink.received()
            .iter()
            .filter(|r| (200..=204).contains(&r.status))
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect()
    };
    wait_until(
        "every acknowledged event delivered",
        Duration::from_secs(60),
        || acked.is_subset(&delivered()),
    )
    .await;
    eprintln!(
        "acknowledged {}, sink requests {}",
        acked.len(),
        sink.count()
    );
    drop(daemon);
}

fn write_config(dir: &std::path::Path, port: u16, sink_yaml: &str) -> std::path::PathBuf {
    let path = dir.join("routes.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\nspool: {{ path: \"{d}/spool\" }}\n{sink_yaml}\nroutes: [{{ name: all, to: [hook] }}]\n",
        d = dir.display()
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

async fn send_one(port: u16, id: &str) {
    let body = format!(r#"{{"specversion":"1.0","id":"{id}","source":"/restart","type":"T"}}"#);
    let status = try_post(
        &format!("http://127.0.0.1:{port}/events"),
        &[("content-type", "application/cloudevents+json")],
        Bytes::from(body),
    )
    .await;
    assert!(status.is_some_and(|s| s.is_success()), "{status:?}");
}

#[tokio::test]
async fn a_restart_resumes_attempt_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let port = free_port();
    let sinks = format!(
        "sinks:\n  hook: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [150ms] }} }}",
        sink.url()
    );
    let config = write_config(dir.path(), port, &sinks);
    let mut daemon = Daemon::start(&config, port).await;
    send_one(port, "resume-1").await;
    wait_until("two attempts", Duration::from_secs(10), || {
        sink.count() >= 2
    })
    .await;
    daemon.kill9();
    let before = sink.count();
    let _daemon = Daemon::start(&config, port).await;
    wait_until(
        "an attempt after the restart",
        Duration::from_secs(10),
        || sink.count() > before,
    )
    .await;
    let after = &sink.received()[before];
    let count: u32 = after
        .header("aeg-delivery-count")
        .expect("count")
        .parse()
        .expect("number");
    assert!(
        count >= 1,
        "attempt count restarted from zero after a restart"
    );
}

#[tokio::test]
async fn the_ttl_still_applies_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let port = free_port();
    let sinks = format!(
        "sinks:\n  hook: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [300ms], event_ttl: 1s }}, dead_letter: dlq }}\n  dlq: {{ file: {{ path: \"{}/dead.jsonl\" }} }}",
        sink.url(),
        dir.path().display()
    );
    let config = write_config(dir.path(), port, &sinks);
    let mut daemon = Daemon::start(&config, port).await;
    send_one(port, "ttl-1").await;
    wait_until("first attempt", Duration::from_secs(10), || {
        sink.count() >= 1
    })
    .await;
    daemon.kill9();
    // Down for longer than the TTL: the next due attempt must not happen.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let attempts_before = sink.count();
    let _daemon = Daemon::start(&config, port).await;
    let dead = dir.path().join("dead.jsonl");
    wait_until("TTL dead letter", Duration::from_secs(10), || {
        std::fs::read_to_string(&dead).is_ok_and(|s| s.contains("TimeToLiveExceeded"))
    })
    .await;
    assert_eq!(sink.count(), attempts_before, "no attempt past the TTL");
}

#[test]
fn a_damaged_store_is_reported_by_name_and_the_daemon_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).expect("spool dir");
    std::fs::write(spool.join("spool.db"), b"SQLite format 3\0 truncated").expect("write");
    let config = write_config(dir.path(), free_port(), "sinks:\n  hook: { log: {} }");
    let out = std::process::Command::new(crate::support::process::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on a damaged store: {stderr}"
    );
    assert!(stderr.contains("spool.db"), "the file is named: {stderr}");
}

/// Acks of a group that holds nothing else wait for a later commit; a graceful stop writes
/// them, so nothing delivered before it is delivered again after the restart.
#[tokio::test]
async fn a_graceful_stop_writes_the_acks_that_waited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200));
    let port = free_port();
    let sinks = format!("sinks:\n  hook: {{ http: {{ url: \"{}\" }} }}", sink.url());
    let config = write_config(dir.path(), port, &sinks);
    let mut daemon = Daemon::start(&config, port).await;
    for n in 0..5 {
        send_one(port, &format!("stop-{n}")).await;
    }
    wait_until("five deliveries", Duration::from_secs(10), || {
        sink.count() >= 5
    })
    .await;
    daemon.terminate();
    let _daemon = Daemon::start(&config, port).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.count(), 5, "delivered again after a graceful restart");
}
