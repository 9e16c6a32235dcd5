//! `wqm backup copy SRC DEST [BACKUP...]` (restic's `copy`): backups copied between two
//! repositories, each a local backups directory or `s3://BUCKET/PREFIX`, as they are stored —
//! every file byte for byte, an incremental backup's chunks as stored, only those the
//! destination lacks (what its chunk store holds is listed once).
//!
//! Everything is checked on the way: each file against its manifest entry (size, the stored
//! bytes' checksum, the content's sha256; `source::CheckedFile`), each chunk sent against its
//! name, the reference list against the manifest's record. Damage is named (exit 3) and that
//! backup is not committed. A backup is committed last (`dest::Writing::commit`): locally
//! renamed into place from its staging directory, on a backend its manifest written with
//! `save_new` after every object it names. A backup already in the destination under the same
//! name is skipped when its manifest is the same, byte for byte, and refused otherwise.
//!
//! When either side is encrypted, everything goes through the two sides' keys instead
//! (`reseal`): decrypted and checked, encrypted again for DEST (or written plain into a plain
//! DEST), an incremental backup's chunks renamed by DEST's key and its indexes rewritten.

mod dest;
mod reseal;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Serialize;

pub use dest::Dest;
pub use source::Source;

use crate::checksum::{sha256, to_hex};
use crate::compress::Stored;
use crate::exit::{Classify, ExitCode, Interrupted};
use crate::format::layout::MANIFEST_PATH;
use crate::format::manifest::{FileEntry, Manifest};
use crate::fs::CopyError as Side;
use crate::progress::{self, Meter, Metered, Progress};
use crate::store::chunks::{self, ChunkBuffer, ChunkId, ChunkStore, IndexReader, SharedReader};
use crate::store::{scan_at, Damaged, Repository, Seen};
use reseal::Reseal;
use source::CheckedFile;

/// Chunks read and sent at once (each a thread: a chunk is one request on S3).
const SENDERS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("`{repository}` is both the source and the destination")]
    SameRepository { repository: String },
    #[error("`{name}` is not a backup of `{repository}`: {reason}")]
    NoSuchBackup {
        name: String,
        repository: String,
        reason: String,
    },
    #[error("`{dest}` has another backup named `{name}` (its manifest differs from the source's); it was not copied")]
    Differs { name: String, dest: String },
    #[error("`{name}` in `{dest}` cannot be written: {reason}")]
    Taken {
        name: String,
        dest: String,
        reason: String,
    },
    #[error("the chunk store of `{dest}` cannot take the source's chunks: {reason}")]
    IncompatibleStore { dest: String, reason: String },
    #[error(
        "`{name}` is a legacy backup: it cannot be copied into or out of an encrypted repository"
    )]
    LegacyResealed { name: String },
}

impl Classify for CopyError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            CopyError::SameRepository { .. } => "name another repository as DEST".to_string(),
            CopyError::NoSuchBackup { .. } => "`wqm backup list SRC` shows the backups there".to_string(),
            CopyError::Differs { .. } => "nothing was changed for it; compare them with `wqm backup info`, and rename or remove one of them to copy it".to_string(),
            CopyError::Taken { .. } => "once that run is over, the next copy or `wqm backup cleanup DEST` removes what a killed run left; anything else there is not wqm's: move it away".to_string(),
            CopyError::IncompatibleStore { .. } => "incremental backups copy into a repository whose chunks are cut alike; copy into a new one, or `wqm backup export` one backup as a full one".to_string(),
            CopyError::LegacyResealed { .. } => "its files have no manifest entries to check them by; nothing was written for it. Copy the repository's directory as it is (`cp -a`, `rclone copy`), or restore it and make a new backup".to_string(),
        })
    }
}

/// What became of one backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Copied,
    /// In the destination already, the same backup.
    Skipped,
    /// Refused or damaged: not committed in the destination.
    Failed,
}

/// One backup's line of the report.
#[derive(Debug, Serialize)]
pub struct Copied {
    pub name: String,
    pub status: Status,
    /// Files written (the manifest included).
    pub files: usize,
    pub chunks_sent: u64,
    /// Bytes written: the files and the chunks sent.
    pub bytes_sent: u64,
    /// Why it failed (`Status::Failed`).
    #[serde(skip)]
    pub error: Option<anyhow::Error>,
}

