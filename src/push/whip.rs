//! A WHIP client (RFC 9725) for one camera. The daemon offers: its viewer branch's offer is POSTed to
//! the endpoint (`application/sdp`, the config's token as `Authorization: Bearer`), the `201`'s body
//! is the answer the camera applies, and `Location` names the session, which gets the daemon's ICE
//! candidates by PATCH (RFC 8840 fragments) and a DELETE when the camera ends the session, starts a
//! new one, or the daemon stops. A failure is reported to the camera, whose lifecycle decides when
//! to try again.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, StatusCode, Url};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::camera::{CameraHandle, Command, ConnId, ToViewer, Transport, ViewerPort, ViewerSink};
use crate::config;

/// The push is its camera's viewer 0: the HTTP transports number their viewers from 1.
const PUSH_CONN: ConnId = 0;

/// One request to the server. A WHIP server answers once its side of the session exists (Janus:
/// tens of milliseconds); one that takes longer than this is treated as down, and the session would
/// soon miss the camera's negotiation timeout anyway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping daemon waits for its DELETE before it exits regardless.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Enough of an error body to say why (servers send a line of text, or an HTML page).
const ERROR_BODY_LIMIT: usize = 200;

#[derive(Debug, thiserror::Error)]
enum WhipError {
    #[error("WHIP endpoint {url} unreachable: {}", root_cause(source))]
    Request { url: String, source: reqwest::Error },
    #[error("WHIP endpoint answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("WHIP endpoint's 201 has no usable Location header")]
    NoLocation,
    #[error("WHIP endpoint's answer is not SDP")]
    NotSdp,
}

enum Message {
    Camera(ToViewer),
    Stop,
}

/// Hands the camera's messages to the client's task without waiting (`ViewerSink::deliver`).
struct Sink(mpsc::UnboundedSender<Message>);

impl ViewerSink for Sink {
    fn deliver(&self, message: ToViewer) {
        let _ = self.0.send(Message::Camera(message));
    }
}

/// A running WHIP client: give `port` to the camera (`Setup::push`); `stop` ends its session.
pub struct Pusher {
    port: ViewerPort,
    tx: mpsc::UnboundedSender<Message>,
    task: JoinHandle<()>,
}

impl Pusher {
    pub fn spawn(camera: CameraHandle, target: config::Push) -> Result<Self, String> {
        let endpoint = Url::parse(&target.whip).map_err(|e| format!("push.whip {:?}: {e}", target.whip))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("WHIP client: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let port = ViewerPort::new(PUSH_CONN, Transport::Whip, Arc::new(Sink(tx.clone())));
        let client = Client {
            http,
            endpoint,
            token: target.token,
            camera: camera.clone(),
            port: port.clone(),
            session: None,
        };
        let span = info_span!(parent: None, "push", camera = %camera.id, endpoint = %target.whip);
        let task = tokio::spawn(client.run(rx).instrument(span));
        Ok(Self { port, tx, task })
    }

    pub fn port(&self) -> ViewerPort {
        self.port.clone()
    }

    /// Ends the session (DELETE), waiting at most `STOP_TIMEOUT`.
    pub async fn stop(self) {
        let _ = self.tx.send(Message::Stop);
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            warn!("WHIP session not deleted within {} s", STOP_TIMEOUT.as_secs());
        }
    }
}

/// A session the server accepted.
struct Session {
    resource: Url,
    etag: Option<String>,
    /// The offer's ICE credentials and first m-section, which every trickle fragment repeats.
    fragment_head: String,
    /// False once the server said it takes no trickled candidates (405/501).
    trickle: bool,
}

struct Client {
    http: reqwest::Client,
    endpoint: Url,
    token: Option<String>,
    camera: CameraHandle,
    port: ViewerPort,
    session: Option<Session>,
}

