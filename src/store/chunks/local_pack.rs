//! Packs written straight into a local store (`LocalPacker`): each new chunk appended to the
//! filling pack's temporary file as it comes, so no pack is held in memory, writeback started
//! every MiB; at `PACK_TARGET` bytes (and when the run finishes) the pack is closed where a
//! `Packer` sends one: the copy of its index and the trailer appended, fsynced, renamed to its
//! name, then its index object saved. The same format as on S3 (`pack.rs`). A killed run leaves
//! the temporary file, which the next prune removes (`LocalBackend::remove_unfinished_blocking`).

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Mutex;

use super::pack::{self, Entry, PACK_TARGET};
use super::ChunkId;
use crate::backend::local::{LocalBackend, Saving};
use crate::backend::{Backend, Name};
use crate::store::seal::Seal;

/// Writeback of a filling pack is started every this many bytes: closing it then waits for the
/// last MiB, not the whole pack.
const WRITEBACK_EVERY: u64 = 1 << 20;

/// A run's packs in a local store; safe from the threads of files written side by side.
pub struct LocalPacker {
    files: LocalBackend,
    seal: Option<Seal>,
    /// Whether the packs written are noted for the run's own lookups (`pack::note_written`).
    remembers: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    filling: Option<Filling>,
    /// Every chunk packed.
    added: HashSet<ChunkId>,
    /// Bytes written beyond the chunks' own (indexes and trailers) since `finish` last said.
    overhead: u64,
}

struct Filling {
    saving: Saving,
    entries: Vec<Entry>,
    written: u64,
    scheduled: u64,
}

impl std::fmt::Debug for LocalPacker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalPacker({})", self.files.describe())
    }
}

impl LocalPacker {
    /// Packs for the store in the directory `files`, indexes sealed with `seal` in an
    /// encrypted repository.
    pub fn new(files: LocalBackend, seal: Option<Seal>) -> Self {
        LocalPacker {
            files,
            seal,
            remembers: false,
            state: Mutex::default(),
        }
    }

    /// This packer, its packs noted for the run's own later lookups and its verification.
    pub fn remembering(self) -> Self {
        LocalPacker {
            remembers: true,
            ..self
        }
    }

    /// Adds chunk `id` (`len` bytes of content) from its stored bytes; false when this packer
    /// had it already. A pack that is full is closed here.
    pub fn add(&self, id: ChunkId, len: usize, stored: &[u8]) -> io::Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.added.contains(&id) {
            return Ok(false);
        }
        if state.filling.is_none() {
            state.filling = Some(Filling {
                saving: self.files.begin_save_blocking()?,
                entries: Vec::new(),
                written: 0,
                scheduled: 0,
            });
        }
        let filling = state.filling.as_mut().expect("a pack filling");
        filling.entries.push(Entry {
            id,
            offset: u32::try_from(filling.written).map_err(io::Error::other)?,
            stored: u32::try_from(stored.len()).map_err(io::Error::other)?,
            len: u32::try_from(len).map_err(io::Error::other)?,
        });
        filling.saving.file().write_all(stored)?;
        filling.written += stored.len() as u64;
        let (from, to) = (filling.scheduled, filling.written);
        if to - from >= WRITEBACK_EVERY {
            crate::store::sink::start_writeback(filling.saving.file(), from, to - from);
            filling.scheduled = to;
        }
        let full = filling.written >= PACK_TARGET as u64;
        state.added.insert(id);
        if full {
            let filling = state.filling.take().expect("a pack filling");
            state.overhead += self.close(filling)?;
        }
        Ok(true)
    }

    /// Closes the pack filling; the bytes written beyond the chunks since the last call (the
    /// indexes and the trailers).
    pub fn finish(&self) -> io::Result<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(filling) = state.filling.take() {
            state.overhead += self.close(filling)?;
        }
        Ok(std::mem::take(&mut state.overhead))
    }

    /// Names the pack `filling` (its index's copy and trailer appended, fsynced, renamed),
    /// then saves its index object; the bytes written beyond its chunks.
    fn close(&self, mut filling: Filling) -> io::Result<u64> {
        let pack = crate::backend::random_id();
        let index = pack::index_bytes(self.seal.as_ref(), &pack, &filling.entries)?;
        pack::write_trailer(filling.saving.file(), &index)?;
        filling
            .saving
            .commit(&Name::new(pack::pack_object(&pack)).map_err(io::Error::other)?)?;
        crate::failpoint::hit("pack:before-index")?;
        let name = Name::new(pack::index_object(&pack)).map_err(io::Error::other)?;
        self.files.save_blocking(&name, &index)?;
        if self.remembers {
            pack::note_written(self.files.describe(), &pack, &filling.entries);
        }
        Ok(pack::bytes_beyond_chunks(&index))
    }
}
