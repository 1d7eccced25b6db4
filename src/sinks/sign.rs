//! Signing deliveries (`http.sign`): Standard Webhooks headers, or an HMAC-SHA256 of the body
//! in one header. Also the Standard Webhooks signature itself, which ingress checks with.
//!
//! The `webhook-id` of a delivery is derived from what identifies it — the sink, and the
//! route, `source` and `id` of each event it carries — so every retry of it, before or after
//! a restart, carries the same id, and a receiver can use it to drop repeats.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use ring::{digest, hmac};

use super::Attempt;
use crate::config::{DigestEncoding, SecretKey, SignConfig};

/// The Standard Webhooks headers.
pub(crate) const WEBHOOK_ID: &str = "webhook-id";
/// Seconds since the Unix epoch of this attempt.
pub(crate) const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Space-separated `v1,<base64>` signatures.
pub(crate) const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// Signs the requests of one `http` sink.
pub(crate) struct Signer {
    scheme: Scheme,
}

enum Scheme {
    StandardWebhooks(Vec<hmac::Key>),
    Hmac(Box<BodyHmac>),
}

struct BodyHmac {
    header: HeaderName,
    key: hmac::Key,
    prefix: String,
    encoding: DigestEncoding,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach logs.
        match &self.scheme {
            Scheme::StandardWebhooks(keys) => {
                write!(f, "Signer(standard_webhooks, {})", keys.len())
            }
            Scheme::Hmac(h) => write!(f, "Signer(hmac in {})", h.header),
        }
    }
}

/// The HMAC-SHA256 key of a secret (made once, when the secret was read).
pub(crate) fn key(secret: &SecretKey) -> &hmac::Key {
    secret.hmac()
}

/// The Standard Webhooks signature: HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub(crate) fn webhook_signature(
    key: &hmac::Key,
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

impl Signer {
    /// A signer with the keys of `config`.
    pub(crate) fn new(config: &SignConfig) -> Self {
        let scheme = match config {
            SignConfig::StandardWebhooks { secrets } => {
                Scheme::StandardWebhooks(secrets.iter().map(|s| key(s).clone()).collect())
            }
            SignConfig::Hmac(h) => Scheme::Hmac(Box::new(BodyHmac {
                header: h.header.clone(),
                key: key(&h.secret).clone(),
                prefix: h.prefix.clone(),
                encoding: h.encoding,
            })),
        };
        Self { scheme }
    }

    /// Adds the signature headers for a request carrying `body` (the deliveries of `batch`
    /// to sink `sink`), sent at `now`.
    pub(crate) fn sign(
        &self,
        sink: &str,
        batch: &[Attempt<'_>],
        now: SystemTime,
        body: &[u8],
        headers: &mut HeaderMap,
    ) {
        match &self.scheme {
            Scheme::StandardWebhooks(keys) => {
                let id = webhook_id(sink, batch);
                let seconds = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let timestamp = seconds.to_string();
                let mut signatures = String::with_capacity(keys.len() * 48);
                for key in keys {
                    let tag = webhook_signature(key, &id, &timestamp, body);
                    if !signatures.is_empty() {
                        signatures.push(' ');
                    }
                    signatures.push_str("v1,");
                    base64::engine::general_purpose::STANDARD
                        .encode_string(tag.as_ref(), &mut signatures);
                }
                // Ids are hex, timestamps digits and signatures base64: always header text.
                for (name, value) in [
                    (WEBHOOK_ID, id),
                    (WEBHOOK_TIMESTAMP, timestamp),
                    (WEBHOOK_SIGNATURE, signatures),
                ] {
                    if let Ok(value) = HeaderValue::try_from(value) {
                        headers.insert(HeaderName::from_static(name), value);
                    }
                }
            }
            Scheme::Hmac(h) => {
                let tag = hmac::sign(&h.key, body);
                let mut value = h.prefix.clone();
                match h.encoding {
                    DigestEncoding::Hex => hex(tag.as_ref(), &mut value),
                    DigestEncoding::Base64 => base64::engine::general_purpose::STANDARD
                        .encode_string(tag.as_ref(), &mut value),
                }
                // The prefix was checked to be header text when the configuration was read.
                if let Ok(value) = HeaderValue::try_from(value) {
                    headers.insert(h.header.clone(), value);
                }
            }
        }
    }
}

/// `msg_` and 32 hex digits of a SHA-256 over the sink and each delivery's route, `source`
/// and `id` (each length-prefixed, so no two different deliveries hash the same text).
pub(crate) fn webhook_id(sink: &str, batch: &[Attempt<'_>]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    let mut field = |text: &str| {
        context.update(&(text.len() as u64).to_be_bytes());
        context.update(text.as_bytes());
    };
    field(sink);
    for attempt in batch {
        field(attempt.route);
        field(&attempt.event.source);
        field(&attempt.event.id);
    }
    let digest = context.finish();
    let mut id = String::with_capacity(36);
    id.push_str("msg_");
    hex(&digest.as_ref()[..16], &mut id);
    id
}

/// Appends `bytes` as lowercase hexadecimal.
fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}
