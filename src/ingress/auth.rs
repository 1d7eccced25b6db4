//! Ingress authentication: Event Grid access keys (`aeg-sas-key` header or query) and
//! bearer tokens (`Authorization: Bearer` or `?access_token=`, as the CloudEvents webhook
//! spec requires a target to accept both).

use std::borrow::Cow;

use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use percent_encoding::percent_decode_str;

use super::error::IngressError;
use crate::config::AuthRule;

const SAS_KEY: &str = "aeg-sas-key";
const ACCESS_TOKEN: &str = "access_token";

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

/// Checks that the request carries one credential matching `rules` (nothing to check when
/// `rules` is empty).
pub(crate) fn check(
    rules: &[AuthRule],
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Authorized, IngressError> {
    if rules.is_empty() {
        return Ok(Authorized::Open);
    }
    let mut presented = false;
    for key in headers.get_all(SAS_KEY) {
        presented = true;
        if matches(rules, Kind::SasKey, key.as_bytes()) {
            return Ok(Authorized::Header);
        }
    }
    for value in headers.get_all(header::AUTHORIZATION) {
        if let Some(token) = bearer_token(value.as_bytes()) {
            presented = true;
            if matches(rules, Kind::Bearer, token) {
                return Ok(Authorized::Header);
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
            return Ok(Authorized::Query);
        }
    }
    Err(if presented {
        IngressError::InvalidCredential
    } else {
        IngressError::MissingCredential
    })
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
