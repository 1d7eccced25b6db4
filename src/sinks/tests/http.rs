use std::time::{Duration, SystemTime};

use axum::http::Uri;

use super::support::{self, event, http_config, Receiver, Reply};
use crate::config::HttpFormat;
use crate::sinks::http::HttpSink;
use crate::sinks::{Attempt, Sink, SinkError};

const SECOND: Duration = Duration::from_secs(1);

async fn post(url: &Uri, format: HttpFormat, timeout: Duration) -> Result<(), SinkError> {
    let sink = HttpSink::new(
        support::client(),
        "web",
        http_config(url, format, timeout),
        false,
    );
    let event = event("ev-1");
    let attempt = Attempt {
        event: &event,
        route: "orders",
        delivery_count: 2,
    };
    sink.deliver(attempt).await
}

#[tokio::test]
async fn success_statuses_confirm() {
    for status in [200, 202, 204] {
        let receiver = Receiver::start(move |_| Reply::status(status)).await;
        post(&receiver.url, HttpFormat::CloudEventsBinary, SECOND)
            .await
            .unwrap();
        assert_eq!(receiver.hits(), 1);
    }
}

#[tokio::test]
async fn failure_statuses_are_classified() {
    for (status, retryable, outcome) in [
        (400, false, "BadRequest"),
        (404, true, "NotFound"),
        (500, true, "GenericError"),
        (302, true, "GenericError"),
    ] {
        let receiver = Receiver::start(move |_| {
            Reply::status(status).header("location", "http://127.0.0.1:1/elsewhere")
        })
        .await;
        let error = post(&receiver.url, HttpFormat::CloudEventsBinary, SECOND)
            .await
            .unwrap_err();
        assert_eq!(
            (error.retryable, error.outcome, error.status),
            (retryable, outcome, Some(status))
        );
        assert_eq!(
            receiver.hits(),
            1,
            "{status}: one request, redirects not followed"
        );
    }
}

#[tokio::test]
async fn busy_answers_carry_retry_after() {
    let receiver = Receiver::start(|_| Reply::status(429).header("retry-after", "12")).await;
    let error = post(&receiver.url, HttpFormat::CloudEventsBinary, SECOND)
        .await
        .unwrap_err();
    assert_eq!(
        (error.outcome, error.retry_after),
        ("Busy", Some(Duration::from_secs(12)))
    );

    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let receiver =
        Receiver::start(move |_| Reply::status(503).header("retry-after", at.clone())).await;
    let error = post(&receiver.url, HttpFormat::CloudEventsBinary, SECOND)
        .await
        .unwrap_err();
    let wait = error.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );
}

#[tokio::test]
async fn slow_target_times_out() {
    let receiver = Receiver::start(|_| Reply::status(200).after(Duration::from_secs(5))).await;
    let started = tokio::time::Instant::now();
    let timeout = Duration::from_millis(200);
    let error = post(&receiver.url, HttpFormat::CloudEventsBinary, timeout)
        .await
        .unwrap_err();
    assert_eq!((error.retryable, error.outcome), (true, "TimedOut"));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn refused_connection_is_a_socket_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url: Uri = format!("http://{addr}/events").parse().unwrap();
    let error = post(&url, HttpFormat::CloudEventsBinary, SECOND)
        .await
        .unwrap_err();
    assert_eq!(
        (error.retryable, error.outcome, error.status),
        (true, "SocketError", None)
    );
}

#[tokio::test]
async fn binary_delivery_carries_event_grid_headers() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    post(&receiver.url, HttpFormat::CloudEventsBinary, SECOND)
        .await
        .unwrap();
    let (headers, _) = receiver.requests().remove(0);
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("aeg-delivery-count").as_deref(), Some("2"));
    assert_eq!(header("aeg-event-type").as_deref(), Some("Notification"));
    assert_eq!(header("aeg-subscription-name").as_deref(), Some("orders"));
    assert_eq!(header("aeg-metadata-version").as_deref(), Some("1.0"));
    assert_eq!(header("aeg-output-event-id").as_deref(), Some("ev-1"));
    assert_eq!(header("aeg-data-version"), None);
    assert_eq!(header("x-api-key").as_deref(), Some("secret"));
    assert_eq!(header("ce-id").as_deref(), Some("ev-1"));
}

#[tokio::test]
async fn structured_and_event_grid_formats_set_their_content_types() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    post(&receiver.url, HttpFormat::CloudEventsStructured, SECOND)
        .await
        .unwrap();
    post(&receiver.url, HttpFormat::EventGrid, SECOND)
        .await
        .unwrap();
    let requests = receiver.requests();
    let header = |i: usize, name: &str| {
        requests[i]
            .0
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        header(0, "content-type"),
        "application/cloudevents+json; charset=utf-8"
    );
    assert_eq!(header(1, "content-type"), "application/json; charset=utf-8");
    assert_eq!(header(1, "aeg-metadata-version"), "1");
    assert_eq!(header(1, "aeg-data-version"), "2.0");
    let body: serde_json::Value = serde_json::from_slice(&requests[1].1).unwrap();
    assert_eq!(
        body.as_array().map(Vec::len),
        Some(1),
        "Event Grid bodies are arrays"
    );
}

#[test]
fn delivery_counts_are_their_decimal_text() {
    for count in (0..=12).chain([99, 100, u32::MAX]) {
        let value = crate::sinks::http::count_value(count);
        assert_eq!(value.to_str().unwrap(), count.to_string(), "count {count}");
    }
}

#[test]
fn the_host_header_is_the_one_the_client_would_write() {
    for (url, host) in [
        ("http://127.0.0.1:8080/hooks", "127.0.0.1:8080"),
        ("http://example.com/", "example.com"),
        ("http://example.com:80/", "example.com"),
        ("http://example.com:443/", "example.com:443"),
        ("https://example.com:443/x", "example.com"),
        ("https://example.com:80/x", "example.com:80"),
        ("https://example.com/x", "example.com"),
        ("http://[::1]:9000/", "[::1]:9000"),
    ] {
        let value = crate::sinks::http::host_value(&url.parse().unwrap());
        assert_eq!(
            value.as_ref().map(|v| v.to_str().unwrap()),
            Some(host),
            "{url}"
        );
    }
}

#[tokio::test]
async fn each_request_carries_one_host_header_and_a_configured_one_wins() {
    let receiver = Receiver::start(|_| Reply::status(200)).await;
    post(&receiver.url, HttpFormat::CloudEventsBinary, SECOND)
        .await
        .unwrap();
    let mut config = http_config(&receiver.url, HttpFormat::CloudEventsBinary, SECOND);
    config.headers.push((
        axum::http::header::HOST,
        axum::http::HeaderValue::from_static("tenant.example"),
    ));
    let sink = HttpSink::new(support::client(), "web", config, true);
    let event = event("ev-2");
    let attempt = Attempt {
        event: &event,
        route: "orders",
        delivery_count: 1,
    };
    sink.deliver_batch(&[attempt]).await.unwrap();
    let requests = receiver.requests();
    let hosts = |i: usize| -> Vec<String> {
        let all = requests[i].0.get_all("host").iter();
        all.map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    let port = receiver.url.port_u16().unwrap();
    assert_eq!(hosts(0), [format!("127.0.0.1:{port}")]);
    assert_eq!(hosts(1), ["tenant.example"]);
}
