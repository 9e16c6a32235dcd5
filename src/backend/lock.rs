//! Lock objects in a repository (as restic's): every run that reads or writes holds one for its
//! whole life — shared for restore, export, validate and copy's source, adding for the runs that
//! only add backups (create, copy's destination), replacing while a `create --force` puts its new
//! backup in place on S3, exclusive for prune's garbage collection (`Kind`). A lock is
//! `.wqm-locks/<random id>`, JSON `{host, pid, time, exclusive, kind, ...}`, rewritten with a new
//! `time` every `Timing::refresh_every` (5 minutes) by a task of its own.
//!
//! Acquiring writes the run's own lock object first (`save_new`), then lists every lock: if one
//! conflicts (`Kind::conflicts`) and is not stale, ours is removed and the run backs out. Two
//! runs racing both see each other and both back out, never both go ahead. A lock is **stale** when its time is older than `Timing::stale_after`
//! (30 minutes: six missed refreshes), or at once when it belongs to this host and its process
//! is gone. Stale locks are ignored by `acquire` and removed by `remove_stale` (cleanup).
//! A run whose own lock could not be refreshed, or was removed by another as stale, is told by
//! `Lock::check` and must stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Backend, BackendError, Name};
use crate::exit::{Classify, ExitCode};

/// Where lock objects live in a repository: hidden, so that no backup can be named so and
/// `list` never shows it.
pub const LOCKS: &str = ".wqm-locks/";

/// How often a held lock is refreshed, and when a lock counts as abandoned.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub refresh_every: Duration,
    pub stale_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            refresh_every: Duration::from_secs(5 * 60),
            stale_after: Duration::from_secs(30 * 60),
        }
    }
}

/// What a run's lock keeps out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A run that reads the repository's backups (restore, export, validate, info, copy's
    /// source), or one of a wqm that knew no other kind.
    Shared,
    /// A run that only adds backups and reads none that are there (create, copy's
    /// destination, the sending of a restore's safety backup).
    Adding,
    /// A `create --force` putting its new backup in place of the old one on S3: no reader may
    /// be between two files of the old one, but runs that only add may go on.
    Replacing,
    /// Prune's deletions and garbage collection, cleanup finishing a killed replace: alone.
    Exclusive,
}

impl Kind {
    /// Whether two runs holding these may not go on together.
    pub fn conflicts(self, other: Kind) -> bool {
        use Kind::*;
        matches!(
            (self, other),
            (Exclusive, _) | (_, Exclusive) | (Replacing, Shared) | (Shared, Replacing)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Shared => "shared",
            Kind::Adding => "adding",
            Kind::Replacing => "replacing",
            Kind::Exclusive => "exclusive",
        }
    }

    /// The kind as messages name it: an adding lock is a shared one to the user.
    pub fn shown(self) -> &'static str {
        match self {
            Kind::Shared | Kind::Adding => "shared",
            Kind::Replacing => "replacing",
            Kind::Exclusive => "exclusive",
        }
    }
}

/// What a lock object holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// When it was written or last refreshed, seconds since the epoch.
    pub time: f64,
    /// When the run took it.
    pub started: f64,
    /// Keeps out every run that knows no `kind` (true for `Replacing` too: a wqm older than it
    /// waits for it).
    pub exclusive: bool,
    /// `Kind::name`; absent in the locks of a wqm older than kinds (then `exclusive` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// What the run is (`backup create`, `backup prune`, ...), for the message that names it.
    pub command: String,
    pub version: String,
}

impl LockInfo {
    /// Whether the lock no longer protects anything: not refreshed for `stale_after`, or held by
    /// a process of this host that is gone.
    pub fn is_stale(&self, now: f64, timing: Timing) -> bool {
        if now - self.time > timing.stale_after.as_secs_f64() {
            return true;
        }
        self.host == hostname()
            && self.pid != std::process::id()
            && !crate::process::alive(self.pid)
    }

    /// What it keeps out: its `kind`, or when it has none (an older wqm's, or a kind this one
    /// does not know) what `exclusive` says.
    pub fn kind(&self) -> Kind {
        match self.kind.as_deref() {
            Some("shared") => Kind::Shared,
            Some("adding") => Kind::Adding,
            Some("replacing") => Kind::Replacing,
            _ if self.exclusive => Kind::Exclusive,
            _ => Kind::Shared,
        }
    }

