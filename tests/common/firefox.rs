//! Debian's Firefox ESR, headless, driven over WebDriver BiDi (its `--remote-debugging-port 0` prints
//! `WebDriver BiDi listening on ws://...`; commands go to `<that url>/session`).
//!
//! Only what the tests need: `session.new`, the one top-level browsing context navigated to a URL,
//! `script.evaluate` (the value comes back through `JSON.stringify`, so a test sees plain JSON as with the
//! Chromium helper instead of BiDi's typed RemoteValues), console output and uncaught errors kept for
//! failure messages (`log.entryAdded`), and `browser.close`. The browser runs in its own process group,
//! killed on drop.
//!
//! Profile (a fresh temporary directory, prefs in user.js), see notes/gstreamer-webrtc.md:
//! - `media.peerconnection.ice.obfuscate_host_addresses=false`: real host candidates instead of mDNS
//!   names nobody here can resolve;
//! - `media.autoplay.default=0`: the page's <video> may play without a user gesture;
//! - `media.gmp-gmpopenh264.enabled=false`, `media.webrtc.hw.h264.enabled=false`: no H.264 for WebRTC at
//!   all. Debian's Firefox ESR has none offline anyway (it would download Cisco's OpenH264 plugin); these
//!   make that true on a machine that once had internet too, so "a browser without H.264" is what runs.
//!   Tests still check it in the page (`RTCRtpReceiver.getCapabilities`) rather than trusting the prefs;
//! - the rest stops background traffic (updates, telemetry, remote settings, captive portal checks).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::{Ws, LIVENESS};

const FIREFOX: &str = "/usr/bin/firefox-esr";

/// Replies come quickly unless the browser is wedged; navigation waits for the page's load event.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub const PREFS: &[(&str, &str)] = &[
    ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
    ("media.autoplay.default", "0"),
    ("media.autoplay.blocking_policy", "0"),
    ("media.gmp-gmpopenh264.enabled", "false"),
    ("media.gmp-gmpopenh264.autoupdate", "false"),
    ("media.gmp-manager.updateEnabled", "false"),
    ("media.webrtc.hw.h264.enabled", "false"),
    ("app.update.auto", "false"),
    ("app.update.enabled", "false"),
    ("browser.shell.checkDefaultBrowser", "false"),
    ("browser.startup.homepage_override.mstone", "\"ignore\""),
    ("browser.safebrowsing.malware.enabled", "false"),
    ("browser.safebrowsing.phishing.enabled", "false"),
    ("browser.safebrowsing.downloads.enabled", "false"),
    ("browser.safebrowsing.update.enabled", "false"),
    ("datareporting.policy.dataSubmissionEnabled", "false"),
    ("datareporting.healthreport.uploadEnabled", "false"),
    ("toolkit.telemetry.enabled", "false"),
    ("toolkit.telemetry.unified", "false"),
    ("extensions.update.enabled", "false"),
    ("network.captive-portal-service.enabled", "false"),
    ("network.connectivity-service.enabled", "false"),
    ("network.dns.disablePrefetch", "true"),
    ("network.prefetch-next", "false"),
    ("services.settings.server", "\"http://127.0.0.1:9/\""),
    ("messaging-system.rsexperimentloader.enabled", "false"),
    ("browser.newtabpage.enabled", "false"),
];

type Pending = HashMap<u64, oneshot::Sender<Result<Value, String>>>;

struct Bidi {
    sink: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    pending: Arc<Mutex<Pending>>,
    log: Arc<Mutex<Vec<String>>>,
    next_id: AtomicU64,
}

impl Bidi {
    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({ "id": id, "method": method, "params": params });
        self.sink
            .lock()
            .await
            .send(Message::Text(msg.to_string()))
            .await
            .with_context(|| format!("BiDi send {method}"))?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                bail!("BiDi {method}: no reply within {CALL_TIMEOUT:?}")
            }
            Ok(Err(_)) => bail!("BiDi {method}: browser connection closed"),
            Ok(Ok(Err(e))) => bail!("BiDi {method}: {e}"),
            Ok(Ok(Ok(result))) => Ok(result),
        }
    }
}

async fn read_loop(
    mut stream: futures_util::stream::SplitStream<Ws>,
    pending: Arc<Mutex<Pending>>,
    log: Arc<Mutex<Vec<String>>>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match msg["type"].as_str() {
            Some("success") | Some("error") => {
                let Some(id) = msg["id"].as_u64() else {
                    log.lock().unwrap().push(format!("bidi: {msg}"));
                    continue;
                };
                if let Some(tx) = pending.lock().unwrap().remove(&id) {
                    let reply = if msg["type"] == "success" {
                        Ok(msg["result"].clone())
                    } else {
                        Err(format!("{}: {}", msg["error"], msg["message"]))
                    };
                    let _ = tx.send(reply);
                }
            }
            Some("event") if msg["method"] == "log.entryAdded" => {
                let p = &msg["params"];
                let line = format!(
                    "{}.{}: {}",
                    p["type"].as_str().unwrap_or("?"),
                    p["level"].as_str().unwrap_or("?"),
                    p["text"].as_str().unwrap_or("")
                );
                log.lock().unwrap().push(line);
            }
            _ => {}
        }
    }
    pending.lock().unwrap().clear();
}

