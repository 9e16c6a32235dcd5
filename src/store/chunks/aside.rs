//! Setting a damaged chunk aside: its stored bytes kept as `.wqm-chunks/quarantine/<id>` (the
//! evidence), then its name taken away, so no later run reuses it as it is and the next that
//! needs it stores it again (a run that found it damaged with the data in hand does so at once).
//!
//! One path for every store, through its repository: a loose chunk is copied to the quarantine
//! (a second link to the file locally, a copy on the server on S3) and its object removed; a
//! packed chunk's bytes are copied out of its pack and a marker written beside it
//! (`pack::aside_object`), which leaves its entry out of every index loaded from then on (a
//! pack is never rewritten, nor its index: its bytes become garbage that the next collection
//! repacks, and the marker goes with the pack).

use std::io;

use super::import::object_name;
use super::pack;
use super::{ChunkId, ChunkStore, QUARANTINE_DIR, STORE_DIR};

impl ChunkStore {
    /// Moves the damaged chunk `id` into the quarantine and takes its name away. For a chunk a
    /// run found damaged when it compared it with its data (it then stores it again), and for
    /// one a run stored and its verification found damaged (the run failed, and a later run,
    /// which compares only its share of the chunks it reuses, might otherwise name it as it is).
    /// Killed in between, the chunk is missing rather than damaged: the next run that needs it
    /// stores it. One copy in the quarantine is enough: a later one replaces it.
    pub fn set_aside(&self, id: &ChunkId) -> io::Result<()> {
        let kept = format!("{STORE_DIR}/{QUARANTINE_DIR}/{id}");
        let repository = &self.repository;
        match self.locate(id) {
            Some(found) => {
                let pack = pack::pack_object(&found.pack);
                repository.put(&kept, repository.read_range(&pack, found.entry.range())?)?;
                repository.put(&pack::aside_object(&found.pack, id), Vec::new())?;
                // What this run loaded of the indexes still names it.
                pack::Packs::forget(repository);
            }
            None => {
                let object = object_name(id);
                repository.copy(&object, &kept)?;
                repository.remove(&object)?;
            }
        }
        Ok(())
    }
}
