//! Signed credentials: Event Grid SAS tokens built as Azure's SDKs build them, and Standard
//! Webhooks signatures (the specification's test vector, and the `standardwebhooks` crate
//! signing what ingress verifies).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::Uri;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::hmac;

use super::super::auth::{check, AuthFailure, Gate, ReplayGuard};
use super::*;
use crate::config::SecretKey;

/// An Event Grid access key (base64 of 32 bytes), as the portal shows one.
const ACCESS_KEY: &str = "VXbGWce53249Mt8wuotr0GPmyJ/nDT4hgdEj9DpBeRr38arnnm5OFg==";
/// The Standard Webhooks specification's test vector.
const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TIMESTAMP: u64 = 1_614_265_330;
const VECTOR_BODY: &str = r#"{"test": 2432232314}"#;
const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
const JSON: (&str, &str) = ("content-type", "application/json");

fn access_key() -> SecretKey {
    SecretKey::new(
        base64::engine::general_purpose::STANDARD
            .decode(ACCESS_KEY)
            .unwrap(),
    )
}

/// .NET's `HttpUtility.UrlEncode`: unreserved `A-Za-z0-9-_.!*()`, space as `+`, lowercase hex.
fn dotnet_url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'!' | b'*' => {
                out.push(char::from(b))
            }
            b'(' | b')' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// Python's `urllib.parse.quote(text, safe="~()*!.'")`: uppercase hex, space as `%20`.
fn python_quote(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(b))
            }
            b'(' | b')' | b'*' | b'!' | b'\'' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hmac_base64(key_b64: &str, message: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, message.as_bytes()))
}

/// The .NET SDK's `BuildSharedAccessSignature`: resource and en-US expiry URL-encoded, the
/// HMAC keyed with the base64-decoded access key over `r=…&e=…`, the signature URL-encoded.
fn dotnet_sas(resource: &str, expires: DateTime<Utc>, key: &str, offset: bool) -> String {
    let mut expiry = expires.format("%-m/%-d/%Y %-I:%M:%S %p").to_string();
    if offset {
        // `DateTimeOffset.ToString` (Azure.Messaging.EventGrid) appends the offset.
        expiry.push_str(" +00:00");
    }
    let unsigned = format!(
        "r={}&e={}",
        dotnet_url_encode(resource),
        dotnet_url_encode(&expiry)
    );
    let signature = hmac_base64(key, &unsigned);
    format!("{unsigned}&s={}", dotnet_url_encode(&signature))
}

/// The Python SDK's `generate_sas`: the endpoint with `?apiVersion=`, `str(datetime)` as the
/// expiry, both quoted, the signature quoted.
fn python_sas(endpoint: &str, expires: DateTime<Utc>, key: &str) -> String {
    let resource = format!("{endpoint}?apiVersion=2018-01-01");
    let expiry = expires.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string();
    let unsigned = format!("r={}&e={}", python_quote(&resource), python_quote(&expiry));
    let signature = hmac_base64(key, &unsigned);
    format!("{unsigned}&s={}", python_quote(&signature))
}

fn in_an_hour() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::hours(1)
}

fn with_rules(auth: Vec<AuthRule>) -> IngressConfig {
    IngressConfig {
        auth,
        ..ingress_config()
    }
}

fn sas_config() -> IngressConfig {
    with_rules(vec![
        AuthRule::SasKey("plain-key".into()),
        AuthRule::SasToken(access_key()),
    ])
}

