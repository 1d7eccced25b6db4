//! Ingress authentication: Event Grid access keys (`aeg-sas-key` header or query), bearer
//! tokens (`Authorization: Bearer` or `?access_token=`, as the CloudEvents webhook spec
//! requires a target to accept both), Event Grid SAS tokens (`aeg-sas-token` or
//! `Authorization: SharedAccessSignature`) and Standard Webhooks signatures.
//!
//! A Standard Webhooks signature covers the body, so [`check`] can only vet its headers
//! (present, well-formed, timestamp within tolerance) and hands back a [`Gate::Body`]; the
//! handler finishes it with [`Gate::verify_body`] once the body is read, before decoding.
//! A verified `webhook-id` is then remembered in [`ReplayGuard`] until its timestamp leaves
//! the tolerance, and a repeat of it is refused.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::percent_decode_str;
use ring::{digest, hmac};

use super::error::IngressError;
use crate::config::{AuthRule, SecretKey};
use crate::sinks::sign::{self, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

const SAS_KEY: &str = "aeg-sas-key";
const SAS_TOKEN: &str = "aeg-sas-token";
const ACCESS_TOKEN: &str = "access_token";
/// How far a `webhook-timestamp` may be from now, either way (the specification's 5 minutes).
pub(crate) const TOLERANCE_SECS: u64 = 5 * 60;
/// Longest `webhook-id` accepted.
const MAX_WEBHOOK_ID: usize = 256;
/// Most `v1,` signatures looked at in one `webhook-signature`.
const MAX_SIGNATURES: usize = 16;
/// Most `webhook-id`s remembered at once (about 25 MB at the cap: each is a 16-byte hash and
/// an expiry). Past it, signed requests answer 503 with `Retry-After` until ids expire:
/// forgetting an id early would let its request be replayed.
pub(crate) const REPLAY_CAP: usize = 500_000;

/// Which check a signed credential failed. Messages never say which secret came close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthFailure {
    /// One of the Standard Webhooks headers is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header or token is not in its format.
    #[error("bad format: {0}")]
    BadFormat(&'static str),
    /// The SAS token's expiry has passed.
    #[error("SAS token expired")]
    Expired,
    /// The SAS token was issued for another resource.
    #[error("SAS token resource does not match this endpoint")]
    WrongResource,
    /// `webhook-timestamp` is more than the tolerance away from now.
    #[error("webhook-timestamp outside the tolerance of 5 minutes")]
    OutsideTolerance,
    /// No configured secret produces the signature sent.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// This `webhook-id` was accepted within the tolerance window already.
    #[error("replayed webhook-id")]
    Replayed,
}

/// How an authorized request proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authorized {
    /// No authentication is configured.
    Open,
    /// A credential in a header.
    Header,
    /// A credential in the query string; a 2xx should then carry `Cache-Control: private`.
    Query,
}

