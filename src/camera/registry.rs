//! The live set of cameras: who can be messaged (handles) and what the pages are shown (infos).
//! Camera actors add themselves, update their own info and take themselves out when forgotten.
//! Readers get a `watch` snapshot, so a slow page never holds anything up. `Remembered` bounds how
//! many cards of unplugged devices are kept.

use std::collections::{BTreeMap, VecDeque};
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

    /// Removes the camera `handle` reaches, if the entry is still that camera's (after a forget, a
    /// device with the same id may already have a new actor and entry).
    pub fn forget(&self, handle: &CameraHandle) {
        let mut entries = self.lock();
        if entries.get(&handle.id).is_some_and(|e| e.handle.same_actor(handle)) {
            entries.remove(&handle.id);
            self.publish(&entries);
        }
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

/// Cards of unplugged devices kept at most, so a device that re-enumerates with a random serial (a
/// new id each time) cannot grow the list without end. Well above the cameras one board has ports
/// for, even behind hubs; the oldest unplugged is forgotten first.
pub const MAX_REMEMBERED_OFFLINE: usize = 32;

/// The unplugged devices' cameras in the order they went, oldest first (the supervisor's record).
#[derive(Debug, Default)]
pub struct Remembered {
    offline: VecDeque<String>,
}

impl Remembered {
    /// `id`'s device is gone; returns the cameras to forget now to stay within the bound.
    pub fn went_offline(&mut self, id: &str) -> Vec<String> {
        self.offline.retain(|o| o != id);
        self.offline.push_back(id.to_string());
        let over = self.offline.len().saturating_sub(MAX_REMEMBERED_OFFLINE);
        self.offline.drain(..over).collect()
    }

    /// `id`'s device is back, or its camera was forgotten: it no longer counts.
    pub fn drop_id(&mut self, id: &str) {
        self.offline.retain(|o| o != id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.offline.len()
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
            forgettable: false,
        }
    }

    #[test]
    fn cameras_come_and_go_and_readers_see_each_change() {
        let registry = Registry::new();
        let mut list = registry.subscribe();
        assert!(!list.has_changed().unwrap());

        let (a, _a_rx) = CameraHandle::detached("a");
        let (b, _b_rx) = CameraHandle::detached("b");
        registry.insert(b.clone(), info("b", CameraState::Offline));
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
        registry.forget(&b);
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

    #[test]
    fn forget_removes_only_the_entry_of_that_actor() {
        let registry = Registry::new();
        let (old, _old_rx) = CameraHandle::detached("a");
        registry.insert(old.clone(), info("a", CameraState::Offline));
        let (new, _new_rx) = CameraHandle::detached("a");
        registry.insert(new.clone(), info("a", CameraState::Streaming));
        registry.forget(&old);
        assert_eq!(
            registry.infos().len(),
            1,
            "a new actor under the same id keeps its card"
        );
        registry.forget(&new);
        assert!(registry.infos().is_empty() && registry.handle("a").is_none());
    }

    #[test]
    fn unplugged_cameras_are_bounded_and_the_oldest_goes_first() {
        let mut remembered = Remembered::default();
        for n in 0..MAX_REMEMBERED_OFFLINE {
            assert!(remembered.went_offline(&format!("cam{n}")).is_empty());
        }
        // Unplugged again: it moves to the back instead of counting twice.
        assert!(remembered.went_offline("cam0").is_empty());
        assert_eq!(remembered.len(), MAX_REMEMBERED_OFFLINE);
        assert_eq!(remembered.went_offline("random-serial-1"), ["cam1"]);
        remembered.drop_id("cam2");
        assert!(
            remembered.went_offline("random-serial-2").is_empty(),
            "cam2 came back: room for one"
        );
        assert_eq!(remembered.went_offline("random-serial-3"), ["cam3"]);
        assert_eq!(remembered.len(), MAX_REMEMBERED_OFFLINE);
    }
}
