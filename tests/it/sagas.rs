//! Sagas: steps delivered in order, each receiving the previous step's reply; compensations
//! in reverse order on a dead-lettered step, a passed deadline or an abort; the outcome
//! events; the admin API and CLI; and kill -9 in the middle of a step and of a compensation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon};
use crate::support::{request, wait_until, Respond, TestApp, TestSink, HEAVY};

pub(crate) const WAIT: Duration = Duration::from_secs(15);
const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A 200 that carries a binary-mode CloudEvent.
pub(crate) fn reply(id: &str, ty: &str) -> Respond {
    Respond::status(200)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/services")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body(format!(r#"{{"ref":"{id}"}}"#))
}

/// The `order` saga's steps.
pub(crate) const THREE_STEPS: &str =
    "      - { name: reserve, to: inventory, compensate: inventory-release }
      - { name: charge, to: payments, compensate: payments-refund }
      - { name: ship, to: shipping }";

/// The sinks of the `order` saga, and one for its outcome events.
pub(crate) struct Services {
    pub(crate) inventory: TestSink,
    pub(crate) payments: TestSink,
    pub(crate) shipping: TestSink,
    pub(crate) release: TestSink,
    pub(crate) refund: TestSink,
    pub(crate) outcomes: TestSink,
}

impl Services {
    /// Inventory and payments reply with events; shipping answers 200 without one.
    pub(crate) async fn start() -> Self {
        let services = Self {
            inventory: TestSink::start().await,
            payments: TestSink::start().await,
            shipping: TestSink::start().await,
            release: TestSink::start().await,
            refund: TestSink::start().await,
            outcomes: TestSink::start().await,
        };
        services
            .inventory
            .set_default(reply("r-reserve", "Contoso.Inventory.Reserved"));
        services
            .payments
            .set_default(reply("r-charge", "Contoso.Payments.Charged"));
        services
    }

    /// The configuration: three steps, two of which have compensations; every sink retries
    /// fast.
    pub(crate) fn yaml(&self, timeout: &str) -> String {
        self.yaml_with(timeout, THREE_STEPS)
    }

    /// The configuration with other steps.
    pub(crate) fn yaml_with(&self, timeout: &str, steps: &str) -> String {
        let sink = |s: &TestSink| {
            format!(
                r#"{{ http: {{ url: "{}" }}, retry: {{ max_attempts: 100, schedule: [100ms] }} }}"#,
                s.url()
            )
        };
        format!(
            r#"
sinks:
  inventory: {}
  payments: {}
  shipping: {}
  inventory-release: {}
  payments-refund: {}
  outcomes: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: outcomes, match: {{ types: ["switchyard.saga.*"] }}, to: [outcomes] }}
sagas:
  - name: order
    match: {{ types: ["Contoso.Orders.Created"] }}
    timeout: {timeout}
    steps:
{steps}
"#,
            sink(&self.inventory),
            sink(&self.payments),
            sink(&self.shipping),
            sink(&self.release),
            sink(&self.refund),
            self.outcomes.url(),
        )
    }

    /// Waits for the first outcome event and returns its type and data.
    pub(crate) async fn outcome(&self) -> (String, Value) {
        wait_until("the saga ends", WAIT, || self.outcomes.count() >= 1).await;
        let got = &self.outcomes.received()[0];
        let ty = got.header("ce-type").unwrap_or_default().to_owned();
        (ty, got.json())
    }
}

pub(crate) async fn admin(app_admin: &str, method: Method, path: &str) -> (StatusCode, Value) {
    let reply = request(method, &format!("{app_admin}{path}"), &[], "").await;
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, value)
}

pub(crate) fn order(id: &str) -> Value {
    event(id, "Contoso.Orders.Created")
}

