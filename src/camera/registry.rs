//! The live set of cameras: who can be messaged (handles) and what the pages are shown (infos).
//! Only the supervisor adds and removes entries; camera actors update their own info. Readers get a
//! `watch` snapshot, so a slow page never holds anything up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{CameraHandle, CameraInfo};

struct Entry {
    handle: CameraHandle,
    info: CameraInfo,
}

#[derive(Clone)]
pub struct Registry {
    // A std Mutex: held only to copy small values in or out, never across an await or a GStreamer call.
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    list: watch::Sender<Vec<CameraInfo>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("cameras", &self.list.borrow().len())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self {
            entries: Arc::default(),
            list: watch::Sender::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, handle: CameraHandle, info: CameraInfo) {
        let mut entries = self.lock();
        entries.insert(info.id.clone(), Entry { handle, info });
        self.publish(&entries);
    }

    pub fn remove(&self, id: &str) -> Option<CameraHandle> {
        let mut entries = self.lock();
        let entry = entries.remove(id);
        self.publish(&entries);
        entry.map(|e| e.handle)
    }

    /// Called by a camera actor whenever what the pages show about it changes.
    pub fn update(&self, info: CameraInfo) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&info.id) {
            if entry.info != info {
                entry.info = info;
                self.publish(&entries);
            }
        }
    }

    pub fn handle(&self, id: &str) -> Option<CameraHandle> {
        self.lock().get(id).map(|e| e.handle.clone())
    }

    pub fn handles(&self) -> Vec<CameraHandle> {
        self.lock().values().map(|e| e.handle.clone()).collect()
    }

    pub fn infos(&self) -> Vec<CameraInfo> {
        self.list.borrow().clone()
    }

    /// Changes whenever a camera appears, disappears or changes state; pages get a `cameras` message each time.
    pub fn subscribe(&self) -> watch::Receiver<Vec<CameraInfo>> {
        self.list.subscribe()
    }

    fn publish(&self, entries: &BTreeMap<String, Entry>) {
        self.list
            .send_replace(entries.values().map(|e| e.info.clone()).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::{CameraState, Command};

    fn info(id: &str, state: CameraState) -> CameraInfo {
        CameraInfo {
            id: id.into(),
            name: id.to_uppercase(),
            state,
            detail: None,
            kind: "test".into(),
            device: None,
            mode: None,
            encoder: None,
            bitrate_kbps: 1000,
            viewers: 0,
            encodings: Default::default(),
            push: None,
        }
    }

    #[test]
    fn cameras_come_and_go_and_readers_see_each_change() {
        let registry = Registry::new();
        let mut list = registry.subscribe();
        assert!(!list.has_changed().unwrap());

        let (a, _a_rx) = CameraHandle::detached("a");
        let (b, _b_rx) = CameraHandle::detached("b");
        registry.insert(b, info("b", CameraState::Offline));
        registry.insert(a, info("a", CameraState::Starting));
        assert!(list.has_changed().unwrap());
        let ids: Vec<String> = list.borrow_and_update().iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, ["a", "b"], "listed in id order, whatever the insertion order");

        registry.update(info("a", CameraState::Streaming));
        assert!(list.has_changed().unwrap());
        assert_eq!(list.borrow_and_update()[0].state, CameraState::Streaming);

        // An identical update is no change: pages are not sent the same list again.
        registry.update(info("a", CameraState::Streaming));
        assert!(!list.has_changed().unwrap());

        // An update for a camera that is gone does not bring it back.
        assert!(registry.remove("b").is_some());
        registry.update(info("b", CameraState::Streaming));
        assert_eq!(registry.infos().len(), 1);
        assert!(registry.handle("b").is_none());
    }

    #[test]
    fn handles_reach_their_camera() {
        let registry = Registry::new();
        let (a, mut a_rx) = CameraHandle::detached("a");
        registry.insert(a, info("a", CameraState::Streaming));
        let handle = registry.handle("a").expect("registered");
        assert!(handle.try_send(Command::Leave { conn: 7 }));
        assert!(matches!(a_rx.try_recv(), Ok(Command::Leave { conn: 7 })));
        assert_eq!(registry.handles().len(), 1);
        assert!(registry.handle("nope").is_none());
    }
}
