//! `wqm backup dump BACKUP FILE`: one stored file's plain content on stdout, checked against
//! the manifest as it streams; from a full backup, an incremental night's chunks, and S3.

use std::fs;
use std::path::Path;

use wqm::format::manifest::Manifest;

use crate::incremental::{first_chunk, night, workspace, wqm};
use crate::pty::Terminal;
use crate::qdrant_double::Double;
use crate::test::{wqm_command, Test};

fn manifest(backup: &Path) -> Manifest {
    Manifest::load(&backup.join("metadata/manifest.json")).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    wqm::checksum::to_hex(&sha2::Sha256::digest(bytes))
}

/// `wqm backup dump ARGS`: its stdout, checked against `backup`'s manifest entry `file`.
fn dumped_matches(t: Test, args: &str, backup: &Path, file: &str) -> (Vec<u8>, tempfile::TempDir) {
    let (output, tmp) = t
        .args(&format!("backup dump {args}"))
        .stdout_with(|_| {})
        .run();
    let m = manifest(backup);
    let entry = m.files.iter().find(|f| f.path == file).unwrap();
    assert_eq!(output.stdout.len() as u64, entry.content_size);
    assert_eq!(sha256(&output.stdout), entry.content_sha256);
    (output.stdout, tmp)
}

#[test]
fn a_full_and_an_incremental_backup_dump_each_file_as_its_content() {
    let double = Double::start();
    let (_, tmp) = wqm(
        Test::in_dir(workspace()),
        &double.url,
        "backup create {TMP}/backups/full",
    )
    .stdout_with(|_| {})
    .run();
    let (_, tmp) = night(tmp, &double.url, "n1", "");
    let backups = tmp.path().join("backups");

    // A full backup's snapshot: the decompressed file.
    let (snapshot, tmp) = dumped_matches(
        Test::in_dir(tmp),
        "{TMP}/backups/full collections/small-named.snapshot.zst",
        &backups.join("full"),
        "collections/small-named.snapshot.zst",
    );
    let stored = fs::read(backups.join("full/collections/small-named.snapshot.zst")).unwrap();
    assert_eq!(snapshot, zstd::decode_all(&stored[..]).unwrap());
    assert!(snapshot.len() > stored.len() / 2 && !snapshot.is_empty());
    let (database, tmp) = dumped_matches(
        Test::in_dir(tmp),
        "{TMP}/backups/full sqlite/state.db.zst",
        &backups.join("full"),
        "sqlite/state.db.zst",
    );
    assert!(database.starts_with(b"SQLite format 3\0"));
    // An incremental night's chunked snapshot: its chunks in order, the content.
    let (chunked, tmp) = dumped_matches(
        Test::in_dir(tmp),
        "{TMP}/backups/n1 collections/small-named.snapshot.chunks",
        &backups.join("n1"),
        "collections/small-named.snapshot.chunks",
    );
    assert!(chunked.len() > 1024);

    // An unknown FILE: exit 2, naming what the backup holds; nothing on stdout.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup dump {TMP}/backups/n1 collections/small-named.snapshot.zst")
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.contains("holds no file `collections/small-named.snapshot.zst` (did you mean `collections/small-named.snapshot.chunks`?); it holds: `collections/small-named.snapshot.chunks`, `collections/small-plain.snapshot.chunks`, `sqlite/state.db.chunks`"),
                "{e}"
            );
            assert!(e.contains("hint: FILE is a path as the manifest's"), "{e}");
        })
        .run();
    // `--json` is refused: stdout is the content.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup dump {TMP}/backups/full sqlite/state.db.zst --json")
        .status(2)
        .stdout_with(|o| assert!(o.contains("\"exit_code\": 2"), "{o}"))
        .stderr_with(|e| assert!(e.contains("`--json` does not apply"), "{e}"))
        .run();

    // A damaged chunk: exit 3 naming the file, the partial stdout to be discarded.
    let chunk = first_chunk(
        &backups.join("n1"),
        "collections/small-named.snapshot.chunks",
    );
    chunk.damage();
    let (output, tmp) = Test::in_dir(tmp)
        .args("backup dump {TMP}/backups/n1 collections/small-named.snapshot.chunks")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.contains("wqm: error: the backup's `collections/small-named.snapshot.chunks` is damaged: "),
                "{e}"
            );
            assert!(e.contains("are not the file's content (a truncated or wrong stream): discard them"), "{e}");
        })
        .run();
    // The chunk is found wrong by the content's sha256 at its end: all of it may have been
    // written, but not the content; only the exit code and the message tell.
    assert!(output.stdout.len() <= chunked.len());
    assert_ne!(output.stdout, chunked);
    // A damaged compressed file: exit 3 too.
    let db = backups.join("full/sqlite/state.db.zst");
    let mut bytes = fs::read(&db).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&db, bytes).unwrap();
    let (output, tmp) = Test::in_dir(tmp)
        .args("backup dump {TMP}/backups/full sqlite/state.db.zst")
        .status(3)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(
                e.contains("the backup's `sqlite/state.db.zst` is damaged: "),
                "{e}"
            );
            assert!(e.contains("discard them"), "{e}");
        })
        .run();
    assert_ne!(output.stdout, database);

    // A terminal as stdout is refused before anything is read.
    let mut command = wqm_command(
        &tmp.path().join("home"),
        &[
            "backup",
            "dump",
            backups.join("n1").to_str().unwrap(),
            "sqlite/state.db.chunks",
        ],
    );
    command.current_dir(tmp.path());
    let (status, screen) = Terminal::spawn(command).finish();
    assert_eq!(status.code(), Some(2), "{screen}");
    assert!(screen.contains("stdout is a terminal"), "{screen}");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_backup_on_s3_dumps_its_files() {
    use crate::s3_lock::{finished, locks, paused_at, resume, s3_command};
    use crate::s3_read::{backups_on_s3, with_s3};
    let double = Double::start();
    let (tmp, runtime, backend, url) = backups_on_s3(&double);
    let backups = tmp.path().join("backups");
    // Held on S3 while it reads: a prune there waits.
    let file = "collections/small-named.snapshot.chunks";
    let dump = paused_at(
        tmp.path(),
        s3_command(
            tmp.path(),
            &double.url,
            &["backup", "dump", &format!("{url}/n1"), file],
        ),
        "dump:opened",
    );
    let held = locks(&runtime, &backend);
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        !held[0].exclusive && held[0].command == "backup dump",
        "{held:?}"
    );
    resume(tmp.path(), "dump:opened");
    let (code, _, stderr) = finished(dump);
    assert_eq!(code, 0, "{stderr}");
    let (_, tmp) = dumped_matches(
        with_s3(Test::in_dir(tmp)),
        &format!("{url}/n2 collections/small-named.snapshot.chunks"),
        &backups.join("n2"),
        "collections/small-named.snapshot.chunks",
    );
    let (_, tmp) = dumped_matches(
        with_s3(Test::in_dir(tmp)),
        &format!("{url}/full sqlite/state.db.zst"),
        &backups.join("full"),
        "sqlite/state.db.zst",
    );
    assert_eq!(locks(&runtime, &backend), Vec::new(), "released at the end");
    let (_, _tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup dump {url}/n2 nothing"))
        .status(2)
        .stderr_with(|e| assert!(e.contains("holds no file `nothing`"), "{e}"))
        .run();
}

