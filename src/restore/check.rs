//! The content check of a snapshot on its way to Qdrant: read once, checked as `validate
//! --check-files` checks it, hashed, and sent on as it is read; the last piece only once it passed.

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::checksum::Algorithm;
use crate::exit::{ExitCode, Failure};
use crate::format::manifest::{FileEntry, FileKind};
use crate::format::names;
use crate::verify;

/// A file of the backup that turned out damaged or unsafe while it was read: exit 3.
pub(super) fn damaged(rel: &str, problem: impl std::fmt::Display) -> anyhow::Error {
    Failure::new(
        ExitCode::InvalidBackup,
        format!("the backup's `{}` is damaged: {problem}", names::shown(rel)),
    )
    .with_hint("restore another backup (`wqm backup list DIR`); `wqm backup validate PATH --check-files` shows every problem")
    .into()
}

/// How much decompressed snapshot is sent at a time; the last piece waits for the check.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Why reading a snapshot for an upload stopped.
pub(super) enum Problem {
    /// The backup's file is damaged or unsafe (exit 3).
    Damaged(String),
    /// The upload ended first (it failed or was interrupted); its own error is reported.
    Stopped,
}

/// A stored snapshot on its way to Qdrant, read once: decompressed, checked as `validate
/// --check-files` checks it (`snapshot::inspect`: tar structure, member paths and types, nested
/// segments, sizes), hashed and counted against the manifest — and sent on as it is read.
pub(super) struct Inspected {
    pub(super) entry: FileEntry,
    pub(super) sender: mpsc::Sender<io::Result<Bytes>>,
    pub(super) sent: Arc<AtomicU64>,
}

impl Inspected {
    pub(super) fn run(self, content: Box<dyn Read + Send>) -> Result<(), Problem> {
        let sender = self.sender.clone();
        let outcome = self.check_and_send(content);
        if let Err(Problem::Damaged(problem)) = &outcome {
            // An error in the body aborts the request: Qdrant never gets a complete stream.
            let _ = sender.blocking_send(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                problem.clone(),
            )));
        }
        outcome
    }

    fn check_and_send(self, content: Box<dyn Read + Send>) -> Result<(), Problem> {
        let mut tee = Tee {
            inner: BufReader::with_capacity(UPLOAD_CHUNK, content),
            sender: self.sender,
            sent: self.sent,
            pending: Vec::with_capacity(UPLOAD_CHUNK),
            content: crate::checksum::Digester::new(&[Algorithm::Sha256]),
            limit: self.entry.content_size,
            failed: None,
        };
        let inspected = match self.entry.kind {
            FileKind::ShardSnapshot => crate::snapshot::inspect_shard(&mut tee).map(drop),
            _ => crate::snapshot::inspect(&mut tee).map(drop),
        };
        let drained = inspected
            .as_ref()
            .ok()
            .map(|()| io::copy(&mut tee, &mut io::sink()));
        if let Some(failed) = tee.failed.take() {
            return Err(failed);
        }
        if let Err(e) = inspected {
            return Err(Problem::Damaged(format!(
                "not a valid Qdrant snapshot: {e}"
            )));
        }
        if let Some(Err(e)) = drained {
            return Err(Problem::Damaged(format!("cannot decompress: {e}")));
        }
        let digests = tee.content.finish();
        verify::content_matches(&self.entry, &digests).map_err(Problem::Damaged)?;
        let last = std::mem::take(&mut tee.pending);
        tee.sent.fetch_add(last.len() as u64, Ordering::Relaxed);
        tee.sender
            .blocking_send(Ok(Bytes::from(last)))
            .map_err(|_| Problem::Stopped)
    }
}

/// Passes what it reads on to the upload, a chunk at a time, keeping the latest back.
struct Tee<R> {
    inner: R,
    sender: mpsc::Sender<io::Result<Bytes>>,
    sent: Arc<AtomicU64>,
    pending: Vec<u8>,
    content: crate::checksum::Digester,
    /// The manifest's `content_size`: no more is sent.
    limit: u64,
    /// Why reading stopped, when it was not the archive's fault.
    failed: Option<Problem>,
}

impl<R: Read> Tee<R> {
    fn fail(&mut self, problem: Problem) -> io::Error {
        let message = match &problem {
            Problem::Damaged(m) => m.clone(),
            Problem::Stopped => "the upload stopped".to_string(),
        };
        self.failed.get_or_insert(problem);
        io::Error::other(message)
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(Problem::Damaged(format!("cannot decompress: {e}")))),
        };
        self.content.update(&buf[..n]);
        if self.content.bytes() > self.limit {
            let problem = format!(
                "the content is longer than the manifest's {} bytes",
                self.limit
            );
            return Err(self.fail(Problem::Damaged(problem)));
        }
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= 2 * UPLOAD_CHUNK {
            let rest = self.pending.split_off(UPLOAD_CHUNK);
            let chunk = std::mem::replace(&mut self.pending, rest);
            self.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if self.sender.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return Err(self.fail(Problem::Stopped));
            }
        }
        Ok(n)
    }
}