#[tokio::test]
async fn three_steps_complete_each_receiving_the_previous_reply() {
    let services = Services::start().await;
    let app = TestApp::start(&services.yaml("1h")).await;

    let sent = app.send(order("o-1")).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED);

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.completed");
    assert_eq!(data["state"], "completed");
    assert_eq!(data["trigger"], "o-1");
    // Shipping replied nothing: the output is what it received, the charge's reply.
    assert_eq!(data["output"]["id"], "r-charge");
    let id = data["instance"].as_str().expect("instance id").to_owned();

    let reserve = &services.inventory.received()[0];
    assert_eq!(reserve.header("ce-id"), Some("o-1"));
    assert_eq!(reserve.header("ce-switchyardsaga"), Some(id.as_str()));
    assert_eq!(reserve.header("ce-switchyardsagastep"), Some("reserve"));
    let charge = &services.payments.received()[0];
    assert_eq!(charge.header("ce-id"), Some("r-reserve"));
    assert_eq!(charge.header("ce-type"), Some("Contoso.Inventory.Reserved"));
    assert_eq!(charge.header("ce-switchyardsagastep"), Some("charge"));
    assert_eq!(charge.json(), serde_json::json!({"ref": "r-reserve"}));
    let ship = &services.shipping.received()[0];
    assert_eq!(ship.header("ce-id"), Some("r-charge"));
    assert_eq!(ship.header("ce-switchyardsagastep"), Some("ship"));
    assert_eq!(ship.header("ce-switchyardsaga"), Some(id.as_str()));
    assert_eq!(services.release.count() + services.refund.count(), 0);

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
    assert_eq!(steps[2]["reply_id"], Value::Null);

    let metrics = app.admin_get("/metrics", None).await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("switchyard_sagas_total") && l.contains(r#"outcome="completed""#)
        ),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_saga_step_duration_seconds_bucket"));
    assert!(metrics.contains("switchyard_sagas_active{saga=\"order\"}"));
}

/// Asserts a compensation event: what undoing `step` received, with its input and reply.
pub(crate) fn assert_compensation(
    got: &crate::support::sink::Received,
    step: &str,
    input: &str,
    reply: &str,
) {
    assert_eq!(got.header("ce-type"), Some("switchyard.saga.compensate"));
    assert_eq!(got.header("ce-switchyardcompensate"), Some("true"));
    assert_eq!(got.header("ce-switchyardsagastep"), Some(step));
    let data = got.json();
    assert_eq!(data["step"], step);
    assert_eq!(data["input"]["id"], input, "{data}");
    assert_eq!(data["input"]["switchyardsagastep"], step);
    assert_eq!(data["reply"]["id"], reply, "{data}");
    assert_eq!(data["reply"]["data"]["ref"], reply);
}

