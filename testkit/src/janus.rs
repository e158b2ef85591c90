//! Janus (Debian 12's 1.1.2) as the media server a camera is pushed to, with its WHIP front
//! simple-whip-server (installed by `scripts/install-deps.sh test` into `WHIP_SERVER_DIR`), and a viewer
//! page that watches the pushed camera through Janus's VideoRoom over Janus's HTTP API.
//!
//! Everything listens on 127.0.0.1 of the calling thread's network namespace, on free ports, with its
//! config in a temporary folder. Janus gathers no loopback candidates (it skips loopback interfaces), so
//! its ICE uses `ice_ip`: the veth address of a `netns::NetnsPair`, where the daemon and the browsers
//! run too.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::browser_process::last_lines;
use crate::chromium::Page;
use crate::{http_get, http_post_json, wait_until, LIVENESS};

/// Where install-deps.sh puts simple-whip-server's code (`src/`) and its Node modules.
const DEFAULT_WHIP_SERVER_DIR: &str = "/var/cache/edgecam-test/simple-whip-server";
/// The VideoRoom room the camera is published into.
pub const ROOM: u64 = 1234;
/// How long Janus gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Janus {
    dir: tempfile::TempDir,
    janus: Option<Child>,
    whip: Child,
    /// Janus's HTTP API (`/janus`), which the viewer page uses.
    pub http: SocketAddr,
    /// simple-whip-server's REST API (`/whip`).
    pub whip_api: SocketAddr,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Janus {
    /// Starts Janus (VideoRoom with an H.264 room, HTTP and websocket transports only) and
    /// simple-whip-server in front of it, and waits until the WHIP API answers.
    pub async fn start(ice_ip: IpAddr) -> Result<Janus> {
        let whip_dir = std::env::var("EDGECAM_WHIP_SERVER_DIR").unwrap_or_else(|_| DEFAULT_WHIP_SERVER_DIR.into());
        let whip_dir = PathBuf::from(whip_dir);
        if !whip_dir.join("src/server.js").exists() || !whip_dir.join("node_modules").exists() {
            bail!(
                "simple-whip-server is not installed in {} (scripts/install-deps.sh test installs it)",
                whip_dir.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("edgecam-janus-").tempdir()?;
        let (http_port, ws_port, whip_port) = (free_port()?, free_port()?, free_port()?);
        write_janus_config(dir.path(), ice_ip, http_port, ws_port)?;
        // The server loads `./config.js` next to its code: a copy of the code with this test's config.
        let src = dir.path().join("whip");
        std::fs::create_dir_all(&src)?;
        for file in ["server.js", "whip-janus.js"] {
            std::fs::copy(whip_dir.join("src").join(file), src.join(file)).with_context(|| format!("copy {file}"))?;
        }
        std::fs::write(
            src.join("config.js"),
            format!(
                "module.exports = {{ janus: {{ address: 'ws://127.0.0.1:{ws_port}' }}, port: {whip_port}, \
                 rest: '/whip', allowTrickle: true, strictETags: false, iceServers: [] }};\n"
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("whip.log"))?;
        let whip = Command::new("node")
            .arg(src.join("server.js"))
            .current_dir(dir.path())
            .env("NODE_PATH", whip_dir.join("node_modules"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start node (simple-whip-server)")?;
        let mut janus = Janus {
            dir,
            janus: None,
            whip,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            whip_api: SocketAddr::from(([127, 0, 0, 1], whip_port)),
        };
        janus.spawn_janus()?;
        let api = janus.whip_api;
        wait_until("simple-whip-server answering", LIVENESS, || async move {
            match http_get(api, "/whip/healthcheck").await? {
                (200, _) => Ok(()),
                (status, body) => bail!("healthcheck: {status} {body}"),
            }
        })
        .await
        .with_context(|| janus.logs())?;
        Ok(janus)
    }

    fn spawn_janus(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("janus.log"))?;
        let config = self.dir.path().join("janus.jcfg");
        let child = Command::new("janus")
            .arg("-F")
            .arg(self.dir.path())
            .arg("-C")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start janus (apt-get install janus)")?;
        self.janus = Some(child);
        Ok(())
    }

    /// A WHIP endpoint publishing into `ROOM`, which wants `token`: the URL a camera's `push.whip` takes.
    pub async fn create_endpoint(&self, id: &str, token: &str) -> Result<String> {
        let body = json!({"id": id, "room": ROOM, "token": token});
        match http_post_json(self.whip_api, "/whip/create", &body).await? {
            (200, _) => Ok(format!("http://{}/whip/endpoint/{id}", self.whip_api)),
            (status, body) => bail!("creating WHIP endpoint {id}: {status} {body}"),
        }
    }

    /// Whether the endpoint has a session now (simple-whip-server's own list; DELETE clears it).
    pub async fn endpoint_enabled(&self, id: &str) -> Result<bool> {
        let (status, body) = http_get(self.whip_api, "/whip/endpoints").await?;
        if status != 200 {
            bail!("GET /whip/endpoints: {status} {body}");
        }
        let list: serde_json::Value = serde_json::from_str(&body)?;
        let endpoint = list
            .as_array()
            .and_then(|l| l.iter().find(|e| e["id"] == id))
            .with_context(|| format!("no endpoint {id} in {body}"))?;
        Ok(endpoint["enabled"] == true)
    }

    /// Stops Janus (SIGTERM, as a service manager would) and starts it again; simple-whip-server
    /// reconnects to it by itself and keeps its endpoints.
    pub fn restart_janus(&mut self) -> Result<()> {
        if let Some(mut child) = self.janus.take() {
            stop(&mut child);
        }
        self.spawn_janus()
    }

    /// Writes the viewer page (see `VIEWER_JS`) and returns its file:// URL.
    pub fn viewer_page(&self) -> Result<String> {
        let path = self.dir.path().join("viewer.html");
        let script = VIEWER_JS
            .replace("@JANUS@", &format!("http://{}/janus", self.http))
            .replace("@ROOM@", &ROOM.to_string());
        std::fs::write(
            &path,
            format!("<!doctype html><title>janus viewer</title><script>{script}</script>"),
        )?;
        Ok(format!("file://{}", path.display()))
    }

    /// The last lines of Janus's and simple-whip-server's logs, for failure reports.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "janus log (last 30 lines):\n{}\nsimple-whip-server log (last 30 lines):\n{}",
            last_lines(&read("janus.log"), 30),
            last_lines(&read("whip.log"), 30)
        )
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        if let Some(mut child) = self.janus.take() {
            stop(&mut child);
        }
        stop(&mut self.whip);
    }
}

/// Waits until the viewer page's `subscription`-th (or a later) Janus subscription has decoded `frames`
/// frames of video `width` pixels wide.
pub async fn wait_watching(page: &Page, subscription: u64, frames: u64, width: u64) -> Result<()> {
    wait_until(
        &format!("Janus subscription {subscription} decoding"),
        LIVENESS,
        || async {
            let view = page.eval("window.janusView()").await?;
            let ok = view["subscriptions"].as_u64() >= Some(subscription)
                && view["frames"].as_u64() >= Some(frames)
                && view["width"].as_u64() == Some(width);
            if !ok {
                bail!("{view}");
            }
            Ok(())
        },
    )
    .await
}

/// SIGTERM, then SIGKILL if it has not exited within `STOP_GRACE`.
fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn write_janus_config(dir: &Path, ice_ip: IpAddr, http_port: u16, ws_port: u16) -> Result<()> {
    let libs = "/usr/lib/x86_64-linux-gnu/janus";
    let libs = if Path::new(libs).exists() {
        libs.to_string()
    } else {
        // Another architecture's multiarch folder (arm64 CI, a Pi).
        format!("/usr/lib/{}-linux-gnu/janus", std::env::consts::ARCH)
    };
    // Only what the test uses: the VideoRoom plugin, the HTTP (viewers) and websocket (WHIP server)
    // transports.
    let unused_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let files = [
        (
            "janus.jcfg",
            format!(
                "general: {{\n  configs_folder = \"{dir}\"\n  plugins_folder = \"{libs}/plugins\"\n  \
                 transports_folder = \"{libs}/transports\"\n  events_folder = \"{libs}/events\"\n  \
                 loggers_folder = \"{libs}/loggers\"\n  debug_level = 4\n}}\n\
                 nat: {{\n  ice_enforce_list = \"{ice_ip}\"\n}}\n\
                 plugins: {{\n  disable = \"{unused_plugins}\"\n}}\n\
                 transports: {{\n  disable = \"libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so\"\n}}\n\
                 events: {{\n  broadcast = false\n}}\n",
                dir = dir.display()
            ),
        ),
        (
            "janus.transport.http.jcfg",
            format!("general: {{\n  base_path = \"/janus\"\n  http = true\n  port = {http_port}\n  ip = \"127.0.0.1\"\n}}\nadmin: {{\n  admin_http = false\n}}\n"),
        ),
        (
            "janus.transport.websockets.jcfg",
            format!("general: {{\n  ws = true\n  ws_port = {ws_port}\n  ws_ip = \"127.0.0.1\"\n}}\nadmin: {{\n  admin_ws = false\n}}\n"),
        ),
        (
            // The default room is VP8 at 128 kbit/s: this one takes the camera's H.264 as it is.
            "janus.plugin.videoroom.jcfg",
            format!(
                "general: {{\n}}\nroom-{ROOM}: {{\n  description = \"edgecam\"\n  publishers = 4\n  \
                 bitrate = 4000000\n  fir_freq = 10\n  videocodec = \"h264\"\n}}\n"
            ),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// The viewer: subscribes to the room's publisher over Janus's HTTP API (create a session, attach
/// VideoRoom, join as subscriber, answer Janus's offer, start), keeps the session's long poll going, and
/// starts over a second after anything fails (no publisher yet, Janus gone). `window.janusView()` reads
/// the current subscription: how many it has made, and its decoded frames and width.
const VIEWER_JS: &str = r#"
const JANUS = '@JANUS@', ROOM = @ROOM@;
const view = { subscriptions: 0, pc: null, error: '' };
const transaction = () => Math.random().toString(36).slice(2);
async function post(path, body) {
  const r = await fetch(JANUS + path, { method: 'POST', body: JSON.stringify({ ...body, transaction: transaction() }) });
  const reply = await r.json();
  if (reply.janus === 'error') throw new Error('janus: ' + JSON.stringify(reply.error));
  return reply;
}
async function poll(session) {
  const r = await fetch(`${JANUS}/${session}?maxev=5&rid=${Date.now()}`);
  const reply = await r.json();
  const events = Array.isArray(reply) ? reply : [reply];
  for (const e of events) {
    if (e.janus === 'error') throw new Error('janus: ' + JSON.stringify(e.error));
    const error = e.plugindata && e.plugindata.data && e.plugindata.data.error;
    if (error) throw new Error('videoroom: ' + error);
  }
  return events;
}
async function subscribe() {
  const session = (await post('', { janus: 'create' })).data.id;
  const handle = (await post(`/${session}`, { janus: 'attach', plugin: 'janus.plugin.videoroom' })).data.id;
  const path = `/${session}/${handle}`;
  const list = await post(path, { janus: 'message', body: { request: 'listparticipants', room: ROOM } });
  const feed = (list.plugindata.data.participants || []).find(p => p.publisher);
  if (!feed) throw new Error('no publisher in the room yet');
  await post(path, { janus: 'message', body: { request: 'join', ptype: 'subscriber', room: ROOM, feed: feed.id } });
  let offer = null;
  while (!offer) offer = (await poll(session)).map(e => e.jsep).find(j => j);
  const pc = new RTCPeerConnection();
  view.pc = pc;
  view.subscriptions++;
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise(done => {
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    if (pc.iceGatheringState === 'complete') done();
    setTimeout(done, 2000);
  });
  await post(path, { janus: 'message', body: { request: 'start', room: ROOM }, jsep: pc.localDescription });
  for (;;) await poll(session);
}
(async () => {
  for (;;) {
    try { await subscribe(); } catch (e) { view.error = String(e); }
    if (view.pc) { view.pc.close(); view.pc = null; }
    await new Promise(r => setTimeout(r, 1000));
  }
})();
window.janusView = async () => {
  const out = { subscriptions: view.subscriptions, frames: 0, width: 0, error: view.error };
  if (!view.pc) return out;
  (await view.pc.getStats()).forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') { out.frames = r.framesDecoded || 0; out.width = r.frameWidth || 0; }
  });
  return out;
};
"#;
