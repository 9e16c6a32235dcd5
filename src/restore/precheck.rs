//! `verify_before_restore` beside the first upload. The upload checks its own snapshot as it
//! streams (`check::Inspected`) and holds its last piece back; the rest of the backup (the other
//! snapshots, the databases, the config) is read and checked meanwhile on a thread of its own,
//! and no upload sends its last piece, nor is any database or config put in place, before every
//! file of the backup has passed. So a damaged backup is still refused before the first change,
//! and the first upload's snapshot is read once instead of twice.
//!
//! Each file is checked by whoever reads it first: an upload claims the snapshot it streams, the
//! thread takes the files nobody claimed (the last collections first: the first ones are being
//! uploaded), and both mark what passed. A damaged file fails the whole check: every held-back
//! last piece is then withheld for good, so Qdrant never gets a complete upload.
//!
//! An upload whose snapshot the thread read already compares only its stored bytes' checksum
//! (`Claim::Passed`: a fraction of sha256's cost). The restore's last upload, when no other is
//! still sending, may leave its content's sha256 to Qdrant (`Claim::LeftToServer`), which
//! compares it with `?checksum=` before it changes anything: that snapshot passes only when
//! Qdrant answered, and what still waits for it (the databases and the config, put in place
//! after the uploads anyway) waits for that answer, so a refusal still comes before the first
//! change, and no upload's recovery waits for another's. Its own last piece waits for the rest.

use std::collections::HashSet;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::exit::Interrupted;
use crate::format::manifest::FileEntry;
use crate::progress;
use crate::store::{BackupDir, Compare, Damaged};
use crate::transfer::OtherFailed;

/// The pre-check of a restore, shared by its uploads and its checking thread.
pub(super) struct Precheck {
    /// The snapshot uploads the restore makes.
    uploads: usize,
    source: BackupDir,
    /// Every file of the backup, in the manifest's order.
    files: Vec<FileEntry>,
    state: Mutex<State>,
    moved: Condvar,
    /// The restore ended: the checking thread stops at its next read.
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    started: bool,
    /// Files someone is reading (an upload or the checking thread).
    claimed: HashSet<String>,
    /// Uploads that claimed their snapshot, and of those, the ones whose last piece waits yet.
    uploads_claimed: usize,
    uploads_holding: usize,
    passed: HashSet<String>,
    /// The file whose content only Qdrant's answer to its upload will vouch for.
    left_to_server: Option<String>,
    /// The first damage found: the file and what is wrong with it.
    failed: Option<(String, String)>,
    /// The upload that left its content to Qdrant ended without its answer: nothing can pass.
    abandoned: bool,
}

/// Why waiting for the pre-check ended without it passing.
pub(super) enum Refused {
    Damaged(Damaged),
    /// The waiter gave up (its upload stopped, or Ctrl-C).
    Cancelled,
    /// Another upload failed before its snapshot could pass.
    OtherFailed,
}

/// How an upload checks the snapshot it claimed.
pub(super) enum Claim {
    /// Its content's size and sha256, as it reads it (`Compare::Content`).
    Content,
    /// It passed already, read by the checking thread: its stored bytes' checksum is enough.
    Passed,
    /// Its stored bytes' checksum; the content's sha256 is Qdrant's to compare (`ServerCheck`).
    LeftToServer(ServerCheck),
}

impl Claim {
    /// What the upload's reading compares at the content's end.
    pub(super) fn compare(&self) -> Compare {
        match self {
            Claim::Content => Compare::Content,
            Claim::Passed | Claim::LeftToServer(_) => Compare::Stored,
        }
    }
}

/// Qdrant's word on a snapshot whose content an upload left to it, still to come: dropped
/// before it was given (`confirm`, `refuse`), the pre-check can no longer pass.
pub(super) struct ServerCheck {
    precheck: Arc<Precheck>,
    path: String,
    given: bool,
}

impl ServerCheck {
    /// Qdrant accepted the content: the snapshot passed.
    pub(super) fn confirm(mut self) {
        self.given = true;
        let mut state = self.precheck.state();
        state.left_to_server = None;
        state.passed.insert(self.path.clone());
        drop(state);
        self.precheck.moved.notify_all();
    }

    /// Qdrant refused the content: the backup is damaged.
    pub(super) fn refuse(mut self, damaged: &Damaged) {
        self.given = true;
        self.precheck.fail(damaged);
    }
}

impl Drop for ServerCheck {
    fn drop(&mut self) {
        if !self.given {
            self.precheck.state().abandoned = true;
            self.precheck.moved.notify_all();
        }
    }
}

/// Owns the pre-check for the restore's lifetime: dropping it stops the checking thread.
pub(super) struct Owner(pub(super) Arc<Precheck>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
        self.0.moved.notify_all();
    }
}

