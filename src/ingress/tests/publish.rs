//! The publish endpoints. Tests named `decoder_*` need the event decoders.

use super::*;

#[tokio::test]
async fn decoder_binary_event_is_stored_and_acknowledged_with_202() {
    let server = Server::start(ingress_config()).await;
    let reply = server.post("/events", BINARY_HEADERS, br#"{"a":1}"#).await;
    assert_eq!(
        reply.status,
        202,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply.body.is_empty());
    assert_eq!(server.stored(), 1);
}

#[tokio::test]
async fn decoder_structured_event_is_stored() {
    let server = Server::start(ingress_config()).await;
    let ct = [(
        "content-type",
        "Application/CloudEvents+JSON; charset=utf-8",
    )];
    let reply = server
        .post("/events", &ct, STRUCTURED_EVENT.as_bytes())
        .await;
    assert_eq!(
        reply.status,
        202,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(server.stored(), 1);
}

#[tokio::test]
async fn decoder_batch_stores_every_event() {
    let server = Server::start(ingress_config()).await;
    let ct = [("content-type", "application/cloudevents-batch+json")];
    let reply = server.post("/events", &ct, batch_of(3).as_bytes()).await;
    assert_eq!(
        reply.status,
        202,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(server.stored(), 3);
}

#[tokio::test]
async fn decoder_event_grid_topic_stores_and_answers_200() {
    let server = Server::start(ingress_config()).await;
    let ct = [("content-type", "application/json; charset=utf-8")];
    let path = "/api/events?api-version=2018-01-01";
    let reply = server.post(path, &ct, EVENT_GRID_EVENTS.as_bytes()).await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply.body.is_empty());
    assert_eq!(server.stored(), 2);
}

#[tokio::test]
async fn decoder_validation_event_is_answered_on_both_paths() {
    let config = IngressConfig {
        auth: vec![AuthRule::SasKey("k".into())],
        ..ingress_config()
    };
    let server = Server::start(config).await;
    let headers = [("content-type", "application/json"), ("aeg-sas-key", "k")];
    for path in ["/api/events", "/events"] {
        let reply = server
            .post(path, &headers, VALIDATION_EVENT.as_bytes())
            .await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.json(),
            serde_json::json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
        );
    }
    assert_eq!(server.stored(), 0);
}

#[tokio::test]
async fn decoder_bad_batch_member_is_a_400_naming_its_index() {
    let server = Server::start(ingress_config()).await;
    let ct = [("content-type", "application/cloudevents-batch+json")];
    let body = r#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},
                   {"specversion":"1.0","id":"2","type":"t"}]"#;
    let reply = server.post("/events", &ct, body.as_bytes()).await;
    assert_eq!(reply.status, 400);
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "BadRequest");
    assert_eq!(error["details"][0]["code"], "InvalidEvent");
    assert_eq!(error["details"][0]["index"], 1);
    assert_eq!(server.stored(), 0);
    assert_eq!(server.rejected(), 1);
}

#[tokio::test]
async fn decoder_batch_over_max_events_is_413() {
    let server = Server::start(ingress_config()).await;
    let ct = [("content-type", "application/cloudevents-batch+json")];
    let reply = server.post("/events", &ct, batch_of(4).as_bytes()).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "PayloadTooLarge");
    assert_eq!(server.stored(), 0);
}

#[tokio::test]
async fn declared_length_over_the_limit_is_413_unread() {
    let server = Server::start(ingress_config()).await;
    let body = vec![b'x'; 2049];
    let reply = server.post("/events", BINARY_HEADERS, &body).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "PayloadTooLarge");
    assert_eq!(server.stored(), 0);
    assert_eq!(server.rejected(), 1);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let server = Server::start(ingress_config()).await;
    let body = vec![b'x'; 3000];
    let reply = server
        .send("POST", "/events", BINARY_HEADERS, Body::Chunked(&body))
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(server.stored(), 0);
}

#[tokio::test]
async fn single_event_over_max_event_bytes_is_413() {
    let server = Server::start(ingress_config()).await;
    let body = vec![b'x'; 600];
    let reply = server.post("/events", BINARY_HEADERS, &body).await;
    assert_eq!(reply.status, 413);
    let detail = &reply.json()["error"]["details"][0];
    assert_eq!(detail["code"], "PayloadTooLarge");
    assert!(detail.get("index").is_none());

    let ct = [("content-type", "application/cloudevents+json")];
    let big = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"{}"}}"#,
        "x".repeat(600)
    );
    assert_eq!(
        server.post("/events", &ct, big.as_bytes()).await.status,
        413
    );
    assert_eq!(server.stored(), 0);
}

#[tokio::test]
async fn unsupported_content_types_are_415() {
    let server = Server::start(ingress_config()).await;
    for ct in [
        "text/plain",
        "application/cloudevents+avro",
        "application/cloudevents-batch+xml",
    ] {
        let reply = server
            .post("/events", &[("content-type", ct)], b"hello")
            .await;
        assert_eq!(reply.status, 415, "{ct}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(ct), "{message}");
        assert!(
            message.contains("application/cloudevents+json"),
            "{message}"
        );
    }
    let reply = server.post("/api/events", &[], b"hello").await;
    assert_eq!(reply.status, 415);
    assert_eq!(server.rejected(), 4);
}
