//! Bounded waiting for asynchronous outcomes.

use std::time::Duration;

/// Polls `check` every 10 ms until it is true; panics with `what` after `limit`.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