impl Copied {
    fn new(name: &str, status: Status) -> Self {
        Copied {
            name: name.to_string(),
            status,
            files: 0,
            chunks_sent: 0,
            bytes_sent: 0,
            error: None,
        }
    }
}

/// Copies the backups `names` of `source` (all it has when empty) that `dest` lacks; returns
/// what became of each, in order. A backup that fails (refused, damaged) is not committed and
/// the others go on; Ctrl-C ends the run. Blocking: from the main thread inside
/// `block_in_place`.
pub fn copy(
    source: &Source,
    dest: &Dest,
    names: &[String],
    progress: &dyn Progress,
) -> Result<Vec<Copied>> {
    let (from, to) = (shown(source.repository()), dest.shown());
    let scan = scan_at(source.repository()).with_context(|| format!("cannot list `{from}`"))?;
    let mut seen: BTreeMap<&str, &Seen> = BTreeMap::new();
    for entry in &scan.entries {
        seen.insert(&entry.name, &entry.seen);
    }
    let mut chosen: Vec<(String, Option<String>)> = Vec::new();
    if names.is_empty() {
        for (name, what) in &seen {
            match what {
                Seen::Backup(_) => chosen.push((name.to_string(), None)),
                Seen::Unreadable(why) => chosen.push((name.to_string(), Some(why.clone()))),
                Seen::Other(_) => {}
            }
        }
    } else {
        for name in names {
            match seen.get(name.as_str()) {
                Some(Seen::Backup(_)) => chosen.push((name.clone(), None)),
                // A backup whose manifest is damaged: named with the others' outcomes.
                Some(Seen::Unreadable(why)) => chosen.push((name.clone(), Some(why.clone()))),
                found => {
                    let reason = match found {
                        Some(Seen::Other(why)) => why.clone(),
                        _ => "there is no such backup".to_string(),
                    };
                    return Err(CopyError::NoSuchBackup {
                        name: name.clone(),
                        repository: from,
                        reason,
                    }
                    .into());
                }
            }
        }
    }
    let mut copied = Vec::new();
    // Re-keyed, each chunk's name in DEST as this run learned it (`Renamed`).
    let mut known = Renamed::new();
    // What DEST holds under each name, looked up side by side (on S3: two requests each)
    // rather than one name after another, `SENDERS` names ahead (each lookup may hold a
    // manifest); a commit still refuses a name taken meanwhile.
    let mut existing = Vec::new().into_iter();
    for (i, (name, unreadable)) in chosen.iter().enumerate() {
        if i % SENDERS == 0 {
            let ahead = &chosen[i..chosen.len().min(i + SENDERS)];
            existing = crate::parallel::map_in_order(ahead, SENDERS, |(name, unreadable)| {
                unreadable.is_none().then(|| dest.existing(name))
            })
            .into_iter();
        }
        let there = existing.next().expect("one lookup per backup");
        progress::check_interrupted()?;
        let result = match unreadable {
            Some(why) => Err(anyhow::Error::new(Damaged::new(
                &source
                    .shown(&format!("{name}/{MANIFEST_PATH}"))
                    .display()
                    .to_string(),
                why.clone(),
            ))),
            None => {
                // The backup before it in SRC: when DEST holds it, its indexes name most chunks.
                let before = seen
                    .range(..name.as_str())
                    .rev()
                    .find(|(_, what)| matches!(what, Seen::Backup(_)))
                    .map(|(before, _)| *before);
                let there = there.expect("looked up for every readable backup");
                copy_one(source, dest, (name, before, there), &mut known, progress)
            }
        };
        match result {
            Ok(one) => copied.push(one),
            // Ctrl-C ends the run; anything else ends this backup only.
            Err(_) if progress::is_interrupted() => return Err(Interrupted.into()),
            Err(e) => copied.push(Copied {
                error: Some(e.context(format!("`{name}` was not copied to `{to}`"))),
                ..Copied::new(name, Status::Failed)
            }),
        }
    }
    Ok(copied)
}

/// The repository as the user wrote it.
pub fn shown(repository: &Repository) -> String {
    match repository {
        Repository::Local(dir) => dir.display().to_string(),
        Repository::Remote(remote) => remote.shown_root().to_string(),
    }
}

