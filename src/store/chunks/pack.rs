//! Pack files: the chunks of a store on S3 sent as a few large objects instead of one object
//! each (docs/performance.md, "Object count": a request per 64 KiB chunk is the cost of S3).
//!
//! A store whose `store.json` requires `packs` (every store wqm makes on a backend) keeps its
//! chunks in packs: `.wqm-chunks/packs/ab/<id>`, the stored bytes of chunks (each exactly as a
//! loose chunk is stored: compressed, and sealed with its name as identity in an encrypted
//! repository) back to back, about `PACK_TARGET` bytes, in the order a run sent them. Each pack
//! has an index object, `.wqm-chunks/index/<id>`: which chunk is where (`encode_index`), sealed
//! in an encrypted repository with the pack's id as identity, so that no index can stand in for
//! another's. A pack is written first, its index second, the backup naming its chunks last: a
//! pack without an index is a dead run's, and goes at the next garbage collection.
//!
//! A chunk in two packs (two runs sent it side by side, or a repack was killed before the old
//! index went) is read from the first by pack id; the garbage collection counts the other copy
//! as garbage. A chunk found damaged in a pack is set aside (`aside.rs`) with a marker object,
//! `.wqm-chunks/aside/<pack>/<chunk>`: no index is written again (two runs setting chunks of
//! one pack aside at once would each write back what the other dropped), and a loaded index
//! leaves a marked entry out, so its bytes are garbage and another copy is read. The marker goes
//! with its pack. A store without `packs` (made before them) keeps its loose chunks, read as
//! ever.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::by_repository::ByRepository;
use super::tasks::Tasks;
use super::{ChunkId, STORE_DIR};
use crate::backend::{Backend, Name, ObjectInfo};
use crate::crypto::Identity;
use crate::store::seal::Seal;
use crate::store::Remote;

/// The store feature: chunks are in pack files (an older wqm refuses such a store).
pub const PACKS: &str = "packs";
const PACKS_DIR: &str = "packs";
const INDEX_DIR: &str = "index";
const ASIDE_DIR: &str = "aside";
/// A pack is sent once it holds this many stored bytes (and at the end of each backup): large
/// enough that requests stop mattering (4 MiB objects read fastest of all sizes measured,
/// docs/performance.md), small enough that the two sent at once (each perhaps copied once more
/// on its way) and the one filling stay far under the 64 MB a run may use (8 MiB packs peaked
/// at 64 MiB).
pub(super) const PACK_TARGET: usize = 4 << 20;
/// Packs sent at once by one run.
const SENDING: usize = 2;
/// The first line of every index object.
const INDEX_HEADER: &str = "wqm-pack-index 1";
/// The most bytes an index object is read in: a full pack of the smallest chunks a store cuts.
const MAX_INDEX_BYTES: u64 = 16 << 20;
/// Index objects read at once when a store is opened: from a local directory, and from a
/// backend, where each read is a round trip (39 indexes 8 at a time were 5 round trips in a
/// row before a restore's first byte).
const READERS: usize = 8;
const NETWORK_READERS: usize = 32;
/// How many index objects a load reads before it adds their entries and reads on.
const LOAD_BATCH: usize = 256;
/// The fewest bytes an index line takes (`<64 hex> 0 1 0` and its newline); a sealed index
/// is larger than its text.
const MIN_LINE: u64 = 71;

/// A pack's id: 32 random hex digits.
fn is_pack_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The object of pack `pack`.
pub fn pack_object(pack: &str) -> String {
    format!("{STORE_DIR}/{PACKS_DIR}/{}/{pack}", &pack[..2])
}

/// The index object of pack `pack`.
pub fn index_object(pack: &str) -> String {
    format!("{STORE_DIR}/{INDEX_DIR}/{pack}")
}

/// The marker that chunk `id` of pack `pack` is set aside (found damaged there).
pub fn aside_object(pack: &str, id: &ChunkId) -> String {
    format!("{STORE_DIR}/{ASIDE_DIR}/{pack}/{id}")
}

fn aside_prefix() -> String {
    format!("{STORE_DIR}/{ASIDE_DIR}/")
}

