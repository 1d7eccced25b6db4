//! The operator dashboard: the page, its script and style sheet are served with a strict
//! Content-Security-Policy; the explain endpoint it uses; and, in a real headless Chromium
//! (`--ignored`, run by `.ci/run`), an operator's round: token, a failing sink with its
//! breaker open, its dead letters (one with a hostile type, shown as text), a fix, a replay
//! clicked in the page, and the delivery in the history.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::daemon::event;
use crate::support::webdriver::{Browser, WINDOW};
use crate::support::{request, wait_until, Respond, TestApp, TestSink};

const TOKEN: &str = "dash-token";
const WAIT: Duration = Duration::from_secs(20);

/// What an event's sender could put in its type, hoping the page parses it as HTML.
const HOSTILE: &str = r#"<img src=x onerror="window.pwned=1">"#;

fn config(sink: &TestSink, dir_path: &str) -> String {
    format!(
        r#"
admin: {{ token: {TOKEN} }}
sinks:
  orders-api:
    http: {{ url: "{url}" }}
    transform: '.channel = "web"'
    retry: {{ max_attempts: 1 }}
    circuit_breaker: {{ consecutive_failures: 2, open_for: 5s }}
  audit:
    file: {{ path: "{dir_path}/audit.jsonl" }}
routes:
  - name: everything
    to: [orders-api]
  - name: audit-trail
    match:
      types: ["Contoso.Audit.*"]
      subject: {{ begins_with: "/audit/" }}
    to: [audit]
"#,
        url = sink.url()
    )
}

