//! The JetStream side of the `nats` spool: connecting, the two streams (work and dead
//! letters), the names of subjects and consumers, and one durable pull consumer per
//! (sink, lane).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind, Context};
use async_nats::{ConnectOptions, Event, Request, RequestError, ServerAddr, Subject};
use tokio::sync::watch;

use super::record::{sink_of, token};
use crate::config::{NatsAuth, NatsConnection, NatsSpoolConfig};
use crate::spool::Priority;

/// How long a JetStream request (a publish acknowledgement included) may take; past it the
/// spool reports itself full so that senders retry.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long JetStream may take to answer a pull request that does not wait; past it the
/// request is taken as lost. Such a request is answered at once, but a server can lose one
/// (a request or answer lost with a connection, or a race in some server versions).
pub(super) const NO_WAIT_PULL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long JetStream may take to answer a waiting pull request beyond its expiry.
pub(super) const PULL_MARGIN: Duration = REQUEST_TIMEOUT;
/// Longest pause between attempts to reconnect, so that a server that is back is found
/// within about this long.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);
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
    /// A pull request got no answer in time (lost with a connection, most likely).
    #[error("no answer from JetStream to a pull request within {0:?}")]
    PullTimedOut(Duration),
    /// The client is not connected now (it is reconnecting).
    #[error("not connected to NATS; reconnecting")]
    NotConnected,
    /// The connection a pull request was sent on was lost before the request ended.
    #[error("the NATS connection was lost during a pull request")]
    PullCut,
    /// An ack could not be handed to the client (the client is closed).
    #[error("cannot send an ack to JetStream")]
    AckNotSent(#[source] async_nats::PublishError),
    /// The client took no ack within this long (its queue of outgoing messages stayed full).
    #[error("the NATS client took no ack within {0:?}")]
    AckStalled(Duration),
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

/// Connects a client with the configured servers and credentials. The client reconnects by
/// itself whenever its connection is lost, for as long as it takes; each loss bumps `lost`
/// (so that pull requests sent on the old connection end at once) and is logged, as is
/// every connection made.
pub(crate) async fn client(
    c: &NatsConnection,
    lost: Arc<watch::Sender<u64>>,
) -> Result<async_nats::Client, NatsError> {
    let addrs = c
        .urls
        .iter()
        .map(|u| u.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NatsError::Address(e.into()))?;
    let options = ConnectOptions::new()
        .connection_timeout(CONNECT_TIMEOUT)
        .reconnect_delay_callback(|attempts| {
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            (Duration::from_millis(100) * attempts).min(RECONNECT_DELAY_MAX)
        })
        .event_callback(move |event| {
            let lost = lost.clone();
            async move {
                match event {
                    Event::Disconnected => {
                        lost.send_modify(|n| *n += 1);
                        tracing::warn!("NATS connection lost; reconnecting");
                    }
                    Event::Connected => tracing::info!("Connected to NATS"),
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        });
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

/// Acks a leased message and waits until JetStream confirms it. One request on the client's
/// shared reply subscription: a `double_ack` subscribes and unsubscribes a reply subject of
/// its own for every ack, four protocol messages where this sends two.
pub(super) async fn confirmed_ack(
    client: &async_nats::Client,
    reply: Subject,
) -> Result<(), RequestError> {
    let request = Request::new()
        .payload(AckKind::Ack.into())
        .timeout(Some(REQUEST_TIMEOUT));
    client.send_request(reply, request).await.map(drop)
}

/// Acks a leased message without waiting for JetStream's answer: one publish to the
/// message's reply subject, with no reply subject of its own (one protocol message, where
/// [`confirmed_ack`] costs two and a round trip). Fails when the client cannot take it: it
/// is closed, or its queue of outgoing messages stays full for [`REQUEST_TIMEOUT`]. An ack
/// lost after that (with its connection) leaves the message to JetStream, which delivers it
/// again after `ack_wait`.
pub(super) async fn sent_ack(client: &async_nats::Client, reply: Subject) -> Result<(), NatsError> {
    let publish = client.publish(reply, AckKind::Ack.into());
    match tokio::time::timeout(REQUEST_TIMEOUT, publish).await {
        Ok(sent) => sent.map_err(NatsError::AckNotSent),
        Err(_) => Err(NatsError::AckStalled(REQUEST_TIMEOUT)),
    }
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

/// A lane's subject and consumer-name suffix; normal has none, so that it keeps the subject
/// and consumer of the layout before lanes.
fn lane_suffix(priority: Priority) -> Option<&'static str> {
    match priority {
        Priority::High => Some("h"),
        Priority::Normal => None,
        Priority::Low => Some("l"),
    }
}

/// `name` for the normal lane; `name`, `separator` and the lane's suffix for the others.
fn in_lane(name: String, separator: char, priority: Priority) -> String {
    match lane_suffix(priority) {
        Some(lane) => format!("{name}{separator}{lane}"),
        None => name,
    }
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

    /// Every subject of the work stream: `P.d.<sink token>` and `P.d.<sink token>.<lane>`.
    pub(super) fn work_subjects(&self) -> String {
        format!("{}.d.>", self.prefix)
    }

    /// The subject of a sink's lane.
    pub(super) fn work_subject(&self, sink: &str, priority: Priority) -> String {
        in_lane(format!("{}.d.{}", self.prefix, token(sink)), '.', priority)
    }

    /// Filters that together select every lane of a sink (one JetStream filter cannot).
    pub(super) fn sink_filters(&self, sink: &str) -> [String; 2] {
        let normal = self.work_subject(sink, Priority::Normal);
        [format!("{normal}.>"), normal]
    }

    pub(super) fn dead_subject(&self, sink: &str) -> String {
        format!("{}.dlq.{}", self.prefix, token(sink))
    }

    pub(super) fn dead_subjects(&self) -> String {
        format!("{}.dlq.*", self.prefix)
    }

    /// The durable consumer of a sink's lane: `P-<sink token>`, plus `_h` or `_l`. A token
    /// never ends in `_` and one letter (its `_` is always followed by two hex digits), so
    /// the suffix cannot be mistaken for part of a sink name.
    pub(super) fn consumer(&self, sink: &str, priority: Priority) -> String {
        in_lane(format!("{}-{}", self.prefix, token(sink)), '_', priority)
    }

    /// The sink a consumer of this prefix serves, whatever its lane.
    pub(super) fn consumer_sink(&self, consumer: &str) -> Option<String> {
        let name = consumer.strip_prefix(&self.prefix)?.strip_prefix('-')?;
        let token = ["_h", "_l"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        sink_of(token)
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
        subjects: vec![names.work_subjects()],
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
        // Dead letters have a bound of their own, `spool.max_bytes` as the queue has: a full
        // stream refuses the publish, and the delivery stays queued (offered again after
        // `ack_wait`) until room frees; nothing kept is dropped to make room.
        discard: stream::DiscardPolicy::New,
        max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
        // JetStream removes a dead letter once it is older than `spool.dead_letter_ttl`.
        max_age: config.dead_letter_ttl.unwrap_or(Duration::ZERO),
        // JetStream refuses a duplicate window longer than `max_age`.
        duplicate_window: config
            .dead_letter_ttl
            .map_or(config.duplicate_window, |ttl| {
                ttl.min(config.duplicate_window)
            }),
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

/// The durable pull consumer of a sink's lane, created when missing. Attempts are counted in
/// the record, so JetStream's own redelivery limit is off.
pub(super) async fn consumer(
    work: &stream::Stream,
    names: &Names,
    sink: &str,
    priority: Priority,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, NatsError> {
    let name = names.consumer(sink, priority);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: names.work_subject(sink, priority),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_have_their_own_subjects_and_consumers() {
        let names = Names::new("P");
        let lanes = Priority::ALL.map(|p| (names.work_subject("a_h", p), names.consumer("a_h", p)));
        assert_eq!(
            lanes.clone().map(|(s, c)| format!("{s} {c}")),
            [
                "P.d.a_5fh.h P-a_5fh_h",
                "P.d.a_5fh P-a_5fh",
                "P.d.a_5fh.l P-a_5fh_l"
            ]
        );
        for (_, consumer) in lanes {
            assert_eq!(names.consumer_sink(&consumer).as_deref(), Some("a_h"));
        }
        assert_eq!(names.sink_filters("a"), ["P.d.a.>", "P.d.a"]);
    }
}
