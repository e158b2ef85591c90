//! Access control and hardening of the HTTP layer against the real daemon: logins (Basic, bearer,
//! websocket tickets) and permissions, Host and Origin checks, security headers, the websocket limits
//! while Chromium keeps decoding, and the header read timeout against slowloris clients.
//!
//! Run: `cargo test --test security`.

use edgecam_testkit as common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use common::chromium::Browser;
use common::daemon::Daemon;
use common::viewer::{open_viewer, sample, wait_decoding, wait_rising};
use common::{heavy_lock, wait_until, Signalling, LIVENESS};

const ALICE_PASSWORD: &str = "correct horse battery staple";
const BOB_PASSWORD: &str = "bob's own password";
const TOKEN_SECRET: &str = "s3cret-token-for-scripts";

fn hash(password: &str) -> String {
    common::daemon::hash_password(password).unwrap()
}

/// alice watches everything and reads the API; bob watches demo2 only; the token `nvr` reads the API.
fn auth_config() -> String {
    format!(
        "discovery: false\nauth:\n  users:\n    alice: {{hash: '{}', api: true}}\n    bob: {{hash: '{}', watch: [demo2]}}\n  tokens:\n    nvr: {{hash: '{}', api: true}}\n",
        hash(ALICE_PASSWORD),
        hash(BOB_PASSWORD),
        hash(TOKEN_SECRET)
    )
}

fn basic(user: &str, password: &str) -> String {
    common::basic_auth(user, password)
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    request(addr, "GET", path, headers).await
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    let reply = common::http_call(addr, method, path, headers, b"").await?;
    Ok(Reply {
        status: reply.status,
        body: reply.text(),
        head: reply.head,
    })
}

