//! The harness shared by the end-to-end tests (tests/*.rs), the VM viewer (tests/vm/viewer.rs) and the
//! benchmarks (bench/): a real edgecam daemon (`daemon`), a real headless Chromium driven over the DevTools
//! protocol (`chromium`), Firefox ESR over WebDriver BiDi (`firefox`), network namespaces (`netns`), a
//! GStreamer webrtcbin receiver speaking the original signalling protocol (`webrtc_client`), Janus with its
//! WHIP front as a media server to push to (`janus`), and small
//! helpers for polling, HTTP and the websocket.
//!
//! Every wait is a liveness bound (generous, `LIVENESS`), never a timing assertion: tests assert behaviour
//! (frames decoded and rising, viewer counts), and timings belong in bench/.

pub mod browser_process;
pub mod chromium;
pub mod daemon;
pub mod firefox;
pub mod janus;
pub mod link_stats;
pub mod netns;
pub mod process;
pub mod shaped_link;
pub mod viewer;
pub mod webrtc_client;
pub mod websocket_rpc;

use std::future::Future;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for anything that should happen "soon" (a page connecting, frames arriving, a daemon
/// starting). Generous because two cores are shared by the daemon, a browser and parallel builds.
pub const LIVENESS: Duration = Duration::from_secs(30);

/// A syntactically plausible SDP answer, for tests where what is wrong with it is where or when it is
/// sent (no such viewer, after `stop`), not the SDP parser.
pub const PLAUSIBLE_ANSWER: &str = "v=0\r\no=- 1 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:video0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:active\r\na=rtpmap:96 H264/90000\r\n";

/// Tests that run a daemon plus a browser hold this lock: on 2 cores, several encoders, decoders and
/// Chromium instances at once starve each other until ICE or DTLS time out, which would be flakiness
/// rather than a finding. (Cargo runs test binaries one after another, so a per-binary lock suffices.)
///
/// A flag and a condvar rather than a `Mutex<()>` guard: the guard lives across the whole async test,
/// which is intended (every `#[tokio::test]` has its own runtime on its own thread, so waiting here only
/// holds back other tests), and a test that panicked must not poison it for the rest.
static HEAVY_BUSY: Mutex<bool> = Mutex::new(false);
static HEAVY_FREED: Condvar = Condvar::new();

pub struct HeavyGuard(());

pub fn heavy_lock() -> HeavyGuard {
    let mut busy = HEAVY_BUSY.lock().unwrap_or_else(|p| p.into_inner());
    while *busy {
        busy = HEAVY_FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
    }
    *busy = true;
    HeavyGuard(())
}

impl Drop for HeavyGuard {
    fn drop(&mut self) {
        *HEAVY_BUSY.lock().unwrap_or_else(|p| p.into_inner()) = false;
        HEAVY_FREED.notify_one();
    }
}

/// Polls `poll` every 250 ms until it returns `Ok`, or fails after `timeout` with the last `Err`, so a
/// timeout says what was last seen ("frames 0 -> 0", "status connecting") rather than just "timed out".
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut poll: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        let last = match poll().await {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            return Err(last.context(format!("timed out after {timeout:?} waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One HTTP response: its status, its head (lower-cased, for matching headers) and its body.
pub struct HttpReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// Plain HTTP/1.0 GET (so the server closes the connection and uses no chunked encoding) with extra
/// header lines (a `Host` of the caller's replaces the default). Enough for /api/..., /metrics and
/// static files without pulling an HTTP client into the tests.
pub async fn http_request(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<HttpReply> {
    http_call(addr, "GET", path, headers, b"").await
}

/// The same with any method and a body (sent with its `Content-Length`).
pub async fn http_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpReply> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\n");
    if !body.is_empty() {
        request += &format!("Content-Length: {}\r\n", body.len());
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(LIVENESS, stream.read_to_end(&mut raw))
        .await
        .with_context(|| format!("{method} {path}: no complete response"))??;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        anyhow!(
            "{method} {path}: malformed response {:?}",
            String::from_utf8_lossy(&raw)
        )
    })?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path}: no status in {head:?}"))?;
    Ok(HttpReply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    })
}

/// GET without extra headers: (status, body as text).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let reply = http_request(addr, path, &[]).await?;
    Ok((reply.status, reply.text()))
}

/// An `Authorization` header value for HTTP Basic.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// POST of a JSON body: (status, body as text).
pub async fn http_post_json(addr: std::net::SocketAddr, path: &str, body: &Value) -> Result<(u16, String)> {
    let json = body.to_string();
    let reply = http_call(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    )
    .await?;
    Ok((reply.status, reply.text()))
}

/// GET /api/cameras as JSON.
pub async fn api_cameras(addr: std::net::SocketAddr) -> Result<Vec<Value>> {
    let (status, body) = http_get(addr, "/api/cameras").await?;
    if status != 200 {
        bail!("GET /api/cameras: HTTP {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET /api/cameras: not a JSON list: {body}"))
}

/// The entry for `id` in /api/cameras.
pub async fn api_camera(addr: std::net::SocketAddr, id: &str) -> Result<Value> {
    api_cameras(addr)
        .await?
        .into_iter()
        .find(|c| c["id"] == id)
        .ok_or_else(|| anyhow!("camera {id} not in /api/cameras"))
}

/// Waits until /api/cameras shows `id` in state "streaming".
pub async fn wait_streaming(addr: std::net::SocketAddr, id: &str) -> Result<()> {
    wait_until(&format!("{id} streaming in /api/cameras"), LIVENESS, || async {
        let cam = api_camera(addr, id).await?;
        if cam["state"] != "streaming" {
            bail!("{id}: {cam}");
        }
        Ok(())
    })
    .await
}

/// Waits until /api/cameras reports `n` viewers on `id`.
pub async fn wait_viewers(addr: std::net::SocketAddr, id: &str, n: u64) -> Result<()> {
    wait_until(&format!("{n} viewers on {id} in /api/cameras"), LIVENESS, || async {
        let cam = api_camera(addr, id).await?;
        if cam["viewers"].as_u64() != Some(n) {
            bail!("{id}: {cam}");
        }
        Ok(())
    })
    .await
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A signalling websocket with JSON helpers.
pub struct Signalling {
    pub ws: Ws,
}

impl Signalling {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Signalling> {
        let url = format!("ws://{addr}/ws");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("websocket {url}"))?;
        Ok(Signalling { ws })
    }

    /// The same from a given local address (127.0.0.2, ...): the daemon limits websockets per client
    /// address, so a load of more than that needs several.
    pub async fn connect_from(addr: std::net::SocketAddr, source: std::net::IpAddr) -> Result<Signalling> {
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind((source, 0).into())?;
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect to {addr} from {source}"))?;
        let url = format!("ws://{addr}/ws");
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .with_context(|| format!("websocket {url} from {source}"))?;
        Ok(Signalling { ws })
    }

    pub async fn send(&mut self, msg: &Value) -> Result<()> {
        self.send_text(msg.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<()> {
        self.ws.send(Message::Text(text)).await.context("websocket send")
    }

    /// Next JSON message (text frame); pings and pongs are skipped. A close or the end of the stream is an error.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .map_err(|_| anyhow!("no message from the daemon within {timeout:?}"))?
                .ok_or_else(|| anyhow!("websocket ended"))?
                .context("websocket receive")?;
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str(&text).with_context(|| format!("daemon sent non-JSON text: {text}"))
                }
                Message::Close(frame) => bail!("daemon closed the websocket: {frame:?}"),
                Message::Binary(b) => bail!("daemon sent a binary frame ({} bytes)", b.len()),
                _ => continue,
            }
        }
    }

    /// Next message that is not a `cameras` broadcast (those come on every change and may interleave).
    pub async fn recv_reply(&mut self, timeout: Duration) -> Result<Value> {
        loop {
            let msg = self.recv(timeout).await?;
            if msg["type"] != "cameras" {
                return Ok(msg);
            }
        }
    }

    /// Waits for the next message of type `ty`, skipping `cameras` broadcasts; anything else is an error.
    pub async fn expect(&mut self, ty: &str, timeout: Duration) -> Result<Value> {
        loop {
            let msg = self.recv(timeout).await?;
            if msg["type"] == ty {
                return Ok(msg);
            }
            if msg["type"] != "cameras" {
                bail!("expected a {ty:?} message, got {msg}");
            }
        }
    }
}
