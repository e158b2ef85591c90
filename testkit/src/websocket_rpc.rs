//! Commands as JSON over a websocket, replies matched back by `id`: what the DevTools protocol (chromium.rs)
//! and WebDriver BiDi (firefox.rs) have in common. Each protocol says which incoming messages are replies
//! (and whether they succeeded) and does what it wants with the rest (its events).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::Ws;

/// A reply: the result, or the protocol's error as text.
pub type Reply = Result<Value, String>;

type Pending = HashMap<u64, oneshot::Sender<Reply>>;

pub struct WsRpc {
    /// For messages: "DevTools", "BiDi".
    protocol: &'static str,
    call_timeout: Duration,
    sink: tokio::sync::Mutex<SplitSink<Ws, Message>>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
}

impl WsRpc {
    /// Connects to `url` and reads it on a task of its own until it ends. Every JSON text message goes to
    /// `incoming`, which returns `(id, reply)` for a reply (handed to the caller waiting for that id) and
    /// `None` for anything else.
    pub async fn connect(
        url: &str,
        protocol: &'static str,
        call_timeout: Duration,
        incoming: impl FnMut(Value) -> Option<(u64, Reply)> + Send + 'static,
    ) -> Result<WsRpc> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connect {protocol} {url}"))?;
        let (sink, stream) = ws.split();
        let pending = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(read_loop(stream, pending.clone(), incoming));
        Ok(WsRpc {
            protocol,
            call_timeout,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends `{id, method, params}` and waits for its reply.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_message(json!({ "method": method, "params": params })).await
    }

    /// Sends `msg` (a whole command: method, params and whatever else the protocol wants) with an `id`
    /// added, and waits up to the call timeout for its reply.
    pub async fn call_message(&self, mut msg: Value) -> Result<Value> {
        let (protocol, timeout) = (self.protocol, self.call_timeout);
        let method = msg["method"].as_str().unwrap_or("?").to_string();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        msg["id"] = id.into();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::Text(msg.to_string()))
            .await
            .with_context(|| format!("{protocol} send {method}"))?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                bail!("{protocol} {method}: no reply within {timeout:?}")
            }
            Ok(Err(_)) => bail!("{protocol} {method}: browser connection closed"),
            Ok(Ok(Err(e))) => bail!("{protocol} {method}: {e}"),
            Ok(Ok(Ok(result))) => Ok(result),
        }
    }
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    pending: Arc<Mutex<Pending>>,
    mut incoming: impl FnMut(Value) -> Option<(u64, Reply)>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some((id, reply)) = incoming(msg) {
            if let Some(tx) = pending.lock().unwrap().remove(&id) {
                let _ = tx.send(reply);
            }
        }
    }
    // Dropping the senders wakes every waiting caller with "browser connection closed".
    pending.lock().unwrap().clear();
}
