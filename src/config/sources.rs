//! `sources:` — named webhook endpoints (`POST /hooks/<name>`) that verify a provider's
//! signature and turn its request into a CloudEvent: the validated [`SourceConfig`], its
//! preset, and the templates that build the event's attributes, compiled here once.
//!
//! Imports nothing internal outside `config`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderName;
use serde_json::Value as Json;

use super::env::{Node, Obj};
use super::model::{self, Reader, Shape};
use super::sign::{self, HmacSignConfig, SecretKey};

/// One entry of `sources:` — `preset` (required), `secret` (one secret or a list during a
/// rotation; every preset but `hmac`), `tolerance` (`stripe` and `slack`, default 5m), `hmac`
/// (the `hmac` preset's header, secret, prefix and encoding, as `sinks.X.http.sign.hmac`) and
/// `event` (templates overriding the preset's mapping).
pub(super) const SOURCE: Shape = Shape {
    keys: "preset secret tolerance hmac event",
    later: "",
};

/// `sources.X.event:` — `type`, `source`, `id` and `subject`, each a template.
pub(super) const EVENT: Shape = Shape {
    keys: "type source id subject",
    later: "",
};

/// Default `tolerance`: how far a signed timestamp may be from now (Stripe's and Slack's 5 minutes).
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Which provider a source takes requests from: how it verifies them and its default mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Stripe: `Stripe-Signature: t=<seconds>,v1=<hex>[,v1=…]` over `{t}.{body}`.
    Stripe,
    /// Shopify: `X-Shopify-Hmac-Sha256: <base64>`.
    Shopify,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
    Slack,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// An HMAC-SHA256 of the body in a configured header.
    Hmac,
}

const PRESETS: &[(&str, Preset)] = &[
    ("github", Preset::Github),
    ("stripe", Preset::Stripe),
    ("shopify", Preset::Shopify),
    ("slack", Preset::Slack),
    ("standard-webhooks", Preset::StandardWebhooks),
    ("hmac", Preset::Hmac),
];

impl Preset {
    /// The preset's name in `routes.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Slack => "slack",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Hmac => "hmac",
        }
    }

    /// The templates of the preset's mapping: `type`, `source`, `id`, `subject`.
    fn defaults(self, source: &str) -> [Option<String>; 4] {
        let text = |s: &str| Some(s.to_owned());
        match self {
            Self::Github => [
                text("com.github.{header:X-GitHub-Event}"),
                text("https://github.com"),
                text("{header:X-GitHub-Delivery}"),
                text("{json:/repository/full_name}"),
            ],
            Self::Stripe => [
                text("com.stripe.{json:/type}"),
                text("https://stripe.com"),
                text("{json:/id}"),
                text("{json:/data/object/id}"),
            ],
            Self::Shopify => [
                text("com.shopify.{header:X-Shopify-Topic}"),
                text("https://{header:X-Shopify-Shop-Domain}"),
                text("{header:X-Shopify-Webhook-Id}"),
                text("{json:/id}"),
            ],
            Self::Slack => [
                text("com.slack.{json:/event/type}"),
                text("https://slack.com"),
                text("{json:/event_id}"),
                text("{json:/team_id}"),
            ],
            Self::StandardWebhooks => [
                text("{json:/type}"),
                Some(format!("/hooks/{source}")),
                text("{header:webhook-id}"),
                None,
            ],
            Self::Hmac => [None, None, None, None],
        }
    }
}

/// One source: `POST /hooks/<name>`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The source's name (its key under `sources:` and its path segment).
    pub name: String,
    /// The provider preset.
    pub preset: Preset,
    /// How requests are verified.
    pub verify: Verify,
    /// How a verified request becomes an event.
    pub event: EventMapping,
}

/// How a source verifies the signature over the raw body.
#[derive(Debug, Clone)]
pub enum Verify {
    /// `X-Hub-Signature-256` (`github`).
    Github(Vec<SecretKey>),
    /// `Stripe-Signature` with a timestamp tolerance (`stripe`).
    Stripe(Vec<SecretKey>, Duration),
    /// `X-Shopify-Hmac-Sha256` (`shopify`).
    Shopify(Vec<SecretKey>),
    /// `X-Slack-Signature` and `X-Slack-Request-Timestamp` with a tolerance (`slack`).
    Slack(Vec<SecretKey>, Duration),
    /// The Standard Webhooks headers, with the specification's 5-minute tolerance.
    StandardWebhooks(Vec<SecretKey>),
    /// An HMAC-SHA256 of the body in one header (`hmac`).
    Hmac(HmacSignConfig),
}

