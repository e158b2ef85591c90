//! Debian's Chromium, headless, driven over the DevTools protocol (CDP) on a websocket.
//!
//! Only what the tests need: open a tab on a URL (`Target.createTarget` + `Target.attachToTarget` with
//! `flatten`, so every later command carries the tab's `sessionId`), evaluate JavaScript in it
//! (`Runtime.evaluate` with `awaitPromise` and `returnByValue`), and close it. The tab's console output
//! and uncaught exceptions are kept and printed if a test fails, because that is where a page bug shows.
//! The browser runs in its own process group and the whole group is killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::{Ws, LIVENESS};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Replies to DevTools commands come within milliseconds unless the browser is wedged; evaluations that
/// await a promise (getStats) are quick too. Generous for a loaded 2-core machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = HashMap<u64, oneshot::Sender<Result<Value, String>>>;

/// The DevTools connection: commands out, replies matched back by `id`; events only feed the tab logs.
struct Cdp {
    sink: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    pending: Arc<Mutex<Pending>>,
    /// Console lines and exceptions per sessionId.
    logs: Arc<Mutex<HashMap<String, Vec<String>>>>,
    next_id: AtomicU64,
}

impl Cdp {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            msg["sessionId"] = session.into();
        }
        self.sink
            .lock()
            .await
            .send(Message::Text(msg.to_string()))
            .await
            .with_context(|| format!("DevTools send {method}"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                bail!("DevTools {method}: no reply within {CALL_TIMEOUT:?}")
            }
            Ok(Err(_)) => bail!("DevTools {method}: browser connection closed"),
            Ok(Ok(Err(e))) => bail!("DevTools {method}: {e}"),
            Ok(Ok(Ok(result))) => Ok(result),
        }
    }
}

/// Reads the DevTools socket until it ends: replies go to their waiting callers, console events to the logs.
async fn read_loop(
    mut stream: futures_util::stream::SplitStream<Ws>,
    pending: Arc<Mutex<Pending>>,
    logs: Arc<Mutex<HashMap<String, Vec<String>>>>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(id) = msg["id"].as_u64() {
            if let Some(tx) = pending.lock().unwrap().remove(&id) {
                let reply = match msg.get("error") {
                    Some(e) => Err(e.to_string()),
                    None => Ok(msg["result"].clone()),
                };
                let _ = tx.send(reply);
            }
            continue;
        }
        let Some(session) = msg["sessionId"].as_str() else {
            continue;
        };
        let line = match msg["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = msg["params"]["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match a.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => a["description"].as_str().unwrap_or("?").to_string(),
                    })
                    .collect();
                format!(
                    "console.{}: {}",
                    msg["params"]["type"].as_str().unwrap_or("?"),
                    args.join(" ")
                )
            }
            Some("Runtime.exceptionThrown") => {
                let d = &msg["params"]["exceptionDetails"];
                format!(
                    "exception: {} {}",
                    d["text"].as_str().unwrap_or(""),
                    d["exception"]["description"].as_str().unwrap_or("")
                )
            }
            _ => continue,
        };
        logs.lock()
            .unwrap()
            .entry(session.to_string())
            .or_default()
            .push(line);
    }
    // Dropping the senders wakes every waiting caller with "browser connection closed".
    pending.lock().unwrap().clear();
}

pub struct Browser {
    child: Child,
    cdp: Arc<Cdp>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless Chromium with the flags WebRTC on loopback needs (see notes/gstreamer-webrtc.md)
    /// and connects to its DevTools endpoint.
    pub async fn launch() -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-port=0",
                "--autoplay-policy=no-user-gesture-required",
                // Both needed for ICE on loopback; with only one, ICE stays `new`.
                "--allow-loopback-in-peer-connection",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                // Several tabs are open at once and only one is "in front": keep the others' timers (the
                // page's reconnect backoff) and renderers running at full speed.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Own process group, so drop can kill the renderers and helpers too.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {CHROMIUM}"))?;

        // Chromium prints its DevTools endpoint on stderr; keep draining stderr afterwards (a full pipe
        // would block the browser) and keep its tail for failure messages.
        let stderr = child.stderr.take().unwrap();
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = url_tx.send(url.trim().to_string());
                    }
                    // No system bus in containers and CI: Chromium complains many times, harmlessly.
                    if line.contains("dbus/") {
                        continue;
                    }
                    let mut tail = tail.lock().unwrap();
                    tail.push(line);
                    if tail.len() > 200 {
                        tail.remove(0);
                    }
                }
            });
        }
        let mut browser_guard = KillOnDrop(Some(child));
        let url = tokio::task::spawn_blocking(move || url_rx.recv_timeout(LIVENESS))
            .await?
            .map_err(|_| {
                anyhow!(
                    "chromium printed no DevTools endpoint:\n{}",
                    stderr_tail.lock().unwrap().join("\n")
                )
            })?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("connect DevTools {url}"))?;
        let (sink, stream) = ws.split();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let logs = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(read_loop(stream, pending.clone(), logs.clone()));
        let cdp = Arc::new(Cdp {
            sink: tokio::sync::Mutex::new(sink),
            pending,
            logs,
            next_id: AtomicU64::new(1),
        });
        Ok(Browser {
            child: browser_guard.0.take().unwrap(),
            cdp,
            stderr_tail,
            _profile: profile,
        })
    }

    /// Opens a new tab on `url` and attaches to it.
    pub async fn open(&self, url: &str) -> Result<Page> {
        let target = self
            .cdp
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .context("no targetId")?
            .to_string();
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session_id = attached["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_string();
        // Console messages and uncaught exceptions, for failure reports.
        self.cdp
            .call(Some(&session_id), "Runtime.enable", json!({}))
            .await?;
        Ok(Page {
            cdp: self.cdp.clone(),
            target_id,
            session_id,
            url: url.to_string(),
            closed: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr_tail.lock().unwrap().join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if std::thread::panicking() {
            let tail = self.stderr_tail();
            let lines: Vec<&str> = tail.lines().collect();
            eprintln!(
                "--- chromium stderr (last 30 lines) ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// Kills a launch that failed half-way.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            kill_group(child);
        }
    }
}

fn kill_group(child: &mut Child) {
    // The group id is the child's pid (process_group(0)); only processes this harness started are in it.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// One browser tab.
pub struct Page {
    cdp: Arc<Cdp>,
    target_id: String,
    session_id: String,
    url: String,
    closed: bool,
}

impl Page {
    /// Evaluates `expr` in the tab, awaiting a promise result, and returns its value as JSON.
    /// A thrown exception is an error carrying its description.
    pub async fn eval(&self, expr: &str) -> Result<Value> {
        let reply = self
            .cdp
            .call(
                Some(&self.session_id),
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            let description = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("?");
            bail!("page threw: {description}");
        }
        Ok(reply["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// Closes the tab as a user would (its websocket and peer connections go away with it).
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        self.cdp
            .call(
                None,
                "Target.closeTarget",
                json!({ "targetId": self.target_id }),
            )
            .await?;
        Ok(())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The tab's console output and uncaught exceptions so far.
    pub fn console(&self) -> String {
        self.cdp
            .logs
            .lock()
            .unwrap()
            .get(&self.session_id)
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.closed {
            let console = self.console();
            let tail: Vec<&str> = console
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "--- console of tab {} (last {} lines) ---\n{}",
                self.url,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}
