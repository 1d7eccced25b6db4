//! The JetStream side of the `nats` spool: connecting, the two streams (work and dead
//! letters) and one durable pull consumer per sink.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, Context};
use async_nats::{ConnectOptions, ServerAddr};

use super::record::token;
use crate::config::{NatsAuth, NatsConnection, NatsSpoolConfig};

/// How long a JetStream request (a publish acknowledgement included) may take; past it the
/// spool reports itself full so that senders retry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure to reach or set up JetStream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NatsError {
    /// A server address could not be parsed.
    #[error("invalid NATS server address")]
    Address(#[source] async_nats::Error),
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file")]
    Credentials(#[source] std::io::Error),
    /// No server could be reached.
    #[error("cannot connect to NATS")]
    Connect(#[from] async_nats::ConnectError),
    /// A stream could not be created or updated.
    #[error("cannot set up JetStream stream {stream}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A consumer could not be created.
    #[error("cannot set up JetStream consumer {consumer}")]
    Consumer {
        /// The consumer.
        consumer: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

/// Connects a client with the configured servers and credentials.
pub(crate) async fn client(c: &NatsConnection) -> Result<async_nats::Client, NatsError> {
    let addrs = c
        .urls
        .iter()
        .map(|u| u.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NatsError::Address(e.into()))?;
    let options = ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
    let options = match &c.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => options.token(token.clone()),
        NatsAuth::CredsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(NatsError::Credentials)?,
    };
    Ok(options.connect(addrs).await?)
}

/// A JetStream context with the spool's request timeout.
pub(crate) fn context(client: async_nats::Client) -> Context {
    let mut js = jetstream::new(client);
    js.set_timeout(REQUEST_TIMEOUT);
    js
}

/// The names derived from the configured prefix.
#[derive(Debug, Clone)]
pub(super) struct Names {
    prefix: String,
}

impl Names {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn work_stream(&self) -> &str {
        &self.prefix
    }

    pub(super) fn dead_stream(&self) -> String {
        format!("{}-dlq", self.prefix)
    }

    pub(super) fn work_subject(&self, sink: &str) -> String {
        format!("{}.d.{}", self.prefix, token(sink))
    }

    pub(super) fn dead_subject(&self, sink: &str) -> String {
        format!("{}.dlq.{}", self.prefix, token(sink))
    }

    pub(super) fn dead_subjects(&self) -> String {
        format!("{}.dlq.*", self.prefix)
    }

    pub(super) fn consumer(&self, sink: &str) -> String {
        format!("{}-{}", self.prefix, token(sink))
    }

    /// The sink token of a consumer of this prefix.
    pub(super) fn consumer_token<'a>(&self, consumer: &'a str) -> Option<&'a str> {
        consumer.strip_prefix(&self.prefix)?.strip_prefix('-')
    }
}

/// Creates or updates the work and dead-letter streams.
pub(super) async fn streams(
    js: &Context,
    names: &Names,
    config: &NatsSpoolConfig,
    max_bytes: u64,
) -> Result<(stream::Stream, stream::Stream), NatsError> {
    let work = stream::Config {
        name: names.work_stream().to_owned(),
        subjects: vec![format!("{}.d.*", names.prefix)],
        // A delivery leaves the stream when its consumer acks it.
        retention: stream::RetentionPolicy::WorkQueue,
        // A full stream refuses the publish; nothing stored is dropped.
        discard: stream::DiscardPolicy::New,
        max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
        duplicate_window: config.duplicate_window,
        num_replicas: config.replicas,
        ..stream::Config::default()
    };
    let dead = stream::Config {
        name: names.dead_stream(),
        subjects: vec![names.dead_subjects()],
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: config.duplicate_window,
        num_replicas: config.replicas,
        ..stream::Config::default()
    };
    Ok((ensure(js, work).await?, ensure(js, dead).await?))
}

async fn ensure(js: &Context, config: stream::Config) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    let failed = |source: async_nats::Error| NatsError::Stream {
        stream: name.clone(),
        source,
    };
    js.create_or_update_stream(config)
        .await
        .map_err(|e| failed(e.into()))?;
    js.get_stream(&name).await.map_err(|e| failed(e.into()))
}

/// The sink's durable pull consumer, created when missing. Attempts are counted in the
/// record, so JetStream's own redelivery limit is off.
pub(super) async fn consumer(
    work: &stream::Stream,
    names: &Names,
    sink: &str,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, NatsError> {
    let name = names.consumer(sink);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: names.work_subject(sink),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: -1,
        ..consumer::pull::Config::default()
    };
    work.get_or_create_consumer(&name, config)
        .await
        .map_err(|e| NatsError::Consumer {
            consumer: name,
            source: e.into(),
        })
}
