//! NATS settings: `spool.nats` (the JetStream spool backend) and `sinks.<name>.nats` (the
//! `nats` sink), and the connection settings both share.
//!
//! Imports nothing internal outside `config`.

use std::path::PathBuf;
use std::time::Duration;

use super::env::{Node, Obj};
use super::model::{Reader, Shape};

/// `spool.nats:` — `url` (one or several servers, comma-separated or a list, default
/// nats://127.0.0.1:4222), `stream` (prefix of every stream, subject and consumer name, default
/// switchyard), `replicas` (1..=5, default 1), `ack_wait` (how long a leased delivery stays
/// invisible to other instances without a sign of life, default 30s), and at most one of
/// `user` with `password`, `token` or `creds_file`.
pub(super) const SPOOL: Shape = Shape {
    keys: "url stream replicas ack_wait user password token creds_file",
    later: "",
};

/// `sinks.<name>.nats:` — `url` (as for the spool), `subject` (required), `jetstream` (wait for
/// the stream's publish acknowledgement, default false), `timeout` (per attempt, default 10s)
/// and the credentials of the spool's `nats:`.
pub(super) const SINK: Shape = Shape {
    keys: "url subject jetstream timeout user password token creds_file",
    later: "",
};

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_STREAM: &str = "switchyard";
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);

/// Duplicate window of the spool's stream when `ingress.dedup_window` is absent.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How a client proves who it is to the NATS server.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// A `.creds` file (JWT and NKey seed).
    CredsFile(PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs or `check` output.
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
            Self::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// Where and how to connect to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConnection {
    /// Server URLs; the client picks one and fails over to the others.
    pub urls: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
}

impl NatsConnection {
    /// The server addresses without any credentials in them, comma-separated.
    pub fn servers(&self) -> String {
        let host = |u: &String| match u.split_once("://") {
            Some((scheme, rest)) => {
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{rest}")
            }
            None => u.rsplit_once('@').map_or(u.as_str(), |(_, h)| h).to_owned(),
        };
        self.urls.iter().map(host).collect::<Vec<_>>().join(",")
    }
}

/// Settings of the `nats` spool backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSpoolConfig {
    /// The servers and credentials.
    pub connection: NatsConnection,
    /// Prefix of the streams, subjects and consumers (a NATS name token).
    pub stream: String,
    /// Replicas of each stream.
    pub replicas: usize,
    /// How long a leased delivery may go without a sign of life before it is redelivered.
    pub ack_wait: Duration,
    /// The work stream's duplicate window (`ingress.dedup_window`, or 2 minutes).
    pub duplicate_window: Duration,
    /// The dead-letter stream's `max_age` (`spool.dead_letter_ttl`); `None` keeps dead letters.
    pub dead_letter_ttl: Option<Duration>,
}

impl Default for NatsSpoolConfig {
    fn default() -> Self {
        Self {
            connection: NatsConnection {
                urls: vec![DEFAULT_URL.to_owned()],
                auth: NatsAuth::None,
            },
            stream: DEFAULT_STREAM.to_owned(),
            replicas: 1,
            ack_wait: DEFAULT_ACK_WAIT,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            dead_letter_ttl: Some(super::DEFAULT_DEAD_LETTER_TTL),
        }
    }
}

/// Settings of a `nats` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSinkConfig {
    /// The servers and credentials.
    pub connection: NatsConnection,
    /// Subject each event is published to.
    pub subject: String,
    /// Whether to wait for a JetStream publish acknowledgement.
    pub jetstream: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Reads `spool.nats`; an absent section gives the defaults.