/// Refuses to copy a repository onto itself (checked before anything is done there).
pub fn refuse_same(source: &Repository, dest: &Repository) -> Result<(), CopyError> {
    if same(source, dest) {
        return Err(CopyError::SameRepository {
            repository: shown(source),
        });
    }
    Ok(())
}

fn same(a: &Repository, b: &Repository) -> bool {
    match (a, b) {
        (Repository::Local(a), Repository::Local(b)) => {
            let real = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or(p.to_path_buf());
            real(a) == real(b)
        }
        (Repository::Remote(a), Repository::Remote(b)) => {
            a.backend().describe() == b.backend().describe()
        }
        _ => false,
    }
}

/// What one backup sends besides its chunks, in order (the manifest comes last, apart).
enum Part {
    /// A file stored whole: streamed, checked against its entry as it passes.
    Whole(FileEntry),
    /// A chunked file's index, read (and checked) while the chunks were planned.
    Read { rel: String, bytes: Vec<u8> },
    /// A legacy backup's file: its manifest describes none.
    Unchecked(String),
}

/// Copies the backup `name`, or skips it when the destination has it already (`there`: what
/// it holds under that name).
/// Re-keyed (`Reseal`), a chunk in `known` whose name DEST holds is not read again; `known`
/// learns the names of the backup before it in SRC (`before`) when DEST holds that one and this
/// run learned none yet, and those of every backup copied.
fn copy_one(
    source: &Source,
    dest: &Dest,
    (name, before, there): (&str, Option<&str>, Result<dest::Existing>),
    known: &mut Renamed,
    progress: &dyn Progress,
) -> Result<Copied> {
    // Into or out of an encrypted repository: read and written through the seals.
    let reseal = Reseal::between(source.repository(), dest.repository());
    let (raw, manifest) = match &reseal {
        None => source.read_manifest(name)?,
        Some(reseal) => reseal.read_manifest(source, name)?,
    };
    let same = |bytes: &[u8]| match &reseal {
        None => bytes == raw,
        Some(reseal) => reseal.same_backup(name, bytes, &manifest),
    };
    match there? {
        dest::Existing::Nothing => {}
        dest::Existing::Backup(bytes) if same(&bytes) => {
            return Ok(Copied::new(name, Status::Skipped))
        }
        dest::Existing::Backup(_) => {
            return Err(CopyError::Differs {
                name: name.to_string(),
                dest: dest.shown(),
            }
            .into())
        }
        dest::Existing::Other(reason) => {
            return Err(CopyError::Taken {
                name: name.to_string(),
                dest: dest.shown(),
                reason,
            }
            .into())
        }
    }
    if reseal.is_some() && manifest.is_legacy() {
        return Err(CopyError::LegacyResealed {
            name: name.to_string(),
        }
        .into());
    }
    let (parts, needed) = plan(source, (name, reseal.as_ref()), &manifest)?;
    let mut renamed = Renamed::new();
    let mut chunks = Vec::new();
    let mut store = None;
    let mut chunk_bytes = 0;
    if !needed.is_empty() {
        let opened = source.chunk_store()?;
        let params = match &reseal {
            None => opened.params().clone(),
            Some(reseal) => reseal.dest_params(opened.params()),
        };
        dest.prepare_store(&params)?;
        let lacking: Vec<_> = match &reseal {
            None => needed.into_iter().filter(|(id, _)| !dest.has(id)).collect(),
            // Re-keyed, a chunk's name in DEST is known once its content is read, or from an
            // earlier copy's indexes.
            Some(reseal) => {
                if let (true, Some(before)) = (known.is_empty(), before) {
                    known.extend(reseal.known_from(source, dest, before));
                }
                let (there, lacking): (Vec<_>, Vec<_>) = needed
                    .into_iter()
                    .partition(|(id, _)| known.get(id).is_some_and(|(to, _)| dest.has(to)));
                renamed.extend(there.into_iter().map(|(id, _)| (id, known[&id])));
                lacking
            }
        };
        chunk_bytes = lacking.iter().map(|(_, (_, stored, _))| stored).sum();
        let mut lacking = lacking;
        lacking.sort_by_key(|(_, (_, _, order))| *order);
        chunks = lacking
            .into_iter()
            .map(|(id, (len, _, _))| (id, len))
            .collect();
        store = Some(opened);
    }
    let total = raw.len() as u64
        + chunk_bytes
        + parts
            .iter()
            .map(|p| match p {
                Part::Whole(entry) => entry.size,
                Part::Read { bytes, .. } => bytes.len() as u64,
                Part::Unchecked(_) => 0,
            })
            .sum::<u64>();
    let meter = progress.transfer(&format!("copying `{name}`"), Some(total));
    let sent = send(
        source,
        dest,
        (name, reseal.as_ref()),
        (&raw, &manifest),
        parts,
        store.as_ref(),
        (chunks, &mut renamed),
        progress,
        &meter,
    );
    drop(meter);
    let (files, chunks_sent, bytes_sent) = sent?;
    known.extend(renamed);
    Ok(Copied {
        files,
        chunks_sent,
        bytes_sent,
        ..Copied::new(name, Status::Copied)
    })
}

