//! The operator dashboard: one static page, its script and its style sheet, compiled into the
//! binary. The page reads and drives the same admin API a script would (it has no endpoints
//! of its own), from the same origin, with the token in an `Authorization` header.
//!
//! Served without the token (the files hold no data; the API behind them asks for it), each
//! with a Content-Security-Policy that lets the page load only these files and talk only to
//! this server: no inline script or style, no framing, no form submissions. Event attributes
//! shown by the page are attacker-controlled; the script only ever sets them as text.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AdminState;

/// The page.
const INDEX_HTML: &str = include_str!("index.html");
/// Everything the page does.
const DASHBOARD_JS: &str = include_str!("dashboard.js");
/// Its looks.
const DASHBOARD_CSS: &str = include_str!("dashboard.css");
/// Its icon.
const ICON_SVG: &str = include_str!("icon.svg");

/// Only this server's own files and API; `form-action 'none'` keeps the token form from
/// ever being submitted (into a URL) should the script not run.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, open (no token): `/`, `/dashboard.js`, `/dashboard.css` and the
/// icon `/dashboard.svg`.
pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { file("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route(
            "/dashboard.css",
            get(|| async { file("text/css; charset=utf-8", DASHBOARD_CSS) }),
        )
        .route(
            "/dashboard.svg",
            get(|| async { file("image/svg+xml", ICON_SVG) }),
        )
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    let mut response = body.into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}
