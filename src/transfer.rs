//! What creating and restoring share in moving snapshots: how transfers are paced (`Lanes`, a
//! `Turn` each), the stop of the others when one fails (`OtherFailed`, `first_failure`), where a
//! snapshot call goes as a journal records it (`place_of`), and the time of each phase (`Phases`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use crate::progress;
use crate::qdrant::{Client, Scope};
use crate::workdir::Place;

/// A phase of a command and the seconds it took.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub phase: String,
    pub seconds: f64,
}

/// Times the phases of a command, one after another.
pub struct Phases {
    since: Instant,
    pub done: Vec<Phase>,
}

impl Phases {
    pub fn start() -> Self {
        Phases {
            since: Instant::now(),
            done: Vec::new(),
        }
    }

    /// The phase `name` ended now (it began when the previous one ended).
    pub fn end(&mut self, name: &str) {
        let now = Instant::now();
        self.done.push(Phase {
            phase: name.to_string(),
            seconds: (now - self.since).as_secs_f64(),
        });
        self.since = now;
    }
}

/// The results in order, or the first failure that is not `OtherFailed` (a transfer stopped
/// because of another's failure reports that one).
pub(crate) fn first_failure<T>(results: Vec<Result<T>>) -> Result<Vec<T>> {
    if results.iter().any(Result::is_err) {
        let mut errors = results.into_iter().filter_map(Result::err);
        let first = errors.next().expect("one failed");
        return Err(std::iter::once(first)
            .chain(errors)
            .reduce(|chosen, e| {
                if chosen.is::<OtherFailed>() {
                    e
                } else {
                    chosen
                }
            })
            .expect("one failed"));
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("none failed"))
        .collect())
}

/// How snapshots are scheduled (`backup.transfer.parallel`): at most `parallel` in flight
/// (being made or downloading), and on each node at most one being made. So a server makes the
/// next snapshot while the previous one downloads, and holds at most `parallel` of wqm's
/// snapshots at once (making one takes about twice its size of temporary space); in a cluster,
/// the nodes work side by side. A failure anywhere stops the others, each deleting its server
/// snapshot as it stops.
pub(crate) struct Lanes {
    in_flight: Semaphore,
    /// One permit per node (by URL): making a snapshot.
    making: std::sync::Mutex<BTreeMap<String, Arc<Semaphore>>>,
    stop: watch::Sender<bool>,
    pub(crate) since: Instant,
}

/// A snapshot's turn: a slot among `parallel` and, until `made`, its node's permit to make one.
pub(crate) struct Turn<'a> {
    _slot: SemaphorePermit<'a>,
    making: Option<OwnedSemaphorePermit>,
    /// When the turn came.
    pub(crate) since: Instant,
}

impl Turn<'_> {
    /// The node may start the next: this snapshot is made (create), or this upload is all sent
    /// (restore).
    pub(crate) fn release_node(&mut self) {
        self.making = None;
    }
}

/// This transfer stopped because another failed (never the error reported).
#[derive(Debug, thiserror::Error)]
#[error("stopped because another transfer failed")]
pub(crate) struct OtherFailed;

impl Lanes {
    pub(crate) fn new(parallel: usize) -> Self {
        Lanes {
            in_flight: Semaphore::new(parallel),
            making: Default::default(),
            stop: watch::Sender::new(false),
            since: Instant::now(),
        }
    }

    /// Waits for a turn on `node`: its permit to make a snapshot first (so a slot is not held
    /// while the node is busy), then a slot. Fails when another transfer failed or on Ctrl-C.
    pub(crate) async fn turn(&self, node: &Client) -> Result<Turn<'_>> {
        let making = self
            .making
            .lock()
            .expect("lanes lock")
            .entry(node.display_url())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let permits = async {
            let making = making.acquire_owned().await;
            let slot = self.in_flight.acquire().await;
            (making, slot)
        };
        // Biased: a transfer that failed releases its permits just before it stops the others,
        // so a waiting one sees both at once and must take the stop, never the turn.
        tokio::select! {
            biased;
            () = self.until_stopped() => Err(OtherFailed.into()),
            _ = progress::interrupted() => Err(crate::exit::Interrupted.into()),
            (making, slot) = permits => Ok(Turn {
                _slot: slot.expect("the semaphore is never closed"),
                making: Some(making.expect("the semaphore is never closed")),
                since: Instant::now(),
            }),
        }
    }

    /// Completes once a transfer failed.
    pub(crate) async fn until_stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Runs `job`; its failure stops the others.
    pub(crate) async fn run<T>(
        &self,
        job: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = job.await;
        if result.as_ref().is_err_and(|e| !e.is::<OtherFailed>()) {
            self.stop.send_replace(true);
        }
        result
    }
}

/// Where a snapshot call goes, as a journal records it (no password).
pub(crate) fn place_of(client: &Client, scope: Scope<'_>) -> Place {
    let (collection, shard) = match scope {
        Scope::Collection(c) => (c, None),
        Scope::Shard(c, id) => (c, Some(id)),
    };
    Place {
        node: client.display_url(),
        collection: collection.to_string(),
        shard,
    }
}
