//! Uploads that run beside the work that starts them (`Courier`'s chunks, `Packer`'s packs): the
//! first that fails stops the work at its next start, and `finish` waits for every one.

use std::future::Future;
use std::io;
use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::task::JoinSet;

pub(super) struct Tasks<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    running: JoinSet<Result<T, String>>,
    done: Vec<T>,
    /// The first that failed, said.
    failed: Option<String>,
}

impl<T> Inner<T> {
    fn record(&mut self, ended: Result<Result<T, String>, tokio::task::JoinError>) {
        match ended {
            Ok(Ok(done)) => self.done.push(done),
            Ok(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                self.failed.get_or_insert(e.to_string());
            }
        }
    }

    fn failure(&self) -> io::Result<()> {
        match &self.failed {
            Some(failed) => Err(io::Error::other(failed.clone())),
            None => Ok(()),
        }
    }
}

impl<T: Send + 'static> Tasks<T> {
    pub(super) fn new() -> Self {
        Tasks {
            inner: Mutex::new(Inner {
                running: JoinSet::new(),
                done: Vec::new(),
                failed: None,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in the tasks that ended: the first failure so far is an error.
    pub(super) fn check(&self) -> io::Result<()> {
        let mut inner = self.inner();
        while let Some(ended) = inner.running.try_join_next() {
            inner.record(ended);
        }
        inner.failure()
    }

    /// Starts `task` on `runtime`.
    pub(super) fn spawn(
        &self,
        task: impl Future<Output = Result<T, String>> + Send + 'static,
        runtime: &Handle,
    ) {
        self.inner().running.spawn_on(task, runtime);
    }

    /// Waits for every task started; what they gave, or the first failure.
    pub(super) async fn finish(&self) -> io::Result<Vec<T>> {
        let mut running = std::mem::take(&mut self.inner().running);
        let mut ended = Vec::new();
        while let Some(one) = running.join_next().await {
            ended.push(one);
        }
        let mut inner = self.inner();
        for one in ended {
            inner.record(one);
        }
        inner.failure()?;
        Ok(std::mem::take(&mut inner.done))
    }
}
