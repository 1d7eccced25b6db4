//! Signature settings: `sinks.X.http.sign` (how deliveries are signed) and the signed
//! credentials of `ingress.auth` (`sas_token_key`, `standard_webhooks`), each error with its
//! YAML path. Key bytes live in [`SecretKey`], whose `Debug` never shows them.
//!
//! Imports nothing internal outside `config`.

use axum::http::HeaderName;
use base64::Engine as _;

use super::env::{Node, Obj};
use super::model::{self, Reader};

/// Prefix of a Standard Webhooks secret; the rest is the key, base64-encoded.
const WHSEC: &str = "whsec_";
/// Shortest Standard Webhooks key accepted, in bytes (the specification asks for 24 to 64).
const MIN_WEBHOOK_KEY: usize = 16;

/// Key bytes of an HMAC secret. Its `Debug` shows only `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// A key of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads a Standard Webhooks secret: `whsec_` followed by the base64 key.
    pub fn from_whsec(secret: &str) -> Result<Self, String> {
        let Some(encoded) = secret.strip_prefix(WHSEC) else {
            return Err("expected a secret starting with whsec_".to_owned());
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ is not valid base64".to_owned())?;
        if key.len() < MIN_WEBHOOK_KEY {
            return Err(format!(
                "the key is {} bytes; at least {MIN_WEBHOOK_KEY} are needed",
                key.len()
            ));
        }
        Ok(Self(key))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs or `check` output.
        f.write_str("***")
    }
}

/// How an `http` sink signs each request (`http.sign`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignConfig {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and one `v1,` signature per
    /// secret in `webhook-signature`.
    StandardWebhooks {
        /// Every secret signs; two during a rotation.
        secrets: Vec<SecretKey>,
    },
    /// An HMAC-SHA256 of the body in one header (GitHub's `X-Hub-Signature-256` style).
    Hmac(HmacSignConfig),
}

/// `sign.hmac`: an HMAC-SHA256 of the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSignConfig {
    /// The header that carries the signature.
    pub header: HeaderName,
    /// The key (the secret's UTF-8 bytes, as GitHub uses it).
    pub secret: SecretKey,
    /// Text before the encoded digest (`sha256=`).
    pub prefix: String,
    /// How the digest is written.
    pub encoding: DigestEncoding,
}

/// How a digest is written into a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestEncoding {
    /// Lowercase hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

const ENCODINGS: &[(&str, DigestEncoding)] = &[
    ("hex", DigestEncoding::Hex),
    ("base64", DigestEncoding::Base64),
];

/// Reads `http.sign`: exactly one of `standard_webhooks` and `hmac`.
pub(super) fn read_sign(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<SignConfig> {
    let o = rd.object(node, &model::SIGN)?;
    match (o.has("standard_webhooks"), o.has("hmac")) {
        (true, false) => {
            let sw = rd.section(&o, "standard_webhooks", &model::STANDARD_WEBHOOKS)?;
            let secrets = webhook_secrets(rd, &sw)?;
            Some(SignConfig::StandardWebhooks { secrets })
        }
        (false, true) => {
            let h = rd.section(&o, "hmac", &model::HMAC)?;
            hmac(rd, &h).map(SignConfig::Hmac)
        }
        _ => rd.fail(&node.path, "needs exactly one of standard_webhooks, hmac"),
    }
}

/// Reads `secrets:` of a `standard_webhooks` mapping: a non-empty list of `whsec_` secrets.
pub(super) fn webhook_secrets(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<Vec<SecretKey>> {
    rd.required(o, "secrets", |rd, n| {
        rd.some(n, "needs at least one secret", |rd, n| {
            let secret = rd.text(n)?;
            // The message never repeats the value: it may be an interpolated secret.
            SecretKey::from_whsec(&secret).map_or_else(|e| rd.fail(&n.path, e), Some)
        })
    })
}

/// Reads an Event Grid access key given for SAS tokens: base64, used decoded (as Azure's
/// SDKs use it).
pub(super) fn sas_token_key(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<SecretKey> {
    let key = rd.text(node)?;
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(bytes) if !bytes.is_empty() => Some(SecretKey(bytes)),
        _ => rd.fail(&node.path, "expected the topic's access key (base64)"),
    }
}

/// Reads a `hmac:` mapping (of `http.sign`, or of an `hmac` source).
pub(super) fn hmac(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<HmacSignConfig> {
    let header = rd.required(o, "header", |rd, n| {
        let name = rd.text(n)?;
        HeaderName::try_from(name)
            .ok()
            .or_else(|| rd.fail(&n.path, "invalid header name"))
    });
    let secret = rd.required(o, "secret", |rd, n| {
        rd.text(n).map(|s| SecretKey(s.into_bytes()))
    });
    let prefix = rd.or(o.get("prefix"), String::new(), Reader::string);
    let encoding = rd.or(o.get("encoding"), DigestEncoding::Hex, |rd, n| {
        rd.choice(n, "encoding", ENCODINGS)
    });
    let prefix = prefix?;
    if axum::http::HeaderValue::try_from(prefix.as_str()).is_err() {
        return rd.fail(&o.key_path("prefix"), "invalid header text");
    }
    Some(HmacSignConfig {
        header: header?,
        secret: secret?,
        prefix,
        encoding: encoding?,
    })
}