/// The chunks a backup's indexes name: content length and stored size of each.
/// Each chunk named: its length, its stored size, and when it was first named (the destination
/// packs chunks in the order the files have them, which is how a restore reads them).
type Needed = BTreeMap<ChunkId, (usize, u64, usize)>;

/// What the backup `name` sends: its files, and the chunks its indexes name (each index read
/// and checked here, every line's chunk with one length). Re-encrypted (`reseal`), the indexes
/// are read through the source's key and the reference list is left to be made anew with the
/// destination's names (`Reseal::rewrite`).
fn plan(
    source: &Source,
    (name, reseal): (&str, Option<&Reseal>),
    manifest: &Manifest,
) -> Result<(Vec<Part>, Needed)> {
    let mut parts = Vec::new();
    let mut needed = Needed::new();
    if manifest.is_legacy() {
        for rel in source.objects(name)? {
            if rel != MANIFEST_PATH {
                parts.push(Part::Unchecked(rel));
            }
        }
        return Ok((parts, needed));
    }
    for entry in &manifest.files {
        if entry.compression != Stored::Chunked {
            parts.push(Part::Whole(entry.clone()));
            continue;
        }
        let stored = reseal.map_or(entry.path.clone(), |r| r.source_name(&entry.path));
        let rel = format!("{name}/{stored}");
        let shown = source.shown(&rel);
        let damaged = |problem: String| Damaged::new(&shown.display().to_string(), problem);
        let mut bytes = Vec::new();
        source
            .open(&rel)
            .and_then(|f| match reseal {
                None => Ok(f),
                Some(reseal) => reseal.decrypting(name, &entry.path, f),
            })
            .and_then(|f| CheckedFile::new(f, entry, &shown)?.read_to_end(&mut bytes))
            .map_err(|e| read_failure(&shown.display().to_string(), e))?;
        let mut index =
            IndexReader::new(BufReader::new(&bytes[..])).map_err(|e| damaged(e.to_string()))?;
        let mut content = 0u64;
        while let Some(line) = index.next_line().map_err(|e| damaged(e.to_string()))? {
            content += line.len as u64;
            let order = needed.len();
            let (len, _, _) = *needed
                .entry(line.id)
                .or_insert((line.len, line.stored, order));
            if len != line.len {
                return Err(damaged(format!(
                    "it names chunk `{}` with {} bytes, another index line with {len}",
                    line.id, line.len
                ))
                .into());
            }
        }
        if content != entry.content_size {
            return Err(damaged(format!(
                "its chunks hold {content} bytes, its manifest says {}",
                entry.content_size
            ))
            .into());
        }
        parts.push(Part::Read {
            rel: entry.path.clone(),
            bytes,
        });
    }
    if let (Some(record), None) = (&manifest.chunk_refs, reseal) {
        let rel = format!("{name}/{}", chunks::REFS_PATH);
        let shown = source.shown(&rel).display().to_string();
        let limit = record.count.saturating_mul(8).saturating_add(64);
        let mut bytes = Vec::new();
        source
            .open(&rel)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(|e| read_failure(&shown, e))?;
        if to_hex(&sha256(&bytes)) != record.sha256 {
            return Err(Damaged::new(&shown, "its sha256 is not the manifest's record").into());
        }
        parts.push(Part::Read {
            rel: chunks::REFS_PATH.to_string(),
            bytes,
        });
    }
    Ok((parts, needed))
}

