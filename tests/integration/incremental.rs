//! Incremental backups and their chunk store (`create --incremental`), against the Qdrant test
//! double; nights with real churn are restored from the real server at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use wqm::format::manifest::Manifest;

use crate::faults::{killed, run_with};
use crate::fixtures;
use crate::qdrant_double::Double;
use crate::real_qdrant::{self, Server};
use crate::restore::lose_everything;
use crate::test::{self, Test};

fn manifest(backup: &Path) -> Manifest {
    Manifest::load(&backup.join("metadata/manifest.json")).unwrap()
}

/// A test directory with a live state DB in `data/`.
pub(crate) fn workspace() -> TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("wqm-test-")
        .tempdir()
        .unwrap();
    fs::create_dir_all(tmp.path().join("data")).unwrap();
    fixtures::state_db(&tmp.path().join("data/state.db"));
    tmp
}

/// `wqm ARGS` in the test's directory, pointed at `url` and the live data directory.
pub(crate) fn wqm(t: Test, url: &str, args: &str) -> Test {
    t.env("QDRANT_URL", url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args(args)
}

/// `create --incremental --json` of `backups/NAME` (and `extra` flags): its JSON summary.
pub(crate) fn night(tmp: TempDir, url: &str, name: &str, extra: &str) -> (Value, TempDir) {
    let (output, tmp) = wqm(
        Test::in_dir(tmp),
        url,
        &format!("backup create {{TMP}}/backups/{name} --incremental --json {extra}"),
    )
    .stdout_with(|_| {})
    .run();
    (serde_json::from_slice(&output.stdout).unwrap(), tmp)
}

/// Every loose chunk's file in the store of `dir` (a store made before pack files).
pub(crate) fn chunk_files(dir: &Path) -> BTreeSet<PathBuf> {
    files_under(&dir.join(".wqm-chunks/chunks"))
        .into_iter()
        .collect()
}

/// The ids of every chunk the store of `dir` holds (`stored_chunks`).
pub(crate) fn chunk_ids(dir: &Path) -> BTreeSet<String> {
    stored_chunks(dir).into_keys().collect()
}

/// A chunk as a store keeps it: loose (a file of its own) or in a pack (a range of the pack's
/// file, listed by the pack's index file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredChunk {
    pub id: String,
    pub path: PathBuf,
    pub range: std::ops::Range<usize>,
    /// A packed chunk's index file.
    pub index: Option<PathBuf>,
}

impl StoredChunk {
    /// Flips a byte in the middle of its stored bytes.
    pub fn damage(&self) {
        let mut bytes = fs::read(&self.path).unwrap();
        bytes[self.range.start + self.range.len() / 2] ^= 0x55;
        fs::write(&self.path, bytes).unwrap();
    }

    /// Takes it out of the store: a loose chunk's file removed, a packed one's line removed
    /// from its pack's index (its bytes stay in the pack, named by nothing).
    pub fn remove(&self) {
        let Some(index) = &self.index else {
            return fs::remove_file(&self.path).unwrap();
        };
        let text = fs::read_to_string(index).unwrap();
        let kept: String = text
            .lines()
            .filter(|line| !line.starts_with(&self.id))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(kept, text, "`{}` is in `{}`", self.id, index.display());
        fs::write(index, kept).unwrap();
    }
}

/// A store made before pack files (a file per chunk, as an older wqm made it) in `backups/` of
/// `tmp`, before its first backup: such a store is still read and written as it is.
pub(crate) fn older_store(tmp: TempDir) -> TempDir {
    older_store_in(&tmp.path().join("backups"), false);
    tmp
}

/// `older_store` in the repository `dir`; `keyed`: an encrypted repository's.
pub(crate) fn older_store_in(dir: &Path, keyed: bool) {
    let store = dir.join(".wqm-chunks");
    fs::create_dir_all(&store).unwrap();
    let hash = if keyed { "hmac-sha256" } else { "sha256" };
    fs::write(
        store.join("store.json"),
        LOOSE_STORE.replace("\"sha256\"", &format!("\"{hash}\"")),
    )
    .unwrap();
}

/// `store.json` of a store of loose chunks.
pub(crate) const LOOSE_STORE: &str = r#"{"format":2,"chunker":"fastcdc-2020","min_size":16384,"avg_size":65536,"max_size":262144,"hash":"sha256","compression":"zstd","required_features":["lock-objects"]}"#;

