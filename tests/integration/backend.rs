//! The backend conformance suite (as restic's backend tests): every check is one generic
//! function over `Arc<dyn Backend>`, run against the local directory always and against a real
//! S3 server (SeaweedFS, `../shared/bin/s3-serve`, started by `.ci/run`) when `WQM_TEST_S3`
//! is set. Each S3 test works under a random prefix of the shared bucket. The lock tests run
//! the same way (`backend_lock.rs`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use wqm::backend::s3::{S3Backend, PART_SIZE};
use wqm::backend::{
    self, local::LocalBackend, Backend, BackendError, ByteStream, Name, S3Options, Secret,
};

/// The reason the S3 half is skipped where no server is configured.
pub const NEEDS_S3: &str = "needs a real S3 server: WQM_TEST_S3=1 and the AWS_* variables and S3_BUCKET of `eval \"$(../shared/bin/s3-serve)\"` (.ci/run does this)";

/// Generates one test per check for each backend.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$check(crate::backend::local(dir.path())).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(real_s3), ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1")]
                async fn $check() {
                    super::$check(crate::backend::s3().await).await;
                }
            )*
        }
    };
}
pub(crate) use conformance;

conformance!(
    save_and_load_whole_and_ranged,
    stat_tells_the_size_or_not_found,
    list_by_prefix,
    list_pages_through_many_objects,
    remove_is_idempotent,
    remove_all_removes_many_and_nothing_else,
    save_replaces_and_save_new_refuses,
    copy_replaces_the_target_and_keeps_the_source,
    save_new_has_one_winner,
    a_large_stream_is_sent_while_it_is_read,
    a_failed_save_leaves_nothing_visible,
    a_dropped_save_leaves_nothing_visible,
    a_killed_save_is_found_and_aborted,
    unusual_names_round_trip,
);

pub fn local(dir: &std::path::Path) -> Arc<dyn Backend> {
    Arc::new(LocalBackend::open(&dir.join("repo")).unwrap())
}

/// The shared server's bucket under a prefix of this test's own.
pub async fn s3() -> Arc<dyn Backend> {
    let bucket = std::env::var("S3_BUCKET").expect(NEEDS_S3);
    let settings = S3Options::default().resolve().expect(NEEDS_S3);
    let prefix = format!("test-{}", backend::random_id());
    let backend = S3Backend::open(&bucket, &prefix, &settings).unwrap();
    backend.check().await.expect(NEEDS_S3);
    Arc::new(backend)
}

pub fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

pub async fn load(
    backend: &dyn Backend,
    name: &Name,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    backend::collect(backend.load(name, range).await.unwrap())
        .await
        .unwrap()
}

async fn names(backend: &dyn Backend, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    names
}

/// `len` bytes of a pattern no two offsets of a part share, in 64 KiB pieces.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn generated(len: u64) -> ByteStream {
    stream::unfold(0u64, move |at| async move {
        (at < len).then(|| {
            let end = (at + 64 * 1024).min(len);
            let piece: Vec<u8> = (at..end).map(pattern).collect();
            (Ok(Bytes::from(piece)), end)
        })
    })
    .boxed()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    wqm::checksum::to_hex(&sha2::Sha256::digest(bytes))
}

