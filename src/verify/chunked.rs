//! The chunk store an incremental backup names: every chunk its indexes name read and checked
//! once per run (`ChunkTally`).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{AuditError, Check, Report, Severity};
use crate::checksum::{Algorithm, Digests, HashingReader};
use crate::compress::Stored;
use crate::format::manifest::FileEntry;
use crate::progress::{self, Progress};
use crate::store::chunks::{
    self, ChunkBuffer, ChunkId, ChunkProblem, ChunkStore, IndexLine, IndexReader, Selection,
    SharedReader,
};
use crate::store::BackupDir;

/// The chunks a run has checked and what each showed (`None`: sound), so that `validate
/// --check-files` and `list --check` read each chunk once however many files and backups share
/// it; with a `Selection` (`--read-data-subset`) only the chunks it picks are read, and a
/// create's verification reads only the chunks it wrote (`only`): the others are looked up.
#[derive(Clone, Debug, Default)]
pub struct ChunkTally {
    checked: Arc<Mutex<HashMap<ChunkId, Option<ChunkProblem>>>>,
    pub(super) selection: Option<Selection>,
    only: Option<Arc<HashSet<ChunkId>>>,
    /// Chunks read, and chunks only looked up, by this run.
    read: Arc<AtomicU64>,
    looked_up: Arc<AtomicU64>,
}

impl ChunkTally {
    /// A tally that reads only `written` (the chunks a create stored) and looks the others up:
    /// they were in the store before the run, which compared its share of them with its data.
    pub fn reading_only(written: HashSet<ChunkId>) -> Self {
        ChunkTally {
            only: Some(Arc::new(written)),
            ..ChunkTally::default()
        }
    }

    /// Whether this run reads chunk `id` (rather than only looking it up).
    fn reads(&self, id: &ChunkId) -> bool {
        self.selection.as_ref().is_none_or(|s| s.reads(id))
            && self.only.as_ref().is_none_or(|only| only.contains(id))
    }

    /// A tally that reads only the chunks `selection` picks and looks the others up.
    pub fn reading(selection: Selection) -> Self {
        ChunkTally {
            selection: Some(selection),
            ..ChunkTally::default()
        }
    }

    /// How many chunks this run read, and how many it only looked up.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.looked_up.load(Ordering::Relaxed),
        )
    }

    /// Checks the chunks of `lines` this run has not checked yet, reading them on `threads`
    /// threads (decompressing and hashing is the work) or, those a selection leaves out, looking
    /// them up; returns how many it read and how many it looked up.
    fn read_new(&self, store: &Arc<ChunkStore>, lines: &[IndexLine], threads: usize) -> (u64, u64) {
        let (new, unread): (Vec<&IndexLine>, Vec<&IndexLine>) = {
            let known = self.checked.lock().expect("tally lock");
            let mut seen = HashSet::new();
            lines
                .iter()
                .filter(|l| !known.contains_key(&l.id) && seen.insert(l.id))
                .partition(|l| self.reads(&l.id))
        };
        let mut found = Self::read_all(store, &new, threads);
        let read = found.len() as u64;
        // A lookup on S3 is a request: side by side.
        let lookups = if store.is_remote() { IN_FLIGHT } else { 1 };
        found.extend(crate::parallel::map_in_order(&unread, lookups, |l| {
            let missing = store.stored_size(&l.id).is_none();
            (l.id, missing.then_some(ChunkProblem::Missing))
        }));
        self.read.fetch_add(read, Ordering::Relaxed);
        self.looked_up
            .fetch_add(unread.len() as u64, Ordering::Relaxed);
        self.checked.lock().expect("tally lock").extend(found);
        (read, unread.len() as u64)
    }

    /// `new`, each read and checked (decompressed and hashed) on `threads` threads: from a
    /// store on a backend fetched ahead in their order (few requests from a store of pack
    /// files), from a local one as each is taken.
    fn read_all(
        store: &Arc<ChunkStore>,
        new: &[&IndexLine],
        threads: usize,
    ) -> Vec<(ChunkId, Option<ChunkProblem>)> {
        let chunks = new.iter().map(|l| (l.id, l.len)).collect();
        let reader = SharedReader::new(store.clone(), chunks);
        let found = std::sync::Mutex::new(Vec::with_capacity(new.len()));
        std::thread::scope(|scope| {
            for _ in 0..threads.min(new.len()) {
                scope.spawn(|| {
                    let mut buffer = ChunkBuffer::default();
                    loop {
                        let (id, problem) = match reader.next_into(&mut buffer) {
                            Ok(None) => break,
                            Ok(Some((line, read))) => (line.id, read.err()),
                            // The index's own reading cannot fail: the lines are in memory.
                            Err(e) => unreachable!("a listed chunk: {e}"),
                        };
                        found.lock().expect("found lock").push((id, problem));
                    }
                });
            }
        });
        found.into_inner().expect("found lock")
    }

    /// The chunks this run read and found damaged (not those found missing).
    pub fn damaged(&self) -> Vec<ChunkId> {
        let checked = self.checked.lock().expect("tally lock");
        checked
            .iter()
            .filter(|(_, problem)| matches!(problem, Some(ChunkProblem::Damaged(_))))
            .map(|(id, _)| *id)
            .collect()
    }

    fn problem(&self, id: &ChunkId) -> Option<ChunkProblem> {
        self.checked
            .lock()
            .expect("tally lock")
            .get(id)
            .cloned()
            .flatten()
    }
}

