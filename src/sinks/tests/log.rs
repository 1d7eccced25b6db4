use super::support::{config, event, sink};
use crate::config::{LogSinkConfig, SinkKind};
use crate::sinks::{build, Attempt, Handlers};

#[tokio::test]
async fn log_sink_always_confirms() {
    for level in [
        tracing::Level::ERROR,
        tracing::Level::DEBUG,
        tracing::Level::TRACE,
    ] {
        let kind = SinkKind::Log(LogSinkConfig { level });
        let registry = build(
            &config(vec![sink("console", kind, 1)]),
            &Handlers::default(),
        )
        .unwrap();
        assert_eq!(registry.names().collect::<Vec<_>>(), ["console"]);
        let event = event("ev-log");
        let attempt = Attempt {
            event: &event,
            route: "r",
            delivery_count: 0,
        };
        registry
            .get("console")
            .unwrap()
            .deliver(attempt)
            .await
            .unwrap();
    }
}