async fn save_and_load_whole_and_ranged(backend: Arc<dyn Backend>) {
    let object = name("data/one");
    let content: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let written = backend
        .save(&object, backend::once(content.clone()))
        .await
        .unwrap();
    assert_eq!(written, 1000);
    assert_eq!(load(&*backend, &object, None).await, content);
    assert_eq!(
        load(&*backend, &object, Some(10..20)).await,
        &content[10..20]
    );
    assert_eq!(load(&*backend, &object, Some(0..1)).await, &content[..1]);
    // Past the end: the bytes that exist.
    assert_eq!(
        load(&*backend, &object, Some(990..5000)).await,
        &content[990..]
    );
    assert_eq!(load(&*backend, &object, Some(1000..1010)).await, b"");
    assert_eq!(load(&*backend, &object, Some(2000..3000)).await, b"");
    assert_eq!(load(&*backend, &object, Some(5..5)).await, b"");
    // An empty object, and a stream of many small pieces.
    let empty = name("data/empty");
    assert_eq!(
        backend
            .save(&empty, backend::once(Vec::new()))
            .await
            .unwrap(),
        0
    );
    assert_eq!(load(&*backend, &empty, None).await, b"");
    let pieces = name("data/pieces");
    let many = stream::iter((0..100u8).map(|i| Ok(Bytes::from(vec![i; 3])))).boxed();
    assert_eq!(backend.save(&pieces, many).await.unwrap(), 300);
    assert_eq!(load(&*backend, &pieces, Some(297..300)).await, vec![99; 3]);
    // Missing objects, whole and ranged.
    for range in [None, Some(0..10)] {
        let Err(error) = backend.load(&name("data/missing"), range).await else {
            panic!("a missing object loaded");
        };
        assert!(error.is_not_found(), "{error}");
        assert!(error.to_string().contains("`data/missing`"), "{error}");
    }
}

async fn stat_tells_the_size_or_not_found(backend: Arc<dyn Backend>) {
    let object = name("a/b/c");
    backend
        .save(&object, backend::once(vec![7u8; 12345]))
        .await
        .unwrap();
    let info = backend.stat(&object).await.unwrap();
    assert_eq!((info.name.as_str(), info.size), ("a/b/c", 12345));
    for missing in ["a/b/d", "a/b", "x/y/z"] {
        let error = backend.stat(&name(missing)).await.unwrap_err();
        assert!(
            matches!(error, BackendError::NotFound { .. }),
            "{missing}: {error}"
        );
    }
}

