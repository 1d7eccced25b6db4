//! The real daemon, in-process on 127.0.0.1:0, configured from routes.yaml text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchyard::{Running, Switchyard};

use super::client::{post, Reply};

/// A running daemon with its own temporary directory.
#[derive(Debug)]
pub(crate) struct TestApp {
    pub(crate) running: Running,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) base: String,
}

/// Quiet test logs unless `TEST_LOG` is set.
fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        switchyard::telemetry::init_logging(switchyard::telemetry::LogFormat::Text);
    }
}

impl TestApp {
    /// Starts a daemon; `{dir}` in the YAML is replaced by the test's temporary directory.
    pub(crate) async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, |s| s).await
    }

    /// Starts a daemon, letting the test register handlers first.
    pub(crate) async fn start_with(
        yaml: &str,
        setup: impl FnOnce(Switchyard) -> Switchyard,
    ) -> Self {
        init_test_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = yaml.replace("{dir}", &dir.path().display().to_string());
        let config = switchyard::config::load_str(&yaml, Path::new("test.yaml"), &BTreeMap::new())
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = setup(Switchyard::new(config))
            .start_on(listener)
            .expect("daemon starts");
        let base = format!("http://{}", running.local_addr());
        Self { running, dir, base }
    }

    /// A path inside the test's directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// POSTs to a path of the ingress.
    pub(crate) async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> Reply {
        post(&format!("{}{path}", self.base), headers, body).await
    }

    /// POSTs one structured CloudEvent to `/events`.
    pub(crate) async fn send(&self, event: serde_json::Value) -> Reply {
        self.post(
            "/events",
            &[("content-type", "application/cloudevents+json")],
            event.to_string(),
        )
        .await
    }
}

/// A structured CloudEvent with the given id and type.
pub(crate) fn event(id: &str, ty: &str) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests",
        "type": ty,
        "subject": "/orders/1",
        "datacontenttype": "application/json",
        "data": {"n": 1}
    })
}