impl Client {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        // The camera's messages come in order: an offer's candidates after it, so a POST in flight
        // holds them back until its session exists.
        while let Some(message) = rx.recv().await {
            match message {
                Message::Camera(ToViewer::Offer(sdp)) => self.publish(sdp).await,
                Message::Camera(ToViewer::Candidate { candidate, .. }) => self.trickle(&candidate).await,
                Message::Camera(ToViewer::Error(error)) => {
                    debug!(%error, "the camera ended the push session");
                    self.end().await;
                }
                Message::Camera(ToViewer::Answer(_) | ToViewer::Link(_)) => {}
                Message::Stop => break,
            }
        }
        self.end().await;
    }

    /// POSTs a new offer (ending the previous session first) and gives the camera the answer, or
    /// tells it the session failed.
    async fn publish(&mut self, offer: String) {
        self.end().await;
        match self.post(&offer).await {
            Ok((session, answer)) => {
                info!(resource = %session.resource, "WHIP session created");
                debug!(%answer, "WHIP answer");
                self.session = Some(session);
                let answer = Command::Answer {
                    viewer: self.port.clone(),
                    sdp: answer,
                };
                if !self.camera.send(answer).await {
                    self.end().await;
                }
            }
            Err(e) => {
                warn!(error = %e, "WHIP offer not accepted");
                let failed = Command::TransportFailed {
                    conn: PUSH_CONN,
                    reason: e.to_string(),
                };
                self.camera.send(failed).await;
            }
        }
    }

    async fn post(&self, offer: &str) -> Result<(Session, String), WhipError> {
        let response = self
            .authorized(self.http.post(self.endpoint.clone()))
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(offer.to_string())
            .send()
            .await
            .map_err(|source| WhipError::Request {
                url: self.endpoint.to_string(),
                source,
            })?;
        let status = response.status();
        if status != StatusCode::CREATED {
            return Err(WhipError::Status {
                status,
                body: error_body(response).await,
            });
        }
        let headers = response.headers().clone();
        let resource = headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| self.endpoint.join(l).ok())
            .ok_or(WhipError::NoLocation)?;
        let etag = headers
            .get(header::ETAG)
            .and_then(|e| e.to_str().ok())
            .map(str::to_string);
        let answer = response.text().await.map_err(|source| WhipError::Request {
            url: self.endpoint.to_string(),
            source,
        })?;
        if !answer.trim_start().starts_with("v=0") {
            return Err(WhipError::NotSdp);
        }
        let session = Session {
            resource,
            etag,
            fragment_head: fragment_head(offer),
            trickle: true,
        };
        Ok((session, answer))
    }

    /// Sends one of the daemon's candidates to the session (RFC 8840). Best effort: the server also
    /// learns the daemon's address from its connectivity checks.
    async fn trickle(&mut self, candidate: &str) {
        let Some(session) = self.session.as_mut().filter(|s| s.trickle) else {
            return;
        };
        let line = if candidate.is_empty() {
            "a=end-of-candidates".to_string()
        } else {
            format!("a={candidate}")
        };
        let mut request = self
            .http
            .patch(session.resource.clone())
            .header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")
            .body(format!("{}{line}\r\n", session.fragment_head));
        if let Some(etag) = &session.etag {
            request = request.header(header::IF_MATCH, etag);
        }
        match self.authorized(request).send().await.map(|r| r.status()) {
            Ok(StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED) => {
                debug!("the WHIP server takes no trickled candidates");
                if let Some(session) = self.session.as_mut() {
                    session.trickle = false;
                }
            }
            Ok(status) if !status.is_success() => debug!(%status, "candidate not taken"),
            Ok(_) => {}
            Err(e) => debug!(error = %e, "candidate not sent"),
        }
    }

    /// DELETEs the current session, if any. A server that is gone has ended it already.
    async fn end(&mut self) {
        let Some(session) = self.session.take() else { return };
        match self.authorized(self.http.delete(session.resource.clone())).send().await {
            Ok(response) => info!(status = %response.status(), "WHIP session deleted"),
            Err(e) => debug!(error = %e, "WHIP session not deleted (server unreachable)"),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// reqwest's own message is "error sending request for url (...)"; the reason (connection refused,
/// timed out, bad certificate) is at the end of its source chain.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    if error.is_timeout() {
        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
    } else {
        cause.to_string()
    }
}

