//! Who may use the admin API: the token check (`Authorization: Bearer <token>`, compared in
//! constant time), and the refusal of what a web page could make a browser send.
//!
//! A page on another site can make a browser send requests to a loopback admin server in two
//! ways. DNS rebinding points the page's own name at 127.0.0.1, so the browser treats the
//! admin API as same-origin and lets the page read the answers; the request still names the
//! page's host in `Host`, so without a token only `localhost` and IP literals are served
//! (a rebinding attack needs a name). A cross-site request (a form, `fetch` in `no-cors`
//! mode) cannot be read but can change things; browsers mark it with `Sec-Fetch-Site` and
//! `Origin`, which command-line clients never send, so a request that changes something is
//! refused when either says it comes from another site. Methods other than POST need a CORS
//! preflight, which the admin server never grants, but the rule covers them too.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AdminState;

/// Lets a request through when no token is configured or it presents the right one;
/// answers 401 with `WWW-Authenticate: Bearer` otherwise.
pub(super) async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.config.get();
    let Some(token) = &config.admin.token else {
        return next.run(request).await;
    };
    match presented(request.headers()) {
        Some(given) if constant_time_eq(given, token.expose()) => next.run(request).await,
        _ => unauthorized(),
    }
}

/// Refuses, before the token check: without a token, a `Host` other than `localhost` or an
/// IP address (421); with or without one, a state-changing request that a browser marks as
/// coming from another site (403).
pub(super) async fn refuse_browsers(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let open = state.config.get().admin.token.is_none();
    if open && !local_host(&request) {
        let error = "the admin API without admin.token answers only requests addressed to \
                     localhost or an IP address (Host header); set admin.token to reach it by name";
        return refused(StatusCode::MISDIRECTED_REQUEST, error);
    }
    if changes_state(request.method()) && cross_site(request.headers()) {
        let error = "a request that changes something is refused when a browser sent it from \
                     another site (Origin or Sec-Fetch-Site); send it from a command-line client";
        return refused(StatusCode::FORBIDDEN, error);
    }
    next.run(request).await
}

/// Whether the request is addressed (`Host`, or the URI's authority in HTTP/2) to `localhost`
/// or an IP address, any port. A request naming nothing passes: browsers always name a host.
fn local_host(request: &Request) -> bool {
    let authority = match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok().and_then(|h| h.parse::<Authority>().ok()),
        None => match request.uri().authority() {
            Some(authority) => Some(authority.clone()),
            None => return true,
        },
    };
    authority.is_some_and(|a| {
        let host = a.host();
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok()
    })
}

/// Methods that may change state (everything but GET, HEAD and OPTIONS).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a browser marked the request as sent by a page of another origin.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"));
    let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
        let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.as_bytes());
        match (authority, host) {
            (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(host),
            _ => true,
        }
    });
    fetch_site || foreign_origin
}

fn refused(status: StatusCode, error: &str) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

/// The bearer token of an `Authorization` header (scheme case-insensitive).
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = (value.get(..7)?, value.get(7..)?);
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

fn unauthorized() -> Response {
    let body = Json(serde_json::json!({ "error": "missing or wrong bearer token" }));
    let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares without stopping at the first difference, so the time taken does not tell an
/// attacker how much of a guess was right (only, at most, whether its length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tokens_match_and_others_do_not() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                let name = header::HeaderName::from_static(k);
                (name, HeaderValue::from_static(v))
            })
            .collect()
    }

    #[test]
    fn only_localhost_and_ip_addresses_are_local_hosts() {
        let local = |host: &'static str| {
            let request = Request::builder()
                .header(header::HOST, host)
                .body(axum::body::Body::empty())
                .expect("request");
            local_host(&request)
        };
        for host in [
            "localhost",
            "LOCALHOST:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "10.0.0.7",
        ] {
            assert!(local(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "127.0.0.1.nip.io:9090",
            "localhost.evil",
        ] {
            assert!(!local(host), "{host}");
        }
    }

    #[test]
    fn browsers_marks_of_another_site_are_recognised() {
        let host = ("host", "127.0.0.1:9090");
        assert!(!cross_site(&with(&[host])));
        assert!(!cross_site(&with(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!cross_site(&with(&[host, ("sec-fetch-site", "none")])));
        assert!(!cross_site(&with(&[
            host,
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(cross_site(&with(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&with(&[host, ("sec-fetch-site", "same-site")])));
        assert!(cross_site(&with(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&with(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(cross_site(&with(&[host, ("origin", "null")])));
        assert!(changes_state(&Method::POST) && changes_state(&Method::DELETE));
        assert!(!changes_state(&Method::GET) && !changes_state(&Method::HEAD));
    }

    #[test]
    fn reads_a_bearer_token_with_any_scheme_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR abc "),
        );
        assert_eq!(presented(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&headers), None);
    }
}
