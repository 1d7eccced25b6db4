//! The real daemon, in-process on 127.0.0.1:0, configured from routes.yaml text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hyper::Method;
use switchyard::{Running, Switchyard};

use super::client::{post, request, Reply};

/// A running daemon with its own temporary directory.
#[derive(Debug)]
pub(crate) struct TestApp {
    pub(crate) running: Running,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) base: String,
    /// Base URL of the admin server.
    pub(crate) admin: String,
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
        Self::start_in(tempfile::tempdir().expect("temp dir"), yaml, setup).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        yaml: &str,
        setup: impl FnOnce(Switchyard) -> Switchyard,
    ) -> Self {
        init_test_logging();
        let yaml = yaml.replace("{dir}", &dir.path().display().to_string());
        // Each test's spool lives in its own directory.
        let vars = BTreeMap::from([(
            "SWITCHYARD_SPOOL__PATH".to_owned(),
            dir.path().join("spool").display().to_string(),
        )]);
        let config = switchyard::config::load_str(&yaml, Path::new("test.yaml"), &vars)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin");
        let running = setup(Switchyard::new(config))
            .admin_listener(admin_listener)
            .start_on(listener)
            .expect("daemon starts");
        let base = format!("http://{}", running.local_addr());
        let admin = format!("http://{}", running.admin_addr());
        Self {
            running,
            dir,
            base,
            admin,
        }
    }

    /// Starts a daemon from the file `{dir}/routes.yaml` holding `yaml`; it can be
    /// reloaded, and is watched for changes when `watch`.
    pub(crate) async fn start_file(yaml: &str, watch: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("routes.yaml");
        let text = yaml.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&path, text).expect("write routes.yaml");
        Self::start_in(dir, yaml, move |s| s.config_file(path, watch)).await
    }

    /// Writes `yaml` (with `{dir}` replaced) over `{dir}/routes.yaml`.
    pub(crate) fn rewrite(&self, yaml: &str) {
        let text = yaml.replace("{dir}", &self.dir.path().display().to_string());
        let tmp = self.path("routes.yaml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.path("routes.yaml")).expect("rename");
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

    /// GETs a path of the admin server, with a bearer token when given.
    pub(crate) async fn admin_get(&self, path: &str, token: Option<&str>) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        request(Method::GET, &format!("{}{path}", self.admin), &headers, "").await
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

    /// POSTs the events as one CloudEvents batch (they reach the spool in one step) and
    /// asserts it was accepted.
    pub(crate) async fn send_batch(&self, events: Vec<serde_json::Value>) {
        let reply = self
            .post(
                "/events",
                &[("content-type", "application/cloudevents-batch+json")],
                serde_json::Value::Array(events).to_string(),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
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