async fn list_by_prefix(backend: Arc<dyn Backend>) {
    for object in [
        "locks/1",
        "locks/2",
        "locksmith",
        "snapshots/a/1",
        "snapshots/b",
        "top",
    ] {
        backend
            .save(&name(object), backend::once(object.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    assert_eq!(names(&*backend, "locks/").await, ["locks/1", "locks/2"]);
    assert_eq!(
        names(&*backend, "locks").await,
        ["locks/1", "locks/2", "locksmith"]
    );
    assert_eq!(
        names(&*backend, "snapshots/").await,
        ["snapshots/a/1", "snapshots/b"]
    );
    assert_eq!(names(&*backend, "snapshots/a").await, ["snapshots/a/1"]);
    assert_eq!(names(&*backend, "nothing/").await, Vec::<String>::new());
    assert_eq!(
        names(&*backend, "").await,
        [
            "locks/1",
            "locks/2",
            "locksmith",
            "snapshots/a/1",
            "snapshots/b",
            "top"
        ]
    );
    let sizes: Vec<u64> = backend
        .list("locks/")
        .await
        .unwrap()
        .iter()
        .map(|o| o.size)
        .collect();
    assert_eq!(sizes, [7, 7]);
    // The names at the top, once each, without the objects under them; a save under way (the
    // backend's own bookkeeping) is not among them.
    assert_eq!(backend.top_level().await.unwrap(), ["locks", "snapshots"]);
}

async fn list_pages_through_many_objects(backend: Arc<dyn Backend>) {
    // S3 answers a listing 1000 keys at a time.
    const COUNT: usize = 1100;
    stream::iter(0..COUNT)
        .map(|i| {
            let backend = backend.clone();
            async move {
                let object = name(&format!("many/{i:05}"));
                backend
                    .save(&object, backend::once(vec![1u8; i % 7]))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let listed = backend.list("many/").await.unwrap();
    assert_eq!(listed.len(), COUNT);
    let mut seen: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), COUNT);
    assert!(listed.iter().all(|o| {
        let i: usize = o.name["many/".len()..].parse().unwrap();
        o.size == (i % 7) as u64
    }));
}

async fn remove_is_idempotent(backend: Arc<dyn Backend>) {
    let object = name("gone/soon");
    backend
        .save(&object, backend::once(b"x".to_vec()))
        .await
        .unwrap();
    backend.remove(&object).await.unwrap();
    assert!(backend.stat(&object).await.unwrap_err().is_not_found());
    assert_eq!(names(&*backend, "gone/").await, Vec::<String>::new());
    // Again, and a name whose directory never existed: no error.
    backend.remove(&object).await.unwrap();
    backend.remove(&name("never/was/here")).await.unwrap();
}

async fn remove_all_removes_many_and_nothing_else(backend: Arc<dyn Backend>) {
    // More than S3 takes in one `DeleteObjects` request.
    const COUNT: usize = 1100;
    let doomed: Vec<Name> = (0..COUNT).map(|i| name(&format!("batch/{i:05}"))).collect();
    stream::iter(doomed.clone())
        .map(|object| {
            let backend = backend.clone();
            async move {
                backend
                    .save(&object, backend::once(b"x".to_vec()))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let kept = name("batchmate/kept");
    backend
        .save(&kept, backend::once(b"y".to_vec()))
        .await
        .unwrap();
    // With names that were never there: no error.
    let mut names_given = doomed;
    names_given.push(name("batch/never"));
    names_given.push(name("never/was/here"));
    backend.remove_all(&names_given).await.unwrap();
    assert_eq!(names(&*backend, "batch/").await, Vec::<String>::new());
    assert_eq!(names(&*backend, "batchmate/").await, ["batchmate/kept"]);
    backend.remove_all(&[]).await.unwrap();
}

async fn save_replaces_and_save_new_refuses(backend: Arc<dyn Backend>) {
    let object = name("config");
    backend
        .save(&object, backend::once(b"first, longer".to_vec()))
        .await
        .unwrap();
    backend
        .save(&object, backend::once(b"second".to_vec()))
        .await
        .unwrap();
    assert_eq!(load(&*backend, &object, None).await, b"second");
    let error = backend
        .save_new(&object, Bytes::from_static(b"third"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackendError::AlreadyExists { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("`config` already exists"),
        "{error}"
    );
    assert_eq!(load(&*backend, &object, None).await, b"second");
    let fresh = name("fresh/one");
    backend
        .save_new(&fresh, Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert_eq!(load(&*backend, &fresh, None).await, b"new");
    assert_eq!(names(&*backend, "").await, ["config", "fresh/one"]);
}

async fn copy_replaces_the_target_and_keeps_the_source(backend: Arc<dyn Backend>) {
    let source = name("from/data");
    let big = 3 * PART_SIZE as u64 / 2;
    backend.save(&source, generated(big)).await.unwrap();
    let target = name("to/data");
    backend
        .save(&target, backend::once(b"old".to_vec()))
        .await
        .unwrap();
    assert_eq!(backend.copy(&source, &target).await.unwrap(), big);
    let copied = load(&*backend, &target, None).await;
    assert_eq!(copied.len() as u64, big);
    assert_eq!(
        sha256(&copied),
        sha256(&load(&*backend, &source, None).await)
    );
    assert_eq!(names(&*backend, "").await, ["from/data", "to/data"]);
    // A missing source is not found, and nothing is made.
    let error = backend
        .copy(&name("from/never"), &name("to/never"))
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error}");
    assert_eq!(names(&*backend, "to/").await, ["to/data"]);
    // The two are apart: the source saved over or removed, the copy stays as it was (a
    // local copy is a second link to the file).
    backend
        .save(&source, backend::once(b"new".to_vec()))
        .await
        .unwrap();
    assert_eq!(load(&*backend, &target, None).await.len() as u64, big);
    backend.remove(&source).await.unwrap();
    assert_eq!(load(&*backend, &target, None).await.len() as u64, big);
    // A copy by link leaves no temporary name behind.
    assert!(backend.unfinished().await.unwrap().is_empty());
}

async fn save_new_has_one_winner(backend: Arc<dyn Backend>) {
    let object = name("race");
    let attempts = (0..8u8).map(|i| {
        let (backend, object) = (backend.clone(), object.clone());
        tokio::spawn(async move { backend.save_new(&object, Bytes::from(vec![i; 10])).await })
    });
    let results: Vec<_> = futures_util::future::join_all(attempts).await;
    let won: Vec<u8> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.as_ref().unwrap().is_ok())
        .map(|(i, _)| i as u8)
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for result in results {
        if let Err(e) = result.unwrap() {
            assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e}");
        }
    }
    assert_eq!(load(&*backend, &object, None).await, vec![won[0]; 10]);
}

/// A 20 MB stream (three S3 parts): the backend writes while it reads — at 16 MB an upload is
/// under way (`unfinished` shows it) — and what is loaded is what was sent.
async fn a_large_stream_is_sent_while_it_is_read(backend: Arc<dyn Backend>) {
    const LEN: u64 = 20_000_000;
    assert!(LEN > 2 * PART_SIZE as u64);
    let object = name("snapshots/big");
    let probed = Arc::new(AtomicU64::new(0));
    let (probe_backend, probe_seen) = (backend.clone(), probed.clone());
    let data = generated(LEN)
        .then(move |piece| {
            let (backend, seen) = (probe_backend.clone(), probe_seen.clone());
            async move {
                let at = seen.fetch_add(
                    piece.as_ref().map(|p| p.len() as u64).unwrap_or(0),
                    Ordering::SeqCst,
                );
                if at == 16 * 1024 * 1024 {
                    let unfinished = backend.unfinished().await.unwrap();
                    assert_eq!(unfinished.len(), 1, "no upload under way at 16 MiB");
                    // Nothing is visible before it is whole.
                    assert!(backend
                        .stat(&name("snapshots/big"))
                        .await
                        .unwrap_err()
                        .is_not_found());
                }
                piece
            }
        })
        .boxed();
    assert_eq!(backend.save(&object, data).await.unwrap(), LEN);
    assert_eq!(probed.load(Ordering::SeqCst), LEN);
    assert_eq!(backend.stat(&object).await.unwrap().size, LEN);
    assert!(backend.unfinished().await.unwrap().is_empty());
    let expected: Vec<u8> = (0..LEN).map(pattern).collect();
    let loaded = load(&*backend, &object, None).await;
    assert_eq!(loaded.len() as u64, LEN);
    assert_eq!(sha256(&loaded), sha256(&expected));
    // A range across a part boundary.
    let cut = PART_SIZE as u64;
    assert_eq!(
        load(&*backend, &object, Some(cut - 5..cut + 5)).await,
        &expected[cut as usize - 5..cut as usize + 5]
    );
}

/// A stream that fails after `good` bytes.
fn failing_after(good: u64) -> ByteStream {
    generated(good)
        .chain(stream::once(async {
            Err(io::Error::other("the source broke"))
        }))
        .boxed()
}

async fn a_failed_save_leaves_nothing_visible(backend: Arc<dyn Backend>) {
    let object = name("snapshots/broken");
    backend
        .save(&object, backend::once(b"old".to_vec()))
        .await
        .unwrap();
    // Before the first part is full (one PUT on S3), and after two parts (multipart).
    for good in [1_000_000, 2 * PART_SIZE as u64 + 1000] {
        let error = backend
            .save(&object, failing_after(good))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("the source broke"), "{error}");
        assert_eq!(load(&*backend, &object, None).await, b"old");
        assert_eq!(names(&*backend, "").await, ["snapshots/broken"]);
        assert!(backend.unfinished().await.unwrap().is_empty());
    }
    let fresh = name("snapshots/never");
    backend
        .save(&fresh, failing_after(PART_SIZE as u64 + 1))
        .await
        .unwrap_err();
    assert!(backend.stat(&fresh).await.unwrap_err().is_not_found());
}

/// Polls `check` for up to 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: still not so after 10 s");
}

/// A stream that yields `good` bytes, then never ends.
fn stalling_after(good: u64) -> ByteStream {
    generated(good).chain(stream::pending()).boxed()
}

/// Stops when `save` has `len` bytes in flight (an unfinished upload exists).
async fn under_way(
    backend: &Arc<dyn Backend>,
    object: &Name,
) -> impl std::future::Future<Output = Result<u64, BackendError>> + Send + 'static {
    let (backend2, object2) = (backend.clone(), object.clone());
    let mut save = Box::pin(async move {
        backend2
            .save(&object2, stalling_after(PART_SIZE as u64 * 2 + 10))
            .await
    });
    let backend = backend.clone();
    for _ in 0..200 {
        tokio::select! {
            _ = &mut save => panic!("a stalled save finished"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if !backend.unfinished().await.unwrap().is_empty() {
            return save;
        }
    }
    panic!("the save never started an upload");
}

async fn a_dropped_save_leaves_nothing_visible(backend: Arc<dyn Backend>) {
    let object = name("snapshots/dropped");
    let save = under_way(&backend, &object).await;
    drop(save);
    eventually("the dropped save's upload is cleaned up", async || {
        backend.unfinished().await.unwrap().is_empty()
    })
    .await;
    assert!(backend.stat(&object).await.unwrap_err().is_not_found());
    assert_eq!(names(&*backend, "").await, Vec::<String>::new());
}

/// A run killed mid-save (its future leaked, nothing of it runs again) leaves an unfinished
/// upload that `unfinished` finds and `abort` removes; nothing is ever visible.
async fn a_killed_save_is_found_and_aborted(backend: Arc<dyn Backend>) {
    let object = name("snapshots/killed");
    let save = under_way(&backend, &object).await;
    std::mem::forget(save);
    let unfinished = backend.unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    let upload = &unfinished[0];
    assert!(
        upload.name.is_none() || upload.name.as_deref() == Some("snapshots/killed"),
        "{upload:?}"
    );
    assert!((wqm::now() - upload.started).abs() < 600.0, "{upload:?}");
    assert!(backend.stat(&object).await.unwrap_err().is_not_found());
    assert_eq!(names(&*backend, "").await, Vec::<String>::new());
    backend.abort(upload).await.unwrap();
    assert!(backend.unfinished().await.unwrap().is_empty());
    // Aborting again is no error.
    backend.abort(upload).await.unwrap();
}

/// Names with spaces, non-ASCII letters and punctuation come back from `list` exactly as saved
/// (S3 keys are URL-encoded on the wire), and bad names never reach a backend.
async fn unusual_names_round_trip(backend: Arc<dyn Backend>) {
    let unusual = [
        "a b/c d",
        "ünï/çødé",
        "per%cent",
        "plus+eq=amp&",
        "semi;colon,comma",
        "quote'd(paren)",
        "star*tilde~",
        "x/.hidden",
        "dots..in..name",
    ];
    for text in unusual {
        backend
            .save(&name(text), backend::once(text.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    let mut expected: Vec<String> = unusual.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names(&*backend, "").await, expected);
    for text in unusual {
        assert_eq!(
            load(&*backend, &name(text), None).await,
            text.as_bytes(),
            "{text}"
        );
        assert_eq!(backend.stat(&name(text)).await.unwrap().name, text);
    }
    for bad in [
        "../up",
        "/abs",
        "a//b",
        "a\\b",
        ".wqm-backend/tmp/x",
        "a\0b",
    ] {
        assert!(
            matches!(Name::new(bad), Err(BackendError::BadName { .. })),
            "{bad:?}"
        );
    }
}

// ---- what only one backend has -------------------------------------------------------------

/// No link inside a local repository is followed, for reading, writing or listing.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_links_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "outside").unwrap();
    let backend = local(dir.path());
    let root = dir.path().join("repo");
    std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), root.join("file-link")).unwrap();
    for through in ["linked/secret", "file-link"] {
        let Err(error) = backend.load(&name(through), None).await else {
            panic!("{through} was followed");
        };
        assert!(
            error.to_string().contains("symbolic link"),
            "{through}: {error}"
        );
        assert!(backend.stat(&name(through)).await.is_err(), "{through}");
    }
    let error = backend
        .save(&name("linked/new"), backend::once(b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert!(!outside.join("new").exists());
    assert_eq!(names(&*backend, "").await, Vec::<String>::new());
    // A directory in the way of an object is refused, not replaced.
    std::fs::create_dir_all(root.join("dir/inner")).unwrap();
    assert!(backend
        .save(&name("dir"), backend::once(b"x".to_vec()))
        .await
        .is_err());
    assert!(root.join("dir/inner").is_dir());
}

/// What inspects a local repository sees what `list` leaves out — empty directories, links,
/// special files — each as what it is, nothing followed; reading one never makes its directory.
#[cfg(unix)]
#[test]
fn local_entries_name_what_is_not_an_object() {
    use wqm::backend::local::LocalBackend;
    use wqm::backend::{Entry, Kind};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let missing = LocalBackend::existing(&root).unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(!root.exists(), "reading made the directory");
    std::fs::create_dir_all(root.join("a/empty")).unwrap();
    std::fs::write(root.join("a/file"), "four").unwrap();
    std::fs::write(dir.path().join("outside"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), root.join("a/link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("dir-link")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(root.join("a/fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let backend = LocalBackend::existing(&root).unwrap();
    let entry = |name: &str, kind| Entry {
        name: name.to_string(),
        kind,
        size: std::fs::symlink_metadata(root.join(name)).unwrap().len(),
    };
    assert_eq!(
        backend.entries_blocking("").unwrap(),
        [
            entry("a", Kind::Dir),
            entry("a/empty", Kind::Dir),
            entry("a/fifo", Kind::Other),
            entry("a/file", Kind::File),
            entry("a/link", Kind::Symlink),
            entry("dir-link", Kind::Symlink),
        ]
    );
    assert_eq!(
        backend.entry_blocking(&name("a/link")).unwrap(),
        entry("a/link", Kind::Symlink)
    );
    let through = backend.entry_blocking(&name("dir-link/outside"));
    assert!(
        matches!(through, Err(wqm::backend::BackendError::Link { .. })),
        "{through:?}"
    );
    let objects: Vec<_> = backend
        .list_blocking("a/")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(objects, ["a/file"]);
}

/// A local run's own writes (a staged backup's files, a chunk before it is named, a commit):
/// new files made only where nothing is and never through a link, renamed over a name without
/// a sync until the directory is synced, two directories swapped in one step.
#[cfg(unix)]
#[test]
fn local_writes_of_a_run_follow_no_link_and_replace_only_when_asked() {
    use wqm::backend::local::LocalBackend;
    use wqm::backend::BackendError;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let backend = LocalBackend::open(&root).unwrap();
    let mut file = backend.create_new_blocking(&name("run/a/new")).unwrap();
    io::Write::write_all(&mut file, b"first").unwrap();
    let again = backend.create_new_blocking(&name("run/a/new"));
    assert!(
        matches!(again, Err(BackendError::AlreadyExists { .. })),
        "{again:?}"
    );
    std::os::unix::fs::symlink(dir.path(), root.join("link")).unwrap();
    for through in ["link/x", "link/y/z"] {
        let made = backend.create_new_blocking(&name(through));
        assert!(matches!(made, Err(BackendError::Link { .. })), "{made:?}");
        let made = backend.create_dir_blocking(&name(through));
        assert!(matches!(made, Err(BackendError::Link { .. })), "{made:?}");
    }
    assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists());
    // Renamed over what is there, its directory made; the source gone.
    backend
        .save_blocking(&name("objects/ab/c"), b"old")
        .unwrap();
    backend
        .rename_over_blocking(&name("run/a/new"), &name("objects/ab/c"))
        .unwrap();
    assert_eq!(std::fs::read(root.join("objects/ab/c")).unwrap(), b"first");
    assert!(!root.join("run/a/new").exists());
    let gone = backend.rename_over_blocking(&name("run/a/new"), &name("objects/ab/d"));
    assert!(
        gone.as_ref().is_err_and(BackendError::is_not_found),
        "{gone:?}"
    );
    backend.sync_dir_blocking("objects/ab").unwrap();
    backend.sync_dir_blocking("").unwrap();
    let missing = backend.sync_dir_blocking("objects/zz");
    assert!(
        missing.as_ref().is_err_and(BackendError::is_not_found),
        "{missing:?}"
    );
    // Two directories swapped whole.
    backend.save_blocking(&name("one/file"), b"1").unwrap();
    backend.save_blocking(&name("two/file"), b"2").unwrap();
    backend
        .exchange_blocking(&name("one"), &name("two"))
        .unwrap();
    assert_eq!(std::fs::read(root.join("one/file")).unwrap(), b"2");
    assert_eq!(std::fs::read(root.join("two/file")).unwrap(), b"1");
    let into_link = backend.exchange_blocking(&name("one"), &name("link/x"));
    assert!(into_link.is_err(), "{into_link:?}");
}

/// Locally, removing objects takes away the directories it empties (they are implied by the
/// objects, as on S3), not those above them (a run may be making something there);
/// `remove_under` takes a directory whole, empty directories, links and special files in it
/// too, without following a link.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_removal_leaves_no_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path());
    let root = dir.path().join("repo");
    for object in ["a/b/one", "a/b/two", "a/keep", "c/d/e/three"] {
        backend
            .save(&name(object), backend::once(b"x".to_vec()))
            .await
            .unwrap();
    }
    backend
        .remove_all(&[name("a/b/one"), name("a/b/two"), name("c/d/e/three")])
        .await
        .unwrap();
    assert!(!root.join("a/b").exists() && !root.join("c/d/e").exists());
    assert!(
        root.join("c/d").is_dir(),
        "only the directory that held one goes"
    );
    assert!(root.join("a/keep").is_file());
    std::fs::create_dir_all(root.join("a/empty/deeper")).unwrap();
    std::fs::write(dir.path().join("outside"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("a/link")).unwrap();
    // A name no object can have, made by hand: it goes too.
    std::fs::write(root.join("a/empty/by\\hand"), "x").unwrap();
    assert_eq!(backend.remove_under("a").await.unwrap(), 2);
    assert!(!root.join("a").exists(), "a directory left");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("outside")).unwrap(),
        "secret"
    );
    assert!(root.is_dir(), "the repository itself stays");
    assert_eq!(backend.remove_under("a").await.unwrap(), 0, "gone already");
}

/// A local copy is a second link to the file (no byte copied); a link as its source is refused,
/// not followed.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_copy_is_a_hard_link() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path());
    backend
        .save(&name("a/b"), backend::once(b"content".to_vec()))
        .await
        .unwrap();
    assert_eq!(backend.copy(&name("a/b"), &name("c/d")).await.unwrap(), 7);
    let root = dir.path().join("repo");
    let inode = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(inode("a/b"), inode("c/d"));
    std::fs::write(dir.path().join("outside"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
    let error = backend.copy(&name("link"), &name("e")).await.unwrap_err();
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert!(!root.join("e").exists());
}

/// Saved files and the directories made for them are private, and durable renames leave no
/// temporary file behind.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_objects_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let backend = local(dir.path());
    backend
        .save(&name("a/b/c"), backend::once(b"x".to_vec()))
        .await
        .unwrap();
    let root = dir.path().join("repo");
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (mode("a"), mode("a/b"), mode("a/b/c")),
        (0o700, 0o700, 0o600)
    );
    assert_eq!(
        std::fs::read_dir(root.join(".wqm-backend/tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// Wrong credentials are refused naming the endpoint and bucket, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
async fn s3_wrong_credentials_are_unauthorized() {
    let bucket = std::env::var("S3_BUCKET").unwrap();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let options = S3Options {
        secret_access_key: Some(Secret::new("not-the-secret-4f1e")),
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
        ..S3Options::default()
    };
    let backend = S3Backend::open(&bucket, "p", &options.resolve().unwrap()).unwrap();
    let error = backend.check().await.unwrap_err();
    assert!(
        matches!(error, BackendError::Unauthorized { .. }),
        "{error}"
    );
    let shown = format!("{error} {error:?}");
    assert!(
        shown.contains(&endpoint) && shown.contains(&format!("`{bucket}`")),
        "{shown}"
    );
    assert!(!shown.contains("not-the-secret-4f1e"), "{shown}");
    let real = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    assert!(!shown.contains(&real), "{shown}");
    assert_exit_code(error, 2);
    // The same for a read, a save and a listing.
    assert!(matches!(
        backend.list("").await,
        Err(BackendError::Unauthorized { .. })
    ));
    assert!(matches!(
        backend.save(&name("x"), backend::once(b"x".to_vec())).await,
        Err(BackendError::Unauthorized { .. })
    ));
}

/// The server `.ci/run` starts honours conditional writes; the probe says so and leaves
/// nothing behind. (rclone's `serve s3` 1.75 answers `false`: it overwrites.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
async fn s3_conditional_writes_are_probed() {
    let bucket = std::env::var("S3_BUCKET").unwrap();
    let settings = S3Options::default().resolve().unwrap();
    let prefix = format!("test-{}", backend::random_id());
    let backend = S3Backend::open(&bucket, &prefix, &settings).unwrap();
    assert!(backend.supports_conditional_put().await.unwrap());
    assert_eq!(names(&backend, "").await, Vec::<String>::new());
    let everything = S3Backend::open(&bucket, "", &settings).unwrap();
    let probes = everything.list(&prefix).await.unwrap();
    assert!(probes.is_empty(), "{probes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
async fn s3_a_missing_bucket_is_named() {
    let settings = S3Options::default().resolve().unwrap();
    let backend = S3Backend::open("no-such-bucket-wqm", "p", &settings).unwrap();
    let error = backend.check().await.unwrap_err();
    assert!(
        matches!(error, BackendError::NoSuchBucket { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("`no-such-bucket-wqm`"),
        "{error}"
    );
    assert_exit_code(error, 2);
}

/// A port nobody listens on: refused at once (after the retries), naming endpoint and bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_an_unreachable_endpoint_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = S3Options {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some(Secret::new("unreachable-secret")),
        ..S3Options::default()
    };
    let backend = S3Backend::open("some-bucket", "p", &options.resolve().unwrap()).unwrap();
    let started = std::time::Instant::now();
    let error = backend.check().await.unwrap_err();
    assert!(matches!(error, BackendError::Unreachable { .. }), "{error}");
    let shown = error.to_string();
    assert!(
        shown.contains(&endpoint) && shown.contains("`some-bucket`"),
        "{shown}"
    );
    assert!(!format!("{shown} {error:?}").contains("unreachable-secret"));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_exit_code(error, 2);
}

fn assert_exit_code(error: BackendError, code: i32) {
    let (exit, hint) = wqm::output::classify(&anyhow::Error::new(error));
    assert_eq!(exit.code(), code);
    assert!(hint.is_some());
}
