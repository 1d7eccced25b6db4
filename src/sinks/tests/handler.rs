use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::support::{config, event, sink};
use crate::config::{HandlerSinkConfig, SinkKind};
use crate::sinks::{build, Attempt, BuildError, HandlerError, Handlers};

fn handler_config(name: &str) -> crate::config::Config {
    let kind = SinkKind::Handler(HandlerSinkConfig { name: name.into() });
    config(vec![sink("app", kind, 1)])
}

async fn deliver(handlers: &Handlers) -> Result<(), crate::sinks::SinkError> {
    let registry = build(&handler_config("h"), handlers).unwrap();
    let event = event("ev-h");
    let attempt = Attempt {
        event: &event,
        route: "r",
        delivery_count: 0,
    };
    registry.get("app").unwrap().deliver(attempt).await
}

#[tokio::test]
async fn handler_results_map_to_sink_results() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut handlers = Handlers::default();
    let seen = calls.clone();
    handlers.insert("h", move |_event: cloudevents::Event| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    deliver(&handlers).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    handlers.insert("h", |_| async { Err(HandlerError::retry("later")) });
    let error = deliver(&handlers).await.unwrap_err();
    assert!(error.retryable);
    assert_eq!(error.message, "later");

    handlers.insert("h", |_| async { Err(HandlerError::permanent("never")) });
    assert!(!deliver(&handlers).await.unwrap_err().retryable);
}

#[tokio::test]
async fn panicking_handler_fails_one_attempt() {
    let mut handlers = Handlers::default();
    handlers.insert("h", |_| async {
        if true {
            panic!("handler bug");
        }
        Ok(())
    });
    let error = deliver(&handlers).await.unwrap_err();
    assert!(error.retryable);
}

#[test]
fn unknown_handler_is_a_build_error() {
    let error = build(&handler_config("missing"), &Handlers::default()).unwrap_err();
    assert!(matches!(error, BuildError::UnknownHandler { ref name, .. } if name == "missing"));
}