#[tokio::test]
async fn sas_tokens_built_like_the_azure_sdks_are_accepted() {
    let server = Server::start(sas_config()).await;
    let path = "/api/events?api-version=2018-01-01";
    let tokens = [
        dotnet_sas("https://test/api/events", in_an_hour(), ACCESS_KEY, false),
        dotnet_sas("https://test/api/events", in_an_hour(), ACCESS_KEY, true),
        python_sas("https://test/api/events", in_an_hour(), ACCESS_KEY),
        // A resource naming the host only covers every path on it.
        dotnet_sas("https://TEST", in_an_hour(), ACCESS_KEY, true),
    ];
    for token in &tokens {
        let reply = server
            .post(
                path,
                &[JSON, ("aeg-sas-token", token)],
                EVENT_GRID_EVENTS.as_bytes(),
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "{token}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let authorization = format!("SharedAccessSignature {}", tokens[0]);
    let reply = server
        .post(
            path,
            &[JSON, ("authorization", &authorization)],
            EVENT_GRID_EVENTS.as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.stored(), 2 * (tokens.len() + 1));
}

#[tokio::test]
async fn bad_sas_tokens_are_refused_saying_which_check_failed() {
    let server = Server::start(sas_config()).await;
    let expired = dotnet_sas(
        "https://test/api/events",
        Utc::now() - chrono::Duration::minutes(1),
        ACCESS_KEY,
        true,
    );
    let elsewhere = dotnet_sas(
        "https://other.example/api/events",
        in_an_hour(),
        ACCESS_KEY,
        true,
    );
    let other_path = dotnet_sas("https://test/api/eventsx", in_an_hour(), ACCESS_KEY, true);
    let other_key = dotnet_sas(
        "https://test/api/events",
        in_an_hour(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        true,
    );
    let good = dotnet_sas("https://test/api/events", in_an_hour(), ACCESS_KEY, true);
    // Change one character of the signature (still valid base64).
    let (head, sig) = good.split_once("&s=").unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}&s={flipped}{}", &sig[1..]);
    // A later expiry with the old signature.
    let extended = good.replacen("&e=", "&e=1", 1);
    let cases = [
        (expired, "SAS token expired"),
        (elsewhere, "SAS token resource does not match this endpoint"),
        (
            other_path,
            "SAS token resource does not match this endpoint",
        ),
        (other_key, "signature mismatch"),
        (tampered, "signature mismatch"),
        (extended, "signature mismatch"),
        (
            "r=https%3a%2f%2ftest&e=1".to_owned(),
            "bad format: a SAS token needs r, e and s",
        ),
    ];
    for (token, message) in cases {
        let reply = server
            .post(
                "/api/events",
                &[JSON, ("aeg-sas-token", &token)],
                EVENT_GRID_EVENTS.as_bytes(),
            )
            .await;
        assert_eq!(reply.status, 401, "{token}");
        assert_eq!(reply.json()["error"]["message"], message, "{token}");
    }
    assert_eq!(server.stored(), 0);
    // The plain access key still works beside the token rule.
    let reply = server
        .post(
            "/api/events",
            &[JSON, ("aeg-sas-key", "plain-key")],
            EVENT_GRID_EVENTS.as_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200);
}

#[test]
fn sas_expiry_formats_of_the_sdks_parse() {
    let token = |e: &str| {
        let unsigned = format!("r=https%3a%2f%2ftest&e={e}");
        format!(
            "{unsigned}&s={}",
            dotnet_url_encode(&hmac_base64(ACCESS_KEY, &unsigned))
        )
    };
    let keys = vec![AuthRule::SasToken(access_key())];
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_497_500_000);
    let uri: Uri = "/api/events".parse().unwrap();
    // 2017-06-15 18:20:15 UTC is after `now` (2017-06-15 04:13:20 UTC).
    for e in [
        "6%2f15%2f2017+6%3a20%3a15+PM",
        "6%2f15%2f2017+6%3a20%3a15+PM+%2b00%3a00",
        "2017-06-15%2018%3A20%3A15.123456%2B00%3A00",
        "2017-06-15T18%3A20%3A15Z",
        "1497550815",
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("test"));
        headers.insert("aeg-sas-token", HeaderValue::from_str(&token(e)).unwrap());
        let gate = check(&keys, &headers, &uri, now).unwrap_or_else(|f| panic!("{e}: {f}"));
        assert!(matches!(gate, Gate::Done(_)), "{e}");
        let later = now + std::time::Duration::from_secs(86_400);
        match check(&keys, &headers, &uri, later) {
            Err(IngressError::Refused(AuthFailure::Expired)) => {}
            other => panic!("{e}: {other:?}"),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn webhook_rules() -> Vec<AuthRule> {
    let other = SecretKey::new(vec![7u8; 32]);
    vec![AuthRule::StandardWebhooks(vec![
        other,
        SecretKey::from_whsec(VECTOR_SECRET).unwrap(),
    ])]
}

fn vector_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_static(VECTOR_ID));
    headers.insert("webhook-timestamp", HeaderValue::from(VECTOR_TIMESTAMP));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_static(
            "v1,bm9wZQ== v1a,ignored v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    );
    headers
}

#[test]
fn the_specification_vector_verifies_and_its_tampered_forms_do_not() {
    let rules = webhook_rules();
    let uri: Uri = "/events".parse().unwrap();
    let at = UNIX_EPOCH + std::time::Duration::from_secs(VECTOR_TIMESTAMP + 10);
    let replay = Arc::new(ReplayGuard::default());
    let verify = |headers: &HeaderMap, body: &str| {
        check(&rules, headers, &uri, at)
            .and_then(|gate| gate.verify_body(&rules, body.as_bytes(), &replay, at))
            .map(|(_, claim)| claim)
    };
    assert!(VECTOR_SIGNATURE.starts_with("v1,"));
    let claim = verify(&vector_headers(), VECTOR_BODY).unwrap();
    drop(claim);
    // Dropped unkept (the request failed later on): the sender may retry.
    assert_eq!(replay.len(), 0);
    verify(&vector_headers(), VECTOR_BODY)
        .unwrap()
        .unwrap()
        .keep();
    assert_eq!(replay.len(), 1);
    let failure = |headers: &HeaderMap, body: &str| match verify(headers, body) {
        Err(IngressError::Refused(f)) => f,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        failure(&vector_headers(), VECTOR_BODY),
        AuthFailure::Replayed
    );
    assert_eq!(
        failure(&vector_headers(), r#"{"test": 2432232315}"#),
        AuthFailure::SignatureMismatch
    );
    let mut other_id = vector_headers();
    other_id.insert("webhook-id", HeaderValue::from_static("msg_other"));
    assert_eq!(
        failure(&other_id, VECTOR_BODY),
        AuthFailure::SignatureMismatch
    );
    let mut missing = vector_headers();
    missing.remove("webhook-signature");
    assert_eq!(
        failure(&missing, VECTOR_BODY),
        AuthFailure::MissingHeader("webhook-signature")
    );
    let mut no_v1 = vector_headers();
    no_v1.insert("webhook-signature", HeaderValue::from_static("v2,abc"));
    assert!(matches!(
        failure(&no_v1, VECTOR_BODY),
        AuthFailure::BadFormat(_)
    ));
    let mut millis = vector_headers();
    millis.insert(
        "webhook-timestamp",
        HeaderValue::from(VECTOR_TIMESTAMP * 1000),
    );
    assert_eq!(failure(&millis, VECTOR_BODY), AuthFailure::OutsideTolerance);
    // Five minutes and one second either way is outside; exactly five minutes is inside.
    for (offset, inside) in [(-301i64, false), (301, false), (300, true), (-300, true)] {
        let when = UNIX_EPOCH
            + std::time::Duration::from_secs(VECTOR_TIMESTAMP.saturating_add_signed(offset));
        let result = check(&rules, &vector_headers(), &uri, when);
        assert_eq!(result.is_ok(), inside, "{offset}");
    }
}

#[test]
fn the_replay_guard_is_bounded_and_forgets_expired_ids() {
    let guard = Arc::new(ReplayGuard::with_cap(2));
    guard.claim("a", 100, 50).unwrap().keep();
    guard.claim("b", 100, 50).unwrap().keep();
    assert!(matches!(
        guard.claim("c", 100, 50),
        Err(IngressError::ReplayWindowFull)
    ));
    // Once `a` and `b` expire, a sweep makes room.
    guard.claim("c", 200, 101).unwrap().keep();
    assert_eq!(guard.len(), 1);
    // An expired id may come again (its timestamp would be refused anyway).
    guard.claim("a", 300, 250).unwrap().keep();
}

/// Standard Webhooks headers signed by the `standardwebhooks` crate.
fn crate_signed(secret: &str, id: &str, timestamp: u64, body: &str) -> Vec<(String, String)> {
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    let signature = webhook.sign(id, timestamp as i64, body.as_bytes()).unwrap();
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signature),
    ]
}

#[tokio::test]
async fn standard_webhooks_requests_signed_by_the_library_are_verified() {
    let server = Server::start(with_rules(webhook_rules())).await;
    let post = |headers: Vec<(String, String)>, body: &'static str| {
        let server = &server;
        async move {
            let mut all: Vec<(&str, &str)> = vec![("content-type", "application/cloudevents+json")];
            all.extend(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            server.post("/events", &all, body.as_bytes()).await
        }
    };
    let now = unix_now();
    let signed = crate_signed(VECTOR_SECRET, "msg_1", now, STRUCTURED_EVENT);
    assert_eq!(post(signed.clone(), STRUCTURED_EVENT).await.status, 202);
    assert_eq!(server.stored(), 1);

    let message = |reply: Reply| {
        assert_eq!(reply.status, 401);
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        message(post(signed, STRUCTURED_EVENT).await),
        "replayed webhook-id"
    );
    let tampered = STRUCTURED_EVENT.replace("s-1", "s-2").leak();
    let signed = crate_signed(VECTOR_SECRET, "msg_2", now, STRUCTURED_EVENT);
    assert_eq!(message(post(signed, tampered).await), "signature mismatch");
    let old = crate_signed(VECTOR_SECRET, "msg_3", now - 600, STRUCTURED_EVENT);
    assert_eq!(
        message(post(old, STRUCTURED_EVENT).await),
        "webhook-timestamp outside the tolerance of 5 minutes"
    );
    let wrong_secret = crate_signed(
        "whsec_c2VjcmV0LW9mLWFub3RoZXItc2VuZGVyISE=",
        "msg_4",
        now,
        STRUCTURED_EVENT,
    );
    assert_eq!(
        message(post(wrong_secret, STRUCTURED_EVENT).await),
        "signature mismatch"
    );
    assert_eq!(server.stored(), 1);

    // A request refused after the signature passed (here: not an event) leaves its id free,
    // so the sender's corrected retry goes through.
    let signed = crate_signed(VECTOR_SECRET, "msg_5", now, "{}");
    assert_eq!(post(signed, "{}").await.status, 400);
    let signed = crate_signed(VECTOR_SECRET, "msg_5", now, STRUCTURED_EVENT);
    assert_eq!(post(signed, STRUCTURED_EVENT).await.status, 202);
}
