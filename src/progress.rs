//! Progress reporting and interruption, as seen from domain code.
//!
//! Domain code reports through the `Progress` trait; the terminal implementation (bars on a
//! TTY, plain lines otherwise) lives in `output`. Ctrl-C cancels the run's token, which long
//! loops check through `check_interrupted` or by reading through a `Metered` reader, and waits
//! race with `interrupted()`.

use std::io::{self, Read};
use std::sync::LazyLock;

use tokio_util::sync::CancellationToken;

use crate::exit::Interrupted;

/// The run's cancellation: cancelled once, by the first stop signal (or a prompt that saw
/// Ctrl-C); waits complete at once, without polling.
static CANCEL: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// Called by the signal watcher (and a prompt that saw Ctrl-C).
pub fn set_interrupted() {
    CANCEL.cancel();
}

pub fn is_interrupted() -> bool {
    CANCEL.is_cancelled()
}

/// Completes when the run is asked to stop, for `select!` against a wait that might never end.
pub async fn interrupted() {
    CANCEL.cancelled().await
}

pub fn check_interrupted() -> Result<(), Interrupted> {
    if is_interrupted() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Receives what a long operation is doing.
pub trait Progress: Sync {
    /// A transfer of `total` bytes (when known) named `label` starts.
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    /// `bytes` more were moved.
    fn advance(&self, _bytes: u64) {}
    /// The current transfer ended.
    fn end(&self) {}
    /// A transfer that may run beside others (snapshots downloading or uploading side by
    /// side), each shown on its own; returns its id for `advance_transfer` and `end_transfer`.
    fn begin_transfer(&self, label: &str, total: Option<u64>) -> usize {
        self.begin(label, total);
        0
    }
    fn advance_transfer(&self, _id: usize, bytes: u64) {
        self.advance(bytes);
    }
    fn end_transfer(&self, _id: usize) {
        self.end();
    }
    /// A step worth telling in `--verbose` mode.
    fn step(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// Reads through to `inner`, advancing `progress` and stopping when Ctrl-C was pressed.
pub struct Metered<'a, T> {
    inner: T,
    progress: &'a dyn Progress,
}

impl<'a, T> Metered<'a, T> {
    pub fn new(inner: T, progress: &'a dyn Progress) -> Self {
        Metered { inner, progress }
    }
}

impl<T: Read> Read for Metered<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if is_interrupted() {
            // Not ErrorKind::Interrupted alone: std retries those; the payload makes it final.
            return Err(io::Error::other(Interrupted));
        }
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
