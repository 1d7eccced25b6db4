//! Signature checks of the source presets, over the raw body, before a byte of it is parsed.
//!
//! The HMAC keys, the Standard Webhooks check and the constant-time comparison are the ones
//! ingress authentication and sink signing use. Every configured secret is compared, so the
//! time taken does not tell which one (if any) matched, and a failure names the check that
//! failed, never a secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName};
use base64::Engine as _;
use ring::hmac;

use crate::config::{DigestEncoding, HmacSignConfig, SecretKey, Verify};
use crate::ingress::auth::{self, constant_time_eq, AuthFailure};
use crate::sinks::sign;

const GITHUB: &str = "x-hub-signature-256";
const STRIPE: &str = "stripe-signature";
const SHOPIFY: &str = "x-shopify-hmac-sha256";
const SLACK: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
/// Most `v1=` entries looked at in one `Stripe-Signature`.
const MAX_SIGNATURES: usize = 16;

/// Which check a signed request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Failure {
    /// The signature header (or its timestamp) is absent.
    #[error("missing {0} header")]
    MissingHeader(String),
    /// A header is not in its provider's format.
    #[error("bad format: {0}")]
    BadFormat(&'static str),
    /// The signed timestamp is further from now than the tolerance.
    #[error("{header} timestamp outside the tolerance of {} seconds", tolerance.as_secs())]
    OutsideTolerance {
        /// The header carrying the timestamp.
        header: &'static str,
        /// The configured tolerance.
        tolerance: Duration,
    },
    /// No configured secret produces the signature sent.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// A Standard Webhooks check failed.
    #[error("{0}")]
    StandardWebhooks(AuthFailure),
}

/// Checks the signature of a request with `body`, received at `now`.
pub(crate) fn verify(
    verify: &Verify,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Failure> {
    match verify {
        Verify::Github(secrets) => {
            let value = header(headers, GITHUB)?;
            let hex = value.strip_prefix("sha256=").ok_or(Failure::BadFormat(
                "X-Hub-Signature-256 must be sha256=<hex>",
            ))?;
            let presented = decode_hex(hex).ok_or(Failure::BadFormat(
                "X-Hub-Signature-256 must be sha256=<hex>",
            ))?;
            check(secrets, &[presented], &[body])
        }
        Verify::Shopify(secrets) => {
            let presented = base64::engine::general_purpose::STANDARD
                .decode(header(headers, SHOPIFY)?)
                .map_err(|_| Failure::BadFormat("X-Shopify-Hmac-Sha256 must be base64"))?;
            check(secrets, &[presented], &[body])
        }
        Verify::Stripe(secrets, tolerance) => stripe(secrets, *tolerance, headers, body, now),
        Verify::Slack(secrets, tolerance) => slack(secrets, *tolerance, headers, body, now),
        Verify::StandardWebhooks(secrets) => {
            let signed = auth::signed_headers(headers, now).map_err(Failure::StandardWebhooks)?;
            if signed.signed_by(secrets, body) {
                Ok(())
            } else {
                Err(Failure::SignatureMismatch)
            }
        }
        Verify::Hmac(config) => hmac_header(config, headers, body),
    }
}

fn hmac_header(config: &HmacSignConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), Failure> {
    let value = header(headers, config.header.as_str())?;
    let encoded = value
        .strip_prefix(config.prefix.as_str())
        .ok_or(Failure::BadFormat("the signature lacks its prefix"))?;
    let presented = match config.encoding {
        DigestEncoding::Hex => decode_hex(encoded),
        DigestEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok(),
    }
    .ok_or(Failure::BadFormat("the signature is not in its encoding"))?;
    check(std::slice::from_ref(&config.secret), &[presented], &[body])
}

/// `Stripe-Signature: t=<seconds>,v1=<hex>[,v1=<hex>…]` (other schemes ignored), signing
/// `{t}.{body}`.
fn stripe(
    secrets: &[SecretKey],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Failure> {
    let value = header(headers, STRIPE)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", hex)) if signatures.len() < MAX_SIGNATURES => {
                // An entry that is not hex cannot match; the others still may.
                signatures.extend(decode_hex(hex));
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Failure::BadFormat("Stripe-Signature has no t="))?;
    if signatures.is_empty() {
        return Err(Failure::BadFormat("Stripe-Signature has no v1= signature"));
    }
    within(timestamp, tolerance, now, "Stripe-Signature")?;
    check(secrets, &signatures, &[timestamp.as_bytes(), b".", body])
}

/// `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
fn slack(
    secrets: &[SecretKey],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Failure> {
    let signature = header(headers, SLACK)?;
    let timestamp = header(headers, SLACK_TIMESTAMP)?;
    let presented = signature
        .strip_prefix("v0=")
        .and_then(decode_hex)
        .ok_or(Failure::BadFormat("X-Slack-Signature must be v0=<hex>"))?;
    within(timestamp, tolerance, now, "X-Slack-Request-Timestamp")?;
    let base = [b"v0:", timestamp.as_bytes(), b":", body];
    check(secrets, &[presented], &base)
}

/// A header's text, trimmed; absent or not text is a [`Failure::MissingHeader`] or a
/// [`Failure::BadFormat`].
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, Failure> {
    let value = headers
        .get(name)
        .ok_or_else(|| Failure::MissingHeader(display_name(name)))?;
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| Failure::BadFormat("a signature header is not text"))
}

/// A header name as its provider writes it (`X-Hub-Signature-256`), for messages.
fn display_name(name: &str) -> String {
    let known = [
        "X-Hub-Signature-256",
        "Stripe-Signature",
        "X-Shopify-Hmac-Sha256",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
    ];
    known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(
            || HeaderName::try_from(name).map_or_else(|_| name.to_owned(), |h| h.to_string()),
            |k| (*k).to_owned(),
        )
}

/// Checks that `timestamp` (whole seconds since the Unix epoch) is within `tolerance` of `now`.
fn within(
    timestamp: &str,
    tolerance: Duration,
    now: SystemTime,
    header: &'static str,
) -> Result<(), Failure> {
    let seconds: u64 = Some(timestamp)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse().ok())
        .ok_or(Failure::BadFormat(
            "the timestamp must be whole seconds since the Unix epoch",
        ))?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now.abs_diff(seconds) > tolerance.as_secs() {
        return Err(Failure::OutsideTolerance { header, tolerance });
    }
    Ok(())
}

/// Whether one of `secrets` signs the concatenation of `message` into one of `presented`.
fn check(secrets: &[SecretKey], presented: &[Vec<u8>], message: &[&[u8]]) -> Result<(), Failure> {
    let mut matched = false;
    for secret in secrets {
        let mut context = hmac::Context::with_key(&sign::key(secret));
        for part in message {
            context.update(part);
        }
        let tag = context.sign();
        for candidate in presented {
            matched |= constant_time_eq(tag.as_ref(), candidate);
        }
    }
    if matched {
        Ok(())
    } else {
        Err(Failure::SignatureMismatch)
    }
}

/// Hexadecimal (either case) as bytes; `None` for an odd length or a non-hex digit.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16);
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}