impl Precheck {
    /// The pre-check of every file of the backup in `source`, for a restore making `uploads`
    /// snapshot uploads.
    pub(super) fn for_backup(source: &BackupDir, uploads: usize) -> Owner {
        Owner(Arc::new(Precheck {
            uploads,
            source: source.clone(),
            files: source.manifest.files.clone(),
            state: Mutex::default(),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("pre-check lock")
    }

    /// An upload reads `path` and checks it itself, as the answer says: with `wanted` as
    /// `Compare::Stored` (Qdrant compares the content's sha256), by its stored checksum when it
    /// passed already, or when it is the last upload and no other still holds its last piece
    /// (`released` says when one stops holding it). The checking thread starts (once), taking
    /// the files nobody claimed.
    pub(super) fn claim(self: &Arc<Self>, path: &str, wanted: Compare) -> Claim {
        let claim = {
            let mut state = self.state();
            state.claimed.insert(path.to_string());
            state.uploads_claimed += 1;
            let alone = state.uploads_claimed >= self.uploads && state.uploads_holding == 0;
            state.uploads_holding += 1;
            if wanted == Compare::Content {
                Claim::Content
            } else if state.passed.contains(path) {
                Claim::Passed
            } else if alone && state.left_to_server.is_none() {
                state.left_to_server = Some(path.to_string());
                Claim::LeftToServer(ServerCheck {
                    precheck: Arc::clone(self),
                    path: path.to_string(),
                    given: false,
                })
            } else {
                Claim::Content
            }
        };
        self.start();
        claim
    }

    /// Starts the checking thread, unless it runs already.
    fn start(self: &Arc<Self>) {
        if std::mem::replace(&mut self.state().started, true) {
            return;
        }
        let precheck = Arc::clone(self);
        std::thread::spawn(move || precheck.check_unclaimed());
    }

    /// An upload that claimed its snapshot sends its last piece (or stops): it holds none back.
    pub(super) fn released(&self) {
        let mut state = self.state();
        state.uploads_holding = state.uploads_holding.saturating_sub(1);
    }

    /// `path` was read to its end and matched the manifest.
    pub(super) fn passed(&self, path: &str) {
        self.state().passed.insert(path.to_string());
        self.moved.notify_all();
    }

    /// `damaged` fails the pre-check: no held-back piece is ever sent.
    pub(super) fn fail(&self, damaged: &Damaged) {
        self.state()
            .failed
            .get_or_insert_with(|| (damaged.path.clone(), damaged.problem.clone()));
        self.moved.notify_all();
    }

    /// Blocks until every file passed (`Ok`) but `own` (the waiter's, whose content Qdrant
    /// compares after this), one is damaged, or `cancelled` says to give up (asked every 50 ms).
    pub(super) fn wait_blocking(
        &self,
        own: Option<&str>,
        cancelled: impl Fn() -> bool,
    ) -> Result<(), Refused> {
        let mut state = self.state();
        loop {
            if let Some((path, problem)) = &state.failed {
                return Err(Refused::Damaged(Damaged::new(path, problem)));
            }
            if state.abandoned {
                return Err(Refused::OtherFailed);
            }
            let passed =
                |f: &FileEntry| Some(f.path.as_str()) == own || state.passed.contains(&f.path);
            if self.files.iter().all(passed) {
                return Ok(());
            }
            if cancelled() {
                return Err(Refused::Cancelled);
            }
            state = self
                .moved
                .wait_timeout(state, Duration::from_millis(50))
                .expect("pre-check lock")
                .0;
        }
    }

    /// Waits, off the async workers, until the whole backup passed: before a change no upload
    /// guards (a database or the config put in place, a collection created for its shards).
    pub(super) async fn wait(self: &Arc<Self>) -> anyhow::Result<()> {
        self.start();
        let precheck = Arc::clone(self);
        let waited = tokio::task::spawn_blocking(move || {
            precheck.wait_blocking(None, progress::is_interrupted)
        })
        .await?;
        match waited {
            Ok(()) => Ok(()),
            Err(Refused::Damaged(damaged)) => Err(damaged.into()),
            Err(Refused::Cancelled) => Err(Interrupted.into()),
            Err(Refused::OtherFailed) => Err(OtherFailed.into()),
        }
    }

    /// The checking thread: each file nobody claimed, the manifest's last first, read through
    /// `open_checked` (its content's size and sha256 against the manifest).
    fn check_unclaimed(&self) {
        for entry in self.files.iter().rev() {
            {
                let mut state = self.state();
                if state.failed.is_some() || !state.claimed.insert(entry.path.clone()) {
                    continue;
                }
            }
            match self.check(entry) {
                Ok(()) => self.passed(&entry.path),
                Err(None) => return,
                Err(Some(damaged)) => {
                    self.fail(&damaged);
                    return;
                }
            }
        }
    }

    /// Reads `entry` to its end; `Err(None)` when the restore ended first.
    fn check(&self, entry: &FileEntry) -> Result<(), Option<Damaged>> {
        let mut content = self.source.open_checked(entry).map_err(Some)?;
        // Large reads: the content is only hashed (8 KiB reads cost 40 % more CPU).
        let mut buffer = vec![0; READ_SIZE];
        loop {
            if self.stop.load(Ordering::Relaxed) || progress::is_interrupted() {
                return Err(None);
            }
            match content.read(&mut buffer) {
                // The end: `open_checked` compared the content with the manifest.
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Some(Damaged::from_read(&entry.path, e))),
            }
        }
    }
}

/// How much the checking thread reads at a time.
const READ_SIZE: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{digest, Algorithm};
    use crate::format::manifest::{FileKind, Manifest};

    const FILES: [&str; 3] = ["collections/a", "collections/b", "collections/c"];

    /// A sound backup of `FILES` (each holding its own name), and its pre-check for a restore
    /// making `uploads` uploads.
    fn sound_backup(uploads: usize) -> (tempfile::TempDir, Owner) {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::new("0.3.0", 1.0);
        for path in FILES {
            std::fs::create_dir_all(dir.path().join("collections")).unwrap();
            std::fs::write(dir.path().join(path), path).unwrap();
            let digests = digest(path.as_bytes(), &[Algorithm::Sha256, Algorithm::Xxhash64]);
            manifest.files.push(FileEntry {
                path: path.to_string(),
                kind: FileKind::CollectionSnapshot,
                size: path.len() as u64,
                compression: Default::default(),
                checksum: digests.get(Algorithm::Xxhash64),
                content_size: path.len() as u64,
                content_sha256: digests.get(Algorithm::Sha256).unwrap().value,
            });
        }
        let source = BackupDir::local(dir.path().to_path_buf(), manifest);
        let owner = Precheck::for_backup(&source, uploads);
        (dir, owner)
    }

    fn left_to_server(claim: Claim) -> ServerCheck {
        match claim {
            Claim::LeftToServer(check) => check,
            _ => panic!("not left to the server"),
        }
    }

    /// What a waiter that gives up at once gets: `None` when every file passed.
    fn waited(precheck: &Precheck, own: Option<&str>) -> Option<&'static str> {
        match precheck.wait_blocking(own, || true) {
            Ok(()) => None,
            Err(Refused::Damaged(_)) => Some("damaged"),
            Err(Refused::Cancelled) => Some("not yet"),
            Err(Refused::OtherFailed) => Some("other failed"),
        }
    }

