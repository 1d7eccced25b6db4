//! A headless Chromium driven through WebDriver (the W3C protocol chromedriver speaks), with
//! the test client's HTTP stack: enough to load a page, click, type, run a script, wait for
//! the page to show something and take screenshots.
//!
//! Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`;
//! `SWITCHYARD_CHROMIUM` and `SWITCHYARD_CHROMEDRIVER` name others). The browser gets a fresh
//! profile, flags that switch off its background work, and may resolve no host name but
//! loopback ones: a net log of the test's session showed that what it still tries (the
//! component updater, an account check, a preconnect to the default search engine) ends at
//! name resolution, so it downloads nothing and reaches nothing outside the machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::process::free_port;

/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The key under which WebDriver names an element.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Width and height of the browser window (and of screenshots).
pub(crate) const WINDOW: (u32, u32) = (1200, 800);

/// Flags that keep the browser to itself: no first-run work, no background requests, no
/// component or safe-browsing downloads, no crash reports, and no name resolution at all
/// except for loopback addresses.
const QUIET: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--no-pings",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
    "--no-proxy-server",
    "--disable-features=OptimizationHints,Translate,MediaRouter,AutofillServerCommunication,\
     CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,\
     NetworkTimeServiceQuerying",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
];

/// A WebDriver element reference.
#[derive(Debug, Clone)]
pub(crate) struct Element(String);

/// chromedriver and one browser session; both end when this is dropped.
#[derive(Debug)]
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    /// The browser's profile, and chromedriver's log.
    dir: tempfile::TempDir,
}

fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a session with a fresh profile.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let driver_path = program("SWITCHYARD_CHROMEDRIVER", "/usr/bin/chromedriver");
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): apt-get install chromium chromium-driver",
                    driver_path.display()
                )
            });
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            dir,
        };
        browser.wait_ready().await;
        browser.session = browser.open_session().await;
        browser.fit_viewport().await;
        browser
    }

    /// Sizes the window so that the page's viewport (and so a screenshot) is [`WINDOW`]:
    /// `--window-size` counts the browser's own frame too.
    async fn fit_viewport(&self) {
        let script = "return [window.outerWidth - window.innerWidth, \
                      window.outerHeight - window.innerHeight]";
        let frame = self.script(script, json!([])).await;
        let extra = |i: usize| frame[i].as_u64().unwrap_or(0);
        let rect = json!({ "width": u64::from(WINDOW.0) + extra(0),
                           "height": u64::from(WINDOW.1) + extra(1) });
        self.session(Method::POST, "/window/rect", rect).await;
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = send(Method::GET, &format!("{}/status", self.base), None).await;
            if let Some((_, body)) = status {
                if body["value"]["ready"] == json!(true) {
                    return;
                }
            }
            if let Ok(Some(exit)) = self.driver.try_wait() {
                panic!("chromedriver exited at start: {exit}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn open_session(&self) -> String {
        let profile = self.dir.path().join("profile");
        let mut args: Vec<String> = QUIET.iter().map(|&a| a.to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
        let binary = program("SWITCHYARD_CHROMIUM", "/usr/bin/chromium");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": binary, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let value = self.command(Method::POST, "/session", capabilities).await;
        value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {value}"))
            .to_owned()
    }

    /// Sends one command of the session (`path` after `/session/{id}`); its `value`.
    async fn session(&self, method: Method, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, body).await
    }

    async fn command(&self, method: Method, path: &str, body: Value) -> Value {
        let what = format!("WebDriver {method} {path}");
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("{what} failed: {error}"))
    }

    /// A command's `value`, or the error WebDriver answered (`{"error", "message", …}`).
    async fn try_command(&self, method: Method, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let body = (method != Method::GET && method != Method::DELETE).then_some(body);
        let call = send(method.clone(), &url, body);
        let (ok, mut reply) = tokio::time::timeout(COMMAND_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path} took over {COMMAND_TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("WebDriver {method} {path}: no answer"));
        let value = reply["value"].take();
        if ok {
            Ok(value)
        } else {
            Err(value)
        }
    }

    /// Loads `url` and waits for the document to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.session(Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// The first element `css` selects; panics when there is none.
    pub(crate) async fn find(&self, css: &str) -> Element {
        self.find_by("css selector", css).await
    }

    /// The first element the XPath expression selects; panics when there is none.
    pub(crate) async fn find_xpath(&self, xpath: &str) -> Element {
        self.find_by("xpath", xpath).await
    }

    async fn find_by(&self, using: &str, value: &str) -> Element {
        let body = json!({ "using": using, "value": value });
        let found = self.session(Method::POST, "/element", body).await;
        let id = found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {value}: {found}"));
        Element(id.to_owned())
    }

    /// Clicks the element as a user would (scrolled into view; refused when covered).
    pub(crate) async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.0);
        self.session(Method::POST, &path, json!({})).await;
    }

    /// Clicks the first element `xpath` selects, finding it again when the page replaced
    /// it in between (the dashboard redraws its tables as it refreshes).
    pub(crate) async fn click_xpath(&self, xpath: &str) {
        for _ in 0..10 {
            let element = self.find_xpath(xpath).await;
            let path = format!("/session/{}/element/{}/click", self.session, element.0);
            match self.try_command(Method::POST, &path, json!({})).await {
                Ok(_) => return,
                Err(error) if error["error"] == "stale element reference" => continue,
                Err(error) => panic!("clicking {xpath} failed: {error}"),
            }
        }
        panic!("{xpath} was replaced every time it was about to be clicked");
    }

    /// Types `text` into the element.
    pub(crate) async fn type_into(&self, element: &Element, text: &str) {
        let path = format!("/element/{}/value", element.0);
        self.session(Method::POST, &path, json!({ "text": text }))
            .await;
    }

    /// Accepts the dialog the page opened (`confirm`, `alert`), with its text.
    pub(crate) async fn accept_dialog(&self) -> String {
        let text = self.session(Method::GET, "/alert/text", Value::Null).await;
        self.session(Method::POST, "/alert/accept", json!({})).await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its result.
    pub(crate) async fn script(&self, script: &str, args: Value) -> Value {
        let body = json!({ "script": script, "args": args });
        self.session(Method::POST, "/execute/sync", body).await
    }

    /// Runs `script` every 100 ms until it returns something other than null, false or "";
    /// that value. Panics with `what` and the text the page shows after `limit`.
    pub(crate) async fn wait_for(&self, what: &str, limit: Duration, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let value = self.script(script, json!([])).await;
            if !matches!(&value, Value::Null | Value::Bool(false)) && value.as_str() != Some("") {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let shown = self
                    .script("return document.body.innerText", json!([]))
                    .await;
                let shown = shown.as_str().unwrap_or_default();
                panic!("timed out after {limit:?} waiting for: {what}; the page shows:\n{shown}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The messages of the browser's console since the last call (chromedriver's log
    /// extension): errors such as Content-Security-Policy violations show there.
    pub(crate) async fn console(&self) -> Vec<String> {
        let entries = self
            .session(Method::POST, "/se/log", json!({ "type": "browser" }))
            .await;
        let entries = entries.as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .map(|e| format!("{} {}", e["level"], e["message"]))
            .collect()
    }

    /// A PNG of the window as it is now.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        let value = self.session(Method::GET, "/screenshot", Value::Null).await;
        let text = value.as_str().expect("screenshot is base64 text");
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("screenshot is base64")
    }

    /// Ends the session (the browser exits) and chromedriver.
    pub(crate) async fn quit(mut self) {
        let path = format!("/session/{}", self.session);
        let _ended = send(Method::DELETE, &format!("{}{path}", self.base), None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // A test that panicked: end the session so that the browser exits too. Drop
            // cannot await; a thread with its own runtime works under either test flavour.
            let url = format!("{}/session/{}", self.base, self.session);
            let ended = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let call = send(Method::DELETE, &url, None);
                    let _ended = tokio::time::timeout(Duration::from_secs(10), call).await;
                });
            });
            let _joined = ended.join();
        }
        let _killed = self.driver.kill();
        let _reaped = self.driver.wait();
    }
}

/// Sends a request to chromedriver; whether it answered 2xx, and its JSON. `None` when no
/// answer came.
async fn send(method: Method, url: &str, body: Option<Value>) -> Option<(bool, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    let bytes = match body {
        Some(body) => {
            request = request.header("content-type", "application/json; charset=utf-8");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request.body(Full::new(bytes)).expect("valid request");
    let response = client.request(request).await.ok()?;
    let ok = response.status().is_success();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((ok, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}
