//! Setting a damaged chunk aside: its stored bytes kept as `quarantine/<id>` (the evidence),
//! and its name taken away (or replaced by a sound copy), so no later run reuses it as it is.
//!
//! Locally the quarantined copy is a second link to the chunk's file. In a repository on a
//! backend it is a copy of the stored bytes under `.wqm-chunks/quarantine/<id>`; a loose chunk's
//! object is then removed, and a packed chunk's entry dropped from its pack's index object (a
//! pack is never rewritten; its bytes become garbage that the next collection repacks). The
//! index object is written again, not removed: a pack without one is rebuilt from the copy of
//! its index at its end, which still names the damaged chunk.

use std::fs;
use std::io::{self, Read};

use super::import::object_name;
use super::pack;
use super::{ChunkId, ChunkStore, QUARANTINE_DIR, STORE_DIR};
use crate::fs::create_private_dir_all;
use crate::store::{sync_dir, Remote};

impl ChunkStore {
    /// Keeps the damaged chunk `id` of this local store as `quarantine/<id>` (a second link to
    /// it); its name in `chunks/` stays until a new copy is renamed over it. One copy is enough
    /// evidence: a chunk already there is left as it is.
    pub(super) fn quarantine(&self, id: &ChunkId) -> io::Result<()> {
        let dir = self.root.join(QUARANTINE_DIR);
        create_private_dir_all(&dir)?;
        match fs::hard_link(self.root.join(id.rel()), dir.join(id.to_string())) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }?;
        sync_dir(&dir)
    }

    /// Moves the damaged chunk `id` into `quarantine/` and takes its name away, so the next run
    /// that needs it finds it missing and stores it again. For a chunk a run stored and its
    /// verification found damaged (the run failed, and a later run, which compares only its
    /// share of the chunks it reuses, might otherwise name it as it is), and for a chunk a
    /// create to a repository on a backend found damaged there (it sends a new copy).
    pub fn set_aside(&self, id: &ChunkId) -> io::Result<()> {
        if let Some(remote) = self.network() {
            return self.set_aside_in(remote, id);
        }
        self.quarantine(id)?;
        let target = self.root.join(id.rel());
        fs::remove_file(&target)?;
        sync_dir(crate::fs::parent_dir(&target))
    }

    /// `set_aside` in a repository on a backend: the stored bytes copied to the quarantine
    /// first, then the name taken away. A chunk in two packs loses the copy it is read from.
    fn set_aside_in(&self, remote: &Remote, id: &ChunkId) -> io::Result<()> {
        let kept = format!("{STORE_DIR}/{QUARANTINE_DIR}/{id}");
        match self.locate(id) {
            Some(found) => {
                let stored =
                    remote.read_range(&pack::pack_object(&found.pack), found.entry.range())?;
                remote.put(&kept, stored)?;
                let largest = self.params.max_size;
                pack::drop_from_index(remote, self.seal.as_ref(), &found.pack, id, largest)?;
            }
            None => {
                let object = object_name(id);
                let mut stored = Vec::new();
                remote
                    .open(&object)?
                    .take(self.stored_bound(self.params.max_size) + 1)
                    .read_to_end(&mut stored)?;
                remote.put(&kept, stored)?;
                remote.remove(&object)?;
            }
        }
        // What this run loaded of the indexes still names it.
        pack::Packs::forget(remote);
        Ok(())
    }
}