/// Chunks checked at a time (on every core).
const CHECK_BATCH: usize = 64;
/// Requests kept in flight for a store on S3, whose reads wait on round trips more than on
/// the cores.
const IN_FLIGHT: usize = 8;

/// An incremental backup needs the chunk store beside it.
pub(super) fn check_chunk_store(report: &mut Report, backup: &BackupDir) -> Result<(), AuditError> {
    let chunked = backup
        .manifest
        .files
        .iter()
        .any(|f| f.compression == Stored::Chunked);
    if chunked {
        match backup.open_chunk_store() {
            Ok(_) => {}
            Err(e) if e.is_busy() => return Err(AuditError::StoreBusy(e)),
            Err(e) => report.add(Severity::Error, Check::Contents, None, e.to_string()),
        }
    }
    Ok(())
}

/// What reading a chunked file's chunks showed.
#[derive(Default)]
pub(super) struct ChunkReading {
    pub(super) chunks: u64,
    /// Chunks read now (the others were read earlier in this run).
    pub(super) read: u64,
    /// Chunks looked up now, not read (`--read-data-subset` left them for another run).
    pub(super) looked_up: u64,
    /// The chunks' lengths added up.
    pub(super) content_size: u64,
    pub(super) bad: Vec<(ChunkId, ChunkProblem)>,
}

