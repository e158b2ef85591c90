//! End-to-end: malformed and out-of-place signalling messages. While a browser page decodes demo1, a raw
//! websocket client sends bad messages; each must be answered with an `error` (and the connection stay up),
//! an oversized message must get an error or a clean close (close frame 1009), and afterwards the page
//! still decodes, the daemon counts only the page as a viewer, and a new websocket still gets the camera list.
//!
//! Run: `cargo test --test bad_input` (needs /usr/bin/chromium).

use edgecam_testkit as common;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::chromium::{Browser, Page};
use common::daemon::Daemon;
use common::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use common::{heavy_lock, wait_viewers, Signalling, LIVENESS, PLAUSIBLE_ANSWER};

/// Each must be answered with an error. `camera`: what the error's `camera` field must say
/// (`None`: null or absent, since the message named no usable camera; `Some("*")`: not checked).
fn cases() -> Vec<(&'static str, String, Option<&'static str>)> {
    vec![
        ("malformed JSON", r#"{"type":"ready","camera":"demo1""#.into(), None),
        ("JSON array", "[1,2,3]".into(), None),
        ("JSON string", r#""ready""#.into(), None),
        ("JSON number", "42".into(), None),
        ("JSON null", "null".into(), None),
        ("no type", json!({"camera": "demo1"}).to_string(), Some("*")),
        (
            "type not a string",
            json!({"type": 5, "camera": "demo1"}).to_string(),
            Some("*"),
        ),
        (
            "unknown type",
            json!({"type": "dance", "camera": "demo1"}).to_string(),
            Some("*"),
        ),
        ("ready without camera", json!({"type": "ready"}).to_string(), None),
        (
            "camera not a string",
            json!({"type": "ready", "camera": ["demo1"]}).to_string(),
            Some("*"),
        ),
        (
            "unknown camera",
            json!({"type": "ready", "camera": "no-such-camera"}).to_string(),
            Some("*"),
        ),
        (
            // The page has a viewer on demo1, but on another websocket: this must not touch it.
            "answer for a viewer that does not exist",
            json!({"type": "answer", "camera": "demo1", "sdp": PLAUSIBLE_ANSWER}).to_string(),
            Some("demo1"),
        ),
        (
            "candidate before ready",
            json!({"type": "candidate", "camera": "demo1",
                   "candidate": "candidate:1 1 UDP 2122252543 127.0.0.1 40000 typ host", "sdpMLineIndex": 0})
            .to_string(),
            Some("demo1"),
        ),
    ]
}

/// Waits for the reply to a bad message: an `error`, skipping camera-list broadcasts and the candidates
/// of a viewer this client legitimately opened. Anything else is a wrong answer.
async fn expect_error(sig: &mut Signalling, case: &str) -> Result<Value> {
    loop {
        let msg = sig
            .recv(LIVENESS)
            .await
            .with_context(|| format!("case {case:?}: no error reply"))?;
        match msg["type"].as_str() {
            Some("error") => {
                if !msg["message"].as_str().is_some_and(|m| !m.is_empty()) {
                    bail!("case {case:?}: error without a message: {msg}");
                }
                return Ok(msg);
            }
            Some("cameras") | Some("candidate") => continue,
            _ => bail!("case {case:?}: expected an error, got {msg}"),
        }
    }
}

/// A page on demo1, decoding.
async fn decoding_page(browser: &Browser, daemon: &Daemon) -> Result<Page> {
    let page = open_viewer(browser, daemon, "?cameras=demo1").await?;
    let base = wait_decoding(&page, &["demo1"], None).await?;
    wait_rising(&page, &base).await?;
    Ok(page)
}

/// After the abuse: the page still decodes, only the page counts as a viewer of demo1, and a new
/// websocket still gets the camera list.
async fn still_serving(page: &Page, daemon: &Daemon) -> Result<()> {
    wait_viewers(daemon.addr, "demo1", 1).await?;
    let base = sample(page, &["demo1"]).await?;
    wait_rising(page, &base).await?;
    let mut sig = Signalling::connect(daemon.addr).await?;
    let list = sig.expect("cameras", LIVENESS).await?;
    if !list["cameras"]
        .as_array()
        .is_some_and(|l| l.iter().any(|c| c["id"] == "demo1"))
    {
        bail!("camera list without demo1: {list}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_answered_and_streaming_goes_on() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(1).unwrap();
    let browser = Browser::launch().await.unwrap();
    async {
        let page = decoding_page(&browser, &daemon).await?;

        let mut sig = Signalling::connect(daemon.addr).await?;
        sig.expect("cameras", LIVENESS).await?;
        for (case, text, camera) in cases() {
            sig.send_text(text).await?;
            let reply = expect_error(&mut sig, case).await?;
            eprintln!("{case}: {reply}");
            match camera {
                Some("*") => {}
                Some(id) if reply["camera"] != id => {
                    bail!("case {case:?}: error not about {id}: {reply}")
                }
                None if !reply["camera"].is_null() => {
                    bail!("case {case:?}: error names a camera: {reply}")
                }
                _ => {}
            }
        }

        // A real viewer on this connection, then an answer that is not SDP.
        sig.send(&json!({"type": "ready", "camera": "demo1"})).await?;
        sig.expect("offer", LIVENESS).await.context("offer after ready")?;
        sig.send(&json!({"type": "answer", "camera": "demo1", "sdp": "this is not an SDP answer"}))
            .await?;
        let reply = expect_error(&mut sig, "bad SDP answer").await?;
        eprintln!("bad SDP answer: {reply}");
        if reply["camera"] != "demo1" {
            bail!("bad SDP answer: error not about demo1: {reply}");
        }

        // After all that, the connection is still up and usable: `ready` again gets a fresh offer.
        sig.send(&json!({"type": "ready", "camera": "demo1"})).await?;
        loop {
            let msg = sig.recv(LIVENESS).await.context("offer after the bad cases")?;
            match msg["type"].as_str() {
                Some("offer") if msg["camera"] == "demo1" => break,
                Some("cameras") | Some("candidate") => continue,
                _ => bail!("expected an offer for demo1 after the bad cases, got {msg}"),
            }
        }
        sig.send(&json!({"type": "stop", "camera": "demo1"})).await?;
        sig.ws.close(None).await?;
        drop(sig);

        // Nothing of the bad client's lingers on the camera; the page's stream is untouched.
        still_serving(&page, &daemon).await
    }
    .await
    .unwrap();
}

/// A 10 MB message, in one frame and in 64 KiB fragments: refused with an error or a close frame 1009
/// (not a bare hang-up, not acted upon), and the daemon goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_cleanly() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(1).unwrap();
    let browser = Browser::launch().await.unwrap();
    async {
        let page = decoding_page(&browser, &daemon).await?;
        for fragmented in [false, true] {
            let outcome = send_oversized(daemon.addr, fragmented).await?;
            eprintln!("10 MB message (fragmented: {fragmented}): {outcome:?}");
            match &outcome {
                Oversized::Closed(1009) | Oversized::Error(_) => {}
                other => {
                    bail!("10 MB message (fragmented: {fragmented}): expected an error or close 1009, got {other:?}")
                }
            }
        }
        still_serving(&page, &daemon).await
    }
    .await
    .unwrap();
}

/// What the daemon did with a 10 MB message.
#[derive(Debug)]
#[allow(dead_code)] // the payloads are read through Debug, in the failure message
enum Oversized {
    /// A close frame with this code.
    Closed(u16),
    /// An `error` reply.
    Error(Value),
    /// Some other reply (e.g. it acted on the message).
    Other(Value),
    /// The connection ended without a close frame.
    Dropped(String),
}

/// Sends a 10 MB text message that would be a valid `ready` for demo1 (padded with JSON whitespace), as
/// one frame or as 64 KiB fragments, on a hand-made websocket: a library client would report the
/// daemon hanging up mid-write as a write error and lose the close frame the daemon sent before it.
async fn send_oversized(addr: std::net::SocketAddr, fragmented: bool) -> Result<Oversized> {
    const SIZE: usize = 10 * 1024 * 1024;
    let mut payload = br#"{"type":"ready","camera":"demo1""#.to_vec();
    payload.resize(SIZE - 1, b' ');
    payload.push(b'}');

    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            bail!("websocket handshake: connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        bail!("websocket handshake refused: {head}");
    }
    buf.drain(..head_end);

    // Write while reading: the daemon may answer (and hang up) before the message is complete.
    let writer = tokio::spawn(async move {
        let chunk = if fragmented { 64 * 1024 } else { SIZE };
        let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 { 0x1 } else { 0x0 };
            let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
            wr.write_all(&client_frame_header(fin | opcode, piece.len())).await?;
            // Mask key 0: valid framing, and the payload goes out unchanged.
            for part in piece.chunks(64 * 1024) {
                wr.write_all(part).await?;
            }
        }
        std::io::Result::Ok(wr)
    });

    let outcome = tokio::time::timeout(LIVENESS, async {
        loop {
            while let Some((opcode, body, used)) = parse_server_frame(&buf) {
                buf.drain(..used);
                match opcode {
                    0x8 => {
                        let code = if body.len() >= 2 {
                            u16::from_be_bytes([body[0], body[1]])
                        } else {
                            1005
                        };
                        return Oversized::Closed(code);
                    }
                    0x1 => {
                        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        match msg["type"].as_str() {
                            Some("cameras") => {}
                            Some("error") => return Oversized::Error(msg),
                            _ => return Oversized::Other(msg),
                        }
                    }
                    _ => {}
                }
            }
            let mut chunk = [0u8; 4096];
            match rd.read(&mut chunk).await {
                Ok(0) => return Oversized::Dropped("end of stream".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Oversized::Dropped(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no reaction to the 10 MB message within {LIVENESS:?}"))?;
    writer.abort();
    Ok(outcome)
}

fn client_frame_header(first: u8, len: usize) -> Vec<u8> {
    let mut h = vec![first];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// (opcode, payload, bytes used) of a complete server frame at the start of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let m = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut body = buf.get(at..at + len)?.to_vec();
    if let Some(m) = mask {
        body.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
    }
    Some((opcode, body, at + len))
}
