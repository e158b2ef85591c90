//! Checks on where a request comes from, before any credentials are looked at:
//! - `Host` must name this device (an IP address, `localhost`, its host name or a configured name),
//!   so a page whose DNS name is rebound to this device's address cannot read from it;
//! - a browser's `Origin` on `/ws` and on API changes (`DELETE /api/...`) must be this daemon's own
//!   page or an allowed one, so a page elsewhere cannot use the user's ambient credentials;
//! - security headers on every response.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::AppState;

/// The page loads its own script, style and JSON and opens its own websocket; nothing else. CSP 3
/// lets `'self'` in connect-src cover ws:/wss: to the same host. No framing (clickjacking).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
pub struct Guard {
    names: Arc<Vec<String>>,
    origins: Arc<Vec<String>>,
}

impl Guard {
    /// `names`: extra host names from the config; the machine's own host name is added here.
    pub fn new(mut names: Vec<String>, origins: Vec<String>) -> Self {
        if let Some(host) = system_hostname() {
            names.push(format!("{host}.local"));
            names.push(host);
        }
        names.push("localhost".into());
        let names = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        let origins = origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Self {
            names: Arc::new(names),
            origins: Arc::new(origins),
        }
    }

    /// Any IP literal is fine: a rebinding attack needs the attacker's own name in `Host`.
    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok() || self.names.contains(&name)
    }

    /// Same origin means the Origin's host and port are the request's Host (http or https).
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let own = ["http://", "https://"]
            .iter()
            .any(|s| origin.strip_prefix(s) == Some(&host.to_ascii_lowercase()));
        own || self.origins.contains(&origin)
    }
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        // "[::1]:8080" or "name:8080"; a bare IPv6 address without brackets has more colons.
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && (h.ends_with(']') || !h.contains(':')) => h,
        _ => host,
    }
}

fn system_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let guard = &state.guard;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !guard.host_allowed(&host) {
        warn!(host = %host.escape_debug(), "refused a request for a host name this device does not answer to");
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "unknown host name; add it to server_names in the config\n",
        )
            .into_response();
    }
    let path = request.uri().path();
    let api_change = request.method() == Method::DELETE && path.starts_with("/api/");
    if path == "/ws" || api_change {
        if let Some(origin) = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            if !guard.origin_allowed(origin, &host) {
                warn!(origin = %origin.escape_debug(), path, "refused a request from a foreign page");
                return (
                    StatusCode::FORBIDDEN,
                    "request from a foreign origin; add it to allowed_origins in the config\n",
                )
                    .into_response();
            }
        }
    }
    let mut response = next.run(request).await;
    add_security_headers(response.headers_mut());
    response
}

fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let g = Guard::new(vec!["cams.example.org".into()], vec![]);
        for ok in [
            "127.0.0.1:8080",
            "192.168.1.5",
            "[::1]:8080",
            "localhost:8080",
            "CAMS.example.org",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "", "127.0.0.1.evil.example"] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let g = Guard::new(vec![], vec!["https://nvr.example.org/".into()]);
        assert!(g.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(g.origin_allowed("https://nvr.example.org", "127.0.0.1:8080"));
        assert!(!g.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!g.origin_allowed("http://evil.example", "127.0.0.1:8080"));
        assert!(!g.origin_allowed("null", "127.0.0.1:8080"));
    }
}
