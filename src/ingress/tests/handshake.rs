//! The `OPTIONS` handshake and the authentication matrix (none of it needs the decoders).

use super::*;

const ORIGIN: (&str, &str) = ("webhook-request-origin", "eventgrid.azure.net");

fn with_auth() -> IngressConfig {
    IngressConfig {
        auth: vec![
            AuthRule::SasKey("sas-secret-1".into()),
            AuthRule::Bearer("token+secret/2".into()),
        ],
        ..ingress_config()
    }
}

#[tokio::test]
async fn options_grants_a_listed_origin_by_echoing_it() {
    let server = Server::start(ingress_config()).await;
    for path in ["/events", "/api/events"] {
        let reply = server
            .options(path, &[("WebHook-Request-Origin", "EventGrid.azure.net")])
            .await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(
            reply.header("webhook-allowed-origin"),
            Some("EventGrid.azure.net")
        );
        assert_eq!(reply.header("webhook-allowed-rate"), Some("*"));
        assert_eq!(reply.header("allow"), Some("POST, OPTIONS"));
    }
}

#[tokio::test]
async fn options_answers_star_when_any_origin_is_allowed() {
    let config = IngressConfig {
        allowed_origins: vec!["*".into()],
        ..ingress_config()
    };
    let server = Server::start(config).await;
    let reply = server
        .options("/events", &[("webhook-request-origin", "anything.example")])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("webhook-allowed-origin"), Some("*"));
}

#[tokio::test]
async fn options_refuses_an_unlisted_origin_without_grant_headers() {
    let server = Server::start(ingress_config()).await;
    let reply = server
        .options("/events", &[("webhook-request-origin", "evil.example")])
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("webhook-allowed-origin"), None);
    assert_eq!(reply.header("webhook-allowed-rate"), None);
    assert_eq!(reply.json()["error"]["code"], "Forbidden");
}

#[tokio::test]
async fn options_without_origin_is_a_bad_request() {
    let server = Server::start(ingress_config()).await;
    let reply = server.options("/events", &[]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("WebHook-Request-Origin"));
}

#[tokio::test]
async fn options_grants_the_configured_rate_when_one_is_requested() {
    let config = IngressConfig {
        allowed_rate: Some(120),
        ..ingress_config()
    };
    let server = Server::start(config).await;
    let reply = server
        .options("/events", &[ORIGIN, ("webhook-request-rate", "600")])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("webhook-allowed-rate"), Some("120"));

    let open = Server::start(ingress_config()).await;
    let reply = open
        .options("/events", &[ORIGIN, ("webhook-request-rate", "600")])
        .await;
    assert_eq!(reply.header("webhook-allowed-rate"), Some("*"));
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let server = Server::start(ingress_config()).await;
    for method in ["GET", "PUT", "DELETE"] {
        let reply = server.send(method, "/events", &[], Body::Empty).await;
        assert_eq!(reply.status, 405, "{method}");
    }
}

#[tokio::test]
async fn no_auth_configured_needs_no_credential() {
    let server = Server::start(ingress_config()).await;
    assert_eq!(server.options("/events", &[ORIGIN]).await.status, 200);
}

#[tokio::test]
async fn each_credential_form_is_accepted() {
    let server = Server::start(with_auth()).await;
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("/api/events", vec![ORIGIN, ("aeg-sas-key", "sas-secret-1")]),
        (
            "/api/events?api-version=2018-01-01&aeg-sas-key=sas-secret-1",
            vec![ORIGIN],
        ),
        (
            "/events",
            vec![ORIGIN, ("authorization", "Bearer token+secret/2")],
        ),
        (
            "/events",
            vec![ORIGIN, ("authorization", "bearer token+secret/2")],
        ),
        ("/events?access_token=token%2Bsecret%2F2", vec![ORIGIN]),
    ];
    for (path, headers) in cases {
        let reply = server.options(path, &headers).await;
        assert_eq!(reply.status, 200, "{path} {headers:?}");
        let in_query = path.contains("aeg-sas-key=") || path.contains("access_token=");
        let private = in_query.then_some("private");
        assert_eq!(reply.header("cache-control"), private, "{path}");
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_unauthorized() {
    let server = Server::start(with_auth()).await;
    let cases: [(&str, Vec<(&str, &str)>); 7] = [
        ("/events", vec![ORIGIN]),
        ("/events", vec![ORIGIN, ("aeg-sas-key", "sas-secret-2")]),
        ("/events?aeg-sas-key=sas-secret", vec![ORIGIN]),
        // A bearer token is not an access key, nor the other way round.
        ("/events", vec![ORIGIN, ("aeg-sas-key", "token+secret/2")]),
        (
            "/events",
            vec![ORIGIN, ("authorization", "Bearer sas-secret-1")],
        ),
        (
            "/events",
            vec![ORIGIN, ("authorization", "Basic c2FzLXNlY3JldC0x")],
        ),
        // Form decoding: `+` is a space, so this token is wrong.
        ("/events?access_token=token+secret/2", vec![ORIGIN]),
    ];
    for (path, headers) in cases {
        let reply = server.options(path, &headers).await;
        assert_eq!(reply.status, 401, "{path} {headers:?}");
        assert_eq!(reply.json()["error"]["code"], "Unauthorized");
        assert_eq!(reply.header("www-authenticate"), None);
        assert_eq!(reply.header("webhook-allowed-origin"), None);
    }
}

#[tokio::test]
async fn unauthorized_posts_store_nothing() {
    let server = Server::start(with_auth()).await;
    let json = [("content-type", "application/json")];
    let validation = server
        .post("/api/events", &json, VALIDATION_EVENT.as_bytes())
        .await;
    assert_eq!(validation.status, 401);
    let wrong = [BINARY_HEADERS, &[("aeg-sas-key", "nope")]].concat();
    assert_eq!(server.post("/events", &wrong, b"{}").await.status, 401);
    assert_eq!(server.stored(), 0);
    assert_eq!(server.rejected(), 2);
}