#[tokio::test]
async fn a_dead_lettered_third_step_compensates_the_second_then_the_first() {
    let services = Services::start().await;
    services.shipping.set_default(Respond::status(400));
    let app = TestApp::start(&services.yaml("1h")).await;

    app.send(order("o-2")).await;

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
    assert_compensation(release, "reserve", "o-2", "r-reserve");

    let id = data["instance"].as_str().expect("id");
    let (_, shown) = admin(&app.admin, Method::GET, &format!("/api/v1/sagas/{id}")).await;
    let kinds: Vec<(String, String)> = shown["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["name"].to_string(), s["kind"].to_string()))
        .collect();
    assert_eq!(kinds.len(), 5, "{shown}");
    assert_eq!(shown["steps"][2]["outcome"], "dead-lettered");
    assert_eq!(shown["steps"][3]["name"], "charge");
    assert_eq!(shown["steps"][3]["kind"], "compensation");
    assert_eq!(shown["steps"][4]["name"], "reserve");
}

#[tokio::test]
async fn a_deadline_passing_mid_step_compensates_the_steps_done() {
    let services = Services::start().await;
    services.payments.set_default(Respond::status(500));
    let app = TestApp::start(&services.yaml("1s")).await;

    app.send(order("o-3")).await;

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.compensated");
    assert_eq!(data["reason"], "deadline passed");
    assert_eq!(services.release.count(), 1, "the reservation is undone");
    assert_eq!(services.refund.count(), 0, "the charge never succeeded");
    assert_eq!(services.shipping.count(), 0);
    let id = data["instance"].as_str().expect("id");
    let (_, shown) = admin(&app.admin, Method::GET, &format!("/api/v1/sagas/{id}")).await;
    assert_eq!(shown["steps"][1]["name"], "charge");
    assert_eq!(shown["steps"][1]["outcome"], "cancelled");
    // The charge's retries stop: its delivery is dropped when it next comes up.
    wait_until("the charge leaves the spool", WAIT, || {
        app.running.spool_depth("payments") == 0
    })
    .await;
}

#[tokio::test]
async fn a_failing_compensation_ends_failed_and_the_others_still_run() {
    let services = Services::start().await;
    services.shipping.set_default(Respond::status(400));
    services.refund.set_default(Respond::status(400));
    let app = TestApp::start(&services.yaml("1h")).await;

    app.send(order("o-4")).await;

    let (ty, data) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.failed");
    assert_eq!(data["failed_compensations"], serde_json::json!(["charge"]));
    assert_eq!(
        services.release.count(),
        1,
        "the reservation is still released"
    );
    let (_, list) = admin(&app.admin, Method::GET, "/api/v1/sagas?state=failed").await;
    assert_eq!(list["sagas"][0]["failed_compensations"][0], "charge");
}

#[tokio::test]
async fn an_instance_in_flight_keeps_the_definition_it_started_with() {
    let services = Services::start().await;
    services.payments.set_default(Respond::status(500));
    let app = TestApp::start_file(&services.yaml("1h"), false).await;
    app.send(order("o-6")).await;
    wait_until("the charge is tried", WAIT, || {
        services.payments.count() >= 1
    })
    .await;

    // The new file drops the shipping step.
    let two_steps = "      - { name: reserve, to: inventory, compensate: inventory-release }
      - { name: charge, to: payments, compensate: payments-refund }";
    app.rewrite(&services.yaml_with("1h", two_steps));
    let (status, body) = admin(&app.admin, Method::POST, "/api/v1/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    services
        .payments
        .set_default(reply("r-charge", "Contoso.Payments.Charged"));

    let (ty, _) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.completed");
    assert_eq!(services.shipping.count(), 1, "the old instance still ships");
    app.send(order("o-7")).await;
    wait_until("the new instance ends", WAIT, || {
        services.outcomes.count() == 2
    })
    .await;
    assert_eq!(
        services.shipping.count(),
        1,
        "a new instance has no shipping step"
    );
}

#[tokio::test]
async fn steps_delivered_in_one_batch_advance_their_instances() {
    let services = Services::start().await;
    let plain = format!(
        "shipping: {{ http: {{ url: \"{}\" }},",
        services.shipping.url()
    );
    let batched = format!(
        "shipping: {{ http: {{ url: \"{}\" }}, batch: {{ max_events: 10, linger: 300ms }},",
        services.shipping.url()
    );
    let yaml = services.yaml("1h").replacen(&plain, &batched, 1);
    assert_ne!(yaml, services.yaml("1h"));
    let app = TestApp::start(&yaml).await;

    app.send_batch((0..4).map(|i| order(&format!("b-{i}"))).collect())
        .await;

    wait_until("every instance ends", WAIT, || {
        services.outcomes.count() == 4
    })
    .await;
    let completed = services
        .outcomes
        .count_matching(|r| r.header("ce-type") == Some("switchyard.saga.completed"));
    assert_eq!(completed, 4);
    assert!(
        services.shipping.count() < 4,
        "some shipments went out together"
    );
}

/// Runs the binary; returns (exit code, stdout).
pub(crate) async fn cli(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_URL")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .await
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn instances_are_listed_shown_and_aborted_through_the_api_and_the_cli() {
    let services = Services::start().await;
    services.payments.set_default(Respond::status(500));
    let app = TestApp::start(&services.yaml("1h")).await;
    app.send(order("o-5")).await;
    wait_until("the charge is tried", WAIT, || {
        services.payments.count() >= 1
    })
    .await;

    let (status, list) = admin(
        &app.admin,
        Method::GET,
        "/api/v1/sagas?name=order&state=running",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let id = list["sagas"][0]["id"]
        .as_str()
        .expect("one running")
        .to_owned();
    assert_eq!(list["sagas"][0]["step"], "charge");
    assert_eq!(list["next"], Value::Null);
    let (status, _) = admin(&app.admin, Method::GET, "/api/v1/sagas?state=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = admin(&app.admin, Method::GET, "/api/v1/sagas/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let url = app.admin.clone();
    let (code, out) = cli(&["sagas", "list", "--admin", &url, "-o", "json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["sagas"][0]["id"], id.as_str());
    let (code, out) = cli(&["sagas", "show", &id, "--admin", &url]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("reserve") && out.contains("charge") && out.contains("running"),
        "{out}"
    );

    let (code, out) = cli(&["sagas", "abort", &id, "--admin", &url, "-o", "json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let aborted: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(aborted["reason"], "aborted");
    let (ty, _) = services.outcome().await;
    assert_eq!(ty, "switchyard.saga.compensated");
    assert_eq!(services.release.count(), 1);
    let (status, _) = admin(
        &app.admin,
        Method::POST,
        &format!("/api/v1/sagas/{id}/abort"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (code, _) = cli(&["sagas", "abort", &id, "--admin", &url]).await;
    assert_eq!(code, Some(1));
}

/// Writes the configuration for a daemon child: fixed ports, the spool in `dir`.
fn child_config(dir: &Path, services: &Services, port: u16, admin: u16) -> PathBuf {
    let text = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nspool: {{ path: \"{}\" }}\n{}",
        dir.join("spool").display(),
        services.yaml("1h")
    );
    let path = dir.join("routes.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts a child daemon, sends one order, waits for `reached`, kills it with SIGKILL,
/// starts it again and waits for the outcome; returns the instance as the API shows it.
async fn kill_while(services: &Services, reached: impl Fn() -> bool) -> Value {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, admin_port) = (free_port(), free_port());
    let config = child_config(dir.path(), services, port, admin_port);
    let mut daemon = Daemon::start(&config, port).await;
    let sent = crate::support::post(
        &format!("http://127.0.0.1:{port}/events"),
        &[("content-type", "application/cloudevents+json")],
        order("o-kill").to_string(),
    )
    .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED);
    wait_until("the step under test is in flight", WAIT, &reached).await;
    daemon.kill9();

    let _daemon = Daemon::start(&config, port).await;
    let (_, data) = services.outcome().await;
    let id = data["instance"].as_str().expect("id").to_owned();
    let (status, shown) = admin(
        &format!("http://127.0.0.1:{admin_port}"),
        Method::GET,
        &format!("/api/v1/sagas/{id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let (_, all) = admin(
        &format!("http://127.0.0.1:{admin_port}"),
        Method::GET,
        "/api/v1/sagas",
    )
    .await;
    assert_eq!(
        all["sagas"].as_array().map(Vec::len),
        Some(1),
        "one instance: {all}"
    );
    shown
}

#[tokio::test]
async fn a_kill_during_the_second_step_resumes_it_and_completes() {
    let services = Services::start().await;
    // The first charge hangs long enough to be killed in the middle of it.
    services
        .payments
        .script([reply("r-charge", "Contoso.Payments.Charged").delay(Duration::from_secs(30))]);

    let shown = kill_while(&services, || services.payments.count() == 1).await;

    assert_eq!(shown["state"], "completed", "{shown}");
    // The charge's delivery was leased, not acked, when the daemon died: the restarted
    // daemon finds it in the spool and delivers it again. That is the one request after the
    // restart besides the shipment, and the only repeat.
    let charges = services.payments.received();
    assert_eq!(charges.len(), 2, "the held charge, then its redelivery");
    assert!(charges
        .iter()
        .all(|c| c.header("ce-id") == Some("r-reserve")
            && c.header("ce-switchyardsagastep") == Some("charge")));
    assert_eq!(
        charges[0].header("ce-switchyardsaga"),
        charges[1].header("ce-switchyardsaga")
    );
    // The reservation was recorded (and the charge put) before its delivery was acked, so
    // were that ack lost with the kill, its redelivery finds the instance waiting for the
    // charge and is acked without an attempt: the reservation reached its target once.
    assert_eq!(services.inventory.count(), 1, "one reservation");
    assert_eq!(
        services.shipping.count(),
        1,
        "no step is skipped or repeated"
    );
    let steps = shown["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["reserve", "charge", "ship"]);
    assert!(steps.iter().all(|s| s["outcome"] == "delivered"), "{shown}");
    let ship = &services.shipping.received()[0];
    assert_eq!(ship.header("ce-id"), Some("r-charge"));
}

#[tokio::test]
async fn a_kill_during_a_compensation_resumes_it_and_the_rest() {
    let services = Services::start().await;
    services.shipping.set_default(Respond::status(400));
    services
        .refund
        .script([Respond::status(200).delay(Duration::from_secs(30))]);

    let shown = kill_while(&services, || services.refund.count() == 1).await;

    assert_eq!(shown["state"], "compensated", "{shown}");
    assert!(
        services.refund.count() >= 2,
        "the refund is delivered again"
    );
    assert_eq!(
        services.release.count(),
        1,
        "then the reservation is released"
    );
    let (refund, release) = (services.refund.received(), services.release.received());
    assert!(refund[1].at <= release[0].at);
    assert_compensation(&release[0], "reserve", "o-kill", "r-reserve");
}
