//! Ingress as a sender meets it: every mode, both handshakes, each bad-input class.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::daemon::event;
use crate::support::{request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

fn yaml(sink: &TestSink, format: &str, extra_ingress: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
ingress:
  allowed_origins: ["eventgrid.azure.net"]
  allowed_rate: 120
{extra_ingress}
sinks:
  hook:
    http: {{ url: "{}", format: {format} }}
    retry: {{ schedule: [10ms] }}
routes:
  - name: orders
    match: {{ types: ["Contoso.Orders.*"] }}
    to: [hook]
"#,
        sink.url()
    )
}

#[tokio::test]
async fn binary_mode_event_reaches_the_sink_with_its_attributes() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&yaml(&sink, "cloudevents-binary", "")).await;

    let reply = app
        .post(
            "/events",
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "b-1"),
                ("ce-source", "/shop"),
                ("ce-type", "Contoso.Orders.Created"),
                ("ce-subject", "Euro%20%E2%82%AC"),
                ("ce-comexampleextension1", "value"),
                ("content-type", "application/json"),
            ],
            r#"{"total": 5}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());

    wait_until("delivery", WAIT, || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.header("ce-id"), Some("b-1"));
    assert_eq!(got.header("ce-type"), Some("Contoso.Orders.Created"));
    assert_eq!(got.header("ce-subject"), Some("Euro%20%E2%82%AC"));
    assert_eq!(got.header("ce-comexampleextension1"), Some("value"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("aeg-delivery-count"), Some("0"));
    assert_eq!(got.header("aeg-event-type"), Some("Notification"));
    assert_eq!(got.header("aeg-subscription-name"), Some("orders"));
    assert_eq!(got.json(), json!({"total": 5}));
}

#[tokio::test]
async fn structured_and_batched_events_are_delivered_structured() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&yaml(&sink, "cloudevents-structured", "")).await;

    let one = app.send(event("s-1", "Contoso.Orders.Created")).await;
    assert_eq!(one.status, StatusCode::ACCEPTED, "{}", one.text());
    let batch = json!([
        event("s-2", "Contoso.Orders.Created"),
        event("s-3", "Contoso.Orders.Paid")
    ]);
    let reply = app
        .post(
            "/events",
            &[(
                "content-type",
                "application/cloudevents-batch+json; charset=utf-8",
            )],
            batch.to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());

    wait_until("three deliveries", WAIT, || sink.count() == 3).await;
    let mut ids: Vec<String> = sink
        .received()
        .iter()
        .map(|r| {
            assert!(r
                .header("content-type")
                .unwrap()
                .starts_with("application/cloudevents+json"));
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["s-1", "s-2", "s-3"]);
    assert_eq!(sink.received()[0].json()["data"], json!({"n": 1}));
}

#[tokio::test]
async fn azure_publisher_request_shapes_are_accepted_with_the_sas_key() {
    let sink = TestSink::start().await;
    let auth = "  auth: [{ sas_key: \"k3y\" }]";
    let app = TestApp::start(&yaml(&sink, "eventgrid", auth)).await;
    let url = "/api/events?api-version=2018-01-01";

    let eg = json!([{
        "id": "eg-1",
        "eventType": "Contoso.Orders.Created",
        "subject": "/orders/9",
        "eventTime": "2026-11-27T10:00:00.1234567Z",
        "data": {"total": 120},
        "dataVersion": "1.0"
    }]);
    let reply = app
        .post(
            url,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("aeg-sas-key", "k3y"),
            ],
            eg.to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let ce_batch = json!([event("ce-9", "Contoso.Orders.Created")]);
    let reply = app
        .post(
            url,
            &[
                (
                    "content-type",
                    "application/cloudevents-batch+json; charset=utf-8",
                ),
                ("aeg-sas-key", "k3y"),
            ],
            ce_batch.to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let unauthorized = app
        .post(
            url,
            &[
                ("content-type", "application/json"),
                ("aeg-sas-key", "wrong"),
            ],
            eg.to_string(),
        )
        .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);

    wait_until("two deliveries", WAIT, || sink.count() == 2).await;
    let first = sink
        .received()
        .iter()
        .find(|r| r.json()[0]["id"] == "eg-1")
        .cloned()
        .expect("eg-1 delivered");
    let body = first.json();
    assert_eq!(body[0]["eventType"], "Contoso.Orders.Created");
    assert_eq!(body[0]["subject"], "/orders/9");
    assert_eq!(body[0]["data"], json!({"total": 120}));
    assert_eq!(body[0]["dataVersion"], "1.0");
    assert_eq!(first.header("aeg-data-version"), Some("1.0"));
}