pub(super) fn read_spool(rd: &mut Reader<'_>, parent: &Obj<'_>) -> Option<NatsSpoolConfig> {
    let o = rd.section(parent, "nats", &SPOOL)?;
    let connection = connection(rd, &o, DEFAULT_URL);
    let stream = rd.or(o.get("stream"), DEFAULT_STREAM.to_owned(), |rd, n| {
        let name = rd.text(n)?;
        if name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Some(name)
        } else {
            rd.fail(&n.path, "only letters, digits, '-' and '_' are allowed")
        }
    });
    let replicas = rd.or(o.get("replicas"), 1, |rd, n| rd.integer(n, 1..=5));
    let ack_wait = rd.or(o.get("ack_wait"), DEFAULT_ACK_WAIT, |rd, n| {
        match rd.duration(n)? {
            wait if wait >= Duration::from_secs(1) => Some(wait),
            _ => rd.fail(&n.path, "must be at least 1s"),
        }
    });
    Some(NatsSpoolConfig {
        connection: connection?,
        stream: stream?,
        replicas: replicas?,
        ack_wait: ack_wait?,
        duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        dead_letter_ttl: Some(super::DEFAULT_DEAD_LETTER_TTL),
    })
}

/// Reads `sinks.<name>.nats`.
pub(super) fn read_sink(rd: &mut Reader<'_>, parent: &Obj<'_>) -> Option<NatsSinkConfig> {
    let o = rd.section(parent, "nats", &SINK)?;
    let connection = connection(rd, &o, DEFAULT_URL);
    let subject = rd.required(&o, "subject", |rd, n| {
        let subject = rd.text(n)?;
        let valid = subject
            .split('.')
            .all(|t| !t.is_empty() && !t.contains(['*', '>']) && !t.contains(char::is_whitespace));
        if valid {
            Some(subject)
        } else {
            rd.fail(&n.path, "expected a NATS subject without wildcards")
        }
    });
    let jetstream = rd.or(o.get("jetstream"), false, Reader::boolean);
    let timeout = rd.or(o.get("timeout"), DEFAULT_SINK_TIMEOUT, Reader::duration);
    Some(NatsSinkConfig {
        connection: connection?,
        subject: subject?,
        jetstream: jetstream?,
        timeout: timeout?,
    })
}

fn connection(rd: &mut Reader<'_>, o: &Obj<'_>, default: &str) -> Option<NatsConnection> {
    let urls = rd.or(o.get("url"), vec![default.to_owned()], urls);
    let auth = auth(rd, o);
    Some(NatsConnection {
        urls: urls?,
        auth: auth?,
    })
}

fn urls(rd: &mut Reader<'_>, n: &Node<'_>) -> Option<Vec<String>> {
    let urls: Vec<String> = if n.value.is_array() {
        rd.some(n, "must name at least one server", Reader::text)?
    } else {
        let text = rd.text(n)?;
        text.split(',').map(|u| u.trim().to_owned()).collect()
    };
    let bad = urls.iter().find(|u| {
        let rest = u.split_once("://").map_or(u.as_str(), |(scheme, rest)| {
            if matches!(scheme, "nats" | "tls") {
                rest
            } else {
                ""
            }
        });
        rest.is_empty()
    });
    match bad {
        Some(bad) => rd.fail(
            &n.path,
            format!("{bad:?} is not a nats:// or tls:// server address"),
        ),
        None => Some(urls),
    }
}

fn auth(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<NatsAuth> {
    let user = rd.or(o.get("user"), None, |rd, n| rd.text(n).map(Some));
    let password = rd.or(o.get("password"), None, |rd, n| rd.string(n).map(Some));
    let token = rd.or(o.get("token"), None, |rd, n| rd.text(n).map(Some));
    let creds = rd.or(o.get("creds_file"), None, |rd, n| {
        rd.text(n).map(|p| Some(PathBuf::from(p)))
    });
    match (user?, password?, token?, creds?) {
        (None, None, None, None) => Some(NatsAuth::None),
        (Some(user), Some(password), None, None) => Some(NatsAuth::UserPassword { user, password }),
        (None, None, Some(token), None) => Some(NatsAuth::Token(token)),
        (None, None, None, Some(path)) => Some(NatsAuth::CredsFile(path)),
        (Some(_), None, None, None) => rd.fail(&o.key_path("password"), "required with user"),
        (None, Some(_), None, None) => rd.fail(&o.key_path("user"), "required with password"),
        _ => rd.fail(
            &o.path,
            "give at most one of user/password, token or creds_file",
        ),
    }
}