async fn admin(app: &TestApp, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let url = format!("{}{path}", app.admin);
    let reply = request(method, &url, &headers, body.to_owned()).await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

#[tokio::test]
async fn the_page_its_script_and_style_are_served_with_a_strict_policy_and_no_token() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&config(&sink, "{dir}")).await;

    for (path, kind, needle) in [
        (
            "/",
            "text/html",
            r#"<script src="/dashboard.js" defer></script>"#,
        ),
        ("/dashboard.js", "text/javascript", "sessionStorage"),
        ("/dashboard.css", "text/css", "font"),
        ("/dashboard.svg", "image/svg+xml", "<svg"),
    ] {
        let reply = request(Method::GET, &format!("{}{path}", app.admin), &[], "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let content_type = reply.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(reply.text().contains(needle), "{path}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    }
    // The script never turns text into markup: event attributes are the sender's choice.
    let script = request(Method::GET, &format!("{}/dashboard.js", app.admin), &[], "").await;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.text().contains(sink), "dashboard.js uses {sink}");
    }
    // The page carries no inline script or style, which the policy would block.
    let page = request(Method::GET, &format!("{}/", app.admin), &[], "").await;
    let html = page.text();
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    let handlers = html
        .split_whitespace()
        .filter(|word| word.starts_with("on") && word.contains('='));
    assert_eq!(handlers.count(), 0, "no inline event handler");
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "no inline style"
    );
    // The data stays behind the token.
    let data = request(Method::GET, &format!("{}/api/v1/sinks", app.admin), &[], "").await;
    assert_eq!(data.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_token_the_page_is_served_but_the_api_keeps_to_loopback_names() {
    let app = TestApp::start("sinks: { s: { log: {} } }\nroutes: [{ name: r, to: [s] }]\n").await;
    let foreign = [("host", "evil.example")];
    let page = request(Method::GET, &format!("{}/", app.admin), &foreign, "").await;
    assert_eq!(page.status, StatusCode::OK, "the page holds no data");
    let url = format!("{}/api/v1/sinks", app.admin);
    let api = request(Method::GET, &url, &foreign, "").await;
    assert_eq!(api.status, StatusCode::MISDIRECTED_REQUEST);
    let local = request(Method::GET, &url, &[], "").await;
    assert_eq!(local.status, StatusCode::OK);
}

#[tokio::test]
async fn explain_says_which_routes_match_a_pasted_event_and_why_not() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&config(&sink, "{dir}")).await;

    let mut audit = event("e-1", "Contoso.Audit.Login");
    audit["subject"] = json!("/orders/1");
    let (status, body) = admin(&app, Method::POST, "/api/v1/explain", &audit.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let verdicts = &body["events"][0];
    assert_eq!(verdicts["id"], "e-1");
    assert_eq!(verdicts["routes"][0]["route"], "everything");
    assert_eq!(verdicts["routes"][0]["matched"], true);
    assert_eq!(verdicts["routes"][0]["sinks"], json!(["orders-api"]));
    assert_eq!(verdicts["routes"][1]["matched"], false);
    let reason = verdicts["routes"][1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("subject"), "{reason}");

    // A batch explains each event; an Event Grid array too.
    let batch = json!([event("b-1", "A"), event("b-2", "B")]).to_string();
    let (status, body) = admin(&app, Method::POST, "/api/v1/explain", &batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2));
    let grid = json!([{ "id": "g-1", "subject": "/audit/x", "eventType": "Contoso.Audit.X",
        "eventTime": "2026-01-01T00:00:00Z", "data": {}, "dataVersion": "1" }]);
    let (status, body) = admin(&app, Method::POST, "/api/v1/explain", &grid.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["routes"][1]["matched"], true, "{body}");

    // With transform=true: what each matched sink receives.
    let path = "/api/v1/explain?transform=true";
    let (status, body) = admin(&app, Method::POST, path, &audit.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let received = &body["events"][0]["sinks"];
    assert_eq!(received[0]["sink"], "orders-api", "{body}");
    assert_eq!(received[0]["event"]["channel"], "web", "{body}");
    assert_eq!(received.as_array().map(Vec::len), Some(1), "{body}");
    let path = "/api/v1/explain?transform=maybe";
    let (status, _) = admin(&app, Method::POST, path, &audit.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = admin(&app, Method::POST, "/api/v1/explain", "{\"id\": 1}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("not a valid event")));
    // Nothing was stored or delivered.
    assert_eq!(sink.count(), 0);
    // Behind the token and the cross-site guard, as every other POST.
    let url = format!("{}/api/v1/explain", app.admin);
    let no_token = request(Method::POST, &url, &[], audit.to_string()).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {TOKEN}");
    let foreign = [
        ("authorization", bearer.as_str()),
        ("origin", "http://evil.example"),
    ];
    let cross_site = request(Method::POST, &url, &foreign, audit.to_string()).await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sinks_report_their_outcome_counts_and_oldest_wait() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(500)]);
    let app = TestApp::start(&format!(
        r#"
admin: {{ token: {TOKEN} }}
sinks:
  orders-api: {{ http: {{ url: "{}" }}, retry: {{ schedule: [10ms] }} }}
routes: [{{ name: all, to: [orders-api] }}]
"#,
        sink.url()
    ))
    .await;
    app.send(event("c-1", "T")).await;
    wait_until("delivered on the retry", WAIT, || sink.count() == 2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let orders = loop {
        let (status, body) = admin(&app, Method::GET, "/api/v1/sinks", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let orders = body["sinks"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "orders-api").cloned())
            .expect("orders-api listed");
        if orders["delivered"] == 1 && orders["backlog"] == 0 {
            break orders;
        }
        assert!(tokio::time::Instant::now() < deadline, "{orders}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(orders["retried"], 1, "{orders}");
    assert_eq!(orders["dead_lettered"], 0, "{orders}");
    // Nothing waits any more: the embedded spool says so with 0.
    assert_eq!(orders["oldest_age_seconds"], 0.0, "{orders}");
}

/// Saves a screenshot as `dashboard-{name}.png` when `SWITCHYARD_SCREENSHOT_DIR` is set.
async fn screenshot(browser: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("SWITCHYARD_SCREENSHOT_DIR") else {
        return;
    };
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = std::path::Path::new(&dir).join(format!("dashboard-{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Opens a view through its link in the navigation.
async fn open_view(browser: &Browser, view: &str) {
    let link = browser.find(&format!("nav a[data-view='{view}']")).await;
    browser.click(&link).await;
    let shown = format!("return !document.querySelector('#view-{view}').hidden");
    browser.wait_for(view, WAIT, &shown).await;
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver (run by .ci/run)"]
async fn an_operator_sees_a_failing_sink_and_replays_its_dead_letter_in_a_browser() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let app = TestApp::start(&config(&sink, "{dir}")).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", app.admin)).await;
    gives_the_token(&browser).await;
    browser
        .wait_for("the sinks listed", WAIT, BREAKER_CLOSED)
        .await;

    // Two events fail at once (no retries): the breaker opens, both are dead-lettered.
    let mut order = event("order-1", "Contoso.Orders.OrderCreated");
    order["data"] = json!({ "total": 120 });
    app.send_batch(vec![order, event("hostile-1", HOSTILE)])
        .await;
    sees_the_breaker_open(&browser).await;
    sees_the_routes(&browser).await;
    sees_the_dead_letters_as_text(&browser).await;

    // Fixed: the replay clicked in the page reaches the sink once its breaker lets it.
    sink.set_default(Respond::status(200));
    let replay = "//tr[td[@class='event-id' and text()='order-1']]//button[text()='Replay']";
    browser.click_xpath(replay).await;
    wait_until("the replayed event delivered", WAIT, || {
        sink.count_matching(|r| r.status == 200 && r.header("ce-id") == Some("order-1")) == 1
    })
    .await;
    let one_left = "return document.querySelectorAll('#dl-table tbody tr[data-id]').length === 1";
    browser
        .wait_for("one dead letter left", WAIT, one_left)
        .await;

    finds_the_delivery_in_the_history(&browser).await;
    explains_an_event(&browser).await;
    open_view(&browser, "sinks").await;
    browser
        .wait_for("the breaker closed", WAIT, BREAKER_CLOSED)
        .await;
    pauses_and_resumes_a_sink(&browser, &app).await;
    deletes_a_dead_letter(&browser, &app).await;

    // Forgetting the token takes it out of the tab and asks for it again.
    browser.click(&browser.find("#forget-token").await).await;
    let forgotten = "return sessionStorage.length === 0
        && !document.querySelector('#token-view').hidden";
    browser
        .wait_for("the token forgotten", WAIT, forgotten)
        .await;
    // Nothing went wrong in the page (no policy violation, no script error); the one
    // failed request is the first 401 that made it ask for the token.
    let console = browser.console().await;
    let failed = "Failed to load resource: the server responded with a status of 401";
    assert!(
        console.len() == 1 && console[0].contains(failed),
        "{console:#?}"
    );
    browser.quit().await;
}

/// The `orders-api` row shows a closed breaker.
const BREAKER_CLOSED: &str = "const row = document.querySelector('tr[data-sink=\"orders-api\"]');
    return row && row.querySelector('.breaker').textContent === 'closed'";

/// The API answers 401: the page asks for the token once, then keeps it for the tab, out of
/// the URL.
async fn gives_the_token(browser: &Browser) {
    let asked = "return !document.querySelector('#token-view').hidden";
    browser.wait_for("the token form", WAIT, asked).await;
    let input = browser.find("#token-input").await;
    browser.type_into(&input, TOKEN).await;
    browser
        .click(&browser.find("#token-form button").await)
        .await;
    let given = "return document.querySelector('#token-view').hidden";
    browser.wait_for("the token taken", WAIT, given).await;
    let kept = browser
        .script(
            "return [sessionStorage.getItem('switchyard.admin-token'), location.href]",
            json!([]),
        )
        .await;
    assert_eq!(kept[0], TOKEN);
    assert!(
        !kept[1].as_str().unwrap_or_default().contains(TOKEN),
        "{kept}"
    );
}

/// The failing sink: breaker open, failures counted, the last error shown.
async fn sees_the_breaker_open(browser: &Browser) {
    let open = "const row = document.querySelector('tr[data-sink=\"orders-api\"]');
        return row && row.querySelector('.breaker').textContent.startsWith('open')
            && row.querySelector('.totals').textContent.endsWith(', 2') && row.textContent";
    let row = browser.wait_for("the breaker open", WAIT, open).await;
    let row = row.as_str().unwrap_or_default();
    assert!(row.contains("breaker open") && row.contains("500"), "{row}");
    let size = browser
        .script("return [window.innerWidth, window.innerHeight]", json!([]))
        .await;
    assert_eq!(size, json!([WINDOW.0, WINDOW.1]), "the screenshot's size");
    screenshot(browser, "sinks").await;
}

async fn sees_the_routes(browser: &Browser) {
    open_view(browser, "routes").await;
    let routes = "return document.querySelectorAll('#routes-table tbody tr').length === 2
        && document.querySelector('#routes-table').textContent";
    let text = browser.wait_for("two routes", WAIT, routes).await;
    let text = text.as_str().unwrap_or_default();
    assert!(text.contains("begins with /audit/"), "{text}");
    screenshot(browser, "routes").await;
}

/// Both events dead-lettered; the hostile type is text, not markup, in the list and in the
/// record shown.
async fn sees_the_dead_letters_as_text(browser: &Browser) {
    open_view(browser, "dead-letters").await;
    let listed = "return document.querySelectorAll('#dl-table tbody tr[data-id]').length === 2";
    browser.wait_for("two dead letters", WAIT, listed).await;
    let shown = browser
        .script(
            "const cells = [...document.querySelectorAll('#dl-table .event-type')];
             return [cells.map(c => c.textContent), document.querySelectorAll('img').length,
                     window.pwned === undefined];",
            json!([]),
        )
        .await;
    let types = json!(["Contoso.Orders.OrderCreated", HOSTILE]);
    assert_eq!(shown[0], types, "{shown}");
    assert_eq!(shown[1], 0, "no element was made from the event: {shown}");
    assert_eq!(shown[2], true, "no script of the event ran: {shown}");
    let show = "//tr[td[@class='event-id' and text()='hostile-1']]//button[text()='Show']";
    browser.click_xpath(show).await;
    let detail = "return !document.querySelector('#dl-detail').hidden
        && document.querySelector('#dl-detail pre').textContent";
    let detail = browser.wait_for("the record shown", WAIT, detail).await;
    assert!(
        detail.as_str().unwrap_or_default().contains("onerror"),
        "{detail}"
    );
    browser.script("window.scrollTo(0, 0)", json!([])).await;
    screenshot(browser, "dead-letters").await;
}

/// Searches the history until the replayed delivery is in (attempts are recorded in the
/// background), then opens its attempt log.
async fn finds_the_delivery_in_the_history(browser: &Browser) {
    open_view(browser, "history").await;
    let search = browser.find("#history-filter button[type='submit']").await;
    let delivered = "const row = [...document.querySelectorAll('#history-table tbody tr')]
            .find(r => r.querySelector('.event-id').textContent === 'order-1');
        return row && row.textContent.includes(': delivered') && row.textContent";
    let deadline = tokio::time::Instant::now() + WAIT;
    let row = loop {
        browser.click(&search).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(text) = browser.script(delivered, json!([])).await.as_str() {
            break text.to_owned();
        }
        if tokio::time::Instant::now() >= deadline {
            let table = "return document.querySelector('#view-history').textContent";
            let shown = browser.script(table, json!([])).await;
            panic!("the delivery never showed in the history: {shown}");
        }
    };
    assert!(row.contains("everything → orders-api"), "{row}");
    let types = browser
        .script(
            "return [[...document.querySelectorAll('#history-table .event-type')]
                .map(c => c.textContent), document.querySelectorAll('img').length]",
            json!([]),
        )
        .await;
    let listed = types[0]
        .as_array()
        .is_some_and(|t| t.contains(&json!(HOSTILE)));
    assert!(listed && types[1] == 0, "{types}");
    let show = "//tr[td[@class='event-id' and text()='order-1']]//button[text()='Show']";
    browser.click_xpath(show).await;
    let log = "return !document.querySelector('#history-detail').hidden
        && document.querySelector('#history-detail pre').textContent";
    let log = browser.wait_for("the attempt log", WAIT, log).await;
    assert!(
        log.as_str().unwrap_or_default().contains("attempt_log"),
        "{log}"
    );
    browser.script("window.scrollTo(0, 0)", json!([])).await;
    screenshot(browser, "history").await;
}

/// Explains the example event the page offers, with what the sink receives.
async fn explains_an_event(browser: &Browser) {
    open_view(browser, "explain").await;
    browser
        .click(&browser.find("#explain-transform").await)
        .await;
    browser
        .click(&browser.find("#explain-form button").await)
        .await;
    let explained = "return document.querySelector('#explain-result table') &&
        document.querySelector('#explain-result').textContent";
    let text = browser.wait_for("the verdicts", WAIT, explained).await;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("matches") && text.contains("no match"),
        "{text}"
    );
    let receives = "everything → orders-api receives";
    assert!(
        text.contains(receives) && text.contains("\"channel\": \"web\""),
        "{text}"
    );
    screenshot(browser, "explain").await;
}

async fn pauses_and_resumes_a_sink(browser: &Browser, app: &TestApp) {
    let button = "//tr[@data-sink='audit']//button";
    browser.click_xpath(button).await;
    let paused = "const row = document.querySelector('tr[data-sink=\"audit\"]');
        return row.querySelector('.state').textContent === 'paused'
            && row.querySelector('button').textContent === 'Resume'";
    browser.wait_for("audit paused", WAIT, paused).await;
    let (_, sinks) = admin(app, Method::GET, "/api/v1/sinks", "").await;
    assert_eq!(sinks["sinks"][0]["paused"], true, "{sinks}");
    browser.click_xpath(button).await;
    let resumed = "return document.querySelector('tr[data-sink=\"audit\"] .state').textContent
        === 'idle'";
    browser.wait_for("audit resumed", WAIT, resumed).await;
}

/// Deletes the hostile dead letter, confirming in the dialog the page opens.
async fn deletes_a_dead_letter(browser: &Browser, app: &TestApp) {
    open_view(browser, "dead-letters").await;
    let delete = "//tr[td[@class='event-id' and text()='hostile-1']]//button[text()='Delete']";
    browser.click_xpath(delete).await;
    let asked = browser.accept_dialog().await;
    assert!(asked.starts_with("Delete dead letter"), "{asked}");
    let none = "return document.querySelectorAll('#dl-table tbody tr[data-id]').length === 0";
    browser.wait_for("no dead letter left", WAIT, none).await;
    let (_, left) = admin(app, Method::GET, "/api/v1/dead-letters", "").await;
    assert_eq!(left["dead_letters"], json!([]), "{left}");
}
