//! Hot reload: by the admin API, by a file change (an editor's rename, a Kubernetes ConfigMap
//! update) and by SIGHUP; an invalid file, a file still being written and one that removes
//! authentication are kept out; an unchanged file is not reloaded; a reload under a steady
//! stream of events loses and duplicates nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon, BIN};
use crate::support::{request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

fn routes_to(a: &TestSink, b: &TestSink, target: &str, concurrency: u32) -> String {
    format!(
        r#"
spool: {{ path: "{{dir}}/spool" }}
sinks:
  a: {{ http: {{ url: "{}" }}, concurrency: {concurrency} }}
  b: {{ http: {{ url: "{}" }}, concurrency: {concurrency} }}
routes: [{{ name: main, to: [{target}] }}]
"#,
        a.url(),
        b.url()
    )
}

async fn reload(app: &TestApp) -> crate::support::client::Reply {
    request(
        Method::POST,
        &format!("{}/api/v1/reload", app.admin),
        &[],
        "",
    )
    .await
}

#[tokio::test]
async fn the_admin_api_reloads_routes_and_keeps_an_invalid_file_out() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 4), false).await;
    app.send(event("before", "T")).await;
    wait_until("a gets the first event", WAIT, || a.count() == 1).await;

    app.rewrite(&routes_to(&a, &b, "b", 4));
    let reply = reload(&app).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["routes"], 1);
    app.send(event("after", "T")).await;
    wait_until("b gets the second event", WAIT, || b.count() == 1).await;

    app.rewrite("sinks: { a: { http: { url: 12 } } }\nroutes: [{ name: r, to: [nowhere] }]\n");
    let refused = reload(&app).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("sinks.a.http.url") && error.contains("routes[0].to[0]"),
        "{error}"
    );
    app.send(event("still-b", "T")).await;
    wait_until("b still routed", WAIT, || b.count() == 2).await;
    assert_eq!(a.count(), 1);

    let metrics = request(Method::GET, &format!("{}/metrics", app.admin), &[], "").await;
    assert!(metrics
        .text()
        .contains("switchyard_config_reloads_total{outcome=\"failure\"}"));
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 4), true).await;
    app.rewrite(&routes_to(&a, &b, "b", 4));
    let routes_url = format!("{}/api/v1/routes", app.admin);
    let mut switched = false;
    for _ in 0..200 {
        let routes = request(Method::GET, &routes_url, &[], "").await.json();
        if routes["routes"][0]["to"][0] == "b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(switched, "the watcher did not reload within 5 s");
    app.send(event("watched", "T")).await;
    wait_until("b gets the event", WAIT, || b.count() == 1).await;
    assert_eq!(a.count(), 0);
}