/// Every chunk the store of `dir` holds (an unencrypted one: its pack indexes are read), by id.
pub(crate) fn stored_chunks(dir: &Path) -> BTreeMap<String, StoredChunk> {
    let store = dir.join(".wqm-chunks");
    let mut found = BTreeMap::new();
    for path in files_under(&store.join("chunks")) {
        let id = path.file_name().unwrap().to_string_lossy().into_owned();
        let len = fs::metadata(&path).unwrap().len() as usize;
        let chunk = StoredChunk {
            id: id.clone(),
            path,
            range: 0..len,
            index: None,
        };
        found.insert(id, chunk);
    }
    for index in files_under(&store.join("index")) {
        let pack = index.file_name().unwrap().to_string_lossy().into_owned();
        let path = store.join("packs").join(&pack[..2]).join(&pack);
        for line in fs::read_to_string(&index).unwrap().lines().skip(1) {
            let fields: Vec<&str> = line.split(' ').collect();
            let (offset, stored): (usize, usize) =
                (fields[1].parse().unwrap(), fields[2].parse().unwrap());
            let chunk = StoredChunk {
                id: fields[0].to_string(),
                path: path.clone(),
                range: offset..offset + stored,
                index: Some(index.clone()),
            };
            found.entry(chunk.id.clone()).or_insert(chunk);
        }
    }
    found
}

/// Every file under `dir` (none when it is missing).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => found.extend(files_under(&path)),
            false => found.push(path),
        }
    }
    found
}

/// The store's copy of the first chunk of `rel` in `backup`.
pub(crate) fn first_chunk(backup: &Path, rel: &str) -> StoredChunk {
    let index = fs::read_to_string(backup.join(rel)).unwrap();
    let id = index.lines().nth(1).unwrap().split(' ').next().unwrap();
    stored_chunks(backup.parent().unwrap()).remove(id).unwrap()
}

pub(crate) fn validate(tmp: TempDir, backup: &str) -> TempDir {
    Test::in_dir(tmp)
        .args(&format!("backup validate {{TMP}}/{backup} --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run()
        .1
}

#[test]
fn nights_share_their_chunks_and_every_command_works_on_them() {
    let double = Double::start();
    let (first, tmp) = night(workspace(), &double.url, "n1", "");
    let added = &first["chunk_store"];
    assert!(added["chunks_added"].as_u64().unwrap() >= 3, "{first}");
    let (second, tmp) = night(tmp, &double.url, "n2", "");
    // The same collections again: only the database copy may differ (its header).
    assert!(
        second["chunk_store"]["bytes_added"].as_u64().unwrap()
            < added["bytes_added"].as_u64().unwrap() / 10,
        "{second}"
    );
    let backups = tmp.path().join("backups");
    let m = manifest(&backups.join("n2"));
    assert_eq!(m.format_version, Some(2));
    assert_eq!(
        m.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        [
            "collections/small-named.snapshot.chunks",
            "collections/small-plain.snapshot.chunks",
            "sqlite/state.db.chunks",
        ]
    );
    assert_eq!(
        m.collection_details["small-plain"].snapshot,
        m.files[1].path
    );

    let tmp = validate(tmp, "backups/n1");
    let tmp = validate(tmp, "backups/n2");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup info {TMP}/backups/n2 --json")
        .stdout_json(|v| {
            let usage = &v["chunk_store"];
            assert_eq!(
                usage["logical_bytes"].as_u64().unwrap(),
                (fixtures::SMALL_NAMED.len() + fixtures::SMALL_PLAIN.len()) as u64
                    + v["files"][2]["content_size"].as_u64().unwrap()
            );
            assert!(
                usage["unique_bytes"].as_u64().unwrap()
                    < usage["referenced_bytes"].as_u64().unwrap() / 10,
                "{usage}"
            );
        })
        .run();
    // The store is no backup: `list` shows the two nights only, each with its content's size.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup list {TMP}/backups --json")
        .stdout_json(|v| {
            let names: Vec<&str> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["n2", "n1"], "newest first");
            assert!(v[0]["incremental_content_bytes"].as_u64().unwrap() > 300_000);
            assert!(v.as_array().unwrap().iter().all(|b| b["valid"] == true));
        })
        .run();

    // Night 2 restores everything, streamed from the chunks.
    lose_everything(&double);
    let db = tmp.path().join("data/state.db");
    let rows = test::sqlite_dump(&db);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM qdrant_chunks;")
        .unwrap();
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup restore {TMP}/backups/n2 --force",
    )
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();
    assert_eq!(test::sqlite_dump(&tmp.path().join("data/state.db")), rows);
    // The safety backup it took of the live database went beside the nights: incremental too.
    let safety = crate::restore::safety_backups(&backups);
    assert_eq!(safety.len(), 1, "{safety:?}");
    let m = manifest(&backups.join(&safety[0]));
    assert_eq!(m.compression, Some(wqm::compress::Stored::Chunked));
    validate(tmp, &format!("backups/{}", safety[0]));
}

