//! The NATS server the NATS tests run against: `SWITCHYARD_TEST_NATS_URL` when it is set,
//! otherwise a `nats-server` (Debian's package) that this test process starts itself on an
//! ephemeral loopback port, with JetStream in a temporary folder.
//!
//! Shared by the library's unit tests and the integration tests (each includes this file);
//! a test process starts at most one shared server, and stops it when it exits. Tests that
//! stop and restart their server use [`NatsServer::start`] to get one of their own.
//!
//! Without the variable and without the binary the tests fail, with an install hint: they
//! never skip.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The variable that names an already running server (JetStream enabled) to use instead.
pub const URL_VARIABLE: &str = "SWITCHYARD_TEST_NATS_URL";

/// How long a started server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The URL of the NATS server this test process shares, started on first use.
pub fn url() -> &'static str {
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED.get_or_init(|| match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            let server = NatsServer::launch(&shared_store(), true);
            let url = server.url();
            // The shared server lives as long as the process: its guard is never dropped,
            // and the watcher shell stops it when the process's end closes its stdin.
            std::mem::forget(server);
            url
        }
    })
}

/// A folder for the shared server's JetStream store (removed when the server stops).
fn shared_store() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-test-nats-{}", std::process::id()));
    let _stale = std::fs::remove_dir_all(&dir);
    dir
}

/// A `nats-server` child process with JetStream, on a loopback port of its own.
///
/// Dropping it stops the server. Its store survives, so a test can [`NatsServer::kill`] it
/// and [`NatsServer::restart`] it on the same store and port.
#[derive(Debug)]
pub struct NatsServer {
    addr: SocketAddr,
    store: PathBuf,
    child: Option<Watched>,
    /// Whether the watcher removes the store when it stops the server for good.
    remove_store_on_exit: bool,
}

/// The watcher shell and the pipe whose closing stops it.
#[derive(Debug)]
struct Watched {
    shell: Child,
    stdin: Option<ChildStdin>,
}

impl NatsServer {
    /// Starts a server with its JetStream store under `store`; panics with an install hint
    /// when `nats-server` cannot be run, or when it does not answer in time.
    pub fn start(store: &Path) -> Self {
        Self::launch(store, false)
    }

    /// Starts a server; with `remove_store_on_exit` its store goes when it stops for good.
    fn launch(store: &Path, remove_store_on_exit: bool) -> Self {
        let mut server = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            store: store.to_path_buf(),
            child: None,
            remove_store_on_exit,
        };
        server.restart();
        server
    }

    /// The server's URL (`nats://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops the server at once (SIGKILL), as a crash would; the store stays.
    pub fn kill(&mut self) {
        if let Some(mut watched) = self.child.take() {
            // Closing the watcher's stdin makes it kill the server with SIGKILL and exit.
            drop(watched.stdin.take());
            let _status = watched.shell.wait();
        }
    }

    /// Starts the server again on the same port and store (after [`NatsServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        std::fs::create_dir_all(&self.store).unwrap_or_else(|e| {
            panic!("cannot create the NATS store {}: {e}", self.store.display())
        });
        // A shell starts the server and kills it when its stdin closes: when this guard is
        // dropped, and when the test process ends in any way (its pipe end closes with it).
        let script = r#"nats-server -a 127.0.0.1 -p "$1" -js -sd "$2" >"$2/server.log" 2>&1 &
pid=$!
echo started
read -r _ignored
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ "$3" = remove ]; then rm -rf "$2"; fi
exit 0"#;
        let mut shell = Command::new("sh")
            .args(["-c", script, "nats-test-watcher"])
            .arg(self.addr.port().to_string())
            .arg(&self.store)
            .arg(if self.remove_store_on_exit {
                "remove"
            } else {
                "keep"
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sh to start nats-server: {e}"));
        let stdin = shell.stdin.take();
        let mut started = String::new();
        if let Some(stdout) = shell.stdout.take() {
            let _read = BufReader::new(stdout).read_line(&mut started);
        }
        self.child = Some(Watched { shell, stdin });
        self.wait_ready();
    }

    /// Waits until the server accepts connections; panics with the reason otherwise.
    #[expect(
        clippy::disallowed_methods,
        clippy::disallowed_types,
        reason = "a blocking wait for a real process to start, on the wall clock: also called \
                  outside any runtime, and a paused test clock must not end it early"
    )]
    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(watched) = &mut self.child {
                if let Ok(Some(_)) = watched.shell.try_wait() {
                    break;
                }
            }
            if !self.server_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.store.join("server.log")).unwrap_or_default();
        panic!(
            "nats-server did not start on {} (store {}).\n\
             The NATS tests need `nats-server` on the PATH (Debian: apt-get install nats-server), \
             or {URL_VARIABLE} naming a server with JetStream enabled.\nServer log:\n{log}",
            self.addr,
            self.store.display()
        );
    }

    /// Whether the server process is still there (its log says it could not start otherwise).
    fn server_running(&self) -> bool {
        let log = std::fs::read_to_string(self.store.join("server.log")).unwrap_or_default();
        !(log.contains("not found") || log.contains("[FTL]") || log.contains("exiting"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(watched) = &mut self.child {
            if let Some(mut stdin) = watched.stdin.take() {
                let _ignored = stdin.write_all(b"stop\n");
            }
            let _status = watched.shell.wait();
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}
