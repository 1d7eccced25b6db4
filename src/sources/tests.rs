//! Signature checks against the providers' published test vectors (GitHub, Slack, the
//! Standard Webhooks specification) and the `standardwebhooks` crate; where a provider
//! publishes none (Stripe, Shopify), against digests computed with Python's `hmac` module.
//! Then the event mapping: templates, missing parts, generated ids.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use super::event::{build, BuildError, Missing};
use super::verify::{decode_hex, verify, Failure};
use crate::config::{self, Config, Part, SecretKey, Template, TemplateError, Verify};
use crate::ingress::auth::AuthFailure;
use crate::sinks::sign;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(n, v)| {
            (
                HeaderName::try_from(*n).unwrap(),
                HeaderValue::try_from(*v).unwrap(),
            )
        })
        .collect()
}

fn secret(text: &str) -> Vec<SecretKey> {
    vec![SecretKey::new(text.as_bytes())]
}

// === GitHub ===

/// GitHub's documented example ("Validating webhook deliveries").
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_accepts_its_published_vector_and_refuses_a_tampered_body() {
    let v = Verify::Github(secret(GITHUB_SECRET));
    let h = headers(&[("X-Hub-Signature-256", GITHUB_SIGNATURE)]);
    assert_eq!(verify(&v, &h, b"Hello, World!", at(0)), Ok(()));
    assert_eq!(
        verify(&v, &h, b"Hello, World?", at(0)),
        Err(Failure::SignatureMismatch)
    );
    let upper = headers(&[(
        "X-Hub-Signature-256",
        &GITHUB_SIGNATURE
            .to_uppercase()
            .replace("SHA256=", "sha256="),
    )]);
    assert_eq!(verify(&v, &upper, b"Hello, World!", at(0)), Ok(()));
}

#[test]
fn github_names_the_check_that_failed() {
    let v = Verify::Github(secret(GITHUB_SECRET));
    let missing = verify(&v, &HeaderMap::new(), b"x", at(0)).unwrap_err();
    assert_eq!(missing.to_string(), "missing X-Hub-Signature-256 header");
    let sha1 = headers(&[("X-Hub-Signature-256", "sha1=0123")]);
    assert!(matches!(
        verify(&v, &sha1, b"x", at(0)),
        Err(Failure::BadFormat(_))
    ));
    let not_hex = headers(&[("X-Hub-Signature-256", "sha256=zz")]);
    assert!(matches!(
        verify(&v, &not_hex, b"x", at(0)),
        Err(Failure::BadFormat(_))
    ));
}

#[test]
fn a_rotation_accepts_either_secret() {
    let v = Verify::Github(vec![
        SecretKey::new(b"the-next-secret".to_vec()),
        SecretKey::new(GITHUB_SECRET.as_bytes()),
    ]);
    let h = headers(&[("X-Hub-Signature-256", GITHUB_SIGNATURE)]);
    assert_eq!(verify(&v, &h, b"Hello, World!", at(0)), Ok(()));
}

// === Slack ===

/// Slack's documented example ("Verifying requests from Slack"): a slash command.
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_TIMESTAMP: u64 = 1_531_420_618;
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slack_accepts_its_published_vector_within_the_tolerance_only() {
    let v = Verify::Slack(secret(SLACK_SECRET), Duration::from_secs(300));
    let h = headers(&[
        ("X-Slack-Signature", SLACK_SIGNATURE),
        ("X-Slack-Request-Timestamp", &SLACK_TIMESTAMP.to_string()),
    ]);
    let body = SLACK_BODY.as_bytes();
    assert_eq!(verify(&v, &h, body, at(SLACK_TIMESTAMP + 60)), Ok(()));
    assert_eq!(
        verify(&v, &h, body, at(SLACK_TIMESTAMP + 301)),
        Err(Failure::OutsideTolerance {
            header: "X-Slack-Request-Timestamp",
            tolerance: Duration::from_secs(300)
        })
    );
    assert_eq!(
        verify(&v, &h, &body[1..], at(SLACK_TIMESTAMP)),
        Err(Failure::SignatureMismatch)
    );
    let other_time = headers(&[
        ("X-Slack-Signature", SLACK_SIGNATURE),
        (
            "X-Slack-Request-Timestamp",
            &(SLACK_TIMESTAMP + 1).to_string(),
        ),
    ]);
    assert_eq!(
        verify(&v, &other_time, body, at(SLACK_TIMESTAMP)),
        Err(Failure::SignatureMismatch),
        "the timestamp is signed"
    );
    let unstamped = headers(&[("X-Slack-Signature", SLACK_SIGNATURE)]);
    assert_eq!(
        verify(&v, &unstamped, body, at(SLACK_TIMESTAMP))
            .unwrap_err()
            .to_string(),
        "missing X-Slack-Request-Timestamp header"
    );
}

