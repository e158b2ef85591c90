//! A headless browser as a child process, for the Chromium and Firefox helpers: started in its own process
//! group, its stderr drained on a thread (a full pipe would block the browser) with the tail kept for
//! failure messages, the remote-control websocket URL taken from the line that announces it, and the
//! whole group (renderers and helpers too) killed on drop, including when a launch fails half-way.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::LIVENESS;

/// How one browser announces itself.
pub struct Spec {
    /// For messages: "chromium", "firefox".
    pub name: &'static str,
    /// The start of the stderr line whose rest is the remote-control websocket URL.
    pub announce: &'static str,
    /// What that URL is, for the error when it never comes.
    pub endpoint: &'static str,
    /// Stderr lines kept for failure messages.
    pub tail_lines: usize,
    /// Stderr lines not worth keeping.
    pub ignore: fn(&str) -> bool,
}

pub struct BrowserProcess {
    name: &'static str,
    /// None once the browser has exited or been killed.
    child: Option<Child>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

impl BrowserProcess {
    /// Spawns `cmd` (stdin and stdout to /dev/null, stderr piped) in a process group of its own and waits
    /// up to `LIVENESS` for the announced URL: returns the running browser and that URL.
    pub async fn launch(mut cmd: Command, spec: Spec) -> Result<(BrowserProcess, String)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Own process group, so drop can kill the renderers and helpers too.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {}", std::path::Path::new(cmd.get_program()).display()))?;
        let stderr = child.stderr.take().unwrap();
        let process = BrowserProcess {
            name: spec.name,
            child: Some(child),
            stderr_tail: Arc::new(Mutex::new(Vec::new())),
        };
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        {
            let tail = process.stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix(spec.announce) {
                        let _ = url_tx.send(url.trim().to_string());
                    }
                    if (spec.ignore)(&line) {
                        continue;
                    }
                    let mut tail = tail.lock().unwrap();
                    tail.push(line);
                    if tail.len() > spec.tail_lines {
                        tail.remove(0);
                    }
                }
            });
        }
        // On an error from here on, dropping `process` kills the group.
        let url = tokio::task::spawn_blocking(move || url_rx.recv_timeout(LIVENESS))
            .await?
            .map_err(|_| anyhow!("{} printed no {}:\n{}", spec.name, spec.endpoint, process.stderr_tail()))?;
        Ok((process, url))
    }

    /// None once the browser has exited or been killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr_tail.lock().unwrap().join("\n")
    }

    /// Prints the last 30 lines of stderr, for a failing test.
    pub fn eprint_stderr_tail(&self) {
        eprintln!(
            "--- {} stderr (last 30 lines) ---\n{}",
            self.name,
            last_lines(&self.stderr_tail(), 30)
        );
    }

    /// Waits up to `timeout` for the browser to exit by itself, then kills what is left of its group:
    /// true if it exited, false if it had to be killed.
    pub async fn exit_within(&mut self, timeout: Duration) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            anyhow::bail!("{} not running", self.name)
        };
        let deadline = Instant::now() + timeout;
        loop {
            if child.try_wait()?.is_some() {
                // Helpers left in its process group, if any, go too.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                return Ok(true);
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the whole process group (if still running) and reaps the browser.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(child: &mut Child) {
    // The group id is the child's pid (process_group(0)): only this browser and its helpers, all started
    // by this harness.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