    fn describe(&self) -> String {
        let kind = self.kind();
        let article = if kind == Kind::Exclusive { "an" } else { "a" };
        let since = shown_time(self.started);
        format!(
            "`wqm {}` (pid {} on `{}`, since {since}) holds {article} {} lock",
            self.command,
            self.pid,
            self.host,
            kind.shown()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("`{repository}` is in use: {holder}")]
    Locked { repository: String, holder: String },
    #[error("lock `{name}` in `{repository}` cannot be read ({reason}); another run may hold it")]
    Unreadable {
        repository: String,
        name: String,
        reason: String,
    },
    #[error("this run's lock on `{repository}` was lost ({reason}); it stopped so that a prune cannot remove what it uses")]
    Lost { repository: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl Classify for LockError {
    fn exit_code(&self) -> ExitCode {
        match self {
            LockError::Backend(e) => e.exit_code(),
            _ => ExitCode::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            LockError::Locked { .. } => Some(
                "run again when it is done; a lock of a run that died is ignored once stale (30 minutes without refresh, at once for a dead process of this host), and `wqm backup cleanup` removes it".to_string(),
            ),
            LockError::Unreadable { .. } => Some(
                "if no wqm run is using the repository, remove the lock object".to_string(),
            ),
            LockError::Lost { .. } => Some("run it again".to_string()),
            LockError::Backend(e) => e.hint(),
        }
    }
}

/// A lock this run holds; refreshed by a task until released or dropped (dropping removes the
/// lock object on a task of its own, as a last resort: call `release`).
#[derive(Debug)]
pub struct Lock {
    backend: Arc<dyn Backend>,
    name: Name,
    info: LockInfo,
    lost: Arc<Mutex<Option<String>>>,
    /// Held across each write of the lock object, and set once it is released: a refresh
    /// already writing finishes before the release removes the object (aborting the task would
    /// not stop a local save's blocking rename, which could bring the lock back after its
    /// removal), and none starts after.
    released: Arc<tokio::sync::Mutex<bool>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl Lock {
    /// Takes a lock of `kind` on the repository, with the default timing.
    pub async fn acquire(
        backend: Arc<dyn Backend>,
        kind: Kind,
        command: &str,
    ) -> Result<Lock, LockError> {
        Self::acquire_with(backend, kind, command, Timing::default()).await
    }

    pub async fn acquire_with(
        backend: Arc<dyn Backend>,
        kind: Kind,
        command: &str,
        timing: Timing,
    ) -> Result<Lock, LockError> {
        // Refuse early, before writing anything, when a live conflicting lock is there.
        check_others(backend.as_ref(), None, kind, timing).await?;
        let now = crate::now();
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            time: now,
            started: now,
            exclusive: matches!(kind, Kind::Exclusive | Kind::Replacing),
            kind: Some(kind.name().to_string()),
            command: command.to_string(),
            version: crate::VERSION.to_string(),
        };
        let name = Name::new(format!("{LOCKS}{}", super::random_id()))?;
        backend.save_new(&name, to_json(&info).into()).await?;
        if let Err(e) = check_others(backend.as_ref(), Some(&name), kind, timing).await {
            let _ = backend.remove(&name).await;
            return Err(e);
        }
        let lost = Arc::new(Mutex::new(None));
        let released = Arc::new(tokio::sync::Mutex::new(false));
        let refresher = tokio::spawn(refresh_loop(
            backend.clone(),
            name.clone(),
            info.clone(),
            lost.clone(),
            released.clone(),
            timing,
        ));
        Ok(Lock {
            backend,
            name,
            info,
            lost,
            released,
            refresher: Some(refresher),
        })
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// `Lost` when a refresh failed or found the lock removed: the run must stop.
    pub fn check(&self) -> Result<(), LockError> {
        match self.lost.lock().expect("lock state").clone() {
            Some(reason) => Err(LockError::Lost {
                repository: self.backend.describe(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Rewrites the lock with the current time now (the refresher does it on its own).
    pub async fn refresh(&self) -> Result<(), LockError> {
        let released = self.released.lock().await;
        if !*released {
            refresh_once(self.backend.as_ref(), &self.name, &self.info).await?;
        }
        self.check()
    }

    /// Stops refreshing and removes the lock object.
    pub async fn release(mut self) -> Result<(), BackendError> {
        let refresher = self.refresher.take();
        release(
            self.backend.clone(),
            self.name.clone(),
            self.released.clone(),
            refresher,
        )
        .await
    }
}

/// Waits for a refresh under way to finish writing, stops the refresher, removes the object.
async fn release(
    backend: Arc<dyn Backend>,
    name: Name,
    released: Arc<tokio::sync::Mutex<bool>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
) -> Result<(), BackendError> {
    let mut released = released.lock().await;
    *released = true;
    if let Some(refresher) = refresher {
        refresher.abort();
        let _ = refresher.await;
    }
    backend.remove(&name).await
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(refresher) = self.refresher.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let (backend, name) = (self.backend.clone(), self.name.clone());
                    runtime.spawn(release(
                        backend,
                        name,
                        self.released.clone(),
                        Some(refresher),
                    ));
                }
                Err(_) => refresher.abort(),
            }
        }
    }
}

async fn refresh_loop(
    backend: Arc<dyn Backend>,
    name: Name,
    info: LockInfo,
    lost: Arc<Mutex<Option<String>>>,
    released: Arc<tokio::sync::Mutex<bool>>,
    timing: Timing,
) {
    loop {
        tokio::time::sleep(timing.refresh_every).await;
        let released = released.lock().await;
        if *released {
            return;
        }
        if let Err(e) = refresh_once(backend.as_ref(), &name, &info).await {
            *lost.lock().expect("lock state") = Some(e.to_string());
            return;
        }
    }
}

/// Rewrites `name` with a new time, unless it is gone (another run removed it as stale).
async fn refresh_once(
    backend: &dyn Backend,
    name: &Name,
    info: &LockInfo,
) -> Result<(), LockError> {
    match backend.stat(name).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            return Err(LockError::Lost {
                repository: backend.describe(),
                reason: format!("`{name}` was removed by another run as stale"),
            })
        }
        Err(e) => return Err(e.into()),
    }
    let mut info = info.clone();
    info.time = crate::now();
    backend.save(name, super::once(to_json(&info))).await?;
    Ok(())
}

/// A lock's time (seconds since the epoch) as shown to the user, in UTC.
pub fn shown_time(seconds: f64) -> String {
    chrono::DateTime::from_timestamp(seconds as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn to_json(info: &LockInfo) -> Vec<u8> {
    serde_json::to_vec_pretty(info).expect("a lock always serializes")
}

/// Every lock object of the repository with what it holds (`Err` for one that cannot be read).
pub async fn list(
    backend: &dyn Backend,
) -> Result<Vec<(Name, Result<LockInfo, String>)>, BackendError> {
    list_except(backend, None).await
}

/// `list` without `own` (whose content its holder knows), the objects read side by side: each
/// read is a round trip, and every run lists the locks twice before it starts.
async fn list_except(
    backend: &dyn Backend,
    own: Option<&Name>,
) -> Result<Vec<(Name, Result<LockInfo, String>)>, BackendError> {
    let names: Vec<Name> = backend
        .list(LOCKS)
        .await?
        .into_iter()
        .filter_map(|object| Name::new(object.name).ok())
        .filter(|name| Some(name) != own)
        .collect();
    let read = futures_util::future::join_all(names.iter().map(|name| async move {
        match backend.load(name, None).await {
            Ok(data) => Ok(Some(super::collect(data).await)),
            Err(e) if e.is_not_found() => Ok(None), // Released meanwhile.
            Err(e) => Err(e),
        }
    }))
    .await;
    let mut found = Vec::new();
    for (name, bytes) in names.into_iter().zip(read) {
        let info = match bytes? {
            None => continue,
            Some(Ok(bytes)) => {
                serde_json::from_slice::<LockInfo>(&bytes).map_err(|e| e.to_string())
            }
            Some(Err(e)) => Err(e.to_string()),
        };
        found.push((name, info));
    }
    Ok(found)
}

/// Refuses when a live lock other than `own` conflicts with a lock of `kind`.
async fn check_others(
    backend: &dyn Backend,
    own: Option<&Name>,
    kind: Kind,
    timing: Timing,
) -> Result<(), LockError> {
    let now = crate::now();
    for (name, info) in list_except(backend, own).await? {
        match info {
            Ok(info) if info.is_stale(now, timing) || !info.kind().conflicts(kind) => {}
            Ok(info) => {
                return Err(LockError::Locked {
                    repository: backend.describe(),
                    holder: info.describe(),
                })
            }
            Err(reason) => {
                return Err(LockError::Unreadable {
                    repository: backend.describe(),
                    name: name.to_string(),
                    reason,
                })
            }
        }
    }
    Ok(())
}

/// Removes every stale lock; returns what each was, for the run to say so.
pub async fn remove_stale(
    backend: &dyn Backend,
    timing: Timing,
) -> Result<Vec<LockInfo>, BackendError> {
    let now = crate::now();
    let mut removed = Vec::new();
    for (name, info) in list(backend).await? {
        if let Ok(info) = info {
            if info.is_stale(now, timing) {
                backend.remove(&name).await?;
                removed.push(info);
            }
        }
    }
    Ok(removed)
}

/// This host's name, as locks record it.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ByteStream, ObjectInfo, Unfinished};
    use bytes::Bytes;
    use std::ops::Range;

    /// A local backend whose `save` of an existing object writes it a while later, on a task
    /// of its own that the caller merely awaits: as a local save's blocking rename goes on
    /// after the task awaiting it was aborted.
    #[derive(Debug)]
    struct SlowSaves(Arc<dyn Backend>);

    #[async_trait::async_trait]
    impl Backend for SlowSaves {
        fn describe(&self) -> String {
            self.0.describe()
        }
        async fn save(&self, name: &Name, data: ByteStream) -> Result<u64, BackendError> {
            let (inner, name) = (self.0.clone(), name.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                inner.save(&name, data).await
            })
            .await
            .expect("the save task")
        }
        async fn save_new(&self, name: &Name, data: Bytes) -> Result<(), BackendError> {
            self.0.save_new(name, data).await
        }
        async fn refuses_taken_names(&self) -> Result<bool, BackendError> {
            self.0.refuses_taken_names().await
        }
        async fn top_level(&self) -> Result<Vec<String>, BackendError> {
            self.0.top_level().await
        }
        async fn load(
            &self,
            name: &Name,
            range: Option<Range<u64>>,
        ) -> Result<ByteStream, BackendError> {
            self.0.load(name, range).await
        }
        async fn stat(&self, name: &Name) -> Result<ObjectInfo, BackendError> {
            self.0.stat(name).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
            self.0.list(prefix).await
        }
        async fn remove(&self, name: &Name) -> Result<(), BackendError> {
            self.0.remove(name).await
        }
        async fn unfinished(&self) -> Result<Vec<Unfinished>, BackendError> {
            self.0.unfinished().await
        }
        async fn abort(&self, upload: &Unfinished) -> Result<(), BackendError> {
            self.0.abort(upload).await
        }
    }

    #[tokio::test]
    async fn a_refresh_under_way_cannot_bring_a_released_lock_back() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Backend> =
            Arc::new(crate::backend::local::LocalBackend::open(dir.path()).unwrap());
        let backend: Arc<dyn Backend> = Arc::new(SlowSaves(local.clone()));
        let timing = Timing {
            refresh_every: Duration::from_millis(50),
            stale_after: Duration::from_secs(60),
        };
        let lock = Lock::acquire_with(backend, Kind::Adding, "backup create", timing)
            .await
            .unwrap();
        // The first refresh is writing (it takes 300 ms) when the lock is released.
        tokio::time::sleep(Duration::from_millis(120)).await;
        lock.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(local.list(LOCKS).await.unwrap(), Vec::new());
    }

    fn info(host: &str, pid: u32, time: f64) -> LockInfo {
        LockInfo {
            host: host.into(),
            pid,
            time,
            started: time,
            exclusive: false,
            kind: None,
            command: "backup create".into(),
            version: "0.3.0".into(),
        }
    }

    #[test]
    fn staleness_is_age_or_a_dead_process_of_this_host() {
        let timing = Timing::default();
        let now = 10_000.0;
        let me = std::process::id();
        assert!(!info("elsewhere", 1, now - 1799.0).is_stale(now, timing));
        assert!(info("elsewhere", 1, now - 1801.0).is_stale(now, timing));
        assert!(!info(&hostname(), me, now).is_stale(now, timing));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(info(&hostname(), dead, now).is_stale(now, timing));
        // Another host's pid means nothing here.
        assert!(!info("elsewhere", dead, now).is_stale(now, timing));
    }

    #[test]
    fn a_holder_is_described_for_the_user() {
        let mut held = info("h1", 42, 0.0);
        assert_eq!(
            held.describe(),
            "`wqm backup create` (pid 42 on `h1`, since 1970-01-01 00:00:00 UTC) holds a shared lock"
        );
        held.exclusive = true;
        assert!(held.describe().ends_with("holds an exclusive lock"));
        held.kind = Some("replacing".into());
        assert!(held.describe().ends_with("holds a replacing lock"));
    }

    #[test]
    fn a_replacing_lock_waits_for_readers_and_prune_only() {
        use Kind::*;
        let all = [Shared, Adding, Replacing, Exclusive];
        for kind in all {
            assert!(Exclusive.conflicts(kind) && kind.conflicts(Exclusive));
        }
        assert!(Replacing.conflicts(Shared) && Shared.conflicts(Replacing));
        for (a, b) in [
            (Replacing, Adding),
            (Replacing, Replacing),
            (Shared, Adding),
            (Adding, Adding),
            (Shared, Shared),
        ] {
            assert!(!a.conflicts(b) && !b.conflicts(a), "{a:?} {b:?}");
        }
    }

    #[test]
    fn a_lock_without_a_kind_or_of_an_unknown_one_is_what_exclusive_says() {
        let mut old = info("h1", 42, 0.0);
        assert_eq!(old.kind(), Kind::Shared);
        old.exclusive = true;
        assert_eq!(old.kind(), Kind::Exclusive);
        old.kind = Some("from-a-newer-wqm".into());
        assert_eq!(old.kind(), Kind::Exclusive);
        old.kind = Some("adding".into());
        assert_eq!(old.kind(), Kind::Adding);
    }
}