impl Authorized {
    /// Adds `Cache-Control: private` to a success answer when the credential came in the
    /// query (CloudEvents webhook spec), so that it cannot end up in a shared cache.
    pub(crate) fn mark(self, mut response: Response) -> Response {
        if self == Self::Query {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
        response
    }
}

/// Where authentication stands after the headers were read.
#[derive(Debug)]
pub(crate) enum Gate {
    /// Decided: the request may go on.
    Done(Authorized),
    /// A Standard Webhooks signature whose headers passed; the body decides.
    Body(Signed),
}

/// The vetted Standard Webhooks headers of a request.
#[derive(Debug)]
pub(crate) struct Signed {
    id: String,
    timestamp: String,
    seconds: u64,
    signatures: Vec<Vec<u8>>,
}

/// Checks that the request carries one credential matching `rules` (nothing to check when
/// `rules` is empty), as far as the headers tell; see [`Gate`].
pub(crate) fn check(
    rules: &[AuthRule],
    headers: &HeaderMap,
    uri: &Uri,
    now: SystemTime,
) -> Result<Gate, IngressError> {
    if rules.is_empty() {
        return Ok(Gate::Done(Authorized::Open));
    }
    let mut presented = false;
    let mut failure = None;
    for key in headers.get_all(SAS_KEY) {
        presented = true;
        if matches(rules, Kind::SasKey, key.as_bytes()) {
            return Ok(Gate::Done(Authorized::Header));
        }
    }
    for value in headers.get_all(header::AUTHORIZATION) {
        if let Some(token) = bearer_token(value.as_bytes()) {
            presented = true;
            if matches(rules, Kind::Bearer, token) {
                return Ok(Gate::Done(Authorized::Header));
            }
        }
    }
    let token_keys: Vec<&SecretKey> = rules
        .iter()
        .filter_map(|r| match r {
            AuthRule::SasToken(key) => Some(key),
            _ => None,
        })
        .collect();
    if !token_keys.is_empty() {
        for token in sas_tokens(headers) {
            presented = true;
            match verify_sas_token(&token_keys, token, headers, uri, now) {
                Ok(()) => return Ok(Gate::Done(Authorized::Header)),
                Err(f) => {
                    failure.get_or_insert(f);
                }
            }
        }
    }
    for pair in uri.query().unwrap_or("").split('&') {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let kind = match name {
            SAS_KEY => Kind::SasKey,
            ACCESS_TOKEN => Kind::Bearer,
            _ => continue,
        };
        presented = true;
        if matches(rules, kind, &form_decode(raw)) {
            return Ok(Gate::Done(Authorized::Query));
        }
    }
    let signs = rules
        .iter()
        .any(|r| matches!(r, AuthRule::StandardWebhooks(_)));
    let sends = [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
        .iter()
        .any(|name| headers.contains_key(*name));
    if signs && sends {
        match signed_headers(headers, now) {
            Ok(signed) => return Ok(Gate::Body(signed)),
            Err(f) => {
                failure.get_or_insert(f);
            }
        }
    }
    Err(match failure {
        Some(failure) => IngressError::Refused(failure),
        None if presented => IngressError::InvalidCredential,
        None => IngressError::MissingCredential,
    })
}

impl Gate {
    /// Finishes authentication with the request body: a Standard Webhooks signature must
    /// match one secret and its `webhook-id` must be new. The [`Claim`] returned holds the id;
    /// [`Claim::keep`] it once the request succeeded, or drop it to let a retry through.
    pub(crate) fn verify_body(
        self,
        rules: &[AuthRule],
        body: &[u8],
        replay: &Arc<ReplayGuard>,
        now: SystemTime,
    ) -> Result<(Authorized, Option<Claim>), IngressError> {
        let signed = match self {
            Self::Done(authorized) => return Ok((authorized, None)),
            Self::Body(signed) => signed,
        };
        let matched = rules.iter().fold(false, |found, rule| match rule {
            AuthRule::StandardWebhooks(secrets) => found | signed.signed_by(secrets, body),
            _ => found,
        });
        if !matched {
            return Err(IngressError::Refused(AuthFailure::SignatureMismatch));
        }
        let expires = signed.seconds.saturating_add(TOLERANCE_SECS);
        let claim = replay.claim(&signed.id, expires, unix_seconds(now))?;
        Ok((Authorized::Header, Some(claim)))
    }
}

impl Signed {
    /// Whether one of `secrets` made one of the signatures sent over `body`. Every pair is
    /// compared, so the time taken does not tell which secret (if any) matched.
    pub(crate) fn signed_by(&self, secrets: &[SecretKey], body: &[u8]) -> bool {
        let mut matched = false;
        for secret in secrets {
            let key = sign::key(secret);
            let tag = sign::webhook_signature(&key, &self.id, &self.timestamp, body);
            for presented in &self.signatures {
                matched |= constant_time_eq(tag.as_ref(), presented);
            }
        }
        matched
    }
}

/// Reads and vets the Standard Webhooks headers (all but the signature's value).
pub(crate) fn signed_headers(headers: &HeaderMap, now: SystemTime) -> Result<Signed, AuthFailure> {
    let text = |name: &'static str| -> Result<&str, AuthFailure> {
        let value = headers.get(name).ok_or(AuthFailure::MissingHeader(name))?;
        value
            .to_str()
            .map(str::trim)
            .map_err(|_| AuthFailure::BadFormat("a webhook header is not text"))
    };
    let id = text(WEBHOOK_ID)?;
    if id.is_empty() || id.len() > MAX_WEBHOOK_ID {
        return Err(AuthFailure::BadFormat(
            "webhook-id must be 1 to 256 characters",
        ));
    }
    let timestamp = text(WEBHOOK_TIMESTAMP)?;
    let signature = text(WEBHOOK_SIGNATURE)?;
    let seconds: u64 = timestamp
        .parse()
        .ok()
        .filter(|_| timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(AuthFailure::BadFormat(
            "webhook-timestamp must be whole seconds since the Unix epoch",
        ))?;
    if unix_seconds(now).abs_diff(seconds) > TOLERANCE_SECS {
        return Err(AuthFailure::OutsideTolerance);
    }
    let signatures: Vec<Vec<u8>> = signature
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .take(MAX_SIGNATURES)
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .collect();
    if signatures.is_empty() {
        return Err(AuthFailure::BadFormat(
            "webhook-signature holds no v1,<base64> signature",
        ));
    }
    Ok(Signed {
        id: id.to_owned(),
        timestamp: timestamp.to_owned(),
        seconds,
        signatures,
    })
}

/// The SAS tokens a request presents: `aeg-sas-token` values and
/// `Authorization: SharedAccessSignature <token>`.
fn sas_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    const SCHEME: &str = "sharedaccesssignature ";
    let direct = headers.get_all(SAS_TOKEN).iter();
    let authorization = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| {
            let value = v.to_str().ok()?;
            let scheme = value.get(..SCHEME.len())?;
            scheme
                .eq_ignore_ascii_case(SCHEME)
                .then(|| value.get(SCHEME.len()..))
                .flatten()
        });
    direct
        .filter_map(|v| v.to_str().ok())
        .chain(authorization)
        .map(str::trim)
}