// === Stripe ===

const STRIPE_SECRET: &str = "whsec_test_secret";
const STRIPE_T: u64 = 1_700_000_000;
const STRIPE_BODY: &str = r#"{"id":"evt_test_webhook","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_123"}}}"#;
/// HMAC-SHA256 of `{t}.{body}`, computed with Python's `hmac` module (Stripe publishes no
/// fixed vector).
const STRIPE_V1: &str = "9ee585d25df6f89ded47b5f288ee09d18f81ae8b9f21d2b8526c6c8ffde95236";

fn stripe() -> Verify {
    Verify::Stripe(secret(STRIPE_SECRET), Duration::from_secs(300))
}

#[test]
fn stripe_accepts_any_of_several_v1_signatures() {
    let value = format!(
        "t={STRIPE_T},v1={},v1={STRIPE_V1},v0=6ffbb59b",
        "ab".repeat(32)
    );
    let h = headers(&[("Stripe-Signature", &value)]);
    assert_eq!(
        verify(&stripe(), &h, STRIPE_BODY.as_bytes(), at(STRIPE_T + 299)),
        Ok(())
    );
    let wrong = format!("t={STRIPE_T},v1={}", "ab".repeat(32));
    let h = headers(&[("Stripe-Signature", &wrong)]);
    assert_eq!(
        verify(&stripe(), &h, STRIPE_BODY.as_bytes(), at(STRIPE_T)),
        Err(Failure::SignatureMismatch)
    );
}

#[test]
fn stripe_refuses_an_old_timestamp_and_a_malformed_header() {
    let body = STRIPE_BODY.as_bytes();
    let value = format!("t={STRIPE_T},v1={STRIPE_V1}");
    let h = headers(&[("Stripe-Signature", &value)]);
    let old = verify(&stripe(), &h, body, at(STRIPE_T + 301)).unwrap_err();
    assert_eq!(
        old.to_string(),
        "Stripe-Signature timestamp outside the tolerance of 300 seconds"
    );
    for bad in [
        format!("v1={STRIPE_V1}"),
        format!("t={STRIPE_T},v0={STRIPE_V1}"),
    ] {
        let h = headers(&[("Stripe-Signature", &bad)]);
        assert!(
            matches!(
                verify(&stripe(), &h, body, at(STRIPE_T)),
                Err(Failure::BadFormat(_))
            ),
            "{bad}"
        );
    }
}

// === Shopify ===

/// Base64 HMAC-SHA256 of the body, computed with Python's `hmac` module.
const SHOPIFY_BODY: &str = r#"{"id":820982911946154508,"email":"jon@example.com"}"#;
const SHOPIFY_SIGNATURE: &str = "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=";

#[test]
fn shopify_checks_a_base64_digest() {
    let v = Verify::Shopify(secret("hush"));
    let h = headers(&[("X-Shopify-Hmac-Sha256", SHOPIFY_SIGNATURE)]);
    assert_eq!(verify(&v, &h, SHOPIFY_BODY.as_bytes(), at(0)), Ok(()));
    assert_eq!(
        verify(&v, &h, b"{}", at(0)),
        Err(Failure::SignatureMismatch)
    );
    let h = headers(&[("X-Shopify-Hmac-Sha256", "not base64!")]);
    assert!(matches!(
        verify(&v, &h, b"{}", at(0)),
        Err(Failure::BadFormat(_))
    ));
}

// === Generic hmac ===

