//! How the baselines send one request to the sink and judge its answer: as the `http` sink
//! does, so that every baseline forwards alike.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::Request;
use http_body_util::{BodyExt, Full, Limited};
use switchyard::outbound::Client;

/// Per-attempt timeout, as the `http` sink's default.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Most response-body bytes read from the sink, as the `http` sink.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Sends `request` and reads its answer; true when the sink answered 200–204 within the
/// timeout.
pub(crate) async fn delivered(client: &Client, request: Request<Full<Bytes>>) -> bool {
    let exchange = async {
        let response = client.send(request).await.ok()?;
        let (parts, body) = response.into_parts();
        Limited::new(body, MAX_RESPONSE_BODY).collect().await.ok()?;
        Some(parts.status)
    };
    matches!(
        tokio::time::timeout(TIMEOUT, exchange).await,
        Ok(Some(status)) if (200..=204).contains(&status.as_u16())
    )
}
