//! Time-limited TURN credentials (the "TURN REST API" scheme coturn implements as
//! `use-auth-secret`): username `<expiry unix time>:<user>`, password base64(HMAC-SHA1(secret,
//! username)). The page gets these after login; the shared secret never leaves the daemon, and a
//! leaked credential stops working at its expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::config::IceServer;

/// The ICE servers as the page should get them: `turn:`/`turns:` servers listed without a username
/// get credentials made from `secret` for `user`, valid for `ttl` from `now`.
pub fn for_page(
    servers: &[IceServer],
    secret: Option<&str>,
    ttl: Duration,
    user: &str,
    now: SystemTime,
) -> Vec<IceServer> {
    let Some(secret) = secret else {
        return servers.to_vec();
    };
    let expires = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    servers
        .iter()
        .map(|server| {
            let is_turn = server
                .urls
                .iter()
                .any(|u| u.starts_with("turn:") || u.starts_with("turns:"));
            if !is_turn || server.username.is_some() {
                return server.clone();
            }
            // ':' separates the expiry from the name in this scheme; keep it out of the name.
            let username = format!("{}:{}", expires.as_secs(), user.replace(':', "_"));
            IceServer {
                urls: server.urls.clone(),
                credential: Some(credential(secret, &username)),
                username: Some(username),
            }
        })
        .collect()
}

fn credential(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, user: Option<&str>) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            username: user.map(Into::into),
            credential: user.map(|_| "long-term".into()),
        }
    }

    #[test]
    fn turn_servers_without_a_username_get_expiring_credentials() {
        let servers = [
            server("stun:stun.example.org", None),
            server("turn:turn.example.org:3478", None),
            server("turn:other.example.org", Some("fixed")),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let page = for_page(&servers, Some("north"), Duration::from_secs(3600), "alice", now);
        assert!(page[0].username.is_none(), "STUN needs no credentials");
        assert_eq!(page[1].username.as_deref(), Some("1700003600:alice"));
        // coturn's check, by hand: base64(HMAC-SHA1("north", "1700003600:alice")), from
        // `printf %s 1700003600:alice | openssl dgst -sha1 -hmac north -binary | base64`.
        assert_eq!(page[1].credential.as_deref(), Some("wjwSXO2ch1B6VaLTLMy2Avn5O9o="));
        assert_eq!(
            page[2].username.as_deref(),
            Some("fixed"),
            "configured credentials are kept"
        );
        assert_eq!(
            for_page(&servers, None, Duration::from_secs(1), "alice", now)[1].username,
            None
        );
    }
}
