use std::time::Duration;

use super::support::event;
use crate::config::ExecSinkConfig;
use crate::sinks::exec::ExecSink;
use crate::sinks::{Attempt, Sink, SinkError};

async fn run(script: &str, timeout: Duration) -> Result<(), SinkError> {
    let sink = ExecSink::new(ExecSinkConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
    });
    let event = event("ev-9");
    let attempt = Attempt {
        event: &event,
        route: "notify",
        delivery_count: 4,
    };
    sink.deliver(attempt).await
}

#[tokio::test]
async fn command_reads_the_event_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("event.json");
    let env = dir.path().join("env.txt");
    let script = format!(
        "cat > '{}'; echo \"$SWITCHYARD_ROUTE $SWITCHYARD_DELIVERY_COUNT $SWITCHYARD_EVENT_ID\" > '{}'",
        out.display(),
        env.display()
    );
    run(&script, Duration::from_secs(5)).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json["id"], "ev-9");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "notify 4 ev-9\n");
}

#[tokio::test]
async fn non_zero_exit_is_retryable_with_stderr() {
    let error = run("echo boom >&2; exit 3", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(error.retryable);
    assert_eq!(error.outcome, "GenericError");
    assert!(
        error.message.contains('3') && error.message.contains("boom"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn stderr_is_bounded_to_its_tail() {
    let script = "head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1";
    let error = run(script, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        error.message.ends_with("END"),
        "{}",
        &error.message[error.message.len() - 20..]
    );
    assert!(error.message.len() < 2048);
}

#[tokio::test]
async fn command_past_its_timeout_is_killed() {
    let started = tokio::time::Instant::now();
    let error = run("sleep 10", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!((error.retryable, error.outcome), (true, "TimedOut"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_program_is_retryable() {
    let sink = ExecSink::new(ExecSinkConfig {
        command: vec!["/nonexistent/switchyard-test".into()],
        timeout: Duration::from_secs(1),
    });
    let event = event("ev");
    let attempt = Attempt {
        event: &event,
        route: "r",
        delivery_count: 0,
    };
    assert!(sink.deliver(attempt).await.unwrap_err().retryable);
}