/// The second shell block of docs/reliability.md's by-hand section: an incremental backup's
/// snapshots and database through `wqm backup dump`.
fn incremental_recipe() -> String {
    let page =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reliability.md"))
            .unwrap();
    page.split("## Restoring a backup by hand, without wqm")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(2))
        .and_then(|s| s.split("```").next())
        .expect("the incremental block")
        .to_string()
}

/// Runs the incremental recipe on `backup` against `url`, with `wqm` on the `PATH`, into
/// `tmp`'s `data/`.
fn restore_by_hand(backup: &Path, url: &str, tmp: &Path) -> std::process::Output {
    restore_by_hand_with(backup, url, tmp, &[])
}

/// `restore_by_hand` with more variables (a repository's password).
fn restore_by_hand_with(
    backup: &Path,
    url: &str,
    tmp: &Path,
    vars: &[(&str, &str)],
) -> std::process::Output {
    let wqm_dir = Path::new(env!("CARGO_BIN_EXE_wqm")).parent().unwrap();
    let path = format!(
        "{}:{}",
        wqm_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("bash")
        .args(["-c", &incremental_recipe()])
        .env_clear()
        .env("PATH", &path)
        .env("HOME", tmp.join("home"))
        .envs(crate::test::NO_DAEMON)
        .env("BACKUP", backup)
        .env("QDRANT_URL", url)
        .env("QDRANT_API_KEY", "")
        .env("DATA_DIR", tmp.join("data"))
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn the_by_hand_recipe_restores_a_backup_of_an_encrypted_repository_through_dump() {
    let double = Double::start();
    let password = [
        ("WQM_BACKUP_PASSWORD", crate::repo::FIRST),
        ("WQM_TEST_FAST_KDF", "1"),
    ];
    let mut tmp = workspace();
    for args in [
        "backup init {TMP}/enc --encrypt",
        "backup create {TMP}/enc/b",
    ] {
        let mut t = wqm(Test::in_dir(tmp), &double.url, args).stdout_with(|_| {});
        for (key, value) in password {
            t = t.env(key, value);
        }
        tmp = t.run().1;
    }
    let live = crate::test::sqlite_dump(&tmp.path().join("data/state.db"));
    crate::restore::lose_everything(&double);
    fs::write(tmp.path().join("data/state.db"), b"not the backup's").unwrap();
    let backup = tmp.path().join("enc/b");
    let output = restore_by_hand_with(&backup, &double.url, tmp.path(), &password);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        double.state().collections.keys().collect::<Vec<_>>(),
        ["small-named", "small-plain"]
    );
    assert_eq!(
        crate::test::sqlite_dump(&tmp.path().join("data/state.db")),
        live
    );
}

#[test]
fn the_by_hand_recipe_restores_an_incremental_backup_through_dump() {
    let double = Double::start();
    let (_, tmp) = night(workspace(), &double.url, "n1", "");
    let live = crate::test::sqlite_dump(&tmp.path().join("data/state.db"));
    crate::restore::lose_everything(&double);
    fs::write(tmp.path().join("data/state.db"), b"not the backup's").unwrap();
    let run = |backup: &Path| restore_by_hand(backup, &double.url, tmp.path());
    let backup = tmp.path().join("backups/n1");
    let output = run(&backup);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("restored {}\n", backup.display())
    );
    assert_eq!(
        double.state().collections.keys().collect::<Vec<_>>(),
        ["small-named", "small-plain"]
    );
    assert!(double.snapshots_left().is_empty());
    assert_eq!(
        crate::test::sqlite_dump(&tmp.path().join("data/state.db")),
        live
    );

    // A damaged chunk: wqm's exit 3 stops the recipe (pipefail), the message names the file.
    crate::restore::lose_everything(&double);
    let chunk = first_chunk(&backup, "collections/small-named.snapshot.chunks");
    chunk.damage();
    let output = run(&backup);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the backup's `collections/small-named.snapshot.chunks` is damaged"),
        "{stderr}"
    );
    assert!(!double.state().collections.contains_key("small-named"));
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn the_by_hand_recipe_brings_a_real_incremental_backup_back() {
    use crate::real_qdrant::{self, Server};
    let server = Server::start();
    real_qdrant::workspace(&server);
    let before = real_qdrant::fingerprint(&server);
    let (_, tmp) = night(workspace(), &server.url, "n1", "");
    let live = crate::test::sqlite_dump(&tmp.path().join("data/state.db"));
    server.delete_all_collections();
    fs::remove_file(tmp.path().join("data/state.db")).unwrap();
    let backup = tmp.path().join("backups/n1");
    let output = restore_by_hand(&backup, &server.url, tmp.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Aliases are step 3 of the full recipe; the collections come back exactly.
    assert_eq!(
        real_qdrant::fingerprint(&server)["collections"],
        before["collections"]
    );
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
    assert_eq!(
        crate::test::sqlite_dump(&tmp.path().join("data/state.db")),
        live
    );
}
