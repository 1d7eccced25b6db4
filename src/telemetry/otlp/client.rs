//! The exporter's HTTP client: `opentelemetry_http::HttpClient` over the daemon's own
//! hyper + rustls client (`outbound::Client`), so trace export adds no second HTTP or TLS
//! stack. Imports `outbound` and nothing else internal.

use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError};
use tokio::runtime::Handle;

use crate::outbound::Client;

/// Largest collector answer read (an OTLP partial-success message is small).
const MAX_ANSWER: usize = 64 * 1024;

/// Posts export requests on the daemon's Tokio runtime.
///
/// The SDK's batch processor runs the export on a thread of its own and waits for it there;
/// hyper needs a Tokio reactor, so each request is spawned onto the runtime the daemon runs
/// on and only its answer is awaited on that thread.
#[derive(Debug, Clone)]
pub(super) struct RuntimeClient {
    client: Client,
    runtime: Handle,
    /// Time allowed for one request, the collector's answer included.
    timeout: Duration,
}

impl RuntimeClient {
    /// A client that spawns its requests onto `runtime`.
    pub(super) fn new(client: Client, runtime: Handle, timeout: Duration) -> Self {
        Self {
            client,
            runtime,
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let exchange = async move {
            let response = client.send(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await });
        match task.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_elapsed)) => Err(format!("no answer within {timeout:?}").into()),
            Err(join) => Err(Box::new(join)),
        }
    }
}