#[test]
fn a_damaged_or_missing_chunk_names_every_backup_that_needs_it() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let (_, tmp) = night(tmp, &double.url, "n2", "");
    let backups = tmp.path().join("backups");
    let chunk = first_chunk(
        &backups.join("n2"),
        "collections/small-plain.snapshot.chunks",
    );
    let id = chunk.id.clone();
    chunk.damage();
    let needed = format!("chunk `{id}` is damaged: ");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/backups/n2 --check-files")
        .status(3)
        .stdout_with(move |o| {
            assert!(o.contains(&needed), "{o}");
            assert!(o.contains("backups that need it: n1, n2\n"), "{o}");
        })
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Backup validation failed"), "{e}"))
        .run();
    // `list --check` reads the damaged chunk once and finds both nights broken.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup list {TMP}/backups --check --json")
        .stdout_json(|v| {
            for backup in v.as_array().unwrap() {
                assert_eq!(backup["valid"], false, "{backup}");
            }
        })
        .run();
    // A restore refuses it before touching anything.
    lose_everything(&double);
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup restore {TMP}/backups/n2 --force",
    )
    .status(3)
    .stdout_with(|_| {})
    .stderr_with(|e| assert!(e.contains("is damaged"), "{e}"))
    .run();
    assert!(double.state().collections.is_empty());

    // A missing chunk is said to be missing; the next night stores it again, repairing both.
    chunk.remove();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/backups/n1 --check-files")
        .status(3)
        .stdout_with(move |o| {
            assert!(
                o.contains(&format!(
                    "chunk `{id}` is missing from the chunk store; backups that need it: n1, n2"
                )),
                "{o}"
            )
        })
        .stderr_with(|_| {})
        .run();
    drop(double);
    let double = Double::start();
    let (_, tmp) = night(tmp, &double.url, "n3", "");
    let tmp = validate(tmp, "backups/n1");
    validate(tmp, "backups/n2");
}

/// Night 1 of both collections, night 2 of `small-plain` only: `small-named`'s chunks are
/// night 1's alone.
pub(crate) fn two_nights(double: &Double) -> TempDir {
    two_nights_from(workspace(), double)
}

/// `two_nights` in `tmp`.
pub(crate) fn two_nights_from(tmp: TempDir, double: &Double) -> TempDir {
    let (_, tmp) = night(tmp, &double.url, "n1", "");
    night(tmp, &double.url, "n2", "--collections small-plain").1
}

#[test]
fn prune_deletes_exactly_the_chunks_no_remaining_backup_needs() {
    let double = Double::start();
    // Chunk by chunk: a store of loose chunks (a store of packs: `packs::nights_add_packs_…`).
    let tmp = two_nights_from(older_store(workspace()), &double);
    let backups = tmp.path().join("backups");
    let before = chunk_files(&backups);
    let only_n1 = first_chunk(
        &backups.join("n1"),
        "collections/small-named.snapshot.chunks",
    );
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1 --dry-run --json")
        .stdout_json(|v| {
            assert_eq!(
                v["skipped"],
                serde_json::json!([]),
                "the store is no backup: {v}"
            );
            let gc = &v["chunk_store"]["collected"];
            assert!(gc["chunks_deleted"].as_u64().unwrap() >= 1, "{v}");
        })
        .run();
    assert_eq!(chunk_files(&backups), before, "a dry run deletes nothing");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1")
        .stdout_with(|o| {
            assert!(o.contains("Chunk store: deleted "), "{o}");
            assert!(o.starts_with("Pruned ") || o.contains("\nPruned "), "{o}");
        })
        .run();
    let after = chunk_files(&backups);
    assert!(!after.contains(&only_n1.path));
    assert!(after.len() < before.len() && after.is_subset(&before));
    let tmp = validate(tmp, "backups/n2");
    // Nothing more to collect.
    Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1 --json")
        .stdout_json(|v| assert_eq!(v["chunk_store"]["collected"]["chunks_deleted"], 0, "{v}"))
        .run();
}

