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

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::browser_process::{last_lines, BrowserProcess, Spec};
use crate::websocket_rpc::{Reply, WsRpc};
use crate::LIVENESS;

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

/// One message from the BiDi socket: a command's success or error is returned for its waiting caller,
/// `log.entryAdded` events go to the log.
fn incoming(msg: Value, log: &Mutex<Vec<String>>) -> Option<(u64, Reply)> {
    match msg["type"].as_str() {
        Some("success") | Some("error") => {
            let Some(id) = msg["id"].as_u64() else {
                log.lock().unwrap().push(format!("bidi: {msg}"));
                return None;
            };
            let reply = if msg["type"] == "success" {
                Ok(msg["result"].clone())
            } else {
                Err(format!("{}: {}", msg["error"], msg["message"]))
            };
            Some((id, reply))
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
            None
        }
        _ => None,
    }
}

pub struct Firefox {
    process: BrowserProcess,
    /// The BiDi session.
    rpc: WsRpc,
    /// The page's console output and uncaught errors (`log.entryAdded`), and stray BiDi messages.
    log: Arc<Mutex<Vec<String>>>,
    context: String,
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
        let mut cmd = Command::new(FIREFOX);
        cmd.args(["--headless", "--no-remote", "--remote-debugging-port", "0", "--profile"])
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_CRASHREPORTER_DISABLE", "1");
        let (process, url) = BrowserProcess::launch(
            cmd,
            Spec {
                name: "firefox",
                announce: "WebDriver BiDi listening on ",
                endpoint: "BiDi endpoint",
                tail_lines: 300,
                ignore: |_| false,
            },
        )
        .await?;
        let session_url = format!("{}/session", url.trim_end_matches('/'));
        let log = Arc::new(Mutex::new(Vec::new()));
        let entries = log.clone();
        let rpc = WsRpc::connect(&session_url, "BiDi", CALL_TIMEOUT, move |msg| incoming(msg, &entries)).await?;
        let mut ff = Firefox {
            process,
            rpc,
            log,
            context: String::new(),
            _profile: profile,
        };
        ff.rpc.call("session.new", json!({ "capabilities": {} })).await?;
        ff.rpc
            .call("session.subscribe", json!({ "events": ["log.entryAdded"] }))
            .await?;
        let tree = ff.rpc.call("browsingContext.getTree", json!({ "maxDepth": 0 })).await?;
        ff.context = tree["contexts"][0]["context"]
            .as_str()
            .ok_or_else(|| anyhow!("no top-level browsing context in {tree}"))?
            .to_string();
        Ok(ff)
    }

    /// Navigates the browser's one tab to `url` and waits for its load event.
    pub async fn open(&self, url: &str) -> Result<()> {
        self.rpc
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
            .rpc
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
            bail!("page threw: {} {}", d["text"].as_str().unwrap_or("?"), d["exception"]);
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
        self.log.lock().unwrap().join("\n")
    }

    pub fn stderr_tail(&self) -> String {
        self.process.stderr_tail()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Closes the browser as a user quitting it would (`browser.close`), and waits for it to exit; if it
    /// lingers past `LIVENESS` its process group is killed and that is an error.
    pub async fn close(&mut self) -> Result<()> {
        // The reply may be lost with the connection; the process exiting is what counts.
        let _ = self.rpc.call("browser.close", json!({})).await;
        if !self.process.exit_within(LIVENESS).await? {
            bail!("firefox did not exit within {LIVENESS:?} of browser.close");
        }
        Ok(())
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- firefox page console (last 60 lines) ---\n{}",
                last_lines(&self.console(), 60)
            );
            self.process.eprint_stderr_tail();
        }
    }
}
