//! Sagas on the JetStream spool (a real NATS server; see `support::nats_server`): instances
//! kept in the spool's KV bucket, three steps completing, a failed third step compensating
//! the second then the first, and two daemons sharing one spool where one is killed with
//! SIGKILL in the middle of a second step and the other finishes every instance.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::sagas::{admin, assert_compensation, cli, order, reply, Services, THREE_STEPS, WAIT};
use crate::support::daemon::event;
use crate::support::nats::{jetstream, unique, url, Streams};
use crate::support::process::{free_port, Daemon};
use crate::support::sink::Received;
use crate::support::{post, wait_until, Respond, TestApp, TestSink, HEAVY};

/// Long enough for a delivery of the killed daemon to be redelivered (`ack_wait`) and a
/// transition it left half done to be found stranded and stored by the survivor.
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);

/// An in-process daemon on the nats spool `stream` with the `order` saga of [`Services`].
async fn on_nats(stream: &str, services: &Services) -> TestApp {
    TestApp::start(&format!(
        "spool: {{ backend: nats, nats: {{ url: \"{}\", stream: {stream}, ack_wait: 1s }} }}\n{}",
        url(),
        services.yaml("1h")
    ))
    .await
}

/// The stored record of instance `id` in the saga bucket of `stream`.
async fn stored(stream: &str, id: &str) -> Value {
    let bucket = jetstream()
        .await
        .get_key_value(format!("{stream}-sagas"))
        .await
        .expect("the saga bucket exists");
    let value = bucket.get(id).await.expect("read").expect("a record");
    serde_json::from_slice(&value).expect("a JSON record")
}