/// The templates that build an event's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMapping {
    /// `type`; a missing part refuses the request.
    pub ty: Template,
    /// `source`; a missing part refuses the request.
    pub source: Template,
    /// `id`; a missing part gives a generated id.
    pub id: Option<Template>,
    /// `subject`; a missing part leaves it out.
    pub subject: Option<Template>,
}

impl EventMapping {
    /// Whether any template reads the body as JSON.
    pub fn reads_json(&self) -> bool {
        [
            Some(&self.ty),
            Some(&self.source),
            self.id.as_ref(),
            self.subject.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|t| t.parts.iter().any(|p| matches!(p, Part::Json(_))))
    }
}

/// A compiled template: literal text with `{header:Name}` and `{json:/pointer}` parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One part of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as it is.
    Literal(String),
    /// The value of a request header.
    Header(HeaderName),
    /// The value at a JSON pointer (RFC 6901) into the body.
    Json(String),
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("unclosed `{{` (write `{{{{` for a literal brace)")]
    Unclosed,
    /// A `}` that closes nothing.
    #[error("unmatched `}}` (write `}}}}` for a literal brace)")]
    Unmatched,
    /// `{kind:…}` with a kind other than `header` and `json`.
    #[error("unknown placeholder `{{{0}}}` (expected {{header:Name}} or {{json:/pointer}})")]
    Unknown(String),
    /// `{header:…}` with an invalid header name.
    #[error("invalid header name `{0}`")]
    HeaderName(String),
    /// `{json:…}` whose pointer does not start with `/`.
    #[error("invalid JSON pointer `{0}` (it starts with `/`, e.g. /repository/full_name)")]
    Pointer(String),
    /// Nothing but empty text.
    #[error("must not be empty")]
    Empty,
}

impl Template {
    /// Compiles `text`: `{header:Name}`, `{json:/pointer}`, `{{` and `}}` for literal braces.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let (brace, after) = (&rest[at..=at], &rest[at + 1..]);
            if let Some(tail) = after.strip_prefix(brace) {
                literal.push_str(brace);
                rest = tail;
                continue;
            }
            if brace == "}" {
                return Err(TemplateError::Unmatched);
            }
            let end = after.find('}').ok_or(TemplateError::Unclosed)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(placeholder(&after[..end])?);
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err(TemplateError::Empty);
        }
        Ok(Self { parts })
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
}

fn placeholder(inner: &str) -> Result<Part, TemplateError> {
    match inner.split_once(':') {
        Some(("header", name)) => HeaderName::try_from(name.trim())
            .map(Part::Header)
            .map_err(|_| TemplateError::HeaderName(name.to_owned())),
        Some(("json", pointer)) if pointer.starts_with('/') => Ok(Part::Json(pointer.to_owned())),
        Some(("json", pointer)) => Err(TemplateError::Pointer(pointer.to_owned())),
        _ => Err(TemplateError::Unknown(inner.to_owned())),
    }
}

/// Reads `sources:` (absent: none).
pub(super) fn read(rd: &mut Reader<'_>, top: &Obj<'_>) -> Option<BTreeMap<String, SourceConfig>> {
    let nodes = rd.or(top.get("sources"), Vec::new(), Reader::entries)?;
    let sources: Vec<Option<SourceConfig>> = nodes
        .into_iter()
        .map(|(name, n)| source(rd, name, &n))
        .collect();
    sources
        .into_iter()
        .map(|s| s.map(|s| (s.name.clone(), s)))
        .collect()
}

fn source(rd: &mut Reader<'_>, name: String, node: &Node<'_>) -> Option<SourceConfig> {
    let path_safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if name.is_empty() || !name.bytes().all(path_safe) || name.bytes().all(|b| b == b'.') {
        return rd.fail(
            &node.path,
            "a source name is its URL path segment: letters, digits, `-`, `_` and `.`",
        );
    }
    let o = rd.object(node, &SOURCE)?;
    let preset = rd.required(&o, "preset", |rd, n| rd.choice(n, "preset", PRESETS));
    let Some(preset) = preset else {
        // Without a preset nothing else can be judged; report stray values all the same.
        return None;
    };
    let verify = verify(rd, &o, preset);
    let event = rd
        .section(&o, "event", &EVENT)
        .and_then(|e| mapping(rd, &e, preset, &name));
    Some(SourceConfig {
        name,
        preset,
        verify: verify?,
        event: event?,
    })
}