/// The set-aside markers in the listing of the store's `aside/`: the chunks marked in each
/// pack (a marker whose name is not one wqm writes is ignored).
fn aside_markers_in(listed: Vec<ObjectInfo>) -> BTreeMap<String, Vec<ChunkId>> {
    let prefix = aside_prefix();
    let mut marked: BTreeMap<String, Vec<ChunkId>> = BTreeMap::new();
    for object in listed {
        let rest = object.name.strip_prefix(&prefix).unwrap_or_default();
        let Some((pack, id)) = rest.split_once('/') else {
            continue;
        };
        if let (true, Some(id)) = (is_pack_id(pack), ChunkId::parse(id)) {
            marked.entry(pack.to_string()).or_default().push(id);
        }
    }
    marked
}

/// The pack a pack object's name names (`pack_object`'s inverse).
fn pack_of_object(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(&format!("{STORE_DIR}/{PACKS_DIR}/"))?;
    let (fan, pack) = rest.split_once('/')?;
    (is_pack_id(pack) && fan == &pack[..2]).then_some(pack)
}

/// The packs of `remote`'s store that have an index object, by id.
pub(super) fn indexed_packs(remote: &Remote) -> io::Result<Vec<String>> {
    Ok(indexed_in(&remote.list(&index_prefix())?).0)
}

fn index_prefix() -> String {
    format!("{STORE_DIR}/{INDEX_DIR}/")
}

/// The packs with an index object in the listing of the store's `index/`, by id, and how many
/// bytes their index objects hold together.
fn indexed_in(listed: &[ObjectInfo]) -> (Vec<String>, u64) {
    let mut bytes = 0;
    let mut packs: Vec<String> = listed
        .iter()
        .filter_map(|o| {
            let pack = pack_of_index(&o.name)?;
            bytes += o.size;
            Some(pack.to_string())
        })
        .collect();
    packs.sort();
    (packs, bytes)
}

/// The pack an index object's name names (`index_object`'s inverse).
fn pack_of_index(name: &str) -> Option<&str> {
    let pack = name.strip_prefix(&format!("{STORE_DIR}/{INDEX_DIR}/"))?;
    is_pack_id(pack).then_some(pack)
}

/// What an index object of `pack` is bound to in an encrypted repository.
fn index_identity(pack: &str) -> Identity {
    Identity::new("pack-index", [pack])
}

/// One chunk in a pack: where its stored bytes are, and its content's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: ChunkId,
    /// Where it begins in its pack (a pack is a few MiB: an index naming a place past 4 GiB
    /// is damaged).
    pub offset: u32,
    pub stored: u32,
    pub len: u32,
}

impl Entry {
    pub fn range(&self) -> Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.stored)
    }
}

/// An index object's text: the header, then `<chunk> <offset> <stored length> <length>` per
/// chunk, by offset.
pub fn encode_index(entries: &[Entry]) -> String {
    let mut text = format!("{INDEX_HEADER}\n");
    for e in entries {
        text.push_str(&format!("{} {} {} {}\n", e.id, e.offset, e.stored, e.len));
    }
    text
}

/// An index object's text, checked: the header, each line, the chunks by offset without
/// overlapping, none longer than `largest` bytes of content.
pub fn parse_index(text: &str, largest: usize) -> Result<Vec<Entry>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_HEADER) {
        return Err(format!("it does not begin with `{INDEX_HEADER}`"));
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (n, line) in lines.enumerate() {
        let bad = || format!("line {} is not `<chunk> <offset> <stored> <length>`", n + 2);
        let mut parts = line.split(' ');
        let id = parts.next().and_then(ChunkId::parse).ok_or_else(bad)?;
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (offset, stored, len) = (number(), number(), number());
        let (Some(offset), Some(stored), Some(len)) = (offset, stored, len) else {
            return Err(bad());
        };
        if parts.next().is_some() || stored == 0 || len as usize > largest {
            return Err(bad());
        }
        // Past 4 GiB, far beyond any pack: damage.
        let offset = u32::try_from(offset).map_err(|_| bad())?;
        let stored = u32::try_from(stored).map_err(|_| bad())?;
        let len = u32::try_from(len).map_err(|_| bad())?;
        if entries
            .last()
            .is_some_and(|last| last.range().end > u64::from(offset))
        {
            return Err(format!("line {} overlaps the chunk before it", n + 2));
        }
        entries.push(Entry {
            id,
            offset,
            stored,
            len,
        });
    }
    Ok(entries)
}