async fn error_body(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let text = text.trim();
    match text.char_indices().nth(ERROR_BODY_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// The lines a trickle fragment starts with (RFC 8840 section 4.4): the offer's ICE credentials, then
/// its first m-line and mid (with max-bundle every candidate belongs to the bundle's transport).
fn fragment_head(offer: &str) -> String {
    let first = |prefix: &str| offer.lines().find(|l| l.starts_with(prefix)).map(str::trim_end);
    let mut head = String::new();
    for line in [first("a=ice-ufrag:"), first("a=ice-pwd:"), first("m="), first("a=mid:")]
        .into_iter()
        .flatten()
    {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use axum::response::IntoResponse;

    /// What the test server saw: method, path, Authorization, Content-Type, body.
    type Seen = Arc<Mutex<Vec<(Method, String, String, String, String)>>>;

    /// A WHIP server on 127.0.0.1:0 that answers its first POST with 503 and later ones with 201, a
    /// relative Location and an answer; PATCH and DELETE get 204/200.
    async fn server() -> (Url, Seen) {
        let seen = Seen::default();
        async fn handle(
            State(seen): State<Seen>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: String,
        ) -> axum::response::Response {
            let header = |name: header::HeaderName| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let posts = {
                let mut seen = seen.lock().unwrap();
                seen.push((
                    method.clone(),
                    uri.path().to_string(),
                    header(header::AUTHORIZATION),
                    header(header::CONTENT_TYPE),
                    body,
                ));
                seen.iter().filter(|s| s.0 == Method::POST).count()
            };
            match method {
                Method::POST if posts == 1 => (StatusCode::SERVICE_UNAVAILABLE, "Janus unavailable").into_response(),
                Method::POST => (
                    StatusCode::CREATED,
                    [(header::LOCATION, "../resource/cam"), (header::ETAG, "\"e1\"")],
                    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
                )
                    .into_response(),
                Method::PATCH => StatusCode::NO_CONTENT.into_response(),
                _ => StatusCode::OK.into_response(),
            }
        }
        let app = axum::Router::new().fallback(handle).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Url::parse(&format!("http://{addr}/whip/endpoint/cam")).unwrap(), seen)
    }

    #[tokio::test]
    async fn offers_are_posted_with_the_token_answers_reach_the_camera_and_sessions_are_deleted() {
        let (url, seen) = server().await;
        let (camera, mut commands) = CameraHandle::detached("cam");
        let target = config::Push {
            whip: url.to_string(),
            token: Some("s3cret".into()),
        };
        let pusher = Pusher::spawn(camera, target).unwrap();
        let port = pusher.port();
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=mid:video0\r\n";

        // The server is not ready: the camera hears why (its lifecycle retries).
        port.send(ToViewer::Offer(offer.into()));
        match commands.recv().await.unwrap() {
            Command::TransportFailed {
                conn: PUSH_CONN,
                reason,
            } => assert!(reason.contains("503"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // The next offer gets a session; its answer goes to the camera as the push's.
        port.send(ToViewer::Offer(offer.into()));
        match commands.recv().await.unwrap() {
            Command::Answer { viewer, sdp } => {
                assert_eq!(viewer.conn, PUSH_CONN);
                assert!(sdp.starts_with("v=0"));
            }
            other => panic!("{other:?}"),
        }
        port.send(ToViewer::Candidate {
            mline: 0,
            candidate: "candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host".into(),
        });
        // The camera ends the session; the daemon stops.
        port.send(ToViewer::Error(crate::camera::CameraError::ViewerFailed(
            "ICE failed".into(),
        )));
        pusher.stop().await;

        let seen = seen.lock().unwrap().clone();
        let methods: Vec<&Method> = seen.iter().map(|s| &s.0).collect();
        assert_eq!(
            methods,
            [&Method::POST, &Method::POST, &Method::PATCH, &Method::DELETE],
            "{seen:?}"
        );
        for (method, path, auth, _, _) in &seen {
            assert_eq!(auth, "Bearer s3cret", "{method} carries the token");
            let expected = if *method == Method::POST {
                "/whip/endpoint/cam"
            } else {
                "/whip/resource/cam"
            };
            assert_eq!(path, expected, "{method}: Location resolved against the endpoint");
        }
        assert_eq!(seen[0].3, "application/sdp");
        assert_eq!(seen[0].4, offer);
        assert_eq!(seen[2].3, "application/trickle-ice-sdpfrag");
        assert!(
            seen[2].4.starts_with("a=ice-ufrag:u\r\na=ice-pwd:p\r\nm=video 9")
                && seen[2]
                    .4
                    .ends_with("a=candidate:1 1 UDP 2015363327 127.0.0.1 40000 typ host\r\n"),
            "{:?}",
            seen[2].4
        );
    }

    #[test]
    fn a_trickle_fragment_repeats_the_offers_credentials_and_first_media() {
        let offer = "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE video0\r\n\
                     m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n\
                     a=ice-pwd:secretsecretsecret\r\na=mid:video0\r\na=sendonly\r\n";
        assert_eq!(
            fragment_head(offer),
            "a=ice-ufrag:abcd\r\na=ice-pwd:secretsecretsecret\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:video0\r\n"
        );
    }
}
