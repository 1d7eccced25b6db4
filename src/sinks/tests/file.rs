use std::sync::Arc;

use super::support::event;
use crate::sinks::file::FileSink;
use crate::sinks::{Attempt, Sink};

fn attempt(event: &crate::event::Event) -> Attempt<'_> {
    Attempt {
        event,
        route: "audit",
        delivery_count: 0,
    }
}

#[tokio::test]
async fn creates_the_file_and_its_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/events.jsonl");
    let sink = FileSink::new(path.clone());
    sink.deliver(attempt(&event("one"))).await.unwrap();
    sink.deliver(attempt(&event("two"))).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.ends_with('\n'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_write_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let sink = Arc::new(FileSink::new(path.clone()));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move {
                let event = event(&format!("ev-{i}"));
                sink.deliver(attempt(&event)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let mut ids: Vec<String> = text
        .lines()
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            json["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..50).map(|i| format!("ev-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn unwritable_path_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let sink = FileSink::new(blocker.join("below/events.jsonl"));
    let error = sink.deliver(attempt(&event("x"))).await.unwrap_err();
    assert!(error.retryable);
}
