//! Patience with a Qdrant that cannot be reached or breaks a transfer: retries with exponential
//! backoff for at least `backup.transfer.retries` attempts and `retry_timeout`, and what counts as
//! a transfer worth resuming.

use std::time::{Duration, Instant};

use super::error::QdrantError;
use crate::config::Timeouts;
use crate::progress;

/// The first pause before a retry; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Retries of something that failed because Qdrant could not be reached: at least `retries`
/// attempts and at least `retry_for`, with exponential backoff; Ctrl-C ends them.
pub(super) struct Patience<'a> {
    timeouts: &'a Timeouts,
    since: Instant,
    failures: u32,
    backoff: Duration,
}

impl<'a> Patience<'a> {
    pub(super) fn new(timeouts: &'a Timeouts) -> Self {
        Patience {
            timeouts,
            since: Instant::now(),
            failures: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Progress was made: the count starts again.
    pub(super) fn reset(&mut self) {
        *self = Patience::new(self.timeouts);
    }

    /// After a failure: waits and returns true when another attempt is due.
    pub(super) async fn another_try(&mut self) -> bool {
        if self.failures == 0 {
            self.since = Instant::now();
        }
        self.failures += 1;
        let patient = self.failures <= self.timeouts.retries
            || self.since.elapsed() < self.timeouts.retry_for;
        if !patient || progress::is_interrupted() {
            return false;
        }
        tokio::select! {
            _ = progress::interrupted() => return false,
            _ = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

/// A transfer that broke and can be resumed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Resumable(pub(super) String);

pub(super) fn is_resumable(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Resumable>().is_some()
        || matches!(
            error.downcast_ref::<QdrantError>(),
            Some(
                QdrantError::Timeout { .. }
                    | QdrantError::Server { .. }
                    | QdrantError::Protocol { .. }
                    | QdrantError::Dropped { .. }
                    | QdrantError::Connect { .. }
            )
        )
}
