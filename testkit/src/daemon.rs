//! A real edgecam daemon as a child process: `edgecam run` on a free loopback port, with a config file
//! (udev discovery off unless the test's YAML says otherwise), ICE restricted to 127.0.0.1 so a browser
//! on the same machine can reach it (`start_on` puts both on another address of the caller's network
//! namespace), and its stderr kept for failure messages. It can be restarted on the same port, and is
//! stopped on drop (SIGTERM, then SIGKILL).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::LIVENESS;

/// How long a daemon may take to exit after SIGTERM. systemd waits 90 s by default, but a streaming
/// daemon with nothing to flush should be gone in well under this.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Log lines kept (across restarts) for failure messages.
const LOG_LINES: usize = 5000;

/// Config used when a test gives none: the demo cameras only, nothing from udev (this machine may or may
/// not have V4L2 devices, and tests must not depend on it).
pub const NO_DISCOVERY: &str = "discovery: false\n";

/// The daemon to run. An integration test of the edgecam package runs from target/<profile>/deps/, and
/// cargo builds the package's `edgecam` binary in target/<profile>/ before it runs the tests; this is a
/// library, so it cannot read the CARGO_BIN_EXE_edgecam that cargo gives the tests themselves. Anything
/// else (bench/, which runs the release build) names the binary by EDGECAM_BIN.
fn edgecam_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the running test binary")?;
    let beside_deps = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(|deps| deps.parent())
        .map(|profile_dir| profile_dir.join("edgecam"))
        .filter(|bin| bin.is_file());
    beside_deps
        .or_else(|| std::env::var_os("EDGECAM_BIN").map(PathBuf::from))
        .context("no edgecam binary: not a cargo test next to target/<profile>/edgecam, and EDGECAM_BIN is not set")
}

/// `edgecam hash-password`, the way a user makes the hashes for `auth:`: the password on stdin.
pub fn hash_password(password: &str) -> Result<String> {
    let mut child = Command::new(edgecam_bin()?)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn edgecam hash-password")?;
    writeln!(child.stdin.take().context("stdin")?, "{password}")?;
    let out = child.wait_with_output()?;
    let phc = String::from_utf8(out.stdout)?.trim().to_string();
    if !out.status.success() || !phc.starts_with("$argon2id$") {
        bail!("edgecam hash-password: {} {phc:?}", out.status);
    }
    Ok(phc)
}

enum Event {
    Listening,
    Exited,
}

pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    args: Vec<String>,
    _config: tempfile::NamedTempFile,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// `edgecam run --demo N` with discovery off.
    pub fn demo(n: u32) -> Result<Daemon> {
        Daemon::start(NO_DISCOVERY, &["--demo", &n.to_string()])
    }

    /// `edgecam run --config <yaml> <extra args>` on a free port.
    pub fn start(config_yaml: &str, extra_args: &[&str]) -> Result<Daemon> {
        Daemon::start_on(std::net::Ipv4Addr::LOCALHOST.into(), config_yaml, extra_args)
    }

    /// The same, listening (HTTP and ICE) on `ip` of the calling thread's network namespace.
    pub fn start_on(ip: std::net::IpAddr, config_yaml: &str, extra_args: &[&str]) -> Result<Daemon> {
        let mut config = tempfile::Builder::new()
            .prefix("edgecam-test-")
            .suffix(".yaml")
            .tempfile()?;
        config.write_all(config_yaml.as_bytes())?;
        config.flush()?;
        // Bind port 0 to learn a free port, then hand it to the daemon (and reuse it on restart).
        let addr = std::net::TcpListener::bind((ip, 0))?.local_addr()?;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            config.path().display().to_string(),
            "--listen".into(),
            addr.to_string(),
            "--ice-local-address".into(),
            ip.to_string(),
            // No --web-dir: the tests exercise the page built into the binary, the one that ships.
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut daemon = Daemon {
            child: None,
            addr,
            args,
            _config: config,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(edgecam_bin()?);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().context("spawn edgecam")?;
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "http://" or "https://" (a config with `tls:`).
                if line.contains("listening on http") {
                    let _ = tx.send(Event::Listening);
                }
                let mut log = log.lock().unwrap();
                log.push(line);
                if log.len() > LOG_LINES {
                    log.remove(0);
                }
            }
            let _ = tx.send(Event::Exited);
        });
        self.child = Some(child);
        match rx.recv_timeout(LIVENESS) {
            Ok(Event::Listening) => Ok(()),
            Ok(Event::Exited) => {
                let status = self.child.as_mut().unwrap().wait()?;
                self.child = None;
                bail!("edgecam exited before listening ({status}):\n{}", self.log_tail(80))
            }
            Err(_) => bail!(
                "edgecam printed no 'listening on http://' line within {LIVENESS:?}:\n{}",
                self.log_tail(80)
            ),
        }
    }

    /// SIGTERM and wait; SIGKILL (and an error) if it does not exit within `STOP_GRACE`.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon not running")
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if let Some(status) = child.try_wait()? {
                self.note(&format!("=== harness: edgecam exited after SIGTERM: {status} ==="));
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.note("=== harness: edgecam ignored SIGTERM, killed ===");
                return Err(anyhow!(
                    "edgecam did not exit within {STOP_GRACE:?} of SIGTERM:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon and starts it again with the same arguments on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.note("=== harness: restarting edgecam ===");
        self.spawn()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    fn note(&self, line: &str) {
        self.log.lock().unwrap().push(line.to_string());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("{e:#}");
            }
        }
        if std::thread::panicking() {
            eprintln!("--- edgecam stderr (last 120 lines) ---\n{}", self.log_tail(120));
        }
        // For a human digging into a run: the whole log (up to `LOG_LINES`), appended to a file.
        if let Some(path) = std::env::var_os("EDGECAM_TEST_DAEMON_LOG") {
            use std::io::Write;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| writeln!(f, "{}", self.log()));
            if let Err(e) = written {
                eprintln!("could not write the daemon log to {}: {e}", path.to_string_lossy());
            }
        }
    }
}