/// Where a chunk is: in which pack (its id) and at which bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: Arc<str>,
    pub entry: Entry,
}

/// Every pack of a store on a backend and the chunks in each, as listed and read once.
#[derive(Debug, Default)]
pub struct PackIndex {
    /// Each pack with an index, by id: its size as listed (`None`: its object is missing).
    pub packs: BTreeMap<Arc<str>, Option<u64>>,
    /// Packs listed without an index (a dead run's, or one still being sent), with their sizes.
    pub unindexed: BTreeMap<String, u64>,
    /// The chunks set aside in each pack (their entries left out below), as marked.
    pub aside: BTreeMap<String, Vec<ChunkId>>,
    /// The packs with an index, by id: a pack's number in `entries`.
    names: Vec<Arc<str>>,
    /// Every chunk's pack (its number in `names`) and place there, sorted by chunk and then
    /// pack: the first of a chunk is where it is read from. 48 bytes a chunk.
    entries: Vec<(u32, Entry)>,
}

impl PackIndex {
    /// Lists the packs and index objects of `remote`'s store and reads every index (`READERS`
    /// at a time). A damaged index is an error: nothing may be judged garbage without it.
    fn load(remote: &Remote, largest: usize) -> io::Result<Self> {
        let mut index = PackIndex::default();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let [packs, indexes, aside] = remote.list_each([
            &format!("{STORE_DIR}/{PACKS_DIR}/"),
            &index_prefix(),
            &aside_prefix(),
        ])?;
        for object in packs {
            if let Some(pack) = pack_of_object(&object.name) {
                sizes.insert(pack.to_string(), object.size);
            }
        }
        let (indexed, index_bytes) = indexed_in(&indexes);
        index.aside = aside_markers_in(aside);
        let none = Vec::new();
        // Room for every entry at once (each takes at least `MIN_LINE` bytes of its index): no
        // growing by doubling, which at a million chunks held twice the memory.
        index
            .entries
            .reserve_exact(usize::try_from(index_bytes / MIN_LINE).unwrap_or(0));
        let seal = remote.seal();
        let readers = match remote.is_local() {
            true => READERS,
            false => NETWORK_READERS,
        };
        // A batch of indexes read at a time, so that their parsed copies never all live at once.
        for (batch, packs) in indexed.chunks(LOAD_BATCH).enumerate() {
            let read = crate::parallel::map_in_order(packs, readers, |pack| {
                read_index(remote, seal.as_ref(), pack, largest)
            });
            for (i, (pack, entries)) in packs.iter().zip(read).enumerate() {
                let pack: Arc<str> = Arc::from(pack.as_str());
                let number = u32::try_from(batch * LOAD_BATCH + i).map_err(io::Error::other)?;
                let entries = entries?;
                let aside = index.aside.get(&*pack).unwrap_or(&none);
                index.packs.insert(pack.clone(), sizes.remove(&*pack));
                index.names.push(pack);
                index.entries.extend(
                    entries
                        .into_iter()
                        .filter(|e| !aside.contains(&e.id))
                        .map(|e| (number, e)),
                );
            }
        }
        index.unindexed = sizes.into_iter().collect();
        // By chunk, then by pack number, which is by pack id (`indexed` is sorted).
        index
            .entries
            .sort_unstable_by_key(|(pack, entry)| (entry.id, *pack));
        Ok(index)
    }

    /// Where chunk `id` is read from.
    pub fn locate(&self, id: &ChunkId) -> Option<Location> {
        let first = self.entries.partition_point(|(_, e)| e.id < *id);
        let (pack, entry) = self.entries.get(first)?;
        (entry.id == *id).then(|| Location {
            pack: self.names[*pack as usize].clone(),
            entry: *entry,
        })
    }

