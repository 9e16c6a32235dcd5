//! Progress reporting and interruption, as seen from domain code.
//!
//! Domain code reports through the `Progress` trait, which hands out an owned `Meter` per
//! transfer; the terminal implementation (bars on a TTY, plain lines otherwise) lives in
//! `output`. Ctrl-C cancels the run's token, which long
//! loops check through `check_interrupted` or by reading through a `Metered` reader, and waits
//! race with `interrupted()`.

use std::io::{self, Read};
use std::sync::{Arc, LazyLock};

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
    /// A transfer of `total` bytes (when known) named `label` starts; transfers may run side by
    /// side, each shown on its own. Returns its meter, which ends when its last clone is dropped.
    fn transfer(&self, _label: &str, _total: Option<u64>) -> Meter {
        Meter::hidden()
    }
    /// A step worth telling in `--verbose` mode.
    fn step(&self, _message: &str) {}
}

/// How a front end draws one transfer (`output`'s terminal bar).
pub trait Bar: Send + Sync {
    fn inc(&self, bytes: u64);
    fn finish(&self);
}

/// One transfer's progress, owned: `Send + Sync + Clone`, so it goes wherever the bytes go (a
/// blocking reader thread, a request body reqwest owns) and counts them there, with no
/// borrowing, polling or lookup by id. Every clone advances the same bar; the bar ends when the
/// last clone is dropped.
#[derive(Clone, Default)]
pub struct Meter(Option<Arc<Drawn>>);

/// A bar, finished when dropped.
struct Drawn(Box<dyn Bar>);

impl Drop for Drawn {
    fn drop(&mut self) {
        self.0.finish();
    }
}

impl Meter {
    pub fn new(bar: impl Bar + 'static) -> Self {
        Meter(Some(Arc::new(Drawn(Box::new(bar)))))
    }

    /// A meter nobody sees.
    pub fn hidden() -> Self {
        Meter(None)
    }

    /// `bytes` more were moved.
    pub fn inc(&self, bytes: u64) {
        if let Some(drawn) = &self.0 {
            drawn.0.inc(bytes);
        }
    }
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// Reads through to `inner`, advancing `meter` and stopping when Ctrl-C was pressed.
pub struct Metered<T> {
    inner: T,
    meter: Meter,
}

impl<T> Metered<T> {
    pub fn new(inner: T, meter: Meter) -> Self {
        Metered { inner, meter }
    }
}

impl<T: Read> Read for Metered<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if is_interrupted() {
            // Not ErrorKind::Interrupted alone: std retries those; the payload makes it final.
            return Err(io::Error::other(Interrupted));
        }
        let n = self.inner.read(buf)?;
        self.meter.inc(n as u64);
        Ok(n)
    }
}
