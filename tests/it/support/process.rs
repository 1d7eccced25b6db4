//! The compiled daemon as a child process, for tests that kill and restart it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::TestSink;

/// Path of the compiled binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The variables that choose an outbound proxy; a child never inherits them from the tests.
const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Writes `dir/routes.yaml`: the daemon on `port` with an embedded spool at `spool`, and
/// every event routed to one sink `hook` that posts to `sink` within `timeout`, with the
/// further sink settings `settings` (one YAML line each).
pub(crate) fn embedded_config(
    dir: &Path,
    spool: &Path,
    port: u16,
    sink: &TestSink,
    timeout: &str,
    settings: &[&str],
) -> PathBuf {
    let path = dir.join("routes.yaml");
    let settings: String = settings.iter().map(|s| format!("    {s}\n")).collect();
    let yaml = format!(
        r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:0
spool: {{ backend: embedded, path: "{}" }}
sinks:
  hook:
    http: {{ url: "{}", timeout: {timeout} }}
{settings}routes: [{{ name: all, to: [hook] }}]
"#,
        spool.display(),
        sink.url()
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Writes `dir/routes.yaml`: the daemon on `port`, its admin API on `admin_port`, the
/// default (embedded) spool in `dir/spool`, and every event routed to one sink `hook` that
/// posts to `sink`.
pub(crate) fn restart_config(dir: &Path, port: u16, admin_port: u16, sink: &TestSink) -> PathBuf {
    let config = dir.join("routes.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n\
         spool: {{ path: \"{}/spool\" }}\n\
         sinks: {{ hook: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [hook] }}]\n",
        dir.display(),
        sink.url()
    );
    std::fs::write(&config, yaml).expect("write config");
    config
}

/// A free TCP port on 127.0.0.1 (bound once, then released).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A running `switchyard serve` child.
#[derive(Debug)]
pub(crate) struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `switchyard serve --config <config>` and waits until it listens on `port`.
    pub(crate) async fn start(config: &Path, port: u16) -> Self {
        Self::start_with(config, port, &[], None).await
    }

    /// Like [`Daemon::start`], with `env` set on the child only (after clearing the proxy
    /// variables it would inherit) and, with `log`, its debug log written to that file.
    pub(crate) async fn start_with(
        config: &Path,
        port: u16,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        Self::start_in(None, config, port, env, log).await
    }

    /// Like [`Daemon::start_with`], run from the working directory `dir` when given (where the
    /// configuration's relative paths, such as `./data`, then lead).
    pub(crate) async fn start_in(
        dir: Option<&Path>,
        config: &Path,
        port: u16,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let mut command = Command::new(BIN);
        command.args(["serve", "--config"]).arg(config);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        for name in PROXY_VARIABLES {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let stderr = match log {
            Some(path) => {
                command.env("RUST_LOG", "debug");
                Stdio::from(std::fs::File::create(path).expect("create log"))
            }
            // `TEST_DAEMON_LOG=1` shows the daemon's warnings and errors; any other value is
            // the daemon's log filter (`TEST_DAEMON_LOG=switchyard::spool=debug`).
            None if std::env::var_os("TEST_DAEMON_LOG").is_some() => {
                let filter = std::env::var("TEST_DAEMON_LOG")
                    .ok()
                    .filter(|f| f != "1")
                    .unwrap_or_else(|| "warn".to_owned());
                command.env("RUST_LOG", filter);
                Stdio::inherit()
            }
            None => {
                command.env("RUST_LOG", "warn");
                Stdio::null()
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn daemon");
        let mut daemon = Self { child };
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            if let Some(status) = daemon.child.try_wait().expect("wait") {
                panic!("daemon exited during start-up: {status}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        daemon.kill9();
        panic!("daemon did not listen on {port} within 10 s");
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (a graceful stop), then reap.
    pub(crate) fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "SIGTERM not sent");
        self.child.wait().expect("reap");
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}