#[tokio::test]
async fn three_steps_complete_with_the_instance_kept_in_jetstream() {
    let stream = unique("sy-it-saga");
    let _streams = Streams::spool_and_sagas(&stream);
    let services = Services::start().await;
    let app = on_nats(&stream, &services).await;

    assert_eq!(app.send(order("n-1")).await.status, StatusCode::ACCEPTED);

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.completed");
    assert_eq!(data["trigger"], "n-1");
    assert_eq!(data["output"]["id"], "r-charge");
    let id = data["instance"].as_str().expect("instance id").to_owned();
    let charge = &services.payments.received()[0];
    assert_eq!(charge.header("ce-id"), Some("r-reserve"));
    assert_eq!(charge.header("ce-switchyardsaga"), Some(id.as_str()));
    let ship = &services.shipping.received()[0];
    assert_eq!(ship.header("ce-id"), Some("r-charge"));
    assert_eq!(services.release.count() + services.refund.count(), 0);

    let record = stored(&stream, &id).await;
    assert_eq!(record["state"], "completed", "{record}");
    assert_eq!(
        record["steps"].as_array().map(Vec::len),
        Some(3),
        "{record}"
    );

    let (status, shown) = admin(&app.admin, Method::GET, &format!("/api/v1/sagas/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "completed");
    let steps = shown["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["reserve", "charge", "ship"]);
    assert!(steps
        .iter()
        .all(|s| s["outcome"] == "delivered" && s["attempts"] == 1));
    assert_eq!(steps[0]["reply_id"], "r-reserve");

    let (code, out) = cli(&["sagas", "list", "--admin", &app.admin, "-o", "json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["sagas"][0]["id"], id.as_str());
    assert_eq!(listed["sagas"][0]["state"], "completed");
    let (code, out) = cli(&["sagas", "show", &id, "--admin", &app.admin]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("ship") && out.contains("completed"), "{out}");
    let (status, _) = admin(
        &app.admin,
        Method::POST,
        &format!("/api/v1/sagas/{id}/abort"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let metrics = app.admin_get("/metrics", None).await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("switchyard_sagas_total") && l.contains(r#"outcome="completed""#)
        ),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_saga_step_duration_seconds_bucket"));
    assert!(
        metrics.contains("switchyard_sagas_active{saga=\"order\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_dead_lettered_third_step_compensates_the_second_then_the_first() {
    let stream = unique("sy-it-saga");
    let _streams = Streams::spool_and_sagas(&stream);
    let services = Services::start().await;
    services.shipping.set_default(Respond::status(400));
    let app = on_nats(&stream, &services).await;

    app.send(order("n-2")).await;

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.compensated");
    assert!(
        data["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("`ship`"),
        "{data}"
    );
    assert_eq!(services.refund.count(), 1);
    assert_eq!(services.release.count(), 1);
    let (refund, release) = (
        &services.refund.received()[0],
        &services.release.received()[0],
    );
    assert!(
        refund.at <= release.at,
        "the charge is undone before the reservation"
    );
    assert_compensation(refund, "charge", "r-reserve", "r-charge");
    assert_compensation(release, "reserve", "n-2", "r-reserve");

    let id = data["instance"].as_str().expect("id");
    let (_, shown) = admin(&app.admin, Method::GET, &format!("/api/v1/sagas/{id}")).await;
    let steps: Vec<(&str, &str, &str)> = shown["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default();
            (text("name"), text("kind"), text("outcome"))
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("reserve", "step", "delivered"),
            ("charge", "step", "delivered"),
            ("ship", "step", "dead-lettered"),
            ("charge", "compensation", "delivered"),
            ("reserve", "compensation", "delivered"),
        ],
        "{shown}"
    );
    let (_, list) = admin(&app.admin, Method::GET, "/api/v1/sagas?state=compensated").await;
    assert_eq!(list["sagas"][0]["id"], id, "{list}");
}

#[tokio::test]
async fn a_deadline_passing_mid_step_compensates_on_nats() {
    let stream = unique("sy-it-saga");
    let _streams = Streams::spool_and_sagas(&stream);
    let services = Services::start().await;
    services.payments.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        "spool: {{ backend: nats, nats: {{ url: \"{}\", stream: {stream}, ack_wait: 1s }} }}\n{}",
        url(),
        services.yaml("2s")
    ))
    .await;

    app.send(order("n-3")).await;

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.compensated");
    assert_eq!(data["reason"], "deadline passed");
    assert_eq!(services.release.count(), 1, "the reservation is undone");
    assert_eq!(services.refund.count(), 0, "the charge never succeeded");
    let id = data["instance"].as_str().expect("id");
    let (_, shown) = admin(&app.admin, Method::GET, &format!("/api/v1/sagas/{id}")).await;
    assert_eq!(shown["steps"][1]["outcome"], "cancelled", "{shown}");
}

/// The sinks of the two-daemon test: [`Services`] and a shipping sink that refuses (400),
/// the last step of the `doomed` saga.
struct Shared {
    services: Services,
    broken: TestSink,
}

/// One daemon's configuration: every step's sink marks its requests with `x-daemon: n`.
fn daemon_config(dir: &Path, n: u8, ports: (u16, u16), stream: &str, s: &Shared) -> PathBuf {
    let sink = |t: &TestSink| {
        format!(
            r#"{{ http: {{ url: "{}", headers: {{ x-daemon: "{n}" }} }}, retry: {{ max_attempts: 100, schedule: [100ms] }} }}"#,
            t.url()
        )
    };
    let v = &s.services;
    let yaml = format!(
        r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:{admin}
spool: {{ backend: nats, path: "{dir}/spool-{n}", nats: {{ url: "{nats}", stream: {stream}, ack_wait: 1s }} }}
sinks:
  inventory: {inventory}
  payments: {payments}
  shipping: {shipping}
  shipping-broken: {broken}
  inventory-release: {release}
  payments-refund: {refund}
  outcomes: {{ http: {{ url: "{outcomes}" }} }}
routes:
  - {{ name: outcomes, match: {{ types: ["switchyard.saga.*"] }}, to: [outcomes] }}
sagas:
  - name: order
    match: {{ types: ["Contoso.Orders.Created"] }}
    timeout: 1h
    steps:
{THREE_STEPS}
  - name: doomed
    match: {{ types: ["Contoso.Orders.Doomed"] }}
    timeout: 1h
    steps:
      - {{ name: reserve, to: inventory, compensate: inventory-release }}
      - {{ name: charge, to: payments, compensate: payments-refund }}
      - {{ name: ship, to: shipping-broken }}
"#,
        port = ports.0,
        admin = ports.1,
        dir = dir.display(),
        nats = url(),
        inventory = sink(&v.inventory),
        payments = sink(&v.payments),
        shipping = sink(&v.shipping),
        broken = sink(&s.broken),
        release = sink(&v.release),
        refund = sink(&v.refund),
        outcomes = v.outcomes.url(),
    );
    let path = dir.join(format!("daemon-{n}.yaml"));
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// The requests `sink` received for instance `id`.
fn of(sink: &TestSink, id: &str) -> Vec<Received> {
    let all = sink.received();
    let mine = all
        .into_iter()
        .filter(|r| r.header("ce-switchyardsaga") == Some(id));
    mine.collect()
}

/// Instance id → outcome type, of every outcome event received so far.
fn outcomes(sink: &TestSink) -> BTreeMap<String, String> {
    let received = sink.received();
    let pairs = received.iter().map(|r| {
        let id = r.json()["instance"].as_str().unwrap_or_default().to_owned();
        (id, r.header("ce-type").unwrap_or_default().to_owned())
    });
    pairs.collect()
}

/// Asserts that instance `id` went through its steps in order, each at least once, and
/// shows the end state `state` with `expected` steps (name, kind, outcome).
fn assert_steps_in_order(s: &Shared, id: &str, doomed: bool) {
    let v = &s.services;
    let (reserve, charge) = (of(&v.inventory, id), of(&v.payments, id));
    let ship = of(if doomed { &s.broken } else { &v.shipping }, id);
    assert!(
        !reserve.is_empty() && !charge.is_empty() && !ship.is_empty(),
        "{id}: a step skipped"
    );
    assert!(
        reserve[0].at <= charge[0].at && charge[0].at <= ship[0].at,
        "{id}: out of order"
    );
    assert_eq!(charge[0].header("ce-id"), Some("r-reserve"), "{id}");
    assert_eq!(ship[0].header("ce-id"), Some("r-charge"), "{id}");
    if doomed {
        let (refund, release) = (of(&v.refund, id), of(&v.release, id));
        assert!(
            !refund.is_empty() && !release.is_empty(),
            "{id}: a compensation skipped"
        );
        assert!(
            ship[0].at <= refund[0].at && refund[0].at <= release[0].at,
            "{id}"
        );
        assert_compensation(&refund[0], "charge", "r-reserve", "r-charge");
    } else {
        assert!(
            of(&v.refund, id).is_empty() && of(&v.release, id).is_empty(),
            "{id}"
        );
    }
}

#[tokio::test]
async fn two_daemons_share_sagas_and_the_survivor_of_a_kill_finishes_them() {
    let _heavy = HEAVY.lock().await;
    let stream = unique("sy-it-saga2");
    let _streams = Streams::spool_and_sagas(&stream);
    let shared = Shared {
        services: Services::start().await,
        broken: TestSink::start().await,
    };
    shared.broken.set_default(Respond::status(400));
    // The first charge, whichever instance and daemon it comes from, is held until its
    // daemon is killed.
    let held = reply("r-charge", "Contoso.Payments.Charged").delay(Duration::from_secs(120));
    shared.services.payments.script([held]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let configs =
        [1, 2].map(|n| daemon_config(dir.path(), n, ports[usize::from(n - 1)], &stream, &shared));
    let mut daemons = vec![
        Daemon::start(&configs[0], ports[0].0).await,
        Daemon::start(&configs[1], ports[1].0).await,
    ];

    let mut kinds = HashMap::new();
    for i in 0..8 {
        let (id, ty) = match i % 2 {
            0 => (format!("k-{i}"), "Contoso.Orders.Created"),
            _ => (format!("d-{i}"), "Contoso.Orders.Doomed"),
        };
        let port = ports[i % 2].0;
        let sent = post(
            &format!("http://127.0.0.1:{port}/events"),
            &[("content-type", "application/cloudevents+json")],
            event(&id, ty).to_string(),
        )
        .await;
        assert_eq!(sent.status, StatusCode::ACCEPTED);
        kinds.insert(id, ty);
    }
    let payments = &shared.services.payments;
    wait_until("a charge is in flight", WAIT, || payments.count() >= 1).await;
    let first = payments.received()[0].clone();
    let victim = first.header("x-daemon").expect("marked").to_owned();
    let held_id = first
        .header("ce-switchyardsaga")
        .expect("an instance")
        .to_owned();
    let (killed, survivor) = match victim.as_str() {
        "1" => (0, 1),
        _ => (1, 0),
    };
    daemons[killed].kill9();

    let outcomes_sink = &shared.services.outcomes;
    wait_until("every instance ends", TAKEOVER_WAIT, || {
        outcomes(outcomes_sink).len() == 8
    })
    .await;
    let ended = outcomes(outcomes_sink);
    let admin_url = format!("http://127.0.0.1:{}", ports[survivor].1);
    for (id, ty) in &ended {
        let (status, shown) = admin(&admin_url, Method::GET, &format!("/api/v1/sagas/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        let trigger = shown["trigger"].as_str().expect("trigger");
        let doomed = kinds.get(trigger) == Some(&"Contoso.Orders.Doomed");
        let (state, expected) = match doomed {
            true => ("compensated", "switchyard.saga.compensated"),
            false => ("completed", "switchyard.saga.completed"),
        };
        assert_eq!(ty, expected, "{shown}");
        assert_eq!(shown["state"], state, "{shown}");
        let steps = shown["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), if doomed { 5 } else { 3 }, "{shown}");
        assert_steps_in_order(&shared, id, doomed);
    }
    let mut sorted: Vec<String> = {
        let (_, list) = admin(&admin_url, Method::GET, "/api/v1/sagas?limit=1000").await;
        let sagas = list["sagas"].as_array().expect("a list").clone();
        sagas
            .iter()
            .map(|s| s["trigger"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    sorted.sort();
    let mut expected: Vec<String> = kinds.keys().cloned().collect();
    expected.sort();
    assert_eq!(sorted, expected, "one instance per order");

    // The held charge went again, from the survivor, after the kill.
    let charges = of(payments, &held_id);
    assert!(charges.len() >= 2, "the held charge is delivered again");
    let survivor_mark = (survivor + 1).to_string();
    assert!(
        charges[1..]
            .iter()
            .any(|r| r.header("x-daemon") == Some(survivor_mark.as_str())),
        "the survivor delivers it"
    );
    drop(daemons);
}

/// The record a daemon leaves when it dies between recording a transition and storing the
/// delivery it asked for: instance `id` of the `order` saga, its reservation done, the
/// charge recorded and pending since `pending_at` (ms), but not in the queue.
fn stranded_record(id: &str, now_ms: i64, pending_at: i64) -> Value {
    let charge = serde_json::json!({
        "specversion": "1.0", "id": "r-reserve", "source": "/services",
        "type": "Contoso.Inventory.Reserved", "datacontenttype": "application/json",
        "switchyardsaga": id, "switchyardsagastep": "charge", "data": {"ref": "r-reserve"}
    });
    let reserve = serde_json::json!({
        "specversion": "1.0", "id": "o-stranded", "source": "/test",
        "type": "Contoso.Orders.Created", "switchyardsaga": id, "switchyardsagastep": "reserve"
    });
    let step = |idx: u32, name: &str, sink: &str, input: &Value, done: bool| {
        serde_json::json!({
            "compensation": false, "idx": idx, "name": name, "sink": sink,
            "input": input.to_string(), "reply": done.then(|| charge.to_string()),
            "reply_id": done.then_some("r-reserve"), "started": now_ms,
            "finished": done.then_some(now_ms), "attempts": u32::from(done), "status": null,
            "outcome": done.then_some("delivered"), "detail": null
        })
    };
    let definition = |name: &str, to: &str, compensate: Option<&str>| serde_json::json!({"name": name, "to": to, "compensate": compensate});
    serde_json::json!({
        "id": id, "state": "running", "cursor": 1, "trigger": "o-stranded", "reason": null,
        "failed": [], "seq": 2,
        "pending": {"puts": [["payments", charge.to_string()]], "finished": null},
        "def": {"name": "order", "timeout_ms": 3_600_000, "steps": [
            definition("reserve", "inventory", Some("inventory-release")),
            definition("charge", "payments", Some("payments-refund")),
            definition("ship", "shipping", None),
        ]},
        "order": now_ms * 1000, "started": now_ms, "deadline": now_ms + 3_600_000,
        "finished": null, "pending_at": pending_at,
        "steps": [
            step(0, "reserve", "inventory", &reserve, true),
            step(1, "charge", "payments", &charge, false),
        ]
    })
}

#[tokio::test]
async fn a_transition_left_pending_by_a_dead_daemon_is_stored_by_another() {
    let stream = unique("sy-it-saga");
    let _streams = Streams::spool_and_sagas(&stream);
    let services = Services::start().await;
    let app = on_nats(&stream, &services).await;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_millis(),
    )
    .expect("in range");
    // A listing opens the saga store, which makes the bucket.
    let (status, _) = admin(&app.admin, Method::GET, "/api/v1/sagas").await;
    assert_eq!(status, StatusCode::OK);
    let bucket = jetstream()
        .await
        .get_key_value(format!("{stream}-sagas"))
        .await
        .expect("the daemon made the bucket");
    // Pending for a minute: longer than any live daemon takes to store it.
    let record = stranded_record("stranded1", now_ms - 60_000, now_ms - 60_000);
    bucket
        .create("stranded1", record.to_string().into())
        .await
        .expect("the record is written");

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.completed");
    assert_eq!(data["instance"], "stranded1");
    let charges = of(&services.payments, "stranded1");
    assert_eq!(charges.len(), 1, "the pending charge is stored once");
    assert_eq!(charges[0].header("ce-id"), Some("r-reserve"));
    assert_eq!(services.inventory.count(), 0, "the reservation was done");
    assert_eq!(of(&services.shipping, "stranded1").len(), 1);
    let (_, shown) = admin(&app.admin, Method::GET, "/api/v1/sagas/stranded1").await;
    assert_eq!(shown["state"], "completed", "{shown}");
    assert_eq!(shown["steps"][1]["outcome"], "delivered", "{shown}");
}
