//! Who is asking: HTTP Basic users and bearer tokens checked against the argon2 hashes of `auth:`,
//! short-lived websocket tickets for the page, and a failed-login limit per client address.
//!
//! Every route goes through `require`; a request without valid credentials gets 401 and nothing else
//! (no camera names, no hint whether the user exists).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::AppState;
use crate::config::{Account, Auth, AuthConfig, Watch};

/// Failed logins allowed per client address within `FAILURE_WINDOW`: enough for a person mistyping
/// a few times, far too few to guess a password (the window resets only after it has passed quietly).
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered; beyond this the oldest entries go, so a spray of
/// source addresses cannot grow memory without bound.
const MAX_TRACKED_CLIENTS: usize = 4096;

/// A verified credential is remembered this long so the page's few requests (and a script's polling)
/// do not each cost an argon2 verification (~20 ms and 19 MiB on a Raspberry Pi 4).
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Verified credentials remembered at once; a full cache is simply cleared.
const MAX_VERIFIED: usize = 1024;

/// How long a websocket ticket is valid: the page asks for one right before opening `/ws`.
const TICKET_TTL: Duration = Duration::from_secs(30);
/// Unused tickets held at once. Only logged-in clients can make them; this bounds what one can hoard.
const MAX_TICKETS: usize = 1024;
/// 32 random bytes: not guessable within a ticket's lifetime.
const TICKET_BYTES: usize = 32;

const REALM: &str = "Basic realm=\"edgecam\", charset=\"UTF-8\"";

/// Who a request or a websocket belongs to and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub watch: Watch,
    pub api: bool,
}

impl Principal {
    /// Everyone, when the config says `auth: none` or listens on loopback without `auth:`.
    fn open() -> Self {
        Self {
            name: "anonymous".into(),
            watch: Watch::All,
            api: true,
        }
    }

    fn from_account(name: &str, account: &Account) -> Self {
        Self {
            name: name.into(),
            watch: account.watch.clone(),
            api: account.api,
        }
    }
}

#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    config: Option<AuthConfig>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    verified: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
    /// Verified against when the user does not exist, so an unknown name takes as long as a wrong password.
    dummy_hash: String,
}

enum Credential {
    Basic { user: String, password: String },
    Bearer { name: String, secret: String },
}

pub enum Denied {
    Missing,
    Wrong,
    TooManyFailures,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Missing | Denied::Wrong => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM))],
                "login required\n",
            )
                .into_response(),
            Denied::TooManyFailures => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, FAILURE_WINDOW.as_secs().to_string())],
                "too many failed logins from this address; wait a minute\n",
            )
                .into_response(),
        }
    }
}

impl Access {
    pub fn new(auth: Option<&Auth>) -> Self {
        let config = match auth {
            Some(Auth::Required(c)) => Some(c.clone()),
            Some(Auth::None) | None => None,
        };
        Self {
            inner: Arc::new(Inner {
                config,
                failures: Mutex::default(),
                verified: Mutex::default(),
                tickets: Mutex::default(),
                dummy_hash: hash_password("edgecam-dummy").unwrap_or_default(),
            }),
        }
    }

    pub fn required(&self) -> bool {
        self.inner.config.is_some()
    }

    /// The principal behind a request's `Authorization` header.
    pub async fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<Principal, Denied> {
        let Some(config) = &self.inner.config else {
            return Ok(Principal::open());
        };
        if self.failed_too_often(client) {
            return Err(Denied::TooManyFailures);
        }
        let Some(credential) = parse_authorization(headers) else {
            return Err(Denied::Missing);
        };
        let (kind, name, secret, account) = match &credential {
            Credential::Basic { user, password } => ("user", user, password, config.users.get(user)),
            Credential::Bearer { name, secret } => ("token", name, secret, config.tokens.get(name)),
        };
        let key = cache_key(kind, name, secret);
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let hash = account
            .map(|a| a.hash.0.clone())
            .unwrap_or_else(|| self.inner.dummy_hash.clone());
        let secret_owned = secret.clone();
        // argon2 is deliberately slow; keep it off the async workers.
        let matches = tokio::task::spawn_blocking(move || verify(&hash, &secret_owned))
            .await
            .unwrap_or(false);
        match (matches, account) {
            (true, Some(account)) => {
                let principal = Principal::from_account(name, account);
                self.remember(key, &principal);
                info!(%client, kind, name = %name, "login");
                Ok(principal)
            }
            _ => {
                self.note_failure(client);
                warn!(%client, kind, name = %name.escape_debug(), "failed login");
                Err(Denied::Wrong)
            }
        }
    }

