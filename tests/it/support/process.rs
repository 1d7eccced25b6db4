//! The compiled daemon as a child process, for tests that kill and restart it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Path of the compiled binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

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
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            // `TEST_DAEMON_LOG=1` shows the daemon's warnings and errors.
            .stderr(if std::env::var_os("TEST_DAEMON_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
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