    /// Every chunk the indexes name (a chunk in two packs twice).
    pub fn chunk_ids(&self) -> impl Iterator<Item = ChunkId> + '_ {
        self.entries.iter().map(|(_, entry)| entry.id)
    }

    /// Each pack with an index (by id, one at a time) and its entries, and for each whether it
    /// is where its chunk is read from (a later copy in another pack is not). Held meanwhile:
    /// 4 bytes an entry, not a copy of them (a year's store has a million).
    pub fn by_pack(&self) -> impl Iterator<Item = (Arc<str>, Vec<(Entry, bool)>)> + '_ {
        let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (self.entries[i as usize].0, i));
        let mut at = 0;
        (0..self.names.len()).map(move |number| {
            let mut entries = Vec::new();
            while let Some(&i) = order.get(at) {
                let (pack, entry) = &self.entries[i as usize];
                if *pack as usize != number {
                    break;
                }
                let i = i as usize;
                let first = i == 0 || self.entries[i - 1].1.id != entry.id;
                entries.push((*entry, first));
                at += 1;
            }
            (self.names[number].clone(), entries)
        })
    }
}

/// The entries of pack `pack`'s index object: read (no more than `MAX_INDEX_BYTES`), opened
/// with `seal` in an encrypted repository, parsed.
fn read_index(
    remote: &Remote,
    seal: Option<&Seal>,
    pack: &str,
    largest: usize,
) -> io::Result<Vec<Entry>> {
    let rel = index_object(pack);
    let damaged = |reason: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the pack index `{rel}` is damaged: {reason}"),
        )
    };
    let mut bytes = Vec::new();
    remote
        .open(&rel)?
        .take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(damaged(format!("larger than {MAX_INDEX_BYTES} bytes")));
    }
    decode_index(seal, pack, bytes, largest).map_err(damaged)
}

/// The entries of pack `pack`'s index as stored (its object, or the copy at the pack's end):
/// opened with `seal` in an encrypted repository, parsed; `Err` says why not.
fn decode_index(
    seal: Option<&Seal>,
    pack: &str,
    stored: Vec<u8>,
    largest: usize,
) -> Result<Vec<Entry>, String> {
    let text = match seal {
        Some(seal) => seal
            .open(&index_identity(pack), &stored)
            .map_err(|e| e.to_string())?,
        None => stored,
    };
    let text = String::from_utf8(text).map_err(|_| "not text".to_string())?;
    parse_index(&text, largest)
}

/// The loaded indexes of the stores this run read, by repository: a run opens its store once
/// per file it reads, and the indexes are read once.
static LOADED: ByRepository<Arc<PackIndex>> = ByRepository::new();

/// The chunks of the packs this run wrote (pack and index saved), by repository: found by its
/// own lookups and its verification without reading every index again, nor copying the loaded
/// ones (a year's store holds a million entries).
static WRITTEN: Mutex<BTreeMap<String, HashMap<ChunkId, Location>>> = Mutex::new(BTreeMap::new());

/// Notes that pack `pack` of the repository `key` (its backend's `describe`) holds `entries`.
pub(super) fn note_written(key: String, pack: &str, entries: &[Entry]) {
    let pack: Arc<str> = Arc::from(pack);
    let mut written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    let found = written.entry(key).or_default();
    for entry in entries {
        found.entry(entry.id).or_insert_with(|| Location {
            pack: pack.clone(),
            entry: *entry,
        });
    }
}

/// Where chunk `id` is in a pack this run wrote into the repository `key`.
fn locate_written(key: &str, id: &ChunkId) -> Option<Location> {
    let written = WRITTEN.lock().unwrap_or_else(|e| e.into_inner());
    written.get(key)?.get(id).cloned()
}

/// A packed store's indexes as a reader uses them: loaded once per run, loaded again when a
/// chunk is not found (a backup committed after they were read).
#[derive(Debug)]
pub struct Packs {
    remote: Remote,
    /// The repository's key in `LOADED` and `WRITTEN` (its backend's `describe`), made once:
    /// a writer looks up every new chunk.
    key: String,
    largest: usize,
    current: Mutex<Arc<PackIndex>>,
    /// Whether a chunk found in no index makes the indexes be read again (a reader's); a
    /// writer's misses are its new chunks, and a chunk another run packed meanwhile is at worst
    /// stored twice (the garbage collection removes the second copy).
    reloads: bool,
}