/// Sends one backup: its chunks, its files, its manifest last (`manifest`: its plaintext
/// bytes and what they say). Re-keyed, `renamed` holds the names in DEST of the chunks not
/// read, and gets those of the chunks read. Returns the files, chunks and bytes sent.
#[allow(clippy::too_many_arguments)]
fn send(
    source: &Source,
    dest: &Dest,
    (name, reseal): (&str, Option<&Reseal>),
    manifest: (&[u8], &Manifest),
    parts: Vec<Part>,
    store: Option<&Arc<ChunkStore>>,
    (chunks, renamed): (Vec<(ChunkId, usize)>, &mut Renamed),
    progress: &dyn Progress,
    meter: &Meter,
) -> Result<(usize, u64, u64)> {
    let writing = dest.begin(name)?;
    let (chunks_sent, mut bytes) = match store {
        Some(store) => {
            let (sent, bytes, read) =
                send_chunks(source, store, (&writing, reseal), chunks, meter)?;
            renamed.extend(read);
            (sent, bytes)
        }
        None => (0, 0),
    };
    let (parts, manifest) = match reseal {
        None => (parts, manifest.0.to_vec()),
        Some(reseal) => reseal.rewrite(name, manifest, parts, renamed)?,
    };
    let manifest = &manifest[..];
    // Parts in memory or small are sent side by side (on S3 each is a request: a backup's
    // indexes one after another cost a round trip each); a large file alone, as its upload
    // holds parts of it in memory.
    let (small, large): (Vec<&Part>, Vec<&Part>) = parts.iter().partition(|part| match part {
        Part::Whole(entry) => entry.size <= SMALL_PART,
        Part::Read { .. } => true,
        Part::Unchecked(_) => false,
    });
    let send_one =
        |part: &&Part| send_part(source, &writing, (name, reseal), part, progress, meter);
    for sent in crate::parallel::map_in_order(&small, SENDERS, send_one) {
        bytes += sent?;
    }
    for part in &large {
        bytes += send_one(part)?;
    }
    let packing = writing.commit(manifest)?;
    meter.inc(manifest.len() as u64);
    Ok((
        parts.len() + 1,
        chunks_sent,
        bytes + manifest.len() as u64 + packing,
    ))
}

/// A file at most this large is sent beside the backup's other small files.
const SMALL_PART: u64 = 1 << 20;

/// Sends one part of the backup `name`: a file checked against its entry as it passes
/// (decrypted first from an encrypted SRC, encrypted again for an encrypted DEST, under its
/// name there), or bytes read before. Returns the bytes written.
fn send_part(
    source: &Source,
    writing: &dest::Writing<'_>,
    (name, reseal): (&str, Option<&Reseal>),
    part: &Part,
    progress: &dyn Progress,
    meter: &Meter,
) -> Result<u64> {
    progress::check_interrupted()?;
    let rel = match part {
        Part::Whole(entry) => &entry.path,
        Part::Read { rel, .. } => rel,
        Part::Unchecked(rel) => rel,
    };
    progress.step(&format!("sending `{name}/{rel}`"));
    let (from, to) = match reseal {
        None => (rel.clone(), rel.clone()),
        Some(reseal) => (reseal.source_name(rel), reseal.dest_name(rel)),
    };
    let object = format!("{name}/{from}");
    let shown = source.shown(&object).display().to_string();
    let opened = |shown: &str| source.open(&object).map_err(|e| read_failure(shown, e));
    // The part's bytes as DEST stores them plain: each file checked against its entry as
    // it passes (decrypted first from an encrypted SRC).
    let mut reader: Box<dyn Read + Send + '_> = match part {
        Part::Whole(entry) => {
            let stored = opened(&shown)?;
            let plain = match reseal {
                None => stored,
                Some(reseal) => reseal
                    .decrypting(name, rel, stored)
                    .map_err(|e| read_failure(&shown, e))?,
            };
            let checked = CheckedFile::new(plain, entry, &source.shown(&object))?;
            Box::new(Metered::new(checked, meter.clone()))
        }
        Part::Read { bytes, .. } => {
            meter.inc(bytes.len() as u64);
            Box::new(&bytes[..])
        }
        Part::Unchecked(_) => Box::new(Metered::new(opened(&shown)?, meter.clone())),
    };
    // Encrypted again for an encrypted DEST, under its name there.
    let written = match reseal {
        None => writing.put_file(rel, &mut reader),
        Some(reseal) => match reseal.encrypting(name, rel, reader) {
            Ok(mut sealed) => writing.put_file(&to, &mut sealed),
            Err(e) => Err(Side::Write(e)),
        },
    };
    written.map_err(|e| match e {
        Side::Read(e) => read_failure(&shown, e),
        Side::Write(e) => anyhow::Error::new(e).context(format!(
            "cannot write `{object}` to `{}`",
            writing.dest_shown()
        )),
    })
}

