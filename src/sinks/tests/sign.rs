//! Signed deliveries: the Standard Webhooks test vector, the `standardwebhooks` crate
//! verifying what the sink sends, GitHub-style body HMACs, and a stable `webhook-id`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use axum::http::{HeaderMap, HeaderName};
use base64::Engine as _;
use ring::hmac;

use super::support::{self, event, http_config, Receiver, Reply};
use crate::config::{DigestEncoding, HmacSignConfig, HttpFormat, SecretKey, SignConfig};
use crate::sinks::http::HttpSink;
use crate::sinks::sign::{self, webhook_id, Signer};
use crate::sinks::{Attempt, Sink};

const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2VjcmV0LW9mLWFub3RoZXItc2VuZGVyISE=";

fn standard(secrets: &[&str]) -> SignConfig {
    SignConfig::StandardWebhooks {
        secrets: secrets
            .iter()
            .map(|s| SecretKey::from_whsec(s).unwrap())
            .collect(),
    }
}

#[test]
fn the_specification_vector_is_reproduced() {
    let key = sign::key(&SecretKey::from_whsec(VECTOR_SECRET).unwrap());
    let tag = sign::webhook_signature(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "1614265330",
        br#"{"test": 2432232314}"#,
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    assert_eq!(
        format!("v1,{encoded}"),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn secrets_must_be_whsec_base64_and_long_enough() {
    assert!(SecretKey::from_whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
    assert!(SecretKey::from_whsec("whsec_not base64!").is_err());
    assert!(SecretKey::from_whsec("whsec_c2hvcnQ=").is_err());
    let key = SecretKey::from_whsec(VECTOR_SECRET).unwrap();
    assert_eq!(format!("{key:?}"), "***");
    let config = standard(&[VECTOR_SECRET]);
    assert!(!format!("{config:?}").contains("MfKQ"));
    assert_eq!(
        format!("{:?}", Signer::new(&config)),
        "Signer(standard_webhooks, 1)"
    );
}

fn sink_with(url: &axum::http::Uri, sign: SignConfig, batched: bool) -> HttpSink {
    let mut config = http_config(
        url,
        HttpFormat::CloudEventsStructured,
        Duration::from_secs(5),
    );
    config.sign = Some(sign);
    HttpSink::new(support::client(), "web", config, batched)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn every_secret_signs_and_the_library_verifies_each() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let sink = sink_with(
        &receiver.url,
        standard(&[OTHER_SECRET, VECTOR_SECRET]),
        false,
    );
    let event = event("ev-1");
    let attempt = Attempt {
        event: &event,
        route: "orders",
        delivery_count: 0,
    };
    sink.deliver(attempt).await.unwrap();
    sink.deliver(Attempt {
        delivery_count: 1,
        ..attempt
    })
    .await
    .unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for (headers, body) in &requests {
        let signatures: Vec<&str> = header(headers, "webhook-signature").split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert!(signatures.iter().all(|s| s.starts_with("v1,")));
        let timestamp: u64 = header(headers, "webhook-timestamp").parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(timestamp) <= 5);
        for secret in [VECTOR_SECRET, OTHER_SECRET] {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(body, headers)
                .unwrap_or_else(|e| panic!("{secret}: {e:?}"));
        }
        let stranger = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(standardwebhooks::Webhook::new(stranger)
            .unwrap()
            .verify(body, headers)
            .is_err());
    }
    // One delivery, two attempts: one webhook-id.
    let ids: Vec<&str> = requests
        .iter()
        .map(|(h, _)| header(h, "webhook-id"))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], webhook_id("web", &[attempt]));
}

#[test]
fn webhook_ids_differ_by_sink_route_source_and_id() {
    let one = event("ev-1");
    let mut other_source = event("ev-1");
    other_source.source = "/elsewhere".into();
    let two = event("ev-2");
    let at = |event, route| Attempt {
        event,
        route,
        delivery_count: 0,
    };
    let base = webhook_id("web", &[at(&one, "orders")]);
    assert!(base.starts_with("msg_") && base.len() == 36);
    let others = [
        webhook_id("dead", &[at(&one, "orders")]),
        webhook_id("web", &[at(&one, "refunds")]),
        webhook_id("web", &[at(&other_source, "orders")]),
        webhook_id("web", &[at(&two, "orders")]),
        webhook_id("web", &[at(&one, "orders"), at(&two, "orders")]),
    ];
    for id in &others {
        assert_ne!(*id, base);
    }
    // The same deliveries give the same id whatever the attempt.
    let retry = Attempt {
        delivery_count: 7,
        ..at(&one, "orders")
    };
    assert_eq!(webhook_id("web", &[retry]), base);
}

#[tokio::test]
async fn batches_are_signed_over_the_batch_body() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let sink = sink_with(&receiver.url, standard(&[VECTOR_SECRET]), true);
    let (a, b) = (event("ev-1"), event("ev-2"));
    let batch = [
        Attempt {
            event: &a,
            route: "orders",
            delivery_count: 0,
        },
        Attempt {
            event: &b,
            route: "orders",
            delivery_count: 0,
        },
    ];
    sink.deliver_batch(&batch).await.unwrap();
    let (headers, body) = receiver.requests().remove(0);
    assert!(header(&headers, "content-type").starts_with("application/cloudevents-batch+json"));
    standardwebhooks::Webhook::new(VECTOR_SECRET)
        .unwrap()
        .verify(&body, &headers)
        .unwrap();
    assert_eq!(header(&headers, "webhook-id"), webhook_id("web", &batch));
}

