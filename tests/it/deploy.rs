//! What `deploy/` relies on: `switchyard health` against a live, a not-ready and an absent
//! admin server; the Dockerfile's `COPY` sources, labels and command lines against the
//! repository and the real CLI; the systemd unit's command line; the configurations shipped
//! for the image, Kubernetes and compose pass `switchyard check`; the daemon says which sync
//! SQLite commits with.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::TestApp;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn health(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(BIN)
        .arg("health")
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("health answers within its timeout")
        .expect("run switchyard health")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn health_exits_zero_when_the_daemon_is_ready_and_alive() {
    let app = TestApp::start(
        "listen: 127.0.0.1:0\nadmin: { token: secret }\nsinks: { out: { log: {} } }\nroutes: [{ name: all, to: [out] }]\n",
    )
    .await;
    let ready = health(&["--admin", &app.admin]).await;
    assert!(ready.status.success(), "{}", stderr(&ready));
    assert!(String::from_utf8_lossy(&ready.stdout).contains("/readyz: 200"));
    let live = health(&[
        "--admin", &app.admin, "--probe", "live", "--token", "secret",
    ])
    .await;
    assert!(live.status.success(), "{}", stderr(&live));
    assert!(String::from_utf8_lossy(&live.stdout).contains("/healthz: 200"));
}

/// An admin server stand-in answering every request with `reply`; gives its URL and the
/// first request it received.
fn fake_admin(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let served = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
                break;
            }
            request.push_str(&line);
        }
        let mut stream = stream;
        stream.write_all(reply.as_bytes()).expect("write");
        request
    });
    (url, served)
}

#[tokio::test]
async fn health_exits_one_with_the_reason_when_not_ready_and_sends_the_token_directly() {
    let body = r#"{"status":"not ready","reason":"spool storage is failing"}"#;
    let reply: &'static str = Box::leak(
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (url, served) = fake_admin(reply);
    let run = tokio::process::Command::new(BIN)
        .args(["health", "--admin", &url])
        .env("SWITCHYARD_ADMIN_TOKEN", "from-env")
        // A proxy in the environment is for sinks: the probe goes directly.
        .env("HTTP_PROXY", "http://127.0.0.1:1")
        .env("http_proxy", "http://127.0.0.1:1")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("in time")
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("503") && err.contains("spool storage is failing"),
        "{err}"
    );
    let request = served.join().expect("fake admin");
    assert!(request.starts_with("GET /readyz "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer from-env"),
        "{request}"
    );
}