fn verify(rd: &mut Reader<'_>, o: &Obj<'_>, preset: Preset) -> Option<Verify> {
    let timed = matches!(preset, Preset::Stripe | Preset::Slack);
    let tolerance = match o.get("tolerance") {
        Some(n) if !timed => rd.fail(
            &n.path,
            "only the stripe and slack presets take a tolerance",
        ),
        Some(n) => match rd.duration(&n)? {
            zero if zero.is_zero() => rd.fail(&n.path, "must be longer than zero"),
            tolerance => Some(tolerance),
        },
        None => Some(DEFAULT_TOLERANCE),
    };
    let verify: fn(Vec<SecretKey>, Duration) -> Verify = match preset {
        Preset::Hmac => return hmac_preset(rd, o),
        Preset::Github => |secrets, _| Verify::Github(secrets),
        Preset::Stripe => Verify::Stripe,
        Preset::Shopify => |secrets, _| Verify::Shopify(secrets),
        Preset::Slack => Verify::Slack,
        Preset::StandardWebhooks => |secrets, _| Verify::StandardWebhooks(secrets),
    };
    if let Some(n) = o.get("hmac") {
        rd.error(&n.path, "only the hmac preset takes hmac settings");
    }
    let secrets = rd.required(o, "secret", |rd, n| secrets(rd, n, preset));
    Some(verify(secrets?, tolerance?))
}

/// The `hmac` preset: its settings, secret included, in `hmac:`.
fn hmac_preset(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<Verify> {
    if let Some(n) = o.get("secret") {
        rd.error(&n.path, "the hmac preset takes its secret in hmac.secret");
    }
    let h = rd.required(o, "hmac", |rd, n| rd.object(n, &model::HMAC))?;
    sign::hmac(rd, &h).map(Verify::Hmac)
}

/// Reads `secret:`, one string or a non-empty list; Standard Webhooks secrets are `whsec_`
/// keys, the others are used as their UTF-8 bytes, as the providers sign with them.
fn secrets(rd: &mut Reader<'_>, node: &Node<'_>, preset: Preset) -> Option<Vec<SecretKey>> {
    let one = |rd: &mut Reader<'_>, n: &Node<'_>| {
        let text = rd.text(n)?;
        if preset != Preset::StandardWebhooks {
            return Some(SecretKey::new(text.into_bytes()));
        }
        // The message never repeats the value: it may be an interpolated secret.
        SecretKey::from_whsec(&text).map_or_else(|e| rd.fail(&n.path, e), Some)
    };
    match node.value {
        Json::Array(_) => rd.some(node, "needs at least one secret", one),
        _ => one(rd, node).map(|s| vec![s]),
    }
}

fn mapping(rd: &mut Reader<'_>, o: &Obj<'_>, preset: Preset, name: &str) -> Option<EventMapping> {
    let [ty, source, id, subject] = preset.defaults(name);
    let mut field = |key: &str, default: Option<String>| -> Option<Option<Template>> {
        let Some(n) = o.get(key) else {
            // The presets' own templates are valid.
            return Some(default.and_then(|d| Template::parse(&d).ok()));
        };
        let text = rd.string(&n)?;
        match Template::parse(&text) {
            Ok(t) => Some(Some(t)),
            Err(e) => rd.fail(&n.path, format!("bad template: {e}")),
        }
    };
    let (ty, source, id, subject) = (
        field("type", ty),
        field("source", source),
        field("id", id),
        field("subject", subject),
    );
    let mut required = |t: Option<Option<Template>>, key: &str| match t? {
        Some(t) => Some(t),
        None => rd.fail(
            &o.key_path(key),
            format!("required for the {} preset", preset.name()),
        ),
    };
    let (ty, source) = (required(ty, "type"), required(source, "source"));
    Some(EventMapping {
        ty: ty?,
        source: source?,
        id: id?,
        subject: subject?,
    })
}
