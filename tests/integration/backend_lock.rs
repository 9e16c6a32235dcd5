//! Lock objects on both backends, through the conformance suite's harness: shared locks go
//! together, an exclusive one goes alone, stale locks (old, or of a dead process of this host)
//! are ignored and removed, another host's fresh lock is respected, and a held lock stays fresh.

use std::sync::Arc;
use std::time::Duration;

use wqm::backend::lock::{self, Kind, Lock, LockError, LockInfo, Timing};
use wqm::backend::{self, Backend};

use crate::backend::{conformance, load, name};

conformance!(
    shared_locks_go_together,
    an_exclusive_lock_goes_alone,
    a_replacing_lock_waits_for_readers_not_for_adders,
    an_old_lock_is_stale,
    a_dead_process_of_this_host_is_stale_at_once,
    a_fresh_lock_of_another_host_is_respected,
    a_held_lock_stays_fresh,
    a_lock_removed_as_stale_is_lost,
    a_dropped_lock_is_released,
);

/// A lock object written by hand, as another run would have.
async fn planted(
    backend: &dyn Backend,
    host: &str,
    pid: u32,
    age: Duration,
    exclusive: bool,
) -> String {
    let time = wqm::now() - age.as_secs_f64();
    let info = LockInfo {
        host: host.into(),
        pid,
        time,
        started: time,
        exclusive,
        kind: None,
        command: "backup prune".into(),
        version: "0.3.0".into(),
    };
    let object = format!("{}{}", lock::LOCKS, backend::random_id());
    backend
        .save_new(&name(&object), serde_json::to_vec(&info).unwrap().into())
        .await
        .unwrap();
    object
}

async fn lock_names(backend: &dyn Backend) -> Vec<String> {
    let mut names: Vec<String> = lock::list(backend)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    names
}