#[tokio::test]
async fn event_grid_validation_handshake_echoes_the_code_and_needs_auth() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&yaml(&sink, "eventgrid", "  auth: [{ bearer: \"t0k\" }]")).await;
    let validation = json!([{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
        "subject": "",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2022-10-28T04:23:35.1981776Z",
        "metadataVersion": "1",
        "dataVersion": "1"
    }]);
    let headers = [
        ("content-type", "application/json"),
        ("aeg-event-type", "SubscriptionValidation"),
        ("authorization", "Bearer t0k"),
    ];
    let reply = app.post("/events", &headers, validation.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );

    let reply = app
        .post("/events", &headers[..2], validation.to_string())
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sink.count(), 0, "a handshake is not an event");
}

#[tokio::test]
async fn cloudevents_options_handshake_grants_listed_origins() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&yaml(&sink, "cloudevents-binary", "")).await;
    let url = format!("{}/events", app.base);

    let reply = request(
        Method::OPTIONS,
        &url,
        &[
            ("webhook-request-origin", "eventgrid.azure.net"),
            ("webhook-request-rate", "60"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("webhook-allowed-origin"),
        Some("eventgrid.azure.net")
    );
    assert_eq!(reply.header("webhook-allowed-rate"), Some("120"));
    assert!(reply.header("allow").unwrap_or("").contains("POST"));

    let denied = request(
        Method::OPTIONS,
        &url,
        &[("webhook-request-origin", "evil.example")],
        "",
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.header("webhook-allowed-origin"), None);
}

#[tokio::test]
async fn bad_input_gets_a_status_and_a_body_that_says_what_is_wrong() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&yaml(&sink, "cloudevents-binary", "")).await;
    let structured = [("content-type", "application/cloudevents+json")];
    let batch_ct = [("content-type", "application/cloudevents-batch+json")];

    let malformed = app.post("/events", &structured, "{\"id\": ").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.json()["error"]["message"].is_string());

    let mut bad = event("x", "Contoso.Orders.Created");
    bad["specversion"] = json!("2.0");
    let reply = app.send(bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("specversion"), "{}", reply.text());

    let mut no_source = event("y", "Contoso.Orders.Created");
    no_source.as_object_mut().unwrap().remove("source");
    let batch = json!([event("ok", "Contoso.Orders.Created"), no_source]);
    let reply = app.post("/events", &batch_ct, batch.to_string()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let detail = &reply.json()["error"]["details"][0];
    assert_eq!(detail["index"], 1, "{}", reply.text());
    assert_eq!(detail["attribute"], "source", "{}", reply.text());

    let huge = "x".repeat(1024 * 1024 + 1);
    let reply = app
        .post("/events", &[("content-type", "application/json")], huge)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let many: Vec<_> = (0..5001)
        .map(|i| json!({"specversion":"1.0","id":i.to_string(),"source":"s","type":"t"}))
        .collect();
    let reply = app
        .post("/events", &batch_ct, serde_json::to_string(&many).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let reply = app
        .post("/events", &[("content-type", "text/plain")], "hello")
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(sink.count(), 0);
    assert_eq!(
        app.running.spool_depth("hook"),
        0,
        "nothing from a rejected request is stored"
    );
}

#[tokio::test]
async fn an_event_matching_no_route_is_accepted_and_counted() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&yaml(&sink, "cloudevents-binary", "")).await;
    let reply = app.send(event("u-1", "Fabrikam.Users.Created")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let counters = app.running.counters();
    assert_eq!(
        switchyard::telemetry::Counters::get(&counters.events_unrouted),
        1
    );
    assert_eq!(app.running.spool_depth("hook"), 0);
}