#[test]
fn hmac_checks_prefix_and_encoding() {
    let config = config::HmacSignConfig {
        header: HeaderName::from_static("x-signature"),
        secret: SecretKey::new(GITHUB_SECRET.as_bytes()),
        prefix: "sha256=".into(),
        encoding: config::DigestEncoding::Hex,
    };
    let v = Verify::Hmac(config.clone());
    let h = headers(&[("X-Signature", GITHUB_SIGNATURE)]);
    assert_eq!(verify(&v, &h, b"Hello, World!", at(0)), Ok(()));
    let unprefixed = headers(&[("X-Signature", &GITHUB_SIGNATURE[7..])]);
    assert!(matches!(
        verify(&v, &unprefixed, b"Hello, World!", at(0)),
        Err(Failure::BadFormat(_))
    ));
    let base64 = Verify::Hmac(config::HmacSignConfig {
        prefix: String::new(),
        encoding: config::DigestEncoding::Base64,
        ..config
    });
    let h = headers(&[(
        "X-Signature",
        "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc=",
    )]);
    assert_eq!(verify(&base64, &h, b"Hello, World!", at(0)), Ok(()));
}

// === Standard Webhooks ===

/// The example of the Standard Webhooks specification.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_T: u64 = 1_614_265_330;
const SW_BODY: &str = r#"{"test": 2432232314}"#;
const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw() -> Verify {
    Verify::StandardWebhooks(vec![SecretKey::from_whsec(SW_SECRET).unwrap()])
}

fn sw_headers(id: &str, t: u64, signature: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", &t.to_string()),
        ("webhook-signature", signature),
    ])
}

#[test]
fn standard_webhooks_accepts_the_specification_example() {
    let h = sw_headers(SW_ID, SW_T, SW_SIGNATURE);
    assert_eq!(verify(&sw(), &h, SW_BODY.as_bytes(), at(SW_T + 10)), Ok(()));
    assert_eq!(
        verify(&sw(), &h, SW_BODY.as_bytes(), at(SW_T + 301)),
        Err(Failure::StandardWebhooks(AuthFailure::OutsideTolerance))
    );
    assert_eq!(
        verify(&sw(), &h, b"{}", at(SW_T)),
        Err(Failure::SignatureMismatch)
    );
}

#[test]
fn standard_webhooks_agrees_with_the_official_library_both_ways() {
    let now = SystemTime::now();
    let seconds = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let library = standardwebhooks::Webhook::new(SW_SECRET).unwrap();
    // The library signs; the source verifies.
    let signature = library
        .sign("msg_lib", seconds as i64, SW_BODY.as_bytes())
        .unwrap();
    let h = sw_headers("msg_lib", seconds, &signature);
    assert_eq!(verify(&sw(), &h, SW_BODY.as_bytes(), now), Ok(()));
    // A signature the source accepts, made with the shared signing code, verifies in the library.
    let key = sign::key(&SecretKey::from_whsec(SW_SECRET).unwrap());
    let tag = sign::webhook_signature(&key, "msg_ours", &seconds.to_string(), SW_BODY.as_bytes());
    let ours = format!(
        "v1,{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, tag.as_ref())
    );
    let h = sw_headers("msg_ours", seconds, &ours);
    assert_eq!(verify(&sw(), &h, SW_BODY.as_bytes(), now), Ok(()));
    library.verify(SW_BODY.as_bytes(), &h).unwrap();
    // And both refuse the same tampered body.
    assert!(library.verify(b"{}", &h).is_err());
    assert_eq!(
        verify(&sw(), &h, b"{}", now),
        Err(Failure::SignatureMismatch)
    );
}

#[test]
fn hex_decodes_either_case_and_refuses_the_rest() {
    assert_eq!(decode_hex("00fFa0"), Some(vec![0, 255, 160]));
    assert_eq!(decode_hex("abc"), None);
    assert_eq!(decode_hex("0g"), None);
}

// === Templates and the mapping ===

