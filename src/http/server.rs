//! The accept loop: hyper's HTTP/1 connection driver with a header read timeout (axum::serve sets no
//! timer, so a client that sends half a request line holds its connection and task forever), each
//! request tagged with the client's address for the limits and logs.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// A request's head must arrive within this: a browser sends it in one packet, a slow mobile link in
/// well under a second; a slowloris client trickling bytes is cut off here.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// After accept() fails (out of file descriptors, most likely) wait before trying again, instead of
/// spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A TLS client must finish its handshake within this, for the same reason as `HEADER_READ_TIMEOUT`.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, client, app, stop).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, client, app, stop).await,
                    Ok(Err(e)) => info!(%client, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        info!(%client, "dropped a connection that did not finish TLS within {TLS_HANDSHAKE_TIMEOUT:?}")
                    }
                },
            }
        });
    }
}

async fn serve_connection<S>(stream: S, client: SocketAddr, app: Router, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(client));
        request
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => match result {
            Err(e) if e.is_timeout() => {
                info!(%client, "dropped a connection that sent no complete request head within {HEADER_READ_TIMEOUT:?}")
            }
            Err(e) => debug!(%client, error = %e, "connection ended"),
            Ok(()) => {}
        },
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
