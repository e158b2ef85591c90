//! A headless Chromium tab that lives in another network namespace than the driver: the browser, its
//! DevTools socket and the runtime serving them run on a thread of their own started inside that namespace
//! (a browser's 127.0.0.1 DevTools endpoint is reachable only from there), and the driver evaluates
//! JavaScript in the tab through a channel. Used for a Chromium that sends (in the daemon's namespace) and a
//! viewer on the clean cable (testkit/src/shaped_link.rs).

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use edgecam_testkit::chromium::Browser;

/// One evaluation: the expression and where its result goes.
type Eval = (String, oneshot::Sender<Result<Value>>);

/// Starts a closure on a thread inside some namespace (`ShapedLink::spawn_in_*`).
type Spawner<'a> = &'a dyn Fn(Box<dyn FnOnce() + Send>) -> std::thread::JoinHandle<()>;

pub(crate) struct RemotePage {
    /// None once dropped: closing the channel ends the thread, which kills the browser.
    tx: Option<mpsc::UnboundedSender<Eval>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RemotePage {
    /// Launches a browser on a thread that `spawn` starts, opens `url` in it and waits until it is open.
    pub(crate) async fn open(spawn: Spawner<'_>, url: &str) -> Result<RemotePage> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Eval>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let target = url.to_string();
        let thread = spawn(Box::new(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let opened = async {
                    let browser = Browser::launch().await?;
                    let page = browser.open(&target).await?;
                    anyhow::Ok((browser, page))
                }
                .await;
                let (_browser, page) = match opened {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Some((js, reply)) = rx.recv().await {
                    let _ = reply.send(page.eval(&js).await);
                }
            });
        }));
        let page = RemotePage {
            tx: Some(tx),
            thread: Some(thread),
        };
        ready_rx
            .await
            .map_err(|_| anyhow!("the remote browser's thread ended before opening {url:?}"))?
            .context("remote browser")?;
        Ok(page)
    }

    /// `Page::eval` in the remote tab.
    pub(crate) async fn eval(&self, js: &str) -> Result<Value> {
        let (reply, result) = oneshot::channel();
        self.tx
            .as_ref()
            .context("remote page closed")?
            .send((js.to_string(), reply))
            .map_err(|_| anyhow!("the remote browser's thread has ended"))?;
        result
            .await
            .map_err(|_| anyhow!("the remote browser's thread has ended"))?
    }
}

impl Drop for RemotePage {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
