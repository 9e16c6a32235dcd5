//! What a run keeps of the repositories it reads, by repository (its backend's `describe`):
//! read once, then used by every file and backup of the run.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Values by repository, shared by the run's threads.
pub(super) struct ByRepository<V>(Mutex<BTreeMap<String, V>>);

impl<V: Clone> ByRepository<V> {
    pub(super) const fn new() -> Self {
        ByRepository(Mutex::new(BTreeMap::new()))
    }

    pub(super) fn get(&self, key: &str) -> Option<V> {
        self.map().get(key).cloned()
    }

    pub(super) fn insert(&self, key: String, value: V) {
        self.map().insert(key, value);
    }

    pub(super) fn remove(&self, key: &str) {
        self.map().remove(key);
    }

    /// A thread that panicked holding it left a whole map: each change is one call.
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, V>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