/// Opens `/ws` with extra request headers (and an optional query); Err carries the HTTP status of a refusal.
async fn ws_with(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Result<Signalling, u16> {
    let mut request = format!("ws://{addr}/ws{query}").into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Signalling { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("websocket failed without an HTTP status: {e}"),
    }
}

/// Reads replies until an `error` containing `needle` (other replies, like offers, may come first).
async fn until_error(ws: &mut Signalling, needle: &str) -> Result<()> {
    loop {
        let reply = ws.recv_reply(LIVENESS).await?;
        if reply["type"] == "error" && reply["message"].as_str().unwrap_or("").contains(needle) {
            return Ok(());
        }
    }
}

async fn camera_ids(ws: &mut Signalling) -> Result<Vec<String>> {
    let list = ws.expect("cameras", LIVENESS).await?;
    Ok(list["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect())
}

/// `DELETE /api/cameras/{id}` forgets a camera whose device is gone (the VM test forgets a real
/// one): it needs a login with `api: true`, a camera the user may watch, the daemon's own origin, and
/// a camera that is not plugged in (a demo camera always is: 409, and it keeps streaming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_camera_needs_the_api_permission_and_a_device_that_is_gone() {
    let daemon = Daemon::start(&auth_config(), &["--demo", "2"]).unwrap();
    let addr = daemon.addr;
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);
    let token = format!("Bearer nvr:{TOKEN_SECRET}");
    let delete = |path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request(addr, "DELETE", path, &headers).await.unwrap()
    };
    assert_eq!(delete("/api/cameras/demo1", vec![]).await.status, 401);
    let r = delete("/api/cameras/demo2", vec![("Authorization", bob.clone())]).await;
    assert_eq!(r.status, 403, "bob may watch demo2 but not use the API: {}", r.body);
    let r = delete("/api/cameras/demo1", vec![("Authorization", alice.clone())]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("still plugged in"), "{}", r.body);
    assert_eq!(
        delete("/api/cameras/demo1", vec![("Authorization", token)])
            .await
            .status,
        409
    );
    assert_eq!(
        delete("/api/cameras/nope", vec![("Authorization", alice.clone())])
            .await
            .status,
        404
    );
    let foreign = vec![
        ("Authorization", alice.clone()),
        ("Origin", "http://evil.example".to_string()),
    ];
    assert_eq!(delete("/api/cameras/demo1", foreign).await.status, 403);
    let own = vec![("Authorization", alice), ("Origin", format!("http://{addr}"))];
    assert_eq!(
        delete("/api/cameras/demo1", own).await.status,
        409,
        "the page's own origin gets through"
    );

    let r = get(
        addr,
        "/api/cameras",
        &[("Authorization", &basic("alice", ALICE_PASSWORD))],
    )
    .await
    .unwrap();
    let cameras: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(cameras.as_array().unwrap().len(), 2, "{cameras}");
    assert!(
        cameras.as_array().unwrap().iter().all(|c| c["forgettable"] == false),
        "{cameras}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_everything_is_401_and_says_nothing() {
    let daemon = Daemon::start(&auth_config(), &["--demo", "2"]).unwrap();
    let addr = daemon.addr;
    // Wrong credentials on two paths only: ten failures from one address would start the login limit.
    for (i, path) in [
        "/",
        "/api/cameras",
        "/app.js",
        "/api/config",
        "/api/profiles",
        "/api/ticket",
        "/metrics",
        "/api/cameras/demo1/snapshot",
        "/nonexistent",
    ]
    .into_iter()
    .enumerate()
    {
        let wrong = [Some(basic("alice", "wrong")), Some(basic("mallory", ALICE_PASSWORD))];
        for auth in std::iter::once(None).chain(wrong.into_iter().filter(|_| i < 2)) {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let r = get(addr, path, &headers).await.unwrap();
            assert_eq!(r.status, 401, "{path} {auth:?}");
            assert!(
                r.head.contains("www-authenticate: basic realm=\"edgecam\""),
                "{}",
                r.head
            );
            assert!(!r.body.contains("demo"), "{path}: {}", r.body);
        }
    }
    assert_eq!(ws_with(addr, "", &[]).await.err(), Some(401));
    assert_eq!(ws_with(addr, "?ticket=made-up", &[]).await.err(), Some(401));
    assert!(!daemon.log().contains(ALICE_PASSWORD), "a password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_tokens_and_tickets_get_what_their_permissions_allow() {
    let turn = "ice:\n  servers: [{urls: ['turn:turn.example.org:3478']}]\n  turn_secret: north-wind\n";
    let daemon = Daemon::start(&format!("{}{turn}", auth_config()), &["--demo", "2"]).unwrap();
    let addr = daemon.addr;
    let alice = basic("alice", ALICE_PASSWORD);
    let bob = basic("bob", BOB_PASSWORD);
    let token = format!("Bearer nvr:{TOKEN_SECRET}");

    let page = get(addr, "/", &[("Authorization", &alice)]).await.unwrap();
    assert_eq!(page.status, 200);
    let cams = get(addr, "/api/cameras", &[("Authorization", &alice)]).await.unwrap();
    assert_eq!(cams.status, 200);
    assert!(
        cams.body.contains("demo1") && cams.body.contains("demo2"),
        "{}",
        cams.body
    );
    assert_eq!(
        get(addr, "/api/cameras", &[("Authorization", &token)])
            .await
            .unwrap()
            .status,
        200
    );
    // bob may watch but not read the API; his page still gets what it needs.
    assert_eq!(
        get(addr, "/api/cameras", &[("Authorization", &bob)])
            .await
            .unwrap()
            .status,
        403
    );
    // ... including TURN credentials made for him from the shared secret, which itself stays home.
    let page_config = get(addr, "/api/config", &[("Authorization", &bob)]).await.unwrap();
    assert_eq!(page_config.status, 200);
    let ice: Value = serde_json::from_str(&page_config.body).unwrap();
    let turn_user = ice["ice_servers"][0]["username"].as_str().unwrap();
    assert!(
        turn_user.ends_with(":bob") && ice["ice_servers"][0]["credential"].is_string(),
        "{ice}"
    );
    assert!(!page_config.body.contains("north-wind"), "{ice}");

    // The page's way in: a ticket, then /ws with it; a ticket works once.
    let ticket = get(addr, "/api/ticket", &[("Authorization", &bob)]).await.unwrap();
    assert_eq!(ticket.status, 200);
    let ticket: Value = serde_json::from_str(&ticket.body).unwrap();
    let query = format!("?ticket={}", ticket["ticket"].as_str().unwrap());
    let mut ws = ws_with(addr, &query, &[])
        .await
        .unwrap_or_else(|s| panic!("ticket refused: HTTP {s}"));
    assert_eq!(
        ws_with(addr, &query, &[]).await.err(),
        Some(401),
        "a ticket was accepted twice"
    );

    // bob sees and may join only demo2.
    assert_eq!(camera_ids(&mut ws).await.unwrap(), ["demo2"]);
    ws.send(&json!({"type": "ready", "camera": "demo1"})).await.unwrap();
    let refused = ws.recv_reply(LIVENESS).await.unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("may not watch"),
        "{refused}"
    );
    ws.send(&json!({"type": "ready", "camera": "demo2"})).await.unwrap();
    let offer = ws.recv_reply(LIVENESS).await.unwrap();
    assert_eq!(offer["type"], "offer", "{offer}");

    // A script may open /ws with its Authorization header instead of a ticket.
    let mut ws = ws_with(addr, "", &[("Authorization", &alice)])
        .await
        .unwrap_or_else(|s| panic!("Basic refused on /ws: HTTP {s}"));
    let mut ids = camera_ids(&mut ws).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["demo1", "demo2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_address() {
    let daemon = Daemon::start(&auth_config(), &["--demo", "1"]).unwrap();
    let wrong = basic("alice", "guess");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            get(daemon.addr, "/api/cameras", &[("Authorization", &wrong)])
                .await
                .unwrap()
                .status,
        );
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // Now even the right password waits out the window.
    let right = basic("alice", ALICE_PASSWORD);
    let r = get(daemon.addr, "/api/cameras", &[("Authorization", &right)])
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    assert!(r.head.contains("retry-after: 60"), "{}", r.head);
    assert!(
        daemon.log().contains("failed-login limit reached"),
        "{}",
        daemon.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_listen_address_without_auth_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecam"))
        .args(["run", "--listen", "0.0.0.0:0", "--config", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no `auth:` section"), "{err}");
    // Written on purpose, it starts.
    let mut daemon = Daemon::start("discovery: false\nauth: none\n", &["--demo", "1"]).unwrap();
    assert_eq!(get(daemon.addr, "/api/cameras", &[]).await.unwrap().status, 200);
    daemon.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_and_unknown_host_are_refused() {
    let daemon = Daemon::start(
        "discovery: false\nserver_names: [cams.example.org]\nallowed_origins: ['https://nvr.example.org']\n",
        &["--demo", "1"],
    )
    .unwrap();
    let addr = daemon.addr;
    let own = format!("http://{addr}");
    assert!(ws_with(addr, "", &[("Origin", &own)]).await.is_ok());
    assert!(ws_with(addr, "", &[("Origin", "https://nvr.example.org")])
        .await
        .is_ok());
    assert_eq!(
        ws_with(addr, "", &[("Origin", "http://evil.example")]).await.err(),
        Some(403)
    );
    let other_port = format!("http://127.0.0.1:{}", addr.port() + 1);
    assert_eq!(ws_with(addr, "", &[("Origin", &other_port)]).await.err(), Some(403));

    // DNS rebinding: evil.example resolving to this device still says Host: evil.example.
    for host in ["evil.example", "evil.example:8080"] {
        let r = get(addr, "/api/cameras", &[("Host", host)]).await.unwrap();
        assert_eq!(r.status, 421, "{host}");
        assert!(!r.body.contains("demo1"));
    }
    for host in ["cams.example.org:8080", "localhost", "127.0.0.1"] {
        assert_eq!(
            get(addr, "/api/cameras", &[("Host", host)]).await.unwrap().status,
            200,
            "{host}"
        );
    }
    assert!(daemon.log().contains("refused a request from a foreign page"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_carries_security_headers() {
    let daemon = Daemon::demo(1).unwrap();
    let r = get(daemon.addr, "/", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    for header in [
        "content-security-policy: default-src 'none'",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
    ] {
        assert!(r.head.contains(header), "{header} missing in {}", r.head);
    }
}

/// 20 clients each send half a request line and nothing more (the measurement: all 20 were
/// still held after 40 s). The header read timeout closes every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_dropped() {
    let daemon = Daemon::demo(1).unwrap();
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut c = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            .await
            .unwrap();
        conns.push(c);
    }
    // Far above the daemon's 10 s: this is a liveness bound, not a measurement.
    let bound = Duration::from_secs(40);
    let mut closed = 0;
    for mut c in conns {
        let mut buf = [0u8; 1024];
        let outcome = tokio::time::timeout(bound, async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // a 408 before closing is fine too
                }
            }
        })
        .await;
        if outcome.is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 20, "slowloris connections still open after {bound:?}");
    // The daemon still serves everyone else.
    assert_eq!(get(daemon.addr, "/api/cameras", &[]).await.unwrap().status, 200);
    assert!(
        daemon.log().contains("sent no complete request head"),
        "{}",
        daemon.log_tail(20)
    );
}

/// Every websocket limit hit from one address while a Chromium page keeps decoding: each answered with
/// an HTTP status or an `error`, logged with the client address, and the page's video keeps rising.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_limits_are_reported_while_a_browser_decodes() {
    let _heavy = heavy_lock();
    let daemon = Daemon::demo(1).unwrap();
    let browser = Browser::launch().await.unwrap();
    async {
        let ids = ["demo1"];
        let page = open_viewer(&browser, &daemon, "?cameras=demo1").await?;
        let base = wait_decoding(&page, &ids, None).await?;

        // Sockets per address: the page holds one, so 15 more fit and the 17th is refused.
        let mut held = Vec::new();
        for _ in 0..15 {
            held.push(ws_with(daemon.addr, "", &[]).await.map_err(|s| anyhow!("HTTP {s}"))?);
        }
        assert_eq!(ws_with(daemon.addr, "", &[]).await.err(), Some(429));
        let mut ws = held.pop().unwrap();

        // Candidates: the wrong m-line, an oversized one, then too many for one viewer.
        for (candidate, mline, expect) in [
            (
                "candidate:1 1 UDP 1 127.0.0.1 9 typ host".to_string(),
                1,
                "sdpMLineIndex 1",
            ),
            (format!("candidate:{}", "x".repeat(600)), 0, "too long"),
        ] {
            ws.send(&json!({"type": "candidate", "camera": "demo1", "candidate": candidate, "sdpMLineIndex": mline}))
                .await?;
            let reply = ws.recv_reply(LIVENESS).await?;
            if reply["type"] != "error" || !reply["message"].as_str().unwrap_or("").contains(expect) {
                bail!("expected an error about {expect:?}, got {reply}");
            }
        }
        for i in 0..101 {
            let c = format!("candidate:{i} 1 UDP 1 127.0.0.1 {} typ host", 10000 + i);
            ws.send(&json!({"type": "candidate", "camera": "demo1", "candidate": c, "sdpMLineIndex": 0}))
                .await?;
        }
        until_error(&mut ws, "too many candidates").await?;

        // ready flood: the burst goes through (offers or busy errors), then the rate limit answers.
        let mut flood = held.pop().unwrap();
        for _ in 0..40 {
            flood.send(&json!({"type": "ready", "camera": "demo1"})).await?;
        }
        until_error(&mut flood, "too many ready messages").await?;
        drop(flood);
        drop(ws);
        drop(held);

        for line in [
            "websocket refused: too many from this address",
            "refused a candidate",
            "ready rate limit hit",
        ] {
            // The reply can overtake the log line on its way through the harness's stderr reader.
            let hit = wait_until(&format!("{line:?} logged"), LIVENESS, || async {
                daemon
                    .log()
                    .lines()
                    .find(|l| l.contains(line))
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{line:?} not logged"))
            })
            .await?;
            if !hit.contains("client=127.0.0.1") {
                bail!("no client address in {hit:?}");
            }
        }
        let now = sample(&page, &ids).await?;
        wait_rising(&page, &base).await?;
        wait_rising(&page, &now).await?;
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// The page with a login: Chromium given the credentials once (in the URL, as the browser's own Basic
/// prompt would store them) loads the page, gets a ticket and decodes; bob's page shows only demo2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_page_works_with_a_login() {
    let _heavy = heavy_lock();
    let daemon = Daemon::start(&auth_config(), &["--demo", "2"]).unwrap();
    let browser = Browser::launch().await.unwrap();
    async {
        let url = format!(
            "http://bob:{}@{}/",
            BOB_PASSWORD.replace('\'', "%27").replace(' ', "%20"),
            daemon.addr
        );
        let page = browser.open(&url).await?;
        common::viewer::wait_js_true(
            &page,
            "the page's camera list",
            "typeof window.edgecam === 'object' && window.edgecam.cameras.has('demo2')",
        )
        .await
        .with_context(|| common::viewer::page_context(&page))?;
        let base = wait_decoding(&page, &["demo2"], None)
            .await
            .with_context(|| common::viewer::page_context(&page))?;
        wait_rising(&page, &base).await?;
        let has_demo1 = page.eval("window.edgecam.cameras.has('demo1')").await?;
        if has_demo1 != json!(false) {
            bail!("bob's page lists demo1: {has_demo1}");
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
}

/// A self-signed certificate for 127.0.0.1 made by the openssl CLI, as the README tells users to.
fn test_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=edgecam test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// A TLS client that trusts only `cert`.
fn tls_connector(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// `tls:` serves the page and the API over https and the websocket over wss, with a login; plain http
/// on the same port gets no page; Chromium decodes over https/wss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_test_certificate() {
    let _heavy = heavy_lock();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_certificate(dir.path());
    let config = format!(
        "{}tls: {{cert: {}, key: {}}}\n",
        auth_config(),
        cert.display(),
        key.display()
    );
    let daemon = Daemon::start(&config, &["--demo", "1"]).unwrap();
    let addr = daemon.addr;
    let connector = tls_connector(&cert);
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let alice = basic("alice", ALICE_PASSWORD);

    // https: the API with and without a login.
    for (auth, expect) in [(None, "401"), (Some(alice.as_str()), "200")] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        tls.write_all(format!("GET /api/cameras HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(LIVENESS, tls.read_to_end(&mut raw)).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with(&format!("HTTP/1.0 {expect}")), "{text}");
    }

    // wss with a ticket got over https.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    tls.write_all(format!("GET /api/ticket HTTP/1.0\r\nHost: {addr}\r\nAuthorization: {alice}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(LIVENESS, tls.read_to_end(&mut raw)).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let ticket: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let url = format!("wss://{addr}/ws?ticket={}", ticket["ticket"].as_str().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    // client_async gives a WebSocketStream over the TLS stream, not the MaybeTlsStream `Signalling` holds.
    let mut ws = ws;
    let first = loop {
        match tokio::time::timeout(LIVENESS, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => break t,
            Some(Ok(_)) => continue,
            other => panic!("wss: {other:?}"),
        }
    };
    assert!(first.contains("\"cameras\"") && first.contains("demo1"), "{first}");

    // Plain http to the TLS port is not served.
    let plain = get(addr, "/", &[("Authorization", &alice)]).await;
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));

    let browser = Browser::launch().await.unwrap();
    browser.ignore_certificate_errors().await.unwrap();
    async {
        let url = format!(
            "https://alice:{}@{addr}/?cameras=demo1",
            ALICE_PASSWORD.replace(' ', "%20")
        );
        let page = browser.open(&url).await?;
        common::viewer::wait_js_true(
            &page,
            "the page's camera list",
            "window.edgecam?.cameras?.has('demo1') === true",
        )
        .await
        .with_context(|| common::viewer::page_context(&page))?;
        let base = wait_decoding(&page, &["demo1"], None)
            .await
            .with_context(|| common::viewer::page_context(&page))?;
        wait_rising(&page, &base).await?;
        let proto = page.eval("location.protocol").await?;
        if proto != json!("https:") {
            bail!("page on {proto}");
        }
        anyhow::Ok(())
    }
    .await
    .unwrap();
    assert!(daemon.log().contains(&format!("listening on https://{addr}")));
}

/// Firefox with a login decodes too (VP8: Debian's Firefox has no H.264). Firefox fails ICE on loopback
/// alone, so this runs in the test's own network namespaces like tests/vp8_browsers.rs.
#[test]
fn firefox_page_works_with_a_login() {
    use common::netns::{self, NetnsPair, ADDR_A};
    if let Some(reason) = netns::unavailable() {
        eprintln!("SKIPPED firefox_page_works_with_a_login: {reason}");
        return;
    }
    let _heavy = heavy_lock();
    let ns = NetnsPair::create().expect("create the test's network namespaces");
    ns.run_in(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let daemon = Daemon::start(
                &auth_config(),
                &["--demo", "1", "--ice-local-address", &ADDR_A.to_string()],
            )?;
            let mut firefox = common::firefox::Firefox::launch().await?;
            let url = format!(
                "http://alice:{}@{}/?cameras=demo1",
                ALICE_PASSWORD.replace(' ', "%20"),
                daemon.addr
            );
            firefox.open(&url).await?;
            let js = common::viewer::page_view_js("demo1");
            let read = || async { common::viewer::PageView::parse("demo1", firefox.eval(&js).await?) };
            common::viewer::wait_frames_more("firefox decoding demo1 after login", None, 30, "VP8", read)
                .await
                .with_context(|| format!("firefox console:\n{}", firefox.console()))?;
            firefox.close().await?;
            anyhow::Ok(())
        })
        .unwrap();
    });
}
