//! The content check of a snapshot on its way to Qdrant: read once (`BackupDir::open_compared`:
//! hashed and compared with the manifest — the content's sha256, or the stored bytes' checksum
//! when Qdrant compares the content's sha256 itself), checked as `validate --check-files`
//! checks it, and sent on as it is read; the last piece only once it passed.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::precheck::{Precheck, Refused};
use crate::format::manifest::FileKind;
use crate::progress::Meter;
use crate::store::{Checked, Damaged};

/// A file of the backup that turned out damaged or unsafe while it was read: exit 3.
pub(super) fn damaged(rel: &str, problem: impl std::fmt::Display) -> anyhow::Error {
    Damaged::new(rel, problem).into()
}

/// How much decompressed snapshot is sent at a time; the last piece waits for the check.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Why reading a snapshot for an upload stopped.
pub(super) enum Problem {
    /// The backup's file is damaged or unsafe (exit 3).
    Damaged(Damaged),
    /// The upload ended first (it failed or was interrupted); its own error is reported.
    Stopped,
}

/// A stored snapshot on its way to Qdrant, read once: checked against the manifest
/// (`open_checked`), checked as `validate --check-files` checks it (`snapshot::inspect`: tar
/// structure, member paths and types, nested segments, sizes) — and sent on as it is read.
pub(super) struct Inspected {
    pub(super) sender: mpsc::Sender<io::Result<Bytes>>,
    /// What was handed to the upload so far.
    pub(super) sent: Arc<AtomicU64>,
    /// Notified once the last piece is handed over: the upload is all sent.
    pub(super) all_sent: Arc<Notify>,
    pub(super) meter: Meter,
    /// `verify_before_restore`: the last piece also waits until the whole backup passed.
    pub(super) precheck: Option<Arc<Precheck>>,
    /// This upload left its content's sha256 to Qdrant (`Claim::LeftToServer`): its snapshot
    /// passes with Qdrant's answer, not here.
    pub(super) left_to_server: bool,
}

impl Inspected {
    pub(super) fn run(self, content: Checked) -> Result<(), Problem> {
        let outcome = self.check_and_send(content);
        if let Some(precheck) = &self.precheck {
            precheck.released();
        }
        if let Err(Problem::Damaged(damaged)) = &outcome {
            if let Some(precheck) = &self.precheck {
                precheck.fail(damaged);
            }
            // An error in the body aborts the request: Qdrant never gets a complete stream.
            let _ = self.sender.blocking_send(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                damaged.problem.clone(),
            )));
        }
        outcome
    }

    fn check_and_send(&self, content: Checked) -> Result<(), Problem> {
        let entry = content.entry().clone();
        let mut tee = Tee {
            inner: content,
            sender: self.sender.clone(),
            sent: self.sent.clone(),
            meter: self.meter.clone(),
            chunk: vec![0; UPLOAD_CHUNK],
            filled: 0,
            served: 0,
            held: None,
            path: entry.path.clone(),
            failed: None,
        };
        let inspected = match entry.kind {
            FileKind::ShardSnapshot => crate::snapshot::inspect_shard(&mut tee).map(drop),
            _ => crate::snapshot::inspect(&mut tee).map(drop),
        };
        // To the end, where `open_checked` compares the content with the manifest.
        let drained = inspected
            .as_ref()
            .ok()
            .map(|()| io::copy(&mut tee, &mut io::sink()));
        if let Some(failed) = tee.failed.take() {
            return Err(failed);
        }
        if let Err(e) = inspected {
            return Err(Problem::Damaged(Damaged::new(
                &entry.path,
                format!("not a valid Qdrant snapshot: {e}"),
            )));
        }
        if let Some(Err(e)) = drained {
            return Err(Problem::Damaged(Damaged::from_read(&entry.path, e)));
        }
        if let Some(precheck) = &self.precheck {
            if !self.left_to_server {
                precheck.passed(&entry.path);
            }
            let own = self.left_to_server.then_some(entry.path.as_str());
            let sender = &tee.sender;
            precheck.wait_blocking(own, || sender.is_closed()).map_err(
                |refused| match refused {
                    Refused::Damaged(damaged) => Problem::Damaged(damaged),
                    Refused::Cancelled | Refused::OtherFailed => Problem::Stopped,
                },
            )?;
        }
        let mut last = std::mem::take(&mut tee.chunk);
        last.truncate(tee.filled);
        for piece in [tee.held.take().unwrap_or_default(), last] {
            tee.send(piece).map_err(|()| Problem::Stopped)?;
        }
        self.all_sent.notify_one();
        Ok(())
    }
}

/// Passes what it reads on to the upload, a chunk at a time, keeping the latest back. The
/// content is read straight into the chunk that is sent (its only copy is to the reader above:
/// `snapshot::inspect`); a full chunk waits until the next one is full.
struct Tee<R> {
    inner: R,
    sender: mpsc::Sender<io::Result<Bytes>>,
    sent: Arc<AtomicU64>,
    meter: Meter,
    /// The chunk being read into: `filled` bytes of it read, `served` of those passed on.
    chunk: Vec<u8>,
    filled: usize,
    served: usize,
    /// The last full chunk.
    held: Option<Vec<u8>>,
    /// The entry's path in the backup.
    path: String,
    /// Why reading stopped, when it was not the archive's fault.
    failed: Option<Problem>,
}

impl<R: Read> Tee<R> {
    /// Hands `chunk` to the upload (unless empty); `Err` when the upload has ended. Counted
    /// first: once the upload has the last byte it may end at once, and must then find all of
    /// it counted.
    fn send(&mut self, chunk: Vec<u8>) -> Result<(), ()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let len = chunk.len() as u64;
        self.sent.fetch_add(len, Ordering::Relaxed);
        self.meter.inc(len);
        self.sender
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(drop)
    }

    /// Reads more into the chunk (a full one is held back, the one held before it sent).
    fn fill(&mut self) -> io::Result<()> {
        if self.filled == self.chunk.len() {
            let full = std::mem::replace(&mut self.chunk, vec![0; UPLOAD_CHUNK]);
            (self.filled, self.served) = (0, 0);
            if let Some(earlier) = self.held.replace(full) {
                if self.send(earlier).is_err() {
                    return Err(self.fail(Problem::Stopped));
                }
            }
        }
        match self.inner.read(&mut self.chunk[self.filled..]) {
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let damaged = Damaged::from_read(&self.path, e);
                Err(self.fail(Problem::Damaged(damaged)))
            }
        }
    }

    fn fail(&mut self, problem: Problem) -> io::Error {
        let message = match &problem {
            Problem::Damaged(damaged) => damaged.problem.clone(),
            Problem::Stopped => "the upload stopped".to_string(),
        };
        self.failed.get_or_insert(problem);
        io::Error::other(message)
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served == self.filled {
            self.fill()?;
        }
        let n = buf.len().min(self.filled - self.served);
        buf[..n].copy_from_slice(&self.chunk[self.served..self.served + n]);
        self.served += n;
        Ok(n)
    }
}