impl Packs {
    /// The indexes of `remote`'s store (this run's copy when it read them before).
    pub fn open(remote: &Remote, largest: usize) -> io::Result<Self> {
        let key = remote.backend().describe();
        let current = match LOADED.get(&key) {
            Some(index) => index,
            None => Self::reload(remote, largest)?,
        };
        Ok(Packs {
            remote: remote.clone(),
            key,
            largest,
            current: Mutex::new(current),
            reloads: true,
        })
    }

    /// These indexes as a writer uses them: a chunk found in none is not looked for again.
    pub fn for_writing(self) -> Self {
        Packs {
            reloads: false,
            ..self
        }
    }

    /// The indexes as last read.
    pub fn index(&self) -> Arc<PackIndex> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets what this run read of `remote`'s indexes: the next `open` reads them afresh.
    pub fn forget(remote: &Remote) {
        let key = remote.backend().describe();
        LOADED.remove(&key);
        WRITTEN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    fn reload(remote: &Remote, largest: usize) -> io::Result<Arc<PackIndex>> {
        let index = Arc::new(PackIndex::load(remote, largest)?);
        LOADED.insert(remote.backend().describe(), index.clone());
        Ok(index)
    }

    /// Where chunk `id` is; the indexes read again once when it is in none of them.
    pub fn locate(&self, id: &ChunkId) -> Option<Location> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(found) = current.locate(id) {
            return Some(found);
        }
        if let Some(found) = locate_written(&self.key, id) {
            return Some(found);
        }
        if !self.reloads {
            return None;
        }
        if indexed_packs(&self.remote)
            .ok()?
            .iter()
            .all(|pack| current.packs.contains_key(pack.as_str()))
        {
            return None;
        }
        let reloaded = Self::reload(&self.remote, self.largest).ok()?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = reloaded.clone();
        reloaded.locate(id)
    }
}

/// Chunks on their way into packs: appended as they come, a pack sent (then its index) each
/// time one reaches `PACK_TARGET`, `SENDING` at a time, and the rest by `finish`. Memory: the
/// pack filling and those being sent. A chunk added twice is packed once.
pub struct Packer {
    backend: Arc<dyn Backend>,
    seal: Option<Seal>,
    filling: tokio::sync::Mutex<Filling>,
    permits: Arc<Semaphore>,
    /// The packs on their way; each gives the bytes it sent beyond its chunks'.
    sending: Tasks<u64>,
    /// The buffers of packs sent, for the next ones.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[derive(Default)]
struct Filling {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Every chunk packed by this packer.
    added: HashSet<ChunkId>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packer({})", self.backend.describe())
    }
}

impl Packer {
    /// Packs for the store on `backend`, indexes sealed with `seal` in an encrypted repository.
    pub fn new(backend: Arc<dyn Backend>, seal: Option<Seal>) -> Self {
        Packer {
            backend,
            seal,
            filling: tokio::sync::Mutex::new(Filling::default()),
            permits: Arc::new(Semaphore::new(SENDING)),
            sending: Tasks::new(),
            spare: Arc::default(),
        }
    }

    /// Adds chunk `id` (`len` bytes of content) from its stored bytes, checked by the caller;
    /// false when this packer had it already. A full pack is sent on a task of its own, once
    /// fewer than `SENDING` are on their way: until then every adder waits. A pack that failed
    /// to go stops the run here.
    pub async fn add(&self, id: ChunkId, len: usize, stored: &[u8]) -> io::Result<bool> {
        let mut filling = self.filling.lock().await;
        self.sending.check()?;
        if !filling.added.insert(id) {
            return Ok(false);
        }
        let entry = Entry {
            id,
            offset: u32::try_from(filling.bytes.len()).map_err(io::Error::other)?,
            stored: u32::try_from(stored.len()).map_err(io::Error::other)?,
            len: u32::try_from(len).map_err(io::Error::other)?,
        };
        if filling.bytes.capacity() == 0 {
            // A pack sent before leaves its buffer; else one made once, not doubled as it grows.
            let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            filling.bytes = spare.unwrap_or_default();
            filling
                .bytes
                .reserve_exact(PACK_TARGET + 2 * stored.len().max(1 << 18));
        }
        filling.bytes.extend_from_slice(stored);
        filling.entries.push(entry);
        if filling.bytes.len() >= PACK_TARGET {
            self.send(&mut filling).await?;
        }
        Ok(true)
    }