#[test]
fn an_export_restores_without_the_chunk_store() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup export {TMP}/backups/n1 {TMP}/away/n1")
        .stdout_with(|o| assert!(o.starts_with("Backup exported: "), "{o}"))
        .run();
    fs::remove_dir_all(tmp.path().join("backups/.wqm-chunks")).unwrap();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/backups/n1")
        .status(3)
        .stdout_with(|o| assert!(o.contains("no chunk store at `"), "{o}"))
        .stderr_with(|_| {})
        .run();
    let away = tmp.path().join("away/n1");
    let m = manifest(&away);
    assert_eq!(m.format_version, Some(1));
    assert_eq!(m.files[0].path, "collections/small-named.snapshot.zst");
    assert_eq!(
        m.collection_details["small-named"].snapshot,
        m.files[0].path
    );
    assert_eq!(m.databases[0].file, "sqlite/state.db.zst");
    let tmp = validate(tmp, "away/n1");
    lose_everything(&double);
    wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup restore {TMP}/away/n1 --force",
    )
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();
}

#[test]
fn a_create_killed_while_storing_chunks_leaves_every_backup_valid() {
    let double = Double::start();
    // Killed between two loose chunks (between a pack and its index:
    // `chunk_store::what_a_killed_create_left_…`).
    let tmp = older_store(workspace());
    let (_, tmp) = night(tmp, &double.url, "n1", "--collections small-plain");
    let backups = tmp.path().join("backups");
    let before = chunk_files(&backups);
    let target = backups.join("n2");
    let output = run_with(
        tmp.path(),
        &double.url,
        "create:chunk-stored=kill",
        &[
            "backup",
            "create",
            target.to_str().unwrap(),
            "--incremental",
        ],
    );
    assert!(killed(&output), "{output:?}");
    assert!(
        chunk_files(&backups).len() > before.len(),
        "it stored a chunk"
    );
    let tmp = validate(tmp, "backups/n1");
    // The next prune cleans up after the dead run and collects its orphaned chunks.
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup prune {TMP}/backups --keep-last 5",
    )
    .stdout_with(|o| assert!(o.contains("Chunk store: deleted "), "{o}"))
    .stderr_with(|_| {})
    .run();
    assert_eq!(chunk_files(&backups), before);
    validate(tmp, "backups/n1");
}

#[test]
fn a_prune_killed_while_collecting_leaves_the_kept_backups_valid() {
    let double = Double::start();
    // Killed between two loose chunks' deletions (during a repack: `s3_packs::a_prune_killed_…`).
    let tmp = two_nights_from(older_store(workspace()), &double);
    let backups = tmp.path().join("backups");
    let before = chunk_files(&backups).len();
    let output = run_with(
        tmp.path(),
        &double.url,
        "local:removed-from:.wqm-chunks=kill",
        &[
            "backup",
            "prune",
            backups.to_str().unwrap(),
            "--keep-last",
            "1",
        ],
    );
    assert!(killed(&output), "{output:?}");
    assert_eq!(
        chunk_files(&backups).len(),
        before - 1,
        "killed after one deletion"
    );
    let tmp = validate(tmp, "backups/n2");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 1")
        .stdout_with(|o| assert!(o.contains("Chunk store: deleted "), "{o}"))
        .run();
    validate(tmp, "backups/n2");
}

