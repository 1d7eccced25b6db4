//! Who may use the admin API: a non-loopback address without a token does not start; without
//! a token only requests addressed to loopback are served (DNS rebinding); requests that
//! change something are refused when a browser marks them as sent from another site.

use std::process::Command;

use hyper::{Method, StatusCode};

use crate::support::process::BIN;
use crate::support::{request, TestApp, TestSink};

const ROUTES: &str = "sinks: { guard: { log: {} } }\nroutes: [{ name: guard, to: [guard] }]\n";

fn port(app: &TestApp) -> u16 {
    app.running.admin_addr().port()
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> crate::support::client::Reply {
    request(Method::GET, &format!("{}{path}", app.admin), headers, "").await
}

fn error_of(reply: &crate::support::client::Reply) -> String {
    reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_exposed_admin_listen_without_a_token_stops_check_and_serve_with_64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("routes.yaml");
    let yaml = format!("listen: 127.0.0.1:0\nadmin_listen: 0.0.0.0:0\n{ROUTES}");
    std::fs::write(&path, yaml).expect("write");
    for command in ["check", "serve"] {
        let out = Command::new(BIN)
            .args([command, "--config"])
            .arg(&path)
            .env("SWITCHYARD_SPOOL__PATH", dir.path().join("spool"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {stderr}");
        assert!(
            stderr.contains("admin_listen: 0.0.0.0:0 is reachable from other hosts")
                && stderr.contains("set admin.token")
                && stderr.contains("admin.allow_unauthenticated: true"),
            "{command}: {stderr}"
        );
    }
    let opted_out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("SWITCHYARD_ADMIN__ALLOW_UNAUTHENTICATED", "true")
        .output()
        .expect("run");
    assert_eq!(opted_out.status.code(), Some(0));
    let summary = String::from_utf8_lossy(&opted_out.stdout);
    assert!(
        summary.contains("no token (allow_unauthenticated)"),
        "{summary}"
    );
}

#[tokio::test]
async fn without_a_token_only_requests_addressed_to_loopback_are_served() {
    let app = TestApp::start(ROUTES).await;
    let port = port(&app);
    for host in ["evil.example".to_owned(), format!("evil.example:{port}")] {
        let refused = get(&app, "/api/v1/routes", &[("host", &host)]).await;
        assert_eq!(refused.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(
            error_of(&refused).contains("localhost"),
            "{}",
            refused.text()
        );
        let purge = request(
            Method::DELETE,
            &format!("{}/api/v1/sinks/guard/deliveries", app.admin),
            &[("host", &host)],
            "",
        )
        .await;
        assert_eq!(purge.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        for probe in ["/healthz", "/readyz"] {
            let answer = get(&app, probe, &[("host", &host)]).await;
            assert_eq!(answer.status, StatusCode::OK, "{probe} with {host}");
        }
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".to_owned(),
    ] {
        let served = get(&app, "/api/v1/routes", &[("host", &host)]).await;
        assert_eq!(served.status, StatusCode::OK, "{host}: {}", served.text());
        assert_eq!(served.json()["routes"][0]["name"], "guard");
    }
}

#[tokio::test]
async fn with_a_token_the_token_is_the_guard_whatever_the_host() {
    let app = TestApp::start(&format!("admin: {{ token: s3cret }}\n{ROUTES}")).await;
    let host = ("host", "switchyard-admin.example:9090");
    let without = get(&app, "/api/v1/routes", &[host]).await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let with = get(
        &app,
        "/api/v1/routes",
        &[host, ("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(with.status, StatusCode::OK, "{}", with.text());
    let cross_site = request(
        Method::DELETE,
        &format!("{}/api/v1/sinks/gone/deliveries", app.admin),
        &[
            ("authorization", "Bearer s3cret"),
            ("origin", "http://evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(
        cross_site.status,
        StatusCode::FORBIDDEN,
        "{}",
        cross_site.text()
    );
}

#[tokio::test]
async fn a_browser_request_from_another_site_changes_nothing() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let routes = |target: &str| {
        format!(
            "spool: {{ path: \"{{dir}}/spool\" }}\nsinks:\n  a: {{ http: {{ url: \"{}\" }} }}\n  b: {{ http: {{ url: \"{}\" }} }}\nroutes: [{{ name: main, to: [{target}] }}]\n",
            a.url(),
            b.url()
        )
    };
    let app = TestApp::start_file(&routes("a"), false).await;
    app.rewrite(&routes("b"));
    let own = format!("http://127.0.0.1:{}", port(&app));
    let reload = |headers: Vec<(&'static str, String)>| {
        let url = format!("{}/api/v1/reload", app.admin);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(Method::POST, &url, &headers, "").await
        }
    };
    let target =
        || async { get(&app, "/api/v1/routes", &[]).await.json()["routes"][0]["to"][0].clone() };

    for marks in [
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
        vec![("origin", "http://evil.example".to_owned())],
        vec![("origin", "null".to_owned())],
        vec![("origin", "http://127.0.0.1:1".to_owned())],
    ] {
        let refused = reload(marks.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{marks:?}: {}",
            refused.text()
        );
        assert!(
            error_of(&refused).contains("another site"),
            "{}",
            refused.text()
        );
        assert_eq!(target().await, "a", "{marks:?} reloaded");
    }
    let cross_site_read = get(&app, "/api/v1/routes", &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(
        cross_site_read.status,
        StatusCode::OK,
        "reads change nothing"
    );

    let same_origin = reload(vec![
        ("origin", own.clone()),
        ("sec-fetch-site", "same-origin".to_owned()),
    ])
    .await;
    assert_eq!(same_origin.status, StatusCode::OK, "{}", same_origin.text());
    assert_eq!(target().await, "b");
    app.rewrite(&routes("a"));
    let command_line = reload(Vec::new()).await;
    assert_eq!(
        command_line.status,
        StatusCode::OK,
        "{}",
        command_line.text()
    );
    assert_eq!(target().await, "a");
}