    /// Sends the pack filling (when it holds anything), holding the lock on it: the adders wait
    /// for a sending slot too.
    async fn send(&self, filling: &mut Filling) -> io::Result<()> {
        if filling.entries.is_empty() {
            return Ok(());
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        let mut bytes = std::mem::take(&mut filling.bytes);
        let entries = std::mem::take(&mut filling.entries);
        let pack = crate::backend::random_id();
        let index = index_bytes(self.seal.as_ref(), &pack, &entries)?;
        write_trailer(&mut bytes, &index)?;
        let backend = self.backend.clone();
        let spare = self.spare.clone();
        let sending = async move {
            let _permit = permit;
            let bytes = Bytes::from(bytes);
            let overhead = bytes_beyond_chunks(&index);
            let sent = save_pack(&*backend, &pack, bytes.clone(), index).await;
            // Its buffer, once no request holds it, fills the next pack (a new one for each
            // pack leaves freed ones behind in the threads' allocator arenas: RSS).
            if let Ok(buffer) = bytes.try_into_mut() {
                let mut buffer = Vec::from(buffer);
                buffer.clear();
                spare.lock().unwrap_or_else(|e| e.into_inner()).push(buffer);
            }
            sent.map(|()| overhead).map_err(|e| e.to_string())
        };
        self.sending
            .spawn(sending, &tokio::runtime::Handle::current());
        Ok(())
    }

    /// Sends what is left and waits for every pack; the bytes sent beyond the chunks' own (the
    /// indexes and the trailers), or the first failure.
    pub async fn finish(&self) -> io::Result<u64> {
        {
            let mut filling = self.filling.lock().await;
            self.send(&mut filling).await?;
        }
        Ok(self.sending.finish().await?.into_iter().sum())
    }
}

/// Writes pack `pack` (`bytes`: its chunks and its trailer), then its index object (`index`).
async fn save_pack(
    backend: &dyn Backend,
    pack: &str,
    bytes: Bytes,
    index: Vec<u8>,
) -> io::Result<()> {
    put(backend, pack_object(pack), bytes).await?;
    crate::failpoint::hit("pack:before-index").map_err(io::Error::other)?;
    save_index(backend, pack, index).await
}

/// Writes the index object of pack `pack` (`index`: as `index_bytes` made it).
pub(super) async fn save_index(
    backend: &dyn Backend,
    pack: &str,
    index: Vec<u8>,
) -> io::Result<()> {
    put(backend, index_object(pack), Bytes::from(index)).await
}

/// Writes `bytes` as the object `object` of the store.
async fn put(backend: &dyn Backend, object: String, bytes: Bytes) -> io::Result<()> {
    let name = Name::new(object.clone()).map_err(io::Error::other)?;
    backend
        .save(&name, crate::backend::once(bytes))
        .await
        .map_err(|e| io::Error::other(format!("cannot send `{object}`: {e}")))?;
    Ok(())
}

/// The index of pack `pack` listing `entries`, as stored: its text, sealed in an encrypted
/// repository with the pack's id as identity.
pub(super) fn index_bytes(
    seal: Option<&Seal>,
    pack: &str,
    entries: &[Entry],
) -> io::Result<Vec<u8>> {
    let text = encode_index(entries).into_bytes();
    match seal {
        Some(seal) => seal.seal(&index_identity(pack), &text),
        None => Ok(text),
    }
}

/// The last bytes of every pack: its index's length (8 bytes, little-endian), then this.
const TRAILER_MAGIC: &[u8; 8] = b"wqmpack1";
/// The length and the magic.
const TRAILER_END: u64 = 16;

/// What a pack and its index object hold beyond the pack's chunks, `index` being the index as
/// stored: the index twice (its object, the copy at the pack's end) and the trailer's end.
pub(super) fn bytes_beyond_chunks(index: &[u8]) -> u64 {
    2 * index.len() as u64 + TRAILER_END
}

/// Appends to a pack's chunks its index (as stored) and the trailer's end: a pack whose index
/// object is lost still says what it holds (`read_trailer`).
pub(super) fn write_trailer(pack: &mut impl std::io::Write, index: &[u8]) -> io::Result<()> {
    pack.write_all(index)?;
    pack.write_all(&(index.len() as u64).to_le_bytes())?;
    pack.write_all(TRAILER_MAGIC)
}

/// The index a pack carries at its end (`write_trailer`), as stored (sealed in an encrypted
/// repository), and its entries, checked to lie before it. `size` is the pack's listed size.
pub(super) fn read_trailer(
    remote: &Remote,
    pack: &str,
    size: u64,
    largest: usize,
) -> io::Result<(Vec<u8>, Vec<Entry>)> {
    let rel = pack_object(pack);
    let damaged = |reason: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the index at the end of `{rel}` {reason}"),
        )
    };
    let end = size
        .checked_sub(TRAILER_END)
        .ok_or_else(|| damaged("is missing: the pack is too short"))?;
    let tail = remote.read_range(&rel, end..size)?;
    if tail.len() as u64 != TRAILER_END || &tail[8..] != TRAILER_MAGIC {
        return Err(damaged("is missing"));
    }
    let len = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
    let start = end
        .checked_sub(len)
        .filter(|_| len <= MAX_INDEX_BYTES)
        .ok_or_else(|| damaged("has a length the pack cannot hold"))?;
    let stored = remote.read_range(&rel, start..end)?;
    let entries = decode_index(remote.seal().as_ref(), pack, stored.clone(), largest)
        .map_err(|e| damaged(&format!("is damaged: {e}")))?;
    if entries.last().is_some_and(|e| e.range().end > start) {
        return Err(damaged("names chunks past the pack's chunks"));
    }
    Ok((stored, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: &[u8], offset: u32, stored: u32) -> Entry {
        Entry {
            id: ChunkId::of(content),
            offset,
            stored,
            len: content.len() as u32,
        }
    }

    #[test]
    fn an_index_reads_back_and_a_damaged_one_is_refused() {
        let entries = vec![entry(b"a", 0, 10), entry(b"b", 10, 5), entry(b"c", 20, 7)];
        let text = encode_index(&entries);
        assert_eq!(parse_index(&text, 1024).unwrap(), entries);
        let overlapping = vec![entry(b"a", 0, 10), entry(b"b", 9, 5)];
        let said = parse_index(&encode_index(&overlapping), 1024).unwrap_err();
        assert!(said.contains("line 3 overlaps"), "{said}");
        assert!(parse_index("wqm-pack-index 2\n", 1024).is_err());
        let too_long = parse_index(&encode_index(&[entry(&[0; 2000], 0, 10)]), 1024);
        assert!(too_long.is_err());
        let cut = &text[..text.len() - 3];
        assert!(parse_index(cut, 1024).is_err(), "a line cut short");
        assert!(parse_index(&text.replace(" 10 5 ", " 10 0 "), 1024).is_err());
        let past_the_end = format!(
            "{INDEX_HEADER}\n{} {} 10 1\n",
            ChunkId::of(b"a"),
            u64::MAX - 5
        );
        assert!(parse_index(&past_the_end, 1024).is_err());
        // A pack is a few MiB: a place past 4 GiB is damage, the last byte before it is not.
        for (offset, fits) in [
            (u64::from(u32::MAX) + 1, false),
            (u64::from(u32::MAX) - 10, true),
        ] {
            let text = format!("{INDEX_HEADER}\n{} {offset} 10 1\n", ChunkId::of(b"a"));
            assert_eq!(parse_index(&text, 1024).is_ok(), fits, "{offset}");
        }
    }

    #[test]
    fn pack_and_index_names_go_both_ways() {
        let pack = crate::backend::random_id();
        assert_eq!(pack_of_object(&pack_object(&pack)), Some(pack.as_str()));
        assert_eq!(pack_of_index(&index_object(&pack)), Some(pack.as_str()));
        assert_eq!(pack_of_object(&index_object(&pack)), None);
        assert_eq!(pack_of_object(".wqm-chunks/packs/zz/abc"), None);
        assert_eq!(pack_of_index(".wqm-chunks/index/ABC"), None);
    }
}