fn assert_locked(result: Result<Lock, LockError>) -> String {
    match result {
        Err(e @ LockError::Locked { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn shared_locks_go_together(backend: Arc<dyn Backend>) {
    let first = Lock::acquire(backend.clone(), Kind::Shared, "backup create")
        .await
        .unwrap();
    let second = Lock::acquire(backend.clone(), Kind::Shared, "backup restore")
        .await
        .unwrap();
    assert_eq!(lock_names(&*backend).await.len(), 2);
    let held = load(&*backend, first.name(), None).await;
    let info: LockInfo = serde_json::from_slice(&held).unwrap();
    assert_eq!(
        (info.pid, info.exclusive, info.command.as_str()),
        (std::process::id(), false, "backup create")
    );
    assert_eq!(info.host, lock::hostname());
    first.release().await.unwrap();
    second.release().await.unwrap();
    assert!(lock_names(&*backend).await.is_empty());
}

async fn an_exclusive_lock_goes_alone(backend: Arc<dyn Backend>) {
    let shared = Lock::acquire(backend.clone(), Kind::Shared, "backup create")
        .await
        .unwrap();
    let refused =
        assert_locked(Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune").await);
    assert!(
        refused.contains("`wqm backup create`") && refused.contains("holds a shared lock"),
        "{refused}"
    );
    // The refused run backed out: only the shared lock is there.
    assert_eq!(lock_names(&*backend).await, [shared.name().to_string()]);
    shared.release().await.unwrap();

    let exclusive = Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune")
        .await
        .unwrap();
    let refused =
        assert_locked(Lock::acquire(backend.clone(), Kind::Shared, "backup create").await);
    assert!(refused.contains("holds an exclusive lock"), "{refused}");
    assert_locked(Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune").await);
    assert_eq!(lock_names(&*backend).await, [exclusive.name().to_string()]);
    exclusive.release().await.unwrap();
    Lock::acquire(backend.clone(), Kind::Shared, "backup create")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

async fn a_replacing_lock_waits_for_readers_not_for_adders(backend: Arc<dyn Backend>) {
    let create = Lock::acquire(backend.clone(), Kind::Adding, "backup create")
        .await
        .unwrap();
    let replace = Lock::acquire(backend.clone(), Kind::Replacing, "backup create --force")
        .await
        .unwrap();
    // Another `--force` and another create go on beside it; a reader and a prune wait.
    let other = Lock::acquire(backend.clone(), Kind::Replacing, "backup create --force")
        .await
        .unwrap();
    let refused =
        assert_locked(Lock::acquire(backend.clone(), Kind::Shared, "backup restore").await);
    assert!(refused.contains("holds a replacing lock"), "{refused}");
    assert_locked(Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune").await);
    // An older wqm knows no kinds: to it the replacing lock is exclusive.
    let held: LockInfo =
        serde_json::from_slice(&load(&*backend, replace.name(), None).await).unwrap();
    assert!(held.exclusive && held.kind.as_deref() == Some("replacing"));
    for lock in [replace, other] {
        lock.release().await.unwrap();
    }
    let reader = Lock::acquire(backend.clone(), Kind::Shared, "backup restore")
        .await
        .unwrap();
    let refused = assert_locked(
        Lock::acquire(backend.clone(), Kind::Replacing, "backup create --force").await,
    );
    assert!(refused.contains("`wqm backup restore`"), "{refused}");
    for lock in [reader, create] {
        lock.release().await.unwrap();
    }
    assert!(lock_names(&*backend).await.is_empty());
}

async fn an_old_lock_is_stale(backend: Arc<dyn Backend>) {
    let old = planted(
        &*backend,
        "elsewhere",
        1,
        Duration::from_secs(31 * 60),
        true,
    )
    .await;
    let exclusive = Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune")
        .await
        .unwrap();
    exclusive.release().await.unwrap();
    let removed = lock::remove_stale(&*backend, Timing::default())
        .await
        .unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].host, "elsewhere");
    assert!(!lock_names(&*backend).await.contains(&old));
}

async fn a_dead_process_of_this_host_is_stale_at_once(backend: Arc<dyn Backend>) {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    planted(&*backend, &lock::hostname(), dead, Duration::ZERO, true).await;
    Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let removed = lock::remove_stale(&*backend, Timing::default())
        .await
        .unwrap();
    assert_eq!(removed.iter().map(|l| l.pid).collect::<Vec<_>>(), [dead]);
    assert!(lock_names(&*backend).await.is_empty());
}

async fn a_fresh_lock_of_another_host_is_respected(backend: Arc<dyn Backend>) {
    // Another host's pid says nothing here, however dead it would be on this one.
    let theirs = planted(
        &*backend,
        "other-host",
        999_999,
        Duration::from_secs(29 * 60),
        false,
    )
    .await;
    let refused =
        assert_locked(Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune").await);
    assert!(refused.contains("`other-host`"), "{refused}");
    Lock::acquire(backend.clone(), Kind::Shared, "backup create")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert!(lock::remove_stale(&*backend, Timing::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(lock_names(&*backend).await, [theirs]);
}

async fn a_held_lock_stays_fresh(backend: Arc<dyn Backend>) {
    let timing = Timing {
        refresh_every: Duration::from_millis(300),
        stale_after: Duration::from_secs(2),
    };
    let held = Lock::acquire_with(backend.clone(), Kind::Shared, "backup create", timing)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info: LockInfo = serde_json::from_slice(&load(&*backend, held.name(), None).await).unwrap();
    assert!(wqm::now() - info.time < 2.0, "not refreshed: {info:?}");
    assert!(info.time > info.started + 1.0, "{info:?}");
    held.check().unwrap();
    // Still respected, by timing and as another host would judge it.
    assert_locked(
        Lock::acquire_with(backend.clone(), Kind::Exclusive, "backup prune", timing).await,
    );
    assert!(lock::remove_stale(&*backend, timing)
        .await
        .unwrap()
        .is_empty());
    held.release().await.unwrap();
}

async fn a_lock_removed_as_stale_is_lost(backend: Arc<dyn Backend>) {
    let timing = Timing {
        refresh_every: Duration::from_millis(200),
        stale_after: Duration::from_secs(60),
    };
    let held = Lock::acquire_with(backend.clone(), Kind::Shared, "backup create", timing)
        .await
        .unwrap();
    backend.remove(held.name()).await.unwrap();
    let mut lost = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(e) = held.check() {
            lost = Some(e);
            break;
        }
    }
    let lost = lost.expect("the refresher noticed the removal");
    assert!(matches!(lost, LockError::Lost { .. }), "{lost}");
    assert!(
        lost.to_string().contains("removed by another run as stale"),
        "{lost}"
    );
    // The refresher did not write it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(lock_names(&*backend).await.is_empty());
}

async fn a_dropped_lock_is_released(backend: Arc<dyn Backend>) {
    let held = Lock::acquire(backend.clone(), Kind::Exclusive, "backup prune")
        .await
        .unwrap();
    drop(held);
    for _ in 0..100 {
        if lock_names(&*backend).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dropped lock is still there");
}