pub struct Firefox {
    child: Option<Child>,
    bidi: Arc<Bidi>,
    context: String,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Firefox {
    /// Starts headless Firefox ESR on a fresh profile and opens a BiDi session.
    pub async fn launch() -> Result<Firefox> {
        let profile = tempfile::tempdir()?;
        {
            let mut user_js = std::fs::File::create(profile.path().join("user.js"))?;
            for (name, value) in PREFS {
                writeln!(user_js, "user_pref(\"{name}\", {value});")?;
            }
        }
        let mut child = Command::new(FIREFOX)
            .args([
                "--headless",
                "--no-remote",
                "--remote-debugging-port",
                "0",
                "--profile",
            ])
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {FIREFOX}"))?;

        let stderr = child.stderr.take().unwrap();
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("WebDriver BiDi listening on ") {
                        let _ = url_tx.send(url.trim().to_string());
                    }
                    let mut tail = tail.lock().unwrap();
                    tail.push(line);
                    if tail.len() > 300 {
                        tail.remove(0);
                    }
                }
            });
        }
        let mut guard = KillOnDrop(Some(child));
        let url = match tokio::task::spawn_blocking(move || url_rx.recv_timeout(LIVENESS)).await? {
            Ok(url) => url,
            Err(_) => bail!(
                "firefox printed no BiDi endpoint:\n{}",
                stderr_tail.lock().unwrap().join("\n")
            ),
        };
        let session_url = format!("{}/session", url.trim_end_matches('/'));
        let (ws, _) = tokio_tungstenite::connect_async(session_url.as_str())
            .await
            .with_context(|| format!("connect WebDriver BiDi {session_url}"))?;
        let (sink, stream) = ws.split();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(read_loop(stream, pending.clone(), log.clone()));
        let bidi = Arc::new(Bidi {
            sink: tokio::sync::Mutex::new(sink),
            pending,
            log,
            next_id: AtomicU64::new(1),
        });
        let mut ff = Firefox {
            child: guard.0.take(),
            bidi,
            context: String::new(),
            stderr_tail,
            _profile: profile,
        };
        ff.bidi
            .call("session.new", json!({ "capabilities": {} }))
            .await?;
        ff.bidi
            .call("session.subscribe", json!({ "events": ["log.entryAdded"] }))
            .await?;
        let tree = ff
            .bidi
            .call("browsingContext.getTree", json!({ "maxDepth": 0 }))
            .await?;
        ff.context = tree["contexts"][0]["context"]
            .as_str()
            .ok_or_else(|| anyhow!("no top-level browsing context in {tree}"))?
            .to_string();
        Ok(ff)
    }

    /// Navigates the browser's one tab to `url` and waits for its load event.
    pub async fn open(&self, url: &str) -> Result<()> {
        self.bidi
            .call(
                "browsingContext.navigate",
                json!({ "context": self.context, "url": url, "wait": "complete" }),
            )
            .await?;
        Ok(())
    }

    /// Evaluates `expr` (awaiting it if it is a promise) in the tab and returns its value as JSON
    /// (through JSON.stringify: `undefined` becomes null). A thrown exception is an error.
    pub async fn eval(&self, expr: &str) -> Result<Value> {
        let wrapped = format!("(async () => JSON.stringify(await ({expr})))()");
        let reply = self
            .bidi
            .call(
                "script.evaluate",
                json!({
                    "expression": wrapped,
                    "target": { "context": self.context },
                    "awaitPromise": true,
                    "resultOwnership": "none",
                }),
            )
            .await?;
        if reply["type"] == "exception" {
            let d = &reply["exceptionDetails"];
            bail!(
                "page threw: {} {}",
                d["text"].as_str().unwrap_or("?"),
                d["exception"]
            );
        }
        match &reply["result"] {
            r if r["type"] == "string" => {
                let text = r["value"].as_str().unwrap_or("null");
                serde_json::from_str(text).with_context(|| format!("JSON from the page: {text}"))
            }
            r if r["type"] == "undefined" => Ok(Value::Null),
            r => bail!("unexpected script.evaluate result {r}"),
        }
    }

    /// Console output and uncaught errors of the page so far.
    pub fn console(&self) -> String {
        self.bidi.log.lock().unwrap().join("\n")
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr_tail.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Closes the browser as a user quitting it would (`browser.close`), and waits for it to exit; if it
    /// lingers past `LIVENESS` its process group is killed and that is an error.
    pub async fn close(&mut self) -> Result<()> {
        // The reply may be lost with the connection; the process exiting is what counts.
        let _ = self.bidi.call("browser.close", json!({})).await;
        let Some(mut child) = self.child.take() else {
            bail!("firefox not running")
        };
        let deadline = Instant::now() + LIVENESS;
        loop {
            if child.try_wait()?.is_some() {
                // Helpers left in its process group, if any, go too.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                bail!("firefox did not exit within {LIVENESS:?} of browser.close");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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
    // The group id is the child's pid (process_group(0)): only this browser and its helpers.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

impl Drop for Firefox {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
        if std::thread::panicking() {
            let console = self.console();
            let lines: Vec<&str> = console.lines().collect();
            eprintln!(
                "--- firefox page console (last 60 lines) ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
            let tail = self.stderr_tail();
            let lines: Vec<&str> = tail.lines().collect();
            eprintln!(
                "--- firefox stderr (last 30 lines) ---\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}
