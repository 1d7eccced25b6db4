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

/// An event carrying `data` under `content_type`.
fn with_data(id: &str, content_type: Option<&str>, data: &[u8]) -> crate::event::Event {
    let mut event = event(id);
    event.datacontenttype = content_type.map(str::to_owned);
    event.data = Some(bytes::Bytes::copy_from_slice(data));
    event
}

/// The event in CloudEvents 0.3.
fn v03(mut event: crate::event::Event) -> crate::event::Event {
    event.specversion = "0.3".into();
    event
}

/// JSON `data` nested `depth` deep, pretty-printed over many lines.
fn nested_pretty(depth: usize) -> Vec<u8> {
    let mut value = serde_json::json!({"leaf": "x\ny", "n": [1, 2, 3]});
    for level in 0..depth {
        value = serde_json::json!({ format!("k{level}"): value, "pad": "z".repeat(200) });
    }
    serde_json::to_vec_pretty(&value).unwrap()
}

#[tokio::test]
async fn every_event_is_one_line_whatever_its_data() {
    let forged = b"{\"a\":\n{\"forged\":1}\n,\r\n\"b\":2}".as_slice();
    let pretty = serde_json::to_vec_pretty(&serde_json::json!({"x": [1, {"y": "z"}]})).unwrap();
    let events = vec![
        with_data("pretty", Some("application/json"), &pretty),
        with_data("forged-ws", None, forged),
        with_data(
            "in-string",
            Some("application/json"),
            br#"{"s":"\n{\"forged\":1}\n"}"#,
        ),
        with_data("text", Some("text/plain"), b"line\n{\"forged\":1}\r\n"),
        with_data(
            "binary",
            Some("application/octet-stream"),
            b"\x00\n{\"forged\":1}\n\xff",
        ),
        with_data("bad-utf8", Some("application/json"), b"\"\xff\n\""),
        with_data("bad-json", Some("application/json"), b"{\n\"forged\":1}\n}"),
        with_data("huge", Some("application/json"), &nested_pretty(100)),
        with_data("lone", None, br#"{"s":"\ud800\n\\ud800 \uD83D\uDE00"}"#),
        v03(with_data("lone-0.3", None, b"[\"\\uDC00\",\n1]")),
        with_data("pair", None, br#"{"s":"\\ud800 \uD83D\uDE00"}"#),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let sink = FileSink::new(path.clone());
    let attempts: Vec<_> = events.iter().map(attempt).collect();
    sink.deliver_batch(&attempts[..4]).await.unwrap();
    for one in &attempts[4..7] {
        sink.deliver(*one).await.unwrap();
    }
    // Lines that fall back to Base64 in the middle of a batch leave the lines around them.
    sink.deliver_batch(&attempts[7..]).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len(), "{text}");
    // A lone surrogate escape sends the data as Base64; a valid pair keeps it embedded.
    let data_member = |id: &str| {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("\"id\":\"{id}\"")))
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        let names = ["data", "data_base64", "datacontentencoding"];
        names.map(|name| json.get(name).is_some())
    };
    assert_eq!(data_member("lone"), [false, true, false]);
    assert_eq!(data_member("lone-0.3"), [true, false, true]);
    assert_eq!(data_member("pair"), [true, false, false]);
    for (line, sent) in lines.iter().zip(&events) {
        serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        let read = crate::event::http::decode_structured(line.as_bytes()).unwrap();
        assert_same_event(&read, sent);
    }
}

/// Equal events, JSON data compared as JSON values (whitespace aside), other data by bytes.
fn assert_same_event(read: &crate::event::Event, sent: &crate::event::Event) {
    let data = |e: &crate::event::Event| e.data.clone().unwrap_or_default();
    let as_json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).ok();
    match (as_json(&data(read)), as_json(&data(sent))) {
        (Some(a), Some(b)) if sent.data_is_json() => assert_eq!(a, b, "{}", sent.id),
        _ => assert_eq!(data(read), data(sent), "{}", sent.id),
    }
    let without_data = |e: &crate::event::Event| crate::event::Event {
        data: None,
        data_version: None,
        ..e.clone()
    };
    assert_eq!(without_data(read), without_data(sent));
}

/// `base` with a few bytes replaced or inserted, drawn mostly from JSON's special bytes.
fn mutated(base: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\n\r\t \"\\u{}[],:dD8F0a\x00\x1b\xff\xc3";
    let mut body = base.to_vec();
    for _ in 0..rng.usize(1..4) {
        let byte = if rng.bool() {
            SPECIAL[rng.usize(..SPECIAL.len())]
        } else {
            rng.u8(..)
        };
        let at = rng.usize(..body.len());
        if rng.bool() {
            body[at] = byte;
        } else {
            body.insert(at, byte);
        }
    }
    body
}

#[tokio::test]
async fn mutated_events_still_make_one_json_line_each() {
    let base = serde_json::to_vec_pretty(&serde_json::json!({
        "specversion": "1.0", "id": "m", "source": "/s", "type": "T",
        "datacontenttype": "application/json",
        "data": {"text": "a\nb \u{e9} \u{1f600}", "list": [1, 2.5, null, true], "nested": {"k": "\\u"}}
    }))
    .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let events: Vec<_> = (0..3000)
        .filter_map(|_| crate::event::http::decode_structured(&mutated(&base, &mut rng)).ok())
        .collect();
    assert!(
        events.len() > 100,
        "too few mutants decode: {}",
        events.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let attempts: Vec<_> = events.iter().map(attempt).collect();
    FileSink::new(path.clone())
        .deliver_batch(&attempts)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    for (line, sent) in lines.iter().zip(&events) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let read = crate::event::http::decode_structured(line.as_bytes()).unwrap();
        assert_same_event(&read, sent);
    }
}
