use std::collections::BTreeMap;
use std::time::Duration;

use super::support::event;
use crate::config::ExecSinkConfig;
use crate::sinks::exec::ExecSink;
use crate::sinks::{Attempt, Sink, SinkError};

async fn run(script: &str, timeout: Duration) -> Result<(), SinkError> {
    run_event(script, timeout, &[], &event("ev-9")).await
}

/// Runs `sh -c script` for `event`, passing the variables `env` through.
async fn run_event(
    script: &str,
    timeout: Duration,
    env: &[&str],
    event: &crate::event::Event,
) -> Result<(), SinkError> {
    let sink = ExecSink::new(ExecSinkConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
        env: env.iter().map(|name| (*name).to_owned()).collect(),
    });
    let attempt = Attempt {
        event,
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
        env: Vec::new(),
    });
    let event = event("ev");
    let attempt = Attempt {
        event: &event,
        route: "r",
        delivery_count: 0,
    };
    assert!(sink.deliver(attempt).await.unwrap_err().retryable);
}

/// The variables a process saw, written by `env` (dash adds `PWD` itself).
fn seen_env(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| *name != "PWD")
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_process_gets_only_the_passed_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env.txt");
    let script = format!("exec env > '{}'", out.display());
    // Cargo runs tests with CARGO_* variables set; only the named one may reach the process.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let passed = ["PATH", "CARGO_PKG_NAME", "SWITCHYARD_UNSET_IN_TESTS"];
    run_event(&script, Duration::from_secs(5), &passed, &event("ev-9"))
        .await
        .unwrap();

    let mut expected: BTreeMap<String, String> = passed
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), std::env::var(name).ok()?)))
        .collect();
    expected.extend([
        ("SWITCHYARD_ROUTE".to_owned(), "notify".to_owned()),
        ("SWITCHYARD_DELIVERY_COUNT".to_owned(), "4".to_owned()),
        ("SWITCHYARD_EVENT_ID".to_owned(), "ev-9".to_owned()),
    ]);
    assert!(expected.contains_key("CARGO_PKG_NAME"));
    assert_eq!(seen_env(&out), expected);
}

#[tokio::test]
async fn an_empty_env_list_passes_only_the_event_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env.txt");
    let script = format!("/usr/bin/env > '{}'", out.display());
    run_event(&script, Duration::from_secs(5), &[], &event("ev-9"))
        .await
        .unwrap();
    let names: Vec<String> = seen_env(&out).into_keys().collect();
    assert_eq!(
        names,
        [
            "SWITCHYARD_DELIVERY_COUNT",
            "SWITCHYARD_EVENT_ID",
            "SWITCHYARD_ROUTE"
        ]
    );
}

#[tokio::test]
async fn an_event_id_with_a_nul_byte_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = format!("touch '{}'", ran.display());
    let error = run_event(&script, Duration::from_secs(5), &[], &event("a\0b"))
        .await
        .unwrap_err();
    assert_eq!((error.retryable, error.outcome), (false, "InvalidInput"));
    assert!(error.message.contains("NUL"), "{}", error.message);
    assert!(!ran.exists());
}
