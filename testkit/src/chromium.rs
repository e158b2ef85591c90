//! Debian's Chromium, headless, driven over the DevTools protocol (CDP) on a websocket.
//!
//! Only what the tests need: open a tab on a URL (`Target.createTarget` + `Target.attachToTarget` with
//! `flatten`, so every later command carries the tab's `sessionId`), evaluate JavaScript in it
//! (`Runtime.evaluate` with `awaitPromise` and `returnByValue`), and close it. The tab's console output
//! and uncaught exceptions are kept and printed if a test fails, because that is where a page bug shows.
//! The browser runs in its own process group and the whole group is killed on drop.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::browser_process::{last_lines, BrowserProcess, Spec};
use crate::websocket_rpc::WsRpc;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Replies to DevTools commands come within milliseconds unless the browser is wedged; evaluations that
/// await a promise (getStats) are quick too. Generous for a loaded 2-core machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The DevTools connection: commands out, replies matched back by `id`; events only feed the tab logs.
struct Cdp {
    rpc: WsRpc,
    /// Console lines and exceptions per sessionId.
    logs: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl Cdp {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let mut msg = json!({ "method": method, "params": params });
        if let Some(session) = session {
            msg["sessionId"] = session.into();
        }
        self.rpc.call_message(msg).await
    }
}

/// One message from the DevTools socket: a reply is returned for its waiting caller, console events go to
/// the logs.
fn incoming(msg: Value, logs: &Mutex<HashMap<String, Vec<String>>>) -> Option<(u64, Result<Value, String>)> {
    if let Some(id) = msg["id"].as_u64() {
        let reply = match msg.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(msg["result"].clone()),
        };
        return Some((id, reply));
    }
    let session = msg["sessionId"].as_str()?;
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
        _ => return None,
    };
    logs.lock().unwrap().entry(session.to_string()).or_default().push(line);
    None
}

pub struct Browser {
    process: BrowserProcess,
    cdp: Arc<Cdp>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless Chromium with the flags WebRTC on loopback needs (see notes/gstreamer-webrtc.md)
    /// and connects to its DevTools endpoint.
    pub async fn launch() -> Result<Browser> {
        let profile = tempfile::tempdir()?;
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
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
        .arg("about:blank");
        // Chromium prints its DevTools endpoint on stderr.
        let (process, url) = BrowserProcess::launch(
            cmd,
            Spec {
                name: "chromium",
                announce: "DevTools listening on ",
                endpoint: "DevTools endpoint",
                tail_lines: 200,
                // No system bus in containers and CI: Chromium complains many times, harmlessly.
                ignore: |line| line.contains("dbus/"),
            },
        )
        .await?;
        let logs = Arc::new(Mutex::new(HashMap::new()));
        let events = logs.clone();
        let rpc = WsRpc::connect(&url, "DevTools", CALL_TIMEOUT, move |msg| incoming(msg, &events)).await?;
        Ok(Browser {
            process,
            cdp: Arc::new(Cdp { rpc, logs }),
            _profile: profile,
        })
    }

    /// Accept any server certificate, for tests that serve https with a certificate made on the spot.
    pub async fn ignore_certificate_errors(&self) -> Result<()> {
        self.cdp
            .call(None, "Security.setIgnoreCertificateErrors", json!({ "ignore": true }))
            .await?;
        Ok(())
    }

    /// Opens a new tab on `url` and attaches to it.
    pub async fn open(&self, url: &str) -> Result<Page> {
        let target = self
            .cdp
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await?;
        let target_id = target["targetId"].as_str().context("no targetId")?.to_string();
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session_id = attached["sessionId"].as_str().context("no sessionId")?.to_string();
        // Console messages and uncaught exceptions, for failure reports.
        self.cdp.call(Some(&session_id), "Runtime.enable", json!({})).await?;
        Ok(Page {
            cdp: self.cdp.clone(),
            target_id,
            session_id,
            url: url.to_string(),
            closed: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().expect("chromium runs until dropped")
    }

    pub fn stderr_tail(&self) -> String {
        self.process.stderr_tail()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            self.process.eprint_stderr_tail();
        }
    }
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
            .call(None, "Target.closeTarget", json!({ "targetId": self.target_id }))
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
            let tail = last_lines(&self.console(), 60);
            eprintln!(
                "--- console of tab {} (last {} lines) ---\n{}",
                self.url,
                tail.lines().count(),
                tail
            );
        }
    }
}