/// The state database's rows, for comparing nights.
fn rows(db: &Path) -> String {
    test::sqlite_dump(db)
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn nights_with_churn_each_come_back_exactly_from_the_real_server() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    real_qdrant::upsert(&server.handle(), "projects", 300..3000, 0);
    let mut tmp = workspace();
    let db = tmp.path().join("data/state.db");
    let mut nights = Vec::new();
    for night_number in 1..=3u64 {
        if night_number > 1 {
            // ~1 % new points, ~1 % edited payloads, ~0.25 % deleted, and new rows.
            let start = 3000 + night_number * 30;
            real_qdrant::upsert(
                &server.handle(),
                "projects",
                start..start + 30,
                night_number,
            );
            real_qdrant::upsert(&server.handle(), "projects", 100..130, night_number);
            server.ok(
                "POST",
                "/collections/projects/points/delete?wait=true",
                Some(serde_json::json!({"points": [night_number * 7, night_number * 7 + 1]})),
            );
            rusqlite::Connection::open(&db)
                .unwrap()
                .execute("DELETE FROM qdrant_chunks WHERE rowid IN (SELECT rowid FROM qdrant_chunks LIMIT 1)", [])
                .unwrap();
        }
        let name = format!("n{night_number}");
        let (summary, next) = night(tmp, &server.url, &name, "");
        tmp = next;
        nights.push((name, real_qdrant::fingerprint(&server), rows(&db), summary));
    }
    let added = |i: usize| nights[i].3["chunk_store"]["bytes_added"].as_u64().unwrap();
    // Small collections change by a large fraction; the benchmark measures real proportions.
    assert!(
        added(2) < added(0),
        "night 3 added {} of {}",
        added(2),
        added(0)
    );
    // Each night comes back exactly (no safety backups: the directory holds the nights only).
    let restore = |tmp: TempDir, backup: &str, night: usize| -> TempDir {
        server.delete_all_collections();
        let (_, tmp) = wqm(
            Test::in_dir(tmp),
            &server.url,
            &format!("backup restore {{TMP}}/{backup} --force"),
        )
        .env("WQM_BACKUP__AUTO_BACKUP_BEFORE_RESTORE", "false")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .stderr_with(|_| {})
        .run();
        let (name, fingerprint, db_rows, _) = &nights[night];
        assert_eq!(&real_qdrant::fingerprint(&server), fingerprint, "{name}");
        assert_eq!(&rows(&db), db_rows, "{name}");
        tmp
    };
    for (night, (name, ..)) in nights.iter().enumerate() {
        tmp = validate(tmp, &format!("backups/{name}"));
        tmp = restore(tmp, &format!("backups/{name}"), night);
    }
    assert!(server.snapshots_left().is_empty());

    // Night 1 exported; then pruned with its chunks: the kept nights stay whole.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup export {TMP}/backups/n1 {TMP}/away/n1")
        .stdout_with(|o| assert!(o.starts_with("Backup exported: "), "{o}"))
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/backups --keep-last 2")
        .stdout_with(|o| assert!(o.contains("Chunk store: deleted "), "{o}"))
        .run();
    let tmp = validate(tmp, "backups/n2");
    let tmp = validate(tmp, "backups/n3");
    let tmp = restore(tmp, "backups/n3", 2);

    // A damaged chunk of night 3's snapshot is found and named.
    let backups = tmp.path().join("backups");
    let chunk = first_chunk(&backups.join("n3"), "collections/projects.snapshot.chunks");
    chunk.damage();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/backups/n3 --check-files")
        .status(3)
        .stdout_with(|o| assert!(o.contains("is damaged: ") && o.contains("n3"), "{o}"))
        .stderr_with(|_| {})
        .run();

    // The export restores night 1 exactly with the store gone.
    fs::remove_dir_all(backups.join(".wqm-chunks")).unwrap();
    let tmp = validate(tmp, "away/n1");
    restore(tmp, "away/n1", 0);
}

const GUIDE: &str = include_str!("../../docs/incremental.md");

/// The offsite line of docs/incremental.md, as written (its destination a directory under
/// `offsite`).
fn offsite_line(offsite: &Path) -> String {
    let from = GUIDE.find("## Offsite copies").unwrap();
    let start = GUIDE[from..].find("```sh\n").unwrap() + from + "```sh\n".len();
    let line = GUIDE[start..].lines().next().unwrap();
    assert!(line.starts_with("wqm backup copy "), "{line}");
    let to = offsite.join("wqm-backups");
    line.replace("s3://my-bucket/wqm-backups", to.to_str().unwrap())
}

