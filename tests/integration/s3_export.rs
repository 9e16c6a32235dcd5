//! `export s3://BUCKET/PREFIX/NAME DEST` against the real SeaweedFS: an incremental night read
//! from the repository's chunk store on S3, holding the repository's shared lock, into a local
//! self-contained backup; a damaged chunk there fails it with exit 3 and leaves nothing.

use std::time::{Duration, Instant};

use wqm::backend::{self, Name};

use crate::incremental::first_chunk;
use crate::qdrant_double::Double;
use crate::s3_lock::{finished, locks, paused_at, s3_command};
use crate::s3_read::{backups_on_s3, object_names, with_s3};
use crate::test::Test;

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn an_incremental_backup_on_s3_exports_to_a_self_contained_local_one() {
    let double = Double::start();
    let (tmp, runtime, backend, url) = backups_on_s3(&double);
    let source = format!("{url}/n2");
    let dest = tmp.path().join("away/n2");
    let export = paused_at(
        tmp.path(),
        s3_command(
            tmp.path(),
            &double.url,
            &[
                "backup",
                "export",
                &source,
                dest.to_str().unwrap(),
                "--json",
            ],
        ),
        "export:file-copied",
    );
    // Held on S3 while it reads: a prune there waits.
    let held = locks(&runtime, &backend);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        !held[0].exclusive && held[0].command == "backup export",
        "{held:?}"
    );
    // File by file (each stops at the failpoint) to its end.
    let marker = tmp.path().join("export-file-copied");
    let mut export = export;
    let deadline = Instant::now() + Duration::from_secs(60);
    while export.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the export never ended");
        let _ = std::fs::remove_file(&marker);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, stderr) = finished(export);
    assert_eq!(code, 0, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["source"], source.as_str(), "{summary}");
    assert_eq!(
        summary["compression"], "zstd",
        "a full copy, no chunks: {summary}"
    );
    assert_eq!(locks(&runtime, &backend), Vec::new(), "released at the end");
    // Whole without any chunk store: none is beside it.
    assert!(!tmp.path().join("away/.wqm-chunks").exists());
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/away/n2 --check-files")
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();

    // A chunk of `n1` damaged on the server: its export stops with 3 and leaves nothing.
    let chunk = first_chunk(
        &tmp.path().join("backups/n1"),
        "collections/small-named.snapshot.chunks",
    );
    // Where it is stored (a pack's or its own file), as an object of the copy on S3.
    let rel = chunk.path.strip_prefix(tmp.path().join("backups")).unwrap();
    let name = Name::new(rel.to_str().unwrap()).unwrap();
    let mut bytes = std::fs::read(&chunk.path).unwrap();
    bytes[chunk.range.start + chunk.range.len() / 2] ^= 1;
    runtime
        .block_on(backend.save(&name, backend::once(bytes)))
        .unwrap();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup export {url}/n1 {{TMP}}/away/n1"))
        .status(3)
        .stderr_with(|e| assert!(e.contains("damaged"), "{e}"))
        .run();
    assert!(!tmp.path().join("away/n1").exists());
    assert_eq!(locks(&runtime, &backend), Vec::new());
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_local_incremental_night_exports_to_s3_as_a_full_backup_committed_last() {
    let double = Double::start();
    let (tmp, runtime, backend, url) = backups_on_s3(&double);
    let dest = format!("{url}/exported");
    let shown = dest.clone();
    // What a killed run left in `$TMPDIR` goes; a live run's staging stays.
    let (dead, live) = crate::s3_write::stagings(tmp.path());
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .env("TMPDIR", "{TMP}")
        .args(&format!("backup export {{TMP}}/backups/n2 {dest} --json"))
        .stdout_json(move |v| {
            assert_eq!(v["path"], shown.as_str(), "{v}");
            assert_eq!(v["compression"], "zstd", "a full copy, no chunks: {v}");
        })
        .run();
    let objects = object_names(&runtime, &backend, "exported/");
    assert!(
        objects.contains(&"exported/metadata/manifest.json".to_string()),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.ends_with(".chunks")),
        "{objects:?}"
    );
    assert!(locks(&runtime, &backend).is_empty(), "released at the end");
    assert!(!dead.exists() && live.exists());
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {dest} --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    // The name is taken now: a second export there is refused, the backup left as it is.
    let (_, _tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup export {{TMP}}/backups/n1 {dest}"))
        .status(2)
        .stderr_with(|e| assert!(e.contains("exported"), "{e}"))
        .run();
    let after = object_names(&runtime, &backend, "exported/");
    assert_eq!(after, objects);
}