/// Verifies an Event Grid SAS token `r=<resource>&e=<expiry>&s=<signature>`: the signature
/// is base64(HMAC-SHA256(key, "r=<resource>&e=<expiry>")) over the two values exactly as sent
/// (so either SDK's URL encoding verifies), then the expiry must lie ahead and the resource
/// must cover this request.
fn verify_sas_token(
    keys: &[&SecretKey],
    token: &str,
    headers: &HeaderMap,
    uri: &Uri,
    now: SystemTime,
) -> Result<(), AuthFailure> {
    let (mut resource, mut expiry, mut signature) = (None, None, None);
    for pair in token.split('&') {
        match pair.split_once('=') {
            Some(("r", v)) => resource = Some(v),
            Some(("e", v)) => expiry = Some(v),
            Some(("s", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (Some(resource), Some(expiry), Some(signature)) = (resource, expiry, signature) else {
        return Err(AuthFailure::BadFormat("a SAS token needs r, e and s"));
    };
    // The signature is percent-encoded base64, in which `+` is itself.
    let signature = base64::engine::general_purpose::STANDARD
        .decode(percent_decode_str(signature).collect::<Vec<u8>>())
        .map_err(|_| AuthFailure::BadFormat("the SAS token signature is not base64"))?;
    let signed = format!("r={resource}&e={expiry}");
    let matched = keys.iter().fold(false, |found, key| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key.bytes());
        found | hmac::verify(&key, signed.as_bytes(), &signature).is_ok()
    });
    if !matched {
        return Err(AuthFailure::SignatureMismatch);
    }
    let expiry = String::from_utf8(form_decode(expiry).into_owned())
        .ok()
        .and_then(|e| parse_expiry(&e))
        .ok_or(AuthFailure::BadFormat("the SAS token expiry is not a date"))?;
    if expiry <= DateTime::<Utc>::from(now) {
        return Err(AuthFailure::Expired);
    }
    let resource = String::from_utf8(form_decode(resource).into_owned())
        .map_err(|_| AuthFailure::WrongResource)?;
    if covers(&resource, headers, uri) {
        Ok(())
    } else {
        Err(AuthFailure::WrongResource)
    }
}

/// A SAS token expiry as the SDKs write it: .NET's en-US `M/d/yyyy h:mm:ss tt` (with or
/// without an offset), Python's `str(datetime)` (`2026-12-06 18:20:15+00:00`), RFC 3339,
/// or seconds since the Unix epoch. A time without an offset is UTC.
fn parse_expiry(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return DateTime::from_timestamp(text.parse().ok()?, 0);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    let offset = ["%m/%d/%Y %I:%M:%S %p %:z", "%Y-%m-%d %H:%M:%S%.f%:z"];
    if let Some(t) = offset
        .iter()
        .find_map(|f| DateTime::parse_from_str(text, f).ok())
    {
        return Some(t.to_utc());
    }
    let naive = [
        "%m/%d/%Y %I:%M:%S %p",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ];
    naive
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
}

/// Whether a SAS token's resource covers this request, as Event Grid checks it: the host
/// (`Host` header) equal and the resource's path a prefix of the request's, at a segment
/// boundary, ignoring case. The scheme is not compared — TLS often ends in front of the
/// daemon — and neither is the resource's query (the SDKs add an API version there).
fn covers(resource: &str, headers: &HeaderMap, uri: &Uri) -> bool {
    let lower = resource.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return false;
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    if !authority.eq_ignore_ascii_case(host.trim()) {
        return false;
    }
    let path = path.trim_end_matches('/');
    let request = uri.path().to_ascii_lowercase();
    request.starts_with(path)
        && (request.len() == path.len() || request.as_bytes().get(path.len()) == Some(&b'/'))
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `webhook-id`s accepted within the tolerance window, so that a repeat is refused.
///
/// Ids are kept as 128-bit hashes with the time their timestamp leaves the tolerance;
/// expired ones are swept at most every 10 seconds (every second once full). At
/// [`REPLAY_CAP`] ids a new signed request is answered 503 rather than forgetting an id early.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    seen: Mutex<Seen>,
    cap: usize,
}

#[derive(Debug, Default)]
struct Seen {
    /// Hash of the id → Unix second after which it is forgotten.
    ids: HashMap<u128, u64>,
    swept_at: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_cap(REPLAY_CAP)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `cap` ids.
    pub(crate) fn with_cap(cap: usize) -> Self {
        Self {
            seen: Mutex::new(Seen::default()),
            cap,
        }
    }

    /// Takes `id` (remembered until `expires`, a Unix second), or refuses it as a replay.
    pub(crate) fn claim(
        self: &Arc<Self>,
        id: &str,
        expires: u64,
        now: u64,
    ) -> Result<Claim, IngressError> {
        let hash = digest::digest(&digest::SHA256, id.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash.as_ref()[..16]);
        let key = u128::from_be_bytes(bytes);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&until) = seen.ids.get(&key) {
            if until >= now {
                return Err(IngressError::Refused(AuthFailure::Replayed));
            }
        }
        let full = seen.ids.len() >= self.cap;
        if now >= seen.swept_at.saturating_add(10) || (full && now > seen.swept_at) {
            seen.ids.retain(|_, until| *until >= now);
            seen.swept_at = now;
        }
        if seen.ids.len() >= self.cap && !seen.ids.contains_key(&key) {
            return Err(IngressError::ReplayWindowFull);
        }
        seen.ids.insert(key, expires);
        Ok(Claim {
            guard: Arc::clone(self),
            key,
            kept: false,
        })
    }

    /// How many ids are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ids
            .len()
    }
}