    #[test]
    fn only_the_last_upload_with_no_other_holding_back_leaves_its_content_to_qdrant() {
        let (_dir, owner) = sound_backup(2);
        let precheck = &owner.0;
        let [a, b, _] = FILES;
        // Not the last upload: it compares the content itself.
        assert!(matches!(precheck.claim(a, Compare::Stored), Claim::Content));
        precheck.passed(a);
        // The last, while the first still holds its last piece back: the same.
        let (_dir, owner) = sound_backup(2);
        let early = &owner.0;
        assert!(matches!(early.claim(a, Compare::Stored), Claim::Content));
        assert!(matches!(early.claim(b, Compare::Stored), Claim::Content));
        // The last, once the first sent all of it: left to Qdrant.
        precheck.released();
        let check = left_to_server(precheck.claim(b, Compare::Stored));
        // Its own last piece waits for the rest only (the thread reads `c`) ...
        precheck
            .wait_blocking(Some(b), || false)
            .unwrap_or_else(|_| panic!("the other files did not pass"));
        // ... what comes after the uploads waits for Qdrant's answer too.
        assert_eq!(waited(precheck, None), Some("not yet"));
        check.confirm();
        assert_eq!(waited(precheck, None), None);
    }

    #[test]
    fn a_snapshot_the_thread_read_is_compared_by_its_stored_checksum() {
        let (_dir, owner) = sound_backup(3);
        let precheck = &owner.0;
        let [a, b, _] = FILES;
        precheck.passed(b);
        assert!(matches!(precheck.claim(a, Compare::Stored), Claim::Content));
        assert!(matches!(precheck.claim(b, Compare::Stored), Claim::Passed));
        // Without `?checksum=`, always the content.
        assert!(matches!(
            precheck.claim(b, Compare::Content),
            Claim::Content
        ));
    }

    #[test]
    fn no_answer_from_qdrant_lets_nothing_pass_and_a_refusal_is_damage() {
        let (_dir, owner) = sound_backup(1);
        let precheck = &owner.0;
        let [a, b, c] = FILES;
        let check = left_to_server(precheck.claim(a, Compare::Stored));
        precheck.passed(b);
        precheck.passed(c);
        drop(check);
        assert_eq!(waited(precheck, None), Some("other failed"));

        let (_dir, owner) = sound_backup(1);
        let precheck = &owner.0;
        let check = left_to_server(precheck.claim(a, Compare::Stored));
        check.refuse(&Damaged::new(a, "content sha256 mismatch"));
        assert_eq!(waited(precheck, None), Some("damaged"));
        assert_eq!(waited(precheck, Some(a)), Some("damaged"));
    }
}