#[tokio::test]
async fn hmac_signs_the_body_github_style() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    let hex = SignConfig::Hmac(HmacSignConfig {
        header: HeaderName::from_static("x-hub-signature-256"),
        secret: SecretKey::new("It's a Secret to Everybody"),
        prefix: "sha256=".into(),
        encoding: DigestEncoding::Hex,
    });
    let b64 = SignConfig::Hmac(HmacSignConfig {
        header: HeaderName::from_static("x-signature"),
        secret: SecretKey::new("It's a Secret to Everybody"),
        prefix: String::new(),
        encoding: DigestEncoding::Base64,
    });
    let event = event("ev-1");
    let attempt = Attempt {
        event: &event,
        route: "orders",
        delivery_count: 0,
    };
    for sign in [hex, b64] {
        sink_with(&receiver.url, sign, false)
            .deliver(attempt)
            .await
            .unwrap();
    }
    let requests = receiver.requests();
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"It's a Secret to Everybody");
    let (headers, body) = &requests[0];
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        header(headers, "x-hub-signature-256"),
        format!("sha256={hex}")
    );
    assert!(headers.get("webhook-signature").is_none());
    let (headers, body) = &requests[1];
    let tag = hmac::sign(&key, body);
    assert_eq!(
        header(headers, "x-signature"),
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    );
    // GitHub's documented example: this secret over "Hello, World!".
    let mut headers = HeaderMap::new();
    let signer = Signer::new(&SignConfig::Hmac(HmacSignConfig {
        header: HeaderName::from_static("x-hub-signature-256"),
        secret: SecretKey::new("It's a Secret to Everybody"),
        prefix: "sha256=".into(),
        encoding: DigestEncoding::Hex,
    }));
    signer.sign(
        "web",
        &[attempt],
        SystemTime::now(),
        b"Hello, World!",
        &mut headers,
    );
    assert_eq!(
        header(&headers, "x-hub-signature-256"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

/// The cost of signing one delivery of a 1 KiB body (one secret): run with
/// `cargo test --release --lib signing_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a timing measurement; run in release mode"]
fn signing_cost() {
    let signer = Signer::new(&standard(&[VECTOR_SECRET]));
    let event = event("ev-1");
    let attempt = Attempt {
        event: &event,
        route: "orders",
        delivery_count: 0,
    };
    let body = vec![b'x'; 1024];
    let mut headers = HeaderMap::new();
    let rounds = 200_000u32;
    let now = SystemTime::now();
    for _ in 0..1000 {
        signer.sign("web", &[attempt], now, &body, &mut headers);
    }
    let started = Instant::now();
    for _ in 0..rounds {
        signer.sign(
            "web",
            &[attempt],
            now,
            std::hint::black_box(&body),
            &mut headers,
        );
    }
    let per = started.elapsed() / rounds;
    println!(
        "standard_webhooks, 1 secret, 1 KiB body: {} ns per delivery",
        per.as_nanos()
    );
    let key = sign::key(&SecretKey::from_whsec(VECTOR_SECRET).unwrap());
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(sign::webhook_signature(&key, "msg_x", "1614265330", &body));
    }
    let per = started.elapsed() / rounds;
    println!(
        "HMAC-SHA256 alone, 1 KiB body: {} ns per signature",
        per.as_nanos()
    );
}