/// The source's chunks re-encrypted: each one's name and stored size in the destination.
type Renamed = HashMap<ChunkId, (ChunkId, u64)>;

/// Reads, checks and sends `chunks` (`SENDERS` at a time); returns how many were sent, their
/// stored bytes, and (re-encrypted: `reseal`) every chunk's name in the destination, which
/// sends only those it lacks by that name. The first damaged or unsendable chunk stops the
/// others.
fn send_chunks(
    source: &Source,
    store: &Arc<ChunkStore>,
    (writing, reseal): (&dest::Writing<'_>, Option<&Reseal>),
    chunks: Vec<(ChunkId, usize)>,
    meter: &Meter,
) -> Result<(u64, u64, Renamed)> {
    let count = chunks.len();
    let renamed = Mutex::new(Renamed::new());
    // In order, fetched ahead from S3 (a source of pack files: few requests).
    let reader = SharedReader::new(store.clone(), chunks);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let (sent, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let stopped = || failed.lock().expect("failure lock").is_some() || progress::is_interrupted();
    let fail = |e: anyhow::Error| {
        failed.lock().expect("failure lock").get_or_insert(e);
    };
    std::thread::scope(|scope| {
        for _ in 0..SENDERS.min(count) {
            scope.spawn(|| {
                let mut buffer = ChunkBuffer::default();
                while !stopped() {
                    let (id, read) = match reader.next_into(&mut buffer) {
                        Ok(Some((line, read))) => (line.id, read),
                        Ok(None) => break,
                        Err(e) => {
                            let shown = source.shown(chunks::STORE_DIR).display().to_string();
                            fail(read_failure(&shown, e));
                            break;
                        }
                    };
                    if let Err(problem) = read {
                        // The store named, the chunk in full (a path would be shortened).
                        let shown = source.shown(chunks::STORE_DIR).display().to_string();
                        fail(Damaged::new(&shown, format!("chunk `{id}` {problem}")).into());
                        break;
                    }
                    let put = match reseal {
                        None => writing
                            .put_chunk(&id, buffer.content.len(), buffer.stored())
                            .map(|()| Some(buffer.stored().len() as u64)),
                        Some(reseal) => reseal.put_chunk(writing, &buffer).map(|landed| {
                            let to = (landed.id, landed.stored);
                            renamed.lock().expect("renamed lock").insert(id, to);
                            landed.sent.then_some(landed.stored)
                        }),
                    };
                    match put {
                        Ok(Some(stored)) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(stored, Ordering::Relaxed);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let e =
                                anyhow::Error::new(e).context(format!("cannot store chunk `{id}`"));
                            fail(e);
                            break;
                        }
                    }
                    meter.inc(buffer.stored().len() as u64);
                }
            });
        }
    });
    progress::check_interrupted()?;
    if let Some(e) = failed.into_inner().expect("failure lock") {
        return Err(e);
    }
    let renamed = renamed.into_inner().expect("renamed lock");
    Ok((sent.into_inner(), bytes.into_inner(), renamed))
}

/// A source object that could not be read or did not match: `Damaged` (exit 3), naming it;
/// Ctrl-C stays an interruption.
fn read_failure(shown: &str, e: io::Error) -> anyhow::Error {
    if progress::is_interrupted() {
        return Interrupted.into();
    }
    Damaged::from_read(shown, e).into()
}