#[test]
fn the_offsite_recipe_copies_only_new_chunks_and_the_copy_restores() {
    use std::os::unix::fs::MetadataExt;
    let double = Double::start();
    let home = workspace();
    let (_, home) = night(home, &double.url, "n1", "");
    let offsite = tempfile::tempdir().unwrap();
    // The recipe's `~/backups/` is the test directory's `backups/`; `wqm` is this one.
    let bin = Path::new(env!("CARGO_BIN_EXE_wqm")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let copy = |home: &Path| {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(offsite_line(offsite.path()))
            .env_clear()
            .env("PATH", &path)
            .env("HOME", home)
            .envs(test::NO_DAEMON)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy(home.path());
    let copied = offsite.path().join("wqm-backups");
    let inodes = |dir: &Path| -> Vec<(PathBuf, u64)> {
        files_under(&dir.join(".wqm-chunks/packs"))
            .into_iter()
            .map(|p| {
                let inode = fs::metadata(&p).unwrap().ino();
                (p, inode)
            })
            .collect()
    };
    let first = inodes(&copied);
    let (_, home) = night(home, &double.url, "n2", "");
    copy(home.path());
    // Every pack copied the first time is the same file now: the copy left it alone.
    let second = inodes(&copied);
    assert!(!first.is_empty() && first.iter().all(|pack| second.contains(pack)));
    let ids = |dir: &Path| stored_chunks(dir).into_keys().collect::<Vec<_>>();
    assert_eq!(ids(&copied), ids(&home.path().join("backups")));
    // The copy is a backups directory: it validates and restores.
    let at = |tmp: TempDir, rel: &str| -> TempDir {
        let target = copied.join(rel);
        Test::in_dir(tmp)
            .args(&format!(
                "backup validate {} --check-files",
                target.display()
            ))
            .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
            .run()
            .1
    };
    let home = at(home, "n1");
    let home = at(home, "n2");
    lose_everything(&double);
    wqm(
        Test::in_dir(home),
        &double.url,
        &format!("backup restore {} --force", copied.join("n2").display()),
    )
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();
}

/// The distinct chunks the indexes of `backup` name.
fn named_chunks(backup: &Path) -> BTreeSet<String> {
    manifest(backup)
        .files
        .iter()
        .flat_map(|f| {
            let index = fs::read_to_string(backup.join(&f.path)).unwrap();
            let ids: Vec<String> = index
                .lines()
                .skip(1)
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect();
            ids
        })
        .collect()
}

/// Adds 300 kB of fresh rows to the live state database: the next night stores new chunks.
pub(crate) fn grow_state_db(tmp: &Path) {
    rusqlite::Connection::open(tmp.join("data/state.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS growth (b BLOB);
             INSERT INTO growth VALUES (randomblob(100000)), (randomblob(100000)), (randomblob(100000));",
        )
        .unwrap();
}

#[test]
fn a_nights_verification_reads_back_what_it_stored_and_only_looks_up_what_it_reused() {
    let double = Double::start();
    let (first, mut tmp) = night(workspace(), &double.url, "n1", "");
    let backups = tmp.path().join("backups");
    let stored = stored_chunks(&backups).len();
    assert_eq!(
        first["verify"],
        serde_json::json!({"chunks_read": stored, "chunks_looked_up": 0}),
        "{first}"
    );
    assert_eq!(first["chunk_store"]["chunks_compared"], 0, "{first}");

    for (name, cycle) in [("n2", None), ("n3", Some(1))] {
        grow_state_db(tmp.path());
        let before: BTreeSet<String> = stored_chunks(&backups).into_keys().collect();
        let mut create = wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup create {{TMP}}/backups/{name} --incremental --json"),
        );
        if let Some(cycle) = cycle {
            create = create.env(
                "WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE",
                &cycle.to_string(),
            );
        }
        let (output, back) = create.stdout_with(|_| {}).run();
        tmp = back;
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        let named = named_chunks(&backups.join(name));
        let new = named.difference(&before).count();
        let reused: Vec<&String> = named.intersection(&before).collect();
        assert!(new > 0 && reused.len() > 3, "{summary}");
        // It reads back the chunks it stored, and only looks up the ones it reused.
        assert_eq!(
            summary["verify"],
            serde_json::json!({"chunks_read": new, "chunks_looked_up": reused.len()}),
            "{name}: {summary}"
        );
        // It compared its share of the reused chunks: today's group of 7 by default, all of
        // them with a cycle of 1.
        let t = cycle.unwrap_or(7);
        let day = (manifest(&backups.join(name)).timestamp / 86_400.0).floor() as u64;
        let share = reused
            .iter()
            .filter(|id| u64::from(u32::from_str_radix(&id[..8], 16).unwrap()) % t == day % t)
            .count();
        assert_eq!(
            summary["chunk_store"]["chunks_compared"], share,
            "{name}: {summary}"
        );
        tmp = validate(tmp, &format!("backups/{name}"));
    }
}

/// `create --incremental --json` of `backups/NAME` comparing none of the chunks it reuses
/// (a cycle too long for any group to come round), stopped before its verification to let
/// `damage` change what it wrote.
fn night_damaged(tmp: &Path, url: &str, name: &str, damage: impl FnOnce()) -> std::process::Output {
    let backups = tmp.join("backups");
    let mut create = test::wqm_command(
        tmp,
        &[
            "backup",
            "create",
            backups.join(name).to_str().unwrap(),
            "--incremental",
        ],
    );
    create
        .env("QDRANT_URL", url)
        .env("WQM_DATA_DIR", tmp.join("data"))
        .env(
            "WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE",
            "4000000000",
        )
        .env("WQM_FAILPOINT_DIR", tmp)
        .env("WQM_FAILPOINTS", "create:verifying=wait")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = create.spawn().unwrap();
    let marker = tmp.join("create-verifying");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the create never reached its verification"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    damage();
    fs::remove_file(&marker).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_nights_verification_finds_a_damaged_chunk_or_index_it_wrote_and_the_next_night_stores_the_chunk_again(
) {
    let double = Double::start();
    // A loose chunk set aside (a packed one: `s3_packs::a_damaged_chunk_a_night_reuses_…`).
    let (_, tmp) = night(older_store(workspace()), &double.url, "n1", "");
    let backups = tmp.path().join("backups");

    // A chunk the night stored, damaged before its verification: the run fails, keeps
    // nothing, and takes the chunk's name away.
    grow_state_db(tmp.path());
    let before = chunk_files(&backups);
    let mut damaged = None;
    let output = night_damaged(tmp.path(), &double.url, "n2", || {
        let new = chunk_files(&backups);
        // One of the new rows' chunks, not the first (the copy's header may differ next time).
        let index = backups.join(".n2.wqm-staging/backup/sqlite/state.db.chunks");
        let chunk = fs::read_to_string(index)
            .unwrap()
            .lines()
            .skip(2)
            .map(|l| {
                let id = l.split(' ').next().unwrap();
                backups.join(format!(".wqm-chunks/chunks/{}/{id}", &id[..2]))
            })
            .find(|chunk| new.contains(chunk) && !before.contains(chunk))
            .unwrap();
        fixtures::flip_byte(&chunk);
        damaged = Some(chunk);
    });
    let chunk = damaged.unwrap();
    let id = id_of(&chunk);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the new backup failed verification: sqlite/state.db.chunks: chunk `")
            && stderr.contains(&format!("`{id}` is damaged")),
        "{stderr}"
    );
    assert!(!backups.join("n2").exists());
    assert!(!chunk.exists(), "set aside");
    assert!(backups.join(".wqm-chunks/quarantine").join(&id).is_file());
    // The next night, which compares nothing it reuses, finds it missing and stores it again.
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/backups/n2 --incremental",
    )
    .env(
        "WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE",
        "4000000000",
    )
    .stdout_with(|_| {})
    .run();
    assert!(chunk.is_file());
    let tmp = validate(tmp, "backups/n2");

    // An index it wrote, damaged before its verification.
    let staged = backups.join(".n3.wqm-staging/backup/sqlite/state.db.chunks");
    let output = night_damaged(tmp.path(), &double.url, "n3", || {
        fixtures::flip_byte(&staged)
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the new backup failed verification: sqlite/state.db.chunks: "),
        "{stderr}"
    );
    assert!(!backups.join("n3").exists());
    validate(tmp, "backups/n2");
}

fn id_of(chunk: &Path) -> String {
    chunk.file_name().unwrap().to_string_lossy().into_owned()
}
