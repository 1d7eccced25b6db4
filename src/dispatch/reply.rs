//! Replies (`reply: true`): the event a target answered a delivery with is handed to the
//! acceptor that ingress uses — routed, stored, delivered — before the delivery is acked.
//!
//! A crash between the store and the ack delivers the original again (and its reply may be
//! taken twice): at least once, nothing lost. Each reply carries the `switchyardhops`
//! extension, one more than the event it answers; a reply past `max_hops` is dropped.

use crate::accept::AcceptError;
use crate::config::{SinkConfig, HOPS_EXTENSION};
use crate::event::{Event, ExtensionValue};
use crate::sinks::{Reply, SinkError};
use crate::spool::SpoolError;
use crate::telemetry::Format;

use super::DispatchContext;

/// The outcome of a delivery whose reply could not be stored: retried, like a failed attempt.
const REPLY_NOT_STORED: &str = "ReplyNotStored";

/// Accepts `reply` to a delivery of `answered`. `Ok(Err(_))` when the spool refused it for
/// now (the delivery is then retried rather than acked); `Err` when the spool is closed.
pub(super) async fn take(
    ctx: &DispatchContext,
    config: &SinkConfig,
    answered: &Event,
    reply: Reply,
) -> Result<Result<(), SinkError>, SpoolError> {
    let mut event = match reply {
        Reply::None => return Ok(Ok(())),
        Reply::Invalid(reason) => {
            tracing::warn!(sink = %config.name, event_id = %answered.id, %reason, "The target's reply is not a valid CloudEvent; dropped, and the delivery counts as delivered");
            ctx.counters.reply_dropped(&config.name, "invalid");
            return Ok(Ok(()));
        }
        Reply::Event(event) => *event,
    };
    let hops = hops(answered).saturating_add(1);
    let max_hops = config
        .delivery
        .reply
        .max_hops
        .unwrap_or(ctx.config.max_hops);
    if hops > max_hops {
        tracing::warn!(sink = %config.name, event_id = %answered.id, reply_id = %event.id, hops, max_hops, "A reply is past max_hops; dropped, not routed");
        ctx.counters.reply_dropped(&config.name, "max_hops");
        return Ok(Ok(()));
    }
    event.set_extension(HOPS_EXTENSION, ExtensionValue::Integer(i64::from(hops)));
    match ctx
        .replies
        .accept_from(vec![event], Some(Format::Reply))
        .await
    {
        Ok(_) => Ok(Ok(())),
        Err(AcceptError::Closed) => Err(SpoolError::Closed),
        Err(
            error @ (AcceptError::Full { retry_after }
            | AcceptError::Unreachable { retry_after, .. }),
        ) => Ok(Err(SinkError {
            retry_after: Some(retry_after),
            ..SinkError::retryable(
                REPLY_NOT_STORED,
                format!("the reply was not stored: {error}"),
            )
        })),
    }
}

/// The hop count an event carries (`switchyardhops`); 0 when absent or not a count.
pub(super) fn hops(event: &Event) -> u32 {
    match event.extension(HOPS_EXTENSION) {
        Some(ExtensionValue::Integer(n)) if *n < 0 => 0,
        Some(ExtensionValue::Integer(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(ExtensionValue::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_hops(value: Option<ExtensionValue>) -> Event {
        let mut event = crate::event::http::decode_structured(
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"T"}"#,
        )
        .expect("a valid event");
        if let Some(value) = value {
            event.set_extension(HOPS_EXTENSION, value);
        }
        event
    }

    #[test]
    fn the_hop_count_reads_integers_and_digit_strings_and_defaults_to_zero() {
        assert_eq!(hops(&with_hops(None)), 0);
        assert_eq!(hops(&with_hops(Some(ExtensionValue::Integer(3)))), 3);
        assert_eq!(hops(&with_hops(Some(ExtensionValue::Integer(-2)))), 0);
        let huge = ExtensionValue::Integer(i64::MAX);
        assert_eq!(hops(&with_hops(Some(huge))), u32::MAX);
        let text = ExtensionValue::String("5".into());
        assert_eq!(hops(&with_hops(Some(text))), 5);
        let junk = ExtensionValue::String("many".into());
        assert_eq!(hops(&with_hops(Some(junk))), 0);
    }
}
