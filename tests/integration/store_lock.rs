//! The chunk store's lock, as the exit codes show it: a run waiting for a garbage collection
//! stops on Ctrl-C with 130 and says what it waited for; a busy store is never reported as a
//! damaged backup.

use std::fs::File;
use std::path::Path;
use std::process::Output;

use crate::incremental::two_nights;
use crate::qdrant_double::Double;
use crate::test;

/// The store of `backups`, held exclusively as a garbage collection holds it.
fn collecting(backups: &Path) -> File {
    let lock = File::open(backups.join(".wqm-chunks/lock")).unwrap();
    lock.try_lock().unwrap();
    lock
}

/// `wqm ARGS` interrupted once it has waited for the store a moment.
fn interrupted_while_waiting(home: &Path, url: &str, args: &[&str]) -> Output {
    let mut command = test::wqm_command(home, args);
    command
        .env("QDRANT_URL", url)
        .env("WQM_DATA_DIR", home.join("data"));
    let started = std::time::Instant::now();
    test::interrupted(command, || {
        started.elapsed() > std::time::Duration::from_millis(800)
    })
}

fn assert_interrupted_waiting(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted while waiting for the chunk store"),
        "{stderr}"
    );
    assert!(!stderr.contains("damaged"), "{stderr}");
}

#[test]
fn an_incremental_create_waiting_for_a_garbage_collection_stops_on_ctrl_c_with_130() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let _held = collecting(&backups);
    let target = backups.join("n3");
    let output = interrupted_while_waiting(
        tmp.path(),
        &double.url,
        &[
            "backup",
            "create",
            target.to_str().unwrap(),
            "--incremental",
        ],
    );
    assert_interrupted_waiting(&output);
    assert!(!target.exists());
}

#[test]
fn validate_waiting_for_a_garbage_collection_is_no_finding_about_the_backup() {
    let double = Double::start();
    let tmp = two_nights(&double);
    let backups = tmp.path().join("backups");
    let _held = collecting(&backups);
    let output = interrupted_while_waiting(
        tmp.path(),
        &double.url,
        &["backup", "validate", backups.join("n1").to_str().unwrap()],
    );
    assert_interrupted_waiting(&output);
}