    /// A one-use ticket that lets `/ws` open as `principal` within `TICKET_TTL`.
    pub fn issue_ticket(&self, principal: &Principal) -> Option<String> {
        let mut tickets = self.inner.tickets.lock().unwrap();
        let now = Instant::now();
        tickets.retain(|_, (_, expires)| *expires > now);
        if tickets.len() >= MAX_TICKETS {
            return None;
        }
        let mut bytes = [0u8; TICKET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        tickets.insert(ticket.clone(), (principal.clone(), now + TICKET_TTL));
        Some(ticket)
    }

    /// Consumes a ticket. The map lookup hashes the ticket, so its timing says nothing useful about
    /// how close a guess was; the final comparison is constant-time anyway.
    pub fn redeem_ticket(&self, ticket: &str) -> Option<Principal> {
        let mut tickets = self.inner.tickets.lock().unwrap();
        let (stored, (principal, expires)) = tickets.remove_entry(ticket)?;
        let same: bool = stored.as_bytes().ct_eq(ticket.as_bytes()).into();
        (same && expires > Instant::now()).then_some(principal)
    }

    fn failed_too_often(&self, client: IpAddr) -> bool {
        let failures = self.inner.failures.lock().unwrap();
        matches!(failures.get(&client), Some((n, since)) if *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn note_failure(&self, client: IpAddr) {
        let mut failures = self.inner.failures.lock().unwrap();
        if failures.len() >= MAX_TRACKED_CLIENTS {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED_CLIENTS {
                failures.clear();
            }
        }
        let entry = failures.entry(client).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 == MAX_FAILURES {
            warn!(%client, "failed-login limit reached; refusing logins from this address for {FAILURE_WINDOW:?}");
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Principal> {
        let verified = self.inner.verified.lock().unwrap();
        match verified.get(key) {
            Some((p, at)) if at.elapsed() < VERIFIED_TTL => Some(p.clone()),
            _ => None,
        }
    }

    fn remember(&self, key: [u8; 32], principal: &Principal) {
        let mut verified = self.inner.verified.lock().unwrap();
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(key, (principal.clone(), Instant::now()));
    }
}

/// The middleware in front of every route: the principal goes into the request's extensions.
pub async fn require(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    // The websocket may instead carry a ticket (browsers cannot set headers on it); ws.rs checks it.
    let is_ws_with_ticket = request.uri().path() == "/ws" && ticket_from_query(request.uri().query()).is_some();
    if is_ws_with_ticket && state.access.required() {
        return next.run(request).await;
    }
    match state.access.check(request.headers(), client.ip()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(denied) => denied.into_response(),
    }
}

pub fn ticket_from_query(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("ticket="))
}

fn parse_authorization(headers: &HeaderMap) -> Option<Credential> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(Credential::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let (name, secret) = rest.split_once(':')?;
        Some(Credential::Bearer {
            name: name.to_string(),
            secret: secret.to_string(),
        })
    } else {
        None
    }
}

/// The cache is keyed by a digest of the whole credential, never by the secret itself.
fn cache_key(kind: &str, name: &str, secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [kind, name, secret] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// argon2's own comparison of the computed and stored hash is constant-time.
fn verify(phc: &str, secret: &str) -> bool {
    match argon2::PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(secret.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// The PHC string of a new argon2id hash with a random salt (argon2's default, OWASP's parameters).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = argon2::password_hash::SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// A fresh random secret for a user or a token, as postinst and `hash-password --generate` use.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PasswordHash;

    fn access() -> Access {
        let hash = PasswordHash(hash_password("right").unwrap());
        let config = AuthConfig {
            users: [(
                "alice".to_string(),
                Account {
                    hash: hash.clone(),
                    watch: Watch::All,
                    api: false,
                },
            )]
            .into(),
            tokens: [(
                "nvr".to_string(),
                Account {
                    hash,
                    watch: Watch::All,
                    api: true,
                },
            )]
            .into(),
        };
        Access::new(Some(&Auth::Required(config)))
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(header::AUTHORIZATION, format!("Basic {b64}").parse().unwrap());
        h
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test]
    async fn right_password_and_token_pass_wrong_ones_do_not() {
        let a = access();
        let p = a.check(&basic("alice", "right"), CLIENT).await.ok().unwrap();
        assert_eq!(&*p.name, "alice");
        assert!(!p.api);
        assert!(matches!(
            a.check(&basic("alice", "wrong"), CLIENT).await,
            Err(Denied::Wrong)
        ));
        assert!(matches!(
            a.check(&basic("mallory", "right"), CLIENT).await,
            Err(Denied::Wrong)
        ));
        assert!(matches!(a.check(&HeaderMap::new(), CLIENT).await, Err(Denied::Missing)));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer nvr:right".parse().unwrap());
        assert!(a.check(&h, CLIENT).await.ok().unwrap().api);
        // A user's password is not a token and the other way round.
        h.insert(header::AUTHORIZATION, "Bearer alice:right".parse().unwrap());
        assert!(a.check(&h, CLIENT).await.is_err());
    }

    #[tokio::test]
    async fn failures_are_limited_per_address() {
        let a = access();
        for _ in 0..MAX_FAILURES {
            assert!(matches!(
                a.check(&basic("alice", "guess"), CLIENT).await,
                Err(Denied::Wrong)
            ));
        }
        // Even the right password is refused from that address now; other addresses are unaffected.
        assert!(matches!(
            a.check(&basic("alice", "right"), CLIENT).await,
            Err(Denied::TooManyFailures)
        ));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        assert!(a.check(&basic("alice", "right"), other).await.is_ok());
    }

    #[tokio::test]
    async fn tickets_are_single_use() {
        let a = access();
        let p = a.check(&basic("alice", "right"), CLIENT).await.ok().unwrap();
        let t = a.issue_ticket(&p).unwrap();
        assert!(a.redeem_ticket("not-a-ticket").is_none());
        assert_eq!(&*a.redeem_ticket(&t).unwrap().name, "alice");
        assert!(a.redeem_ticket(&t).is_none());
    }
}
