//! The `nats` sink: publishes each event as structured CloudEvents JSON, with the `ce-`
//! attributes also as NATS headers. With `jetstream: true` an attempt succeeds only once the
//! stream acknowledged the publish; otherwise once the server has the message (a flush).

use async_nats::jetstream::{self, Context};
use async_nats::{ConnectOptions, HeaderMap, ServerAddr};
use axum::http::HeaderMap as HttpHeaders;
use tokio::sync::OnceCell;

use super::{outcome, Attempt, BoxFuture, Sink, SinkError};
use crate::config::{NatsAuth, NatsConnection, NatsSinkConfig};

/// How long connecting may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
use crate::event::http::{encode_binary, encode_structured};

/// Publishes events to one subject.
#[derive(Debug)]
pub(crate) struct NatsSink {
    config: NatsSinkConfig,
    /// Connected on first delivery, so that an unreachable server fails attempts (retried)
    /// rather than startup.
    client: OnceCell<async_nats::Client>,
}

impl NatsSink {
    pub(crate) fn new(config: NatsSinkConfig) -> Self {
        Self {
            config,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&async_nats::Client, SinkError> {
        self.client
            .get_or_try_init(|| connect(&self.config.connection))
            .await
            .map_err(|e| SinkError::retryable(outcome::SOCKET_ERROR, e.to_string()))
    }

    async fn publish(&self, attempt: Attempt<'_>) -> Result<(), SinkError> {
        let client = self.client().await?;
        let payload = encode_structured(attempt.event);
        let headers = headers(attempt);
        let subject = self.config.subject.clone();
        let failed = |e: &dyn std::fmt::Display| {
            SinkError::retryable(outcome::GENERIC_ERROR, format!("NATS publish failed: {e}"))
        };
        if self.config.jetstream {
            let js: Context = jetstream::new(client.clone());
            let ack = js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| failed(&e))?;
            ack.await.map_err(|e| failed(&e))?;
        } else {
            client
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| failed(&e))?;
            client.flush().await.map_err(|e| failed(&e))?;
        }
        Ok(())
    }
}

/// Connects with the configured servers and credentials.
async fn connect(c: &NatsConnection) -> Result<async_nats::Client, async_nats::Error> {
    let addrs = c
        .urls
        .iter()
        .map(|u| u.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let options = ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
    let options = match &c.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => options.token(token.clone()),
        NatsAuth::CredsFile(path) => options.credentials_file(path).await?,
    };
    Ok(options.connect(addrs).await?)
}

/// The binary-mode `ce-` headers of the event, plus its content type.
fn headers(attempt: Attempt<'_>) -> HeaderMap {
    let mut http = HttpHeaders::new();
    let _data = encode_binary(attempt.event, &mut http);
    let mut out = HeaderMap::new();
    for (name, value) in &http {
        if let Ok(value) = value.to_str() {
            out.insert(name.as_str(), value);
        }
    }
    out.insert("content-type", "application/cloudevents+json");
    out
}

impl Sink for NatsSink {
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.config.timeout, self.publish(attempt)).await {
                Ok(result) => result,
                Err(_) => Err(SinkError::retryable(
                    outcome::TIMED_OUT,
                    "NATS publish timed out",
                )),
            }
        })
    }
}
