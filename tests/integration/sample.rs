//! `examples/sample-backup`: a real backup made by wqm from the real fixtures (the two Qdrant
//! snapshots of `tests/fixtures/qdrant/` served by the test double, the state database of
//! `tests/fixtures/state-db/`), so the README's first command shows the main job on a machine
//! without Qdrant. `WQM_UPDATE_SAMPLE=1 cargo test --locked --test integration sample` writes
//! it again (after a format change).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixtures;
use crate::qdrant_double::Double;
use crate::test::Test;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-backup")
}

fn manifest(backup: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(backup.join("metadata/manifest.json")).unwrap())
        .unwrap()
}

/// Every key path of a JSON value (`files[].sha256`, …): the shape of a manifest.
fn shape(value: &Value, at: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                // Collection names are data, not shape.
                let key = if at == ".collections" || at == ".collection_details" {
                    "*"
                } else {
                    key.as_str()
                };
                let path = format!("{at}.{key}");
                out.insert(path.clone());
                shape(value, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// A backup made now, as the sample was made.
fn make(target: &Path) {
    let double = Double::start();
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join("data")).unwrap();
    fixtures::state_db(&home.path().join("data/state.db"));
    let output = crate::test::wqm_command(home.path(), &["backup", "create", "--quiet"])
        .arg(target)
        .args(["--description", "A sample made by wqm from tests/fixtures"])
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", home.path().join("data"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_sample_backup_validates_and_shows_what_it_holds() {
    crate::test::validates(&sample());
    Test::new()
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args(&format!("backup info {}", sample().display()))
        .stdout_with(|o| {
            assert!(o.contains("\nCollections: 2\n"), "{o}");
            assert!(o.contains("\nTotal Documents: 320\n"), "{o}");
            assert!(o.contains("\nCompatibility: COMPATIBLE\n"), "{o}");
        })
        .run();
    let size: u64 = walk(&sample())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert!(size < 100_000, "the sample stays small: {size} bytes");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The sample is what this wqm writes today: same manifest shape and format, same files, same
/// contents, same MAJOR.MINOR. Fails after a format change until the sample is made again.
#[test]
fn the_sample_backup_is_what_this_wqm_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("sample-backup");
    make(&fresh);
    if std::env::var_os("WQM_UPDATE_SAMPLE").is_some() {
        let _ = fs::remove_dir_all(sample());
        fs::create_dir_all(sample().parent().unwrap()).unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&fresh)
            .arg(sample())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (old, new) = (manifest(&sample()), manifest(&fresh));
    let (mut old_shape, mut new_shape) = (BTreeSet::new(), BTreeSet::new());
    shape(&old, "", &mut old_shape);
    shape(&new, "", &mut new_shape);
    let stale = "examples/sample-backup is stale: run `WQM_UPDATE_SAMPLE=1 cargo test --locked --test integration sample`";
    assert_eq!(old_shape, new_shape, "{stale}");
    assert_eq!(old["format_version"], new["format_version"], "{stale}");
    let line = |v: &Value| {
        let version = v["version"].as_str().unwrap().to_string();
        version.rsplit_once('.').unwrap().0.to_string()
    };
    assert_eq!(line(&old), line(&new), "{stale}");
    let files = |v: &Value| -> Vec<(String, String, String)> {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let text = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                // Snapshots' content is the fixtures'; a database's bytes may differ run to run.
                let content = if text("kind") == "sqlite_database" {
                    String::new()
                } else {
                    text("content_sha256")
                };
                (text("path"), text("kind"), content)
            })
            .collect()
    };
    assert_eq!(files(&old), files(&new), "{stale}");
}

/// The README's first command checks the sample, as written, from the repository's root; the
/// second is the test suite.
#[test]
fn the_readmes_first_command_validates_the_sample() {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = &readme[readme.find("```sh\n").unwrap() + 6..];
    let mut commands = block.lines().map(|l| l.split('#').next().unwrap().trim());
    let first = commands.next().unwrap();
    assert_eq!(
        first,
        "cargo run --release -- backup validate --check-files examples/sample-backup"
    );
    assert_eq!(commands.next().unwrap(), "cargo test --locked");
    let home = tempfile::tempdir().unwrap();
    let args: Vec<&str> = first
        .split_once(" -- ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let output = crate::test::wqm_command(home.path(), &args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.ends_with("Backup validation successful: examples/sample-backup\n"),
        "{stdout}"
    );
}
