//! A small forward proxy for tests: `CONNECT host:port` tunnels and absolute-form requests
//! (`POST http://host:port/path`), each recorded. Every host it is asked for is reached at
//! 127.0.0.1, so targets can carry names the daemon itself cannot resolve: a delivery to
//! such a name that arrives went through the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

/// One request the proxy received (the first on its connection).
#[derive(Debug, Clone)]
pub(crate) struct ProxyHit {
    /// `CONNECT sink.test:443` or `POST http://sink.test:80/hook`.
    pub(crate) line: String,
    /// The `Proxy-Authorization` header, if any.
    pub(crate) authorization: Option<String>,
}

/// A forward proxy on 127.0.0.1:0.
#[derive(Debug)]
pub(crate) struct TestProxy {
    pub(crate) addr: SocketAddr,
    hits: Arc<Mutex<Vec<ProxyHit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    /// Starts the proxy; with `credentials` (`Basic …`), requests without them get 407.
    pub(crate) async fn start(credentials: Option<&str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let required = credentials.map(str::to_owned);
        let task = tokio::spawn(accept(listener, hits.clone(), required));
        Self { addr, hits, task }
    }

    /// `http://127.0.0.1:{port}`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub(crate) fn hits(&self) -> Vec<ProxyHit> {
        self.hits.lock().expect("hits").clone()
    }
}

async fn accept(listener: TcpListener, hits: Arc<Mutex<Vec<ProxyHit>>>, required: Option<String>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let (hits, required) = (hits.clone(), required.clone());
        tokio::spawn(async move {
            // A client that hangs up mid-relay ends only its own connection.
            let _relayed = relay(client, &hits, required.as_deref()).await;
        });
    }
}

/// Reads one request head, records it, and relays the connection to its target.
async fn relay(
    mut client: TcpStream,
    hits: &Mutex<Vec<ProxyHit>>,
    required: Option<&str>,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("").to_owned();
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let authorization = headers.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_owned())
    });
    hits.lock().expect("hits").push(ProxyHit {
        line: line.clone(),
        authorization: authorization.clone(),
    });
    if required.is_some() && authorization.as_deref() != required {
        let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                       Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n";
        return client.write_all(refusal.as_bytes()).await;
    }
    let mut parts = line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    if method == "CONNECT" {
        let port = target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        let mut upstream = TcpStream::connect(("127.0.0.1", port.unwrap_or(443))).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // Absolute form: send the origin form on to the target.
    let uri: Uri = target.parse().map_err(std::io::Error::other)?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut forwarded = format!("{method} {path} {version}\r\n");
    for header in headers
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("proxy-authorization:"))
    {
        forwarded.push_str(header);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("\r\n");
    upstream.write_all(forwarded.as_bytes()).await?;
    upstream.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The request head (without its final blank line) and the bytes read past it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed before the request head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
