//! Embedding switchyard: register a Rust handler and route events to it by name.
//!
//! Run with `cargo run --example embedded`, then publish an event:
//!
//! ```sh
//! curl -i localhost:8080/events \
//!   -H 'ce-specversion: 1.0' -H 'ce-id: 1' -H 'ce-source: /shop' \
//!   -H 'ce-type: Contoso.Orders.Created' -H 'content-type: application/json' \
//!   -d '{"total": 120}'
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use cloudevents::AttributesReader;
use switchyard::{HandlerError, Switchyard};

const ROUTES: &str = r#"
listen: 127.0.0.1:8080
sinks:
  orders: { handler: { name: order-book } }
  console: { log: {} }
routes:
  - name: orders
    match: { types: ["Contoso.Orders.*"] }
    to: [orders, console]
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    switchyard::telemetry::init_logging(switchyard::telemetry::LogFormat::Text);
    let config =
        switchyard::config::load_str(ROUTES, Path::new("embedded.yaml"), &BTreeMap::new())?;

    let running = Switchyard::new(config)
        .handler("order-book", |event: cloudevents::Event| async move {
            if event.ty().ends_with(".Rejected") {
                // Permanent failures are dead-lettered instead of retried.
                return Err(HandlerError::permanent("rejected orders are not booked"));
            }
            tracing::info!(id = event.id(), "Order booked");
            Ok(())
        })
        .start()
        .await?;

    tokio::signal::ctrl_c().await?;
    running.stop().await?;
    Ok(())
}
