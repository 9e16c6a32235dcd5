//! Patience with a Qdrant that cannot be reached, says "not now" or breaks a transfer: retries
//! with exponential backoff (or the server's `Retry-After`) for at least
//! `backup.transfer.retries` attempts and `retry_timeout`, and what counts as a transfer worth
//! resuming.

use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};

use super::error::QdrantError;
use crate::config::Timeouts;
use crate::progress;

/// The first pause before a retry; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` waited for at once.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Retries of something that failed because Qdrant could not be reached or said "not now": at
/// least `retries` attempts and at least `retry_for`, with exponential backoff (or the pause
/// the server asks for); Ctrl-C ends them.
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
        self.another_try_after(None).await
    }

    /// The same, waiting `hint` (the server's `Retry-After`, at most `MAX_RETRY_AFTER`)
    /// instead of the backoff when it gives one.
    pub(super) async fn another_try_after(&mut self, hint: Option<Duration>) -> bool {
        if self.failures == 0 {
            self.since = Instant::now();
        }
        self.failures += 1;
        let patient = self.failures <= self.timeouts.retries
            || self.since.elapsed() < self.timeouts.retry_for;
        if !patient || progress::is_interrupted() {
            return false;
        }
        let pause = hint.map_or(self.backoff, |hint| hint.min(MAX_RETRY_AFTER));
        tokio::select! {
            _ = progress::interrupted() => return false,
            _ = tokio::time::sleep(pause) => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

/// An answer that says "not now" and that nothing was done: Qdrant's rate limit (429, strict
/// mode, with `Retry-After`) or 503 (a shard not active yet; a proxy whose Qdrant is down).
pub(super) fn is_not_now(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The answer's `Retry-After` in seconds (the form Qdrant sends; an HTTP date is ignored).
pub(super) fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
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