#[test]
fn templates_compile_to_parts_and_refuse_what_is_not_one() {
    let t = Template::parse("com.example.{header:X-Event-Type}/{json:/order/id}{{x}}").unwrap();
    assert_eq!(
        t.parts(),
        [
            Part::Literal("com.example.".into()),
            Part::Header(HeaderName::from_static("x-event-type")),
            Part::Literal("/".into()),
            Part::Json("/order/id".into()),
            Part::Literal("{x}".into()),
        ]
    );
    assert_eq!(
        Template::parse("{json:order}"),
        Err(TemplateError::Pointer("order".into()))
    );
    assert_eq!(
        Template::parse("{body:/x}"),
        Err(TemplateError::Unknown("body:/x".into()))
    );
    assert_eq!(Template::parse("a{header:X"), Err(TemplateError::Unclosed));
    assert_eq!(Template::parse("a}"), Err(TemplateError::Unmatched));
    assert_eq!(
        Template::parse("{header:bad name}"),
        Err(TemplateError::HeaderName("bad name".into()))
    );
    assert_eq!(Template::parse(""), Err(TemplateError::Empty));
}

/// The `event:` mapping of a source in `yaml` (`sources:` holding one source named `s`).
fn mapping(yaml: &str) -> config::EventMapping {
    let vars = BTreeMap::new();
    let config: Config = config::load_str(yaml, Path::new("routes.yaml"), &vars).unwrap();
    config.sources["s"].event.clone()
}

#[test]
fn the_mapping_fills_templates_from_headers_and_the_body() {
    let m = mapping(
        r#"
sources:
  s:
    preset: hmac
    hmac: { header: X-Signature, secret: k }
    event: { type: "com.example.{header:X-Event-Type}", source: "https://shop.example", id: "{json:/id}", subject: "{json:/order/number}" }
"#,
    );
    let h = headers(&[
        ("X-Event-Type", "order.paid"),
        ("Content-Type", "application/json"),
    ]);
    let body = Bytes::from_static(br#"{"id":"o-1","order":{"number":1042}}"#);
    let event = build(&m, &h, body.clone(), at(0)).unwrap();
    assert_eq!(event.ty, "com.example.order.paid");
    assert_eq!(event.source, "https://shop.example");
    assert_eq!(event.id, "o-1");
    assert_eq!(event.subject.as_deref(), Some("1042"));
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(event.data, Some(body));
    assert_eq!(event.time.as_deref(), Some("1970-01-01T00:00:00.000Z"));
}

#[test]
fn a_missing_type_names_what_is_missing_and_a_missing_id_is_generated() {
    let m = mapping(
        r#"
sources:
  s:
    preset: hmac
    hmac: { header: X-Signature, secret: k }
    event: { type: "t.{header:X-Event-Type}", source: "/s", id: "{json:/id}", subject: "{json:/nope}" }
"#,
    );
    let body = Bytes::from_static(b"not json");
    let err = build(&m, &HeaderMap::new(), body.clone(), at(0)).unwrap_err();
    assert_eq!(
        err,
        BuildError::Missing {
            attribute: "type",
            missing: Missing::Header(HeaderName::from_static("x-event-type"))
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot build the event's type: header x-event-type is missing"
    );
    let h = headers(&[("X-Event-Type", "a")]);
    let one = build(&m, &h, body.clone(), at(0)).unwrap();
    let two = build(&m, &h, body, at(0)).unwrap();
    assert_eq!(one.id.len(), 36, "a UUID: {}", one.id);
    assert_ne!(one.id, two.id);
    assert_eq!(one.subject, None);
    assert_eq!(one.datacontenttype, None);
}

#[test]
fn control_characters_from_the_body_are_refused() {
    let m = mapping(
        r#"
sources:
  s:
    preset: hmac
    hmac: { header: X-Signature, secret: k }
    event: { type: "{json:/type}", source: "/s" }
"#,
    );
    let body = Bytes::from_static(br#"{"type":"a\nb"}"#);
    let err = build(&m, &HeaderMap::new(), body, at(0)).unwrap_err();
    assert!(matches!(err, BuildError::Invalid(_)), "{err:?}");
}

#[test]
fn the_github_preset_maps_event_delivery_and_repository() {
    let m = mapping("sources: { s: { preset: github, secret: k } }");
    let h = headers(&[
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ]);
    let body = Bytes::from_static(br#"{"repository":{"full_name":"octo/hello"}}"#);
    let event = build(&m, &h, body, at(0)).unwrap();
    assert_eq!(event.ty, "com.github.push");
    assert_eq!(event.source, "https://github.com");
    assert_eq!(event.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(event.subject.as_deref(), Some("octo/hello"));
}