/// Reads a chunked file's index (returning its digests as stored) and each chunk it names
/// that this run has not read yet.
pub(super) fn read_chunks(
    backup: &BackupDir,
    entry: &FileEntry,
    algorithm: Algorithm,
    tally: &ChunkTally,
    progress: &dyn Progress,
) -> io::Result<(Digests, ChunkReading)> {
    let store: Arc<ChunkStore> = backup.chunk_store()?;
    let mut stored = HashingReader::new(backup.open_entry(entry)?, &[algorithm]);
    let mut index = IndexReader::new(BufReader::new(&mut stored))?;
    let mut reading = ChunkReading::default();
    let meter = progress.transfer(&entry.path, Some(entry.content_size));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if store.is_remote() {
        cores.max(IN_FLIGHT)
    } else {
        cores
    };
    let mut batch = Vec::with_capacity(CHECK_BATCH);
    let result = (|| loop {
        batch.clear();
        while batch.len() < CHECK_BATCH {
            match index.next_line()? {
                Some(line) => batch.push(line),
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        if progress::is_interrupted() {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let (read, looked_up) = tally.read_new(&store, &batch, threads);
        reading.read += read;
        reading.looked_up += looked_up;
        for line in &batch {
            reading.chunks += 1;
            reading.content_size += line.len as u64;
            if let Some(problem) = tally.problem(&line.id) {
                reading.bad.push((line.id, problem));
            }
            meter.inc(line.len as u64);
        }
    })();
    drop(meter);
    result?;
    drop(index);
    Ok((stored.finish()?, reading))
}

/// One error per missing or damaged chunk, naming the chunk's file in the store and every
/// backup of the directory that needs it. Returns whether a chunk was missing.
pub(super) fn report_bad_chunks(
    report: &mut Report,
    backup: &BackupDir,
    entry: &FileEntry,
    bad: &[(ChunkId, ChunkProblem)],
) -> bool {
    if bad.is_empty() {
        return false;
    }
    let ids: HashSet<ChunkId> = bad.iter().map(|(id, _)| *id).collect();
    let users = chunks::backups_using(backup, &ids);
    let mut reported = HashSet::new();
    for (id, problem) in bad {
        if !reported.insert(*id) {
            continue;
        }
        let needed_by = users
            .get(id)
            .map(|names| names.join(", "))
            .unwrap_or_default();
        report.add(
            Severity::Error,
            Check::Checksum,
            Some(&entry.path),
            format!("chunk `{id}` {problem}; backups that need it: {needed_by}"),
        );
    }
    bad.iter().any(|(_, p)| matches!(p, ChunkProblem::Missing))
}

/// After chunks were missing: a hint when the store has pack files without their index (their
/// chunks look missing until a prune writes the index again from the pack's own copy).
pub(super) fn note_packs_without_index(report: &mut Report, backup: &BackupDir) {
    let Ok(store) = backup.open_chunk_store() else {
        return;
    };
    let lost = store.packs_without_index();
    if lost > 0 {
        let repository = crate::fs::parent_dir(&backup.path).display().to_string();
        report.add(
            Severity::Warning,
            Check::Checksum,
            None,
            format!("{lost} pack file(s) of the chunk store have no index object (a run killed between a pack and its index, or an index lost): chunks in them count as missing; `wqm backup prune {repository}` writes each index again from the copy at its pack's end when a backup names its chunks"),
        );
    }
}

/// An incremental backup's reference list (`metadata/chunk-refs`) against its indexes. Garbage
/// collection keeps what the list names, so one naming less than the indexes is an error; one it
/// does not use (missing, damaged, not the manifest's record) only costs the collection a read
/// of the indexes, but in an encrypted repository it is an error. An unreadable index is
/// reported by the file checks.
pub(super) fn check_refs(report: &mut Report, backup: &BackupDir) {
    if backup.manifest.chunk_refs.is_none() {
        return;
    }
    let path = Some(chunks::REFS_PATH);
    match (chunks::read_refs(backup), chunks::refs_from_indexes(backup)) {
        // In an encrypted repository every object authenticates: one that does not was
        // altered, and is an error as any other.
        (Err(reason), _) if backup.is_encrypted() => report.add(
            Severity::Error,
            Check::Contents,
            path,
            format!("the chunk reference list is damaged ({reason})"),
        ),
        (Err(reason), _) => report.add(
            Severity::Warning,
            Check::Contents,
            path,
            format!("the chunk reference list is not used ({reason}): garbage collection reads the indexes instead"),
        ),
        (Ok(Some(list)), Ok(indexes)) if list != indexes => report.add(
            Severity::Error,
            Check::Contents,
            path,
            format!(
                "the chunk reference list does not name exactly the chunks the indexes name ({} against {}): a garbage collection could delete chunks this backup needs; delete the file (garbage collection then reads the indexes)",
                list.len(),
                indexes.len()
            ),
        ),
        _ => {}
    }
}