#[tokio::test]
async fn reloading_under_a_steady_stream_loses_and_duplicates_nothing() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 2), false).await;
    let sending = async {
        for i in 0..300 {
            let reply = app.send(event(&format!("s-{i}"), "T")).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED);
        }
    };
    let reloading = async {
        for round in 0..6u32 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            app.rewrite(&routes_to(&a, &b, "a", 2 + round % 3));
            assert_eq!(reload(&app).await.status, StatusCode::OK);
        }
    };
    tokio::join!(sending, reloading);
    wait_until("all 300 delivered", WAIT, || a.count() >= 300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in a.received() {
        *seen
            .entry(r.header("ce-id").unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 300, "every event delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, admin) = (free_port(), free_port());
    let write = |target: &str| {
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n{}",
            routes_to(&a, &b, target, 4).replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(dir.path().join("routes.yaml"), yaml).expect("write");
    };
    write("a");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--no-watch", "--config"])
        .arg(dir.path().join("routes.yaml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let routes_url = format!("http://127.0.0.1:{admin}/api/v1/routes");
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    write("b");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let mut switched = false;
    for _ in 0..200 {
        let routes = request(Method::GET, &routes_url, &[], "").await.json();
        if routes["routes"][0]["to"][0] == "b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(switched, "SIGHUP did not reload within 5 s");
}

/// A daemon whose reload removed sink `a` while it held 3 failing deliveries; `b` stays.
async fn with_an_orphaned_sink() -> (TestApp, TestSink, TestSink) {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(crate::support::Respond::status(503));
    let config = |target: &str, with_a: bool| {
        let a_sink = if with_a {
            format!(
                "  a: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [1h] }} }}\n",
                a.url()
            )
        } else {
            String::new()
        };
        format!(
            "spool: {{ path: \"{{dir}}/spool\" }}\nsinks:\n{a_sink}  b: {{ http: {{ url: \"{}\" }} }}\nroutes: [{{ name: main, to: [{target}] }}]\n",
            b.url()
        )
    };
    let app = TestApp::start_file(&config("a", true), false).await;
    for i in 0..3 {
        app.send(event(&format!("o-{i}"), "T")).await;
    }
    wait_until("three failed first attempts", WAIT, || a.count() == 3).await;
    app.rewrite(&config("b", false));
    assert_eq!(reload(&app).await.status, StatusCode::OK);
    (app, a, b)
}

#[tokio::test]
async fn deliveries_for_a_removed_sink_are_kept_and_reported_as_orphaned() {
    let (app, _a, _b) = with_an_orphaned_sink().await;
    let sinks = request(Method::GET, &format!("{}/api/v1/sinks", app.admin), &[], "")
        .await
        .json();
    let orphan = sinks["sinks"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "a"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(orphan["orphaned"], true, "{sinks}");
    assert_eq!(orphan["backlog"], 3, "{sinks}");
    assert_eq!(app.running.spool_depth("a"), 3, "kept, not dropped");
}

#[tokio::test]
async fn an_operator_purges_the_deliveries_of_a_removed_sink() {
    let (app, _a, _b) = with_an_orphaned_sink().await;
    let sinks_url = format!("{}/api/v1/sinks", app.admin);
    let listed = |sinks: &serde_json::Value, name: &str| {
        let all = sinks["sinks"].as_array().cloned().unwrap_or_default();
        all.into_iter().find(|s| s["name"] == name)
    };
    let sinks = request(Method::GET, &sinks_url, &[], "").await.json();
    let orphan = listed(&sinks, "a").unwrap_or_default();
    assert_eq!(
        (&orphan["orphaned"], &orphan["backlog"]),
        (&true.into(), &3.into())
    );

    let purge = |sink: &str| format!("{}/api/v1/sinks/{sink}/deliveries", app.admin);
    let purged = request(Method::DELETE, &purge("a"), &[], "").await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    assert_eq!(purged.json()["purged"], 3);
    assert_eq!(app.running.spool_depth("a"), 0);
    let sinks = request(Method::GET, &sinks_url, &[], "").await.json();
    assert!(listed(&sinks, "a").is_none(), "{sinks}");

    let again = request(Method::DELETE, &purge("a"), &[], "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text());
    let configured = request(Method::DELETE, &purge("b"), &[], "").await;
    assert_eq!(
        configured.status,
        StatusCode::CONFLICT,
        "{}",
        configured.text()
    );
    let error = configured.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("configured"), "{error}");
}

async fn reload_with(app: &TestApp, headers: &[(&str, &str)]) -> crate::support::client::Reply {
    let url = format!("{}/api/v1/reload", app.admin);
    request(Method::POST, &url, headers, "").await
}

#[tokio::test]
async fn a_reload_that_removes_authentication_is_refused_until_a_restart() {
    let a = TestSink::start().await;
    let config = |auth: &str, admin: &str| {
        format!(
            "spool: {{ path: \"{{dir}}/spool\" }}\n{auth}{admin}sinks: {{ a: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: main, to: [a] }}]\n",
            a.url()
        )
    };
    let ingress = |token: &str| format!("ingress: {{ auth: [{{ bearer: {token} }}] }}\n");
    let admin = "admin: { token: adm }\n";
    let app = TestApp::start_file(&config(&ingress("in-1"), admin), false).await;
    let as_admin = [("authorization", "Bearer adm")];
    let publish = |token: &'static str| {
        let auth = format!("Bearer {token}");
        let app = &app;
        async move {
            let headers = [
                ("content-type", "application/cloudevents+json"),
                ("authorization", auth.as_str()),
            ];
            let body = event(&format!("auth-{token}"), "T").to_string();
            app.post("/events", &headers, body).await.status
        }
    };

    app.rewrite(&config("", admin));
    let refused = reload_with(&app, &as_admin).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("every ingress.auth credential") && error.contains("takes a restart"),
        "{error}"
    );
    assert_eq!(
        app.send(event("open", "T")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(publish("in-1").await, StatusCode::ACCEPTED);

    app.rewrite(&config(&ingress("in-1"), ""));
    let refused = reload_with(&app, &as_admin).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("admin.token") && error.contains("takes a restart"),
        "{error}"
    );
    assert_eq!(
        app.admin_get("/api/v1/routes", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Replacing a credential is a reload.
    app.rewrite(&config(&ingress("in-2"), admin));
    let rotated = reload_with(&app, &as_admin).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    assert_eq!(publish("in-1").await, StatusCode::UNAUTHORIZED);
    assert_eq!(publish("in-2").await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_file_still_being_written_is_never_loaded_half_way() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 4), false).await;
    // Without its last line the file is valid too: it routes nothing.
    let whole = routes_to(&a, &b, "b", 4).replace("{dir}", &app.dir.path().display().to_string());
    let (head, tail) = whole.split_at(whole.find("routes:").expect("routes line"));
    let path = app.path("routes.yaml");
    std::fs::write(&path, head).expect("write the first part");
    let writing = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut file, tail.as_bytes()).expect("write the rest");
    };
    let (reply, ()) = tokio::join!(reload(&app), writing);
    let routes = request(
        Method::GET,
        &format!("{}/api/v1/routes", app.admin),
        &[],
        "",
    )
    .await
    .json();
    match reply.status {
        StatusCode::UNPROCESSABLE_ENTITY => {
            assert!(
                reply.text().contains("changed while it was being read"),
                "{}",
                reply.text()
            );
            assert_eq!(
                routes["routes"][0]["to"][0], "a",
                "the old file stays: {routes}"
            );
        }
        StatusCode::OK => assert_eq!(
            routes["routes"][0]["to"][0], "b",
            "the whole file: {routes}"
        ),
        other => panic!("unexpected answer {other}: {}", reply.text()),
    }
    let again = reload(&app).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    let routes = request(
        Method::GET,
        &format!("{}/api/v1/routes", app.admin),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(routes["routes"][0]["to"][0], "b", "{routes}");
}

/// A `switchyard serve` child watching `routes.yaml` in `conf`, its spool in `data`; its
/// reload counter is its own (in-process daemons of other tests share one registry).
struct Watched {
    _daemon: Daemon,
    ingress: String,
    admin: String,
}

/// The configuration of a [`Watched`] daemon routing to `target`.
struct WatchedConfig<'a> {
    a: &'a TestSink,
    b: &'a TestSink,
    port: u16,
    admin: u16,
    data: tempfile::TempDir,
}

impl WatchedConfig<'_> {
    fn yaml(&self, target: &str) -> String {
        let spool = self.data.path().display().to_string();
        format!(
            "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\n{}",
            self.port,
            self.admin,
            routes_to(self.a, self.b, target, 4).replace("{dir}", &spool)
        )
    }

    async fn serve(&self, config: &Path) -> Watched {
        Watched {
            _daemon: Daemon::start(config, self.port).await,
            ingress: format!("http://127.0.0.1:{}", self.port),
            admin: format!("http://127.0.0.1:{}", self.admin),
        }
    }
}

impl<'a> WatchedConfig<'a> {
    fn new(a: &'a TestSink, b: &'a TestSink) -> Self {
        Self {
            a,
            b,
            port: free_port(),
            admin: free_port(),
            data: tempfile::tempdir().expect("data dir"),
        }
    }
}

impl Watched {
    /// `switchyard_config_reloads_total` by outcome: (success, failure).
    async fn reloads(&self) -> (u64, u64) {
        let text = request(Method::GET, &format!("{}/metrics", self.admin), &[], "")
            .await
            .text();
        let count = |outcome: &str| {
            let name = format!("switchyard_config_reloads_total{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&name))
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map_or(0, |n| n as u64)
        };
        (count("success"), count("failure"))
    }

    /// Waits until the reload counter reads `expected` (it is counted just after the swap).
    async fn wait_for_reloads(&self, expected: (u64, u64)) {
        let mut seen = self.reloads().await;
        for _ in 0..200 {
            if seen == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            seen = self.reloads().await;
        }
        assert_eq!(seen, expected, "reloads (success, failure)");
    }

    async fn target(&self) -> serde_json::Value {
        let url = format!("{}/api/v1/routes", self.admin);
        request(Method::GET, &url, &[], "").await.json()["routes"][0]["to"][0].clone()
    }

    /// Waits until the daemon routes to `target`.
    async fn wait_for_target(&self, target: &str) {
        for _ in 0..200 {
            if self.target().await == target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the watcher did not reload to `{target}` within 5 s");
    }

    async fn send(&self, id: &str) {
        let headers = [("content-type", "application/cloudevents+json")];
        let url = format!("{}/events", self.ingress);
        let reply = crate::support::post(&url, &headers, event(id, "T").to_string()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }
}

/// Publishes `yaml` as the kubelet updates a ConfigMap volume: a new timestamped directory,
/// a `..data_tmp` link to it renamed over `..data`, then the old directory removed.
fn kubelet_publish(conf: &Path, stamp: &str, yaml: &str, previous: Option<&str>) {
    let dir = conf.join(stamp);
    std::fs::create_dir(&dir).expect("timestamped dir");
    std::fs::write(dir.join("routes.yaml"), yaml).expect("write");
    std::os::unix::fs::symlink(stamp, conf.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).expect("swap ..data");
    if let Some(previous) = previous {
        std::fs::remove_dir_all(conf.join(previous)).expect("remove the old dir");
    }
}

#[tokio::test]
async fn the_watcher_follows_a_kubernetes_configmap_update() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let config = WatchedConfig::new(&a, &b);
    let conf = tempfile::tempdir().expect("config dir");
    let (first, second) = (
        "..2026_12_06_05_00_00.100000001",
        "..2026_12_06_05_01_00.200000002",
    );
    kubelet_publish(conf.path(), first, &config.yaml("a"), None);
    let file = conf.path().join("routes.yaml");
    std::os::unix::fs::symlink("..data/routes.yaml", &file).expect("routes.yaml link");
    let daemon = config.serve(&file).await;
    assert_eq!(daemon.target().await, "a");
    // The watcher compares the file with what was loaded once when it starts (a change made
    // before the watch began); past that look only its events can show the update.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    kubelet_publish(conf.path(), second, &config.yaml("b"), Some(first));
    daemon.wait_for_target("b").await;
    daemon.wait_for_reloads((1, 0)).await;
    daemon.send("after-configmap-update").await;
    wait_until("b gets the event", WAIT, || b.count() == 1).await;
    assert_eq!(a.count(), 0);
}

#[tokio::test]
async fn the_watcher_reloads_a_file_renamed_into_place_but_not_a_touched_one() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let config = WatchedConfig::new(&a, &b);
    let conf = tempfile::tempdir().expect("config dir");
    let file = conf.path().join("routes.yaml");
    let replace = |yaml: &str| {
        let tmp = conf.path().join(".routes.yaml.swp");
        std::fs::write(&tmp, yaml).expect("write");
        std::fs::rename(&tmp, &file).expect("rename into place");
    };
    std::fs::write(&file, config.yaml("a")).expect("write");
    let daemon = config.serve(&file).await;

    replace(&config.yaml("b"));
    daemon.wait_for_target("b").await;
    daemon.wait_for_reloads((1, 0)).await;

    // A touch, a rewrite with the same bytes and a same-content rename change nothing.
    let same = std::fs::read(&file).expect("read");
    std::fs::File::options()
        .append(true)
        .open(&file)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    std::fs::write(&file, &same).expect("rewrite in place");
    replace(&config.yaml("b"));
    // Long enough for the debounce and the settled read (200 ms each) several times over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        daemon.reloads().await,
        (1, 0),
        "an unchanged file was reloaded"
    );

    replace(&config.yaml("a"));
    daemon.wait_for_target("a").await;
    daemon.wait_for_reloads((2, 0)).await;
}