/// A `webhook-id` taken by a request in progress. Dropped without [`Claim::keep`], it is
/// forgotten again, so that the sender's retry of a request that failed here goes through.
#[derive(Debug)]
pub(crate) struct Claim {
    guard: Arc<ReplayGuard>,
    key: u128,
    kept: bool,
}

impl Claim {
    /// The request succeeded: the id stays remembered until it expires.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }

    /// From here the request's events are stored even if the client hangs up: dropping the
    /// claim keeps the id; [`Claim::release`] lets it go.
    pub(crate) fn kept_on_drop(mut self) -> Self {
        self.kept = true;
        self
    }

    /// The request failed and stored nothing: the id is forgotten, so the sender's retry is
    /// not taken for a replay.
    pub(crate) fn release(mut self) {
        self.kept = false;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.kept {
            let mut seen = self
                .guard
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            seen.ids.remove(&self.key);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SasKey,
    Bearer,
}

/// True when `presented` equals a configured secret of the same kind. Every rule is compared,
/// so the time taken does not tell which rule (if any) matched.
fn matches(rules: &[AuthRule], kind: Kind, presented: &[u8]) -> bool {
    rules.iter().fold(false, |found, rule| {
        let same = match (rule, kind) {
            (AuthRule::SasKey(secret), Kind::SasKey) | (AuthRule::Bearer(secret), Kind::Bearer) => {
                constant_time_eq(secret.as_bytes(), presented)
            }
            _ => false,
        };
        found | same
    })
}

/// Compares two byte strings in time that depends only on their lengths, so that a
/// secret cannot be guessed byte by byte from response times. (Its length can be; the
/// secrets are long enough that this does not help.)
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value.get(7..)?.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A query-string value, form-decoded: `+` is a space, `%XY` a byte.
pub(crate) fn form_decode(raw: &str) -> Cow<'_, [u8]> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        Cow::Owned(Cow::from(percent_decode_str(&spaced)).into_owned())
    } else {
        percent_decode_str(raw).into()
    }
}