#[tokio::test]
async fn health_exits_one_when_nothing_answers() {
    let port = crate::support::process::free_port();
    let out = health(&["--admin", &format!("http://127.0.0.1:{port}")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("unhealthy"), "{}", stderr(&out));
    let bad = health(&["--admin", "not a url"]).await;
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<String> {
    let text = read("deploy/Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// The arguments of an exec-form instruction (`["a", "b"]`) after its keyword and flags.
fn exec_form(instruction: &str) -> Vec<String> {
    let start = instruction.find('[').expect("exec form");
    serde_json::from_str(&instruction[start..]).expect("a JSON array")
}

fn run_cli(args: &[String]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard")
}

#[test]
fn every_dockerfile_copy_source_exists_and_the_context_admits_it() {
    let ignore = read(".dockerignore");
    let admitted: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .collect();
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        "the allow-list starts by excluding everything"
    );
    let mut copies = 0;
    for instruction in dockerfile() {
        let Some(rest) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        if rest.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (_dest, sources) = words.split_last().expect("COPY has a destination");
        for source in sources {
            copies += 1;
            assert!(repo(source).exists(), "COPY source {source} does not exist");
            let inside = |allowed: &&str| {
                let allowed = allowed.trim_end_matches('/');
                *source == allowed
                    || source.starts_with(&format!("{allowed}/"))
                    || allowed.starts_with(&format!("{source}/"))
            };
            assert!(
                admitted.iter().any(inside),
                "COPY source {source} is left out of the context by .dockerignore"
            );
        }
    }
    assert!(copies >= 6, "found only {copies} COPY sources");
}

#[test]
fn dockerfile_command_lines_parse_with_the_real_cli() {
    let instructions = dockerfile();
    let find = |keyword: &str| {
        instructions
            .iter()
            .rev()
            .find(|i| i.starts_with(keyword))
            .unwrap_or_else(|| panic!("no {keyword}"))
            .clone()
    };
    let entrypoint = exec_form(&find("ENTRYPOINT "));
    assert_eq!(entrypoint, ["/usr/local/bin/switchyard"]);
    let healthcheck = exec_form(&find("HEALTHCHECK "));
    assert_eq!(healthcheck[0], "/usr/local/bin/switchyard");
    let cmd = exec_form(&find("CMD "));
    for args in [cmd.clone(), healthcheck[1..].to_vec()] {
        let mut with_help = args.clone();
        with_help.push("--help".to_owned());
        let out = run_cli(&with_help);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // The command's configuration is the image's own file, and it passes `check`.
    assert!(
        instructions
            .iter()
            .any(|i| i == "COPY deploy/image-routes.yaml /etc/switchyard/routes.yaml"),
        "the image carries its default configuration"
    );
    assert_eq!(cmd, ["serve", "--config", "/etc/switchyard/routes.yaml"]);
    let label = |key: &str| instructions.iter().any(|i| i.contains(key));
    for key in [
        "org.opencontainers.image.source=",
        "org.opencontainers.image.version=",
        "org.opencontainers.image.licenses=\"Apache-2.0\"",
    ] {
        assert!(label(key), "no label {key}");
    }
    let version = format!("ARG VERSION={}", env!("CARGO_PKG_VERSION"));
    assert!(instructions.contains(&version), "{version} is the default");
    assert!(instructions.iter().any(|i| i.starts_with("USER 10001")));
    assert!(instructions.iter().any(|i| i == "STOPSIGNAL SIGTERM"));
    assert!(
        instructions
            .iter()
            .filter(|i| i.starts_with("RUN cargo build") || i.contains("&& cargo build"))
            .all(|i| i.contains("--locked")),
        "every build is --locked"
    );
}

/// `switchyard check` on `text`, with the environment `vars`.
fn check(text: &str, vars: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("routes.yaml");
    std::fs::write(&path, text).expect("write");
    Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .envs(vars.iter().copied())
        .output()
        .expect("run check")
}

#[test]
fn the_image_configuration_passes_check_without_any_variable() {
    let out = check(&read("deploy/image-routes.yaml"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_systemd_unit_command_line_parses() {
    let unit = read("deploy/switchyard.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut args: Vec<String> = exec.split_whitespace().skip(1).map(str::to_owned).collect();
    args.push("--help".to_owned());
    let out = run_cli(&args);
    assert!(out.status.success(), "{exec}: {}", stderr(&out));
    assert!(unit.contains("RestartPreventExitStatus=64"));
}

#[tokio::test]
async fn serve_logs_the_sync_sqlite_commits_with() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nspool: {{ path: \"{}/spool\" }}\nsinks: {{ out: {{ log: {{}} }} }}\nroutes: [{{ name: all, to: [out] }}]\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let logs = child.stderr.take().expect("stderr");
    // Logs go to stderr; the reader ends at the line or when the killed child closes it.
    let found = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(logs).lines().map_while(Result::ok) {
            if line.contains("SQLite commits sync") {
                return Ok(line);
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        Err(seen)
    });
    for _ in 0..300 {
        if found.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("kill");
    let _status = child.wait();
    let line = found
        .join()
        .expect("reader")
        .unwrap_or_else(|seen| panic!("no sync line in the log:\n{seen}"));
    // The repository's .cargo/config.toml builds SQLite with HAVE_FDATASYNC.
    assert!(line.contains(r#""sync":"fdatasync""#), "{line}");
}

#[test]
fn the_compose_kit_mounts_files_that_exist_and_its_configuration_passes_check() {
    let text = read("deploy/compose/compose.yaml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("compose.yaml is YAML");
    let services = docs[0]["services"].as_hash().expect("services");
    let names: Vec<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for name in [
        "nats",
        "switchyard-1",
        "switchyard-2",
        "demo-sink",
        "prometheus",
    ] {
        assert!(names.contains(&name), "no service {name}");
    }
    // Every bind mount's source is a file of the kit (merge keys are not resolved by the
    // parser, so the shared switchyard block is read from the anchor).
    let anchor = &docs[0]["x-switchyard"];
    let mut mounts = 0;
    for service in services.values().chain([anchor]) {
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let volume = volume.as_str().expect("short volume syntax");
            if let Some(source) = volume.strip_prefix("./") {
                let source = source.split(':').next().expect("source");
                mounts += 1;
                assert!(
                    repo("deploy/compose").join(source).is_file(),
                    "{volume}: no such file"
                );
            }
        }
    }
    assert_eq!(mounts, 3, "routes.yaml, demo-sink.py, prometheus.yml");
    let build = &anchor["build"];
    let context = repo("deploy/compose").join(build["context"].as_str().expect("context"));
    assert!(context
        .join(build["dockerfile"].as_str().expect("dockerfile"))
        .is_file());
    assert_eq!(
        anchor["stop_grace_period"].as_str(),
        Some("75s"),
        "above twice shutdown_grace"
    );

    let env = read("deploy/compose/.env");
    let vars: Vec<(&str, &str)> = env
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let out = check(&read("deploy/compose/routes.yaml"), &vars);
    assert!(out.status.success(), "{}", stderr(&out));
}
