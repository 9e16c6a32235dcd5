//! `wqm backup init [--encrypt]`, the passwords (each source, none; the prompt is in
//! terminal.rs), and every command refused in an encrypted repository without its password
//! (with it: encrypted.rs). `wqm backup key` and the S3 half: repo_keys.rs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::test::Test;

/// Distinctive passwords, searched for in every byte the repository holds and every line wqm
/// prints.
pub(crate) const FIRST: &str = "first-Pa55word-zq81";
pub(crate) const SECOND: &str = "second-Pa55word-kx27";
pub(crate) const THIRD: &str = "third-Pa55word-wv64";
pub(crate) const WRONG_PASSWORD: &str = "wrong password or no key for this repository";

/// A command with cheap key derivation (debug builds only; one test keeps the default).
pub(crate) fn fast(t: Test) -> Test {
    t.env("WQM_TEST_FAST_KDF", "1")
}

/// Every file under `dir` and its bytes.
pub(crate) fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// No stored byte sequence holds any of `passwords`.
pub(crate) fn holds_none(stored: &BTreeMap<PathBuf, Vec<u8>>, passwords: &[&str]) {
    assert!(!stored.is_empty());
    for (path, bytes) in stored {
        for password in passwords {
            assert!(
                !bytes
                    .windows(password.len())
                    .any(|w| w == password.as_bytes()),
                "`{}` holds a password",
                path.display()
            );
        }
    }
}

/// Neither stdout nor stderr of a run shows a password.
pub(crate) fn prints_none(output: &std::process::Output) {
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        for password in [FIRST, SECOND, THIRD] {
            assert!(!text.contains(password), "printed a password:\n{text}");
        }
    }
}

pub(crate) fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `key list DIR --json` run by `t` with the password `password` (in `WQM_BACKUP_PASSWORD`):
/// the keys.
pub(crate) fn keys(t: Test, dir: &str, password: &str) -> (Vec<Value>, TempDir) {
    let (output, tmp) = fast(t)
        .env("WQM_BACKUP_PASSWORD", password)
        .args(&format!("backup key list {dir} --json"))
        .stdout_with(|_| {})
        .run();
    prints_none(&output);
    (json_of(&output)["keys"].as_array().unwrap().clone(), tmp)
}

pub(crate) fn current(keys: &[Value]) -> String {
    let current: Vec<_> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1, "{keys:?}");
    current[0]["key_id"].as_str().unwrap().to_string()
}

#[test]
fn init_makes_a_plain_and_an_encrypted_repository_and_refuses_a_second_one() {
    let (output, tmp) = Test::new()
        .args("backup init {TMP}/plain --json")
        .stdout_json(|v| {
            assert_eq!(v["encrypted"], false, "{v}");
            assert_eq!(v["key"], Value::Null, "{v}");
        })
        .run();
    prints_none(&output);
    let config: Value =
        serde_json::from_slice(&fs::read(tmp.path().join("plain/.wqm-repo/config")).unwrap())
            .unwrap();
    assert_eq!(config["version"], 1);
    assert_eq!(config["encrypted"], false);
    assert!(!tmp.path().join("plain/.wqm-repo/keys").exists());
    // The default key derivation parameters, stored in the key object.
    let (output, tmp) = Test::in_dir(tmp)
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/secret --encrypt --json")
        .stdout_json(|v| {
            assert_eq!(v["encrypted"], true, "{v}");
            assert_eq!(
                v["key"]["kdf"],
                serde_json::json!({"m_kib": 32768, "t": 8, "p": 1}),
                "{v}"
            );
        })
        .run();
    prints_none(&output);
    let key_id = json_of(&output)["key"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tmp.path().join("secret");
    let config: Value =
        serde_json::from_slice(&fs::read(dir.join(".wqm-repo/config")).unwrap()).unwrap();
    assert_eq!(config["encrypted"], true);
    assert_eq!(config["master_key_id"].as_str().unwrap().len(), 32);
    let key: Value =
        serde_json::from_slice(&fs::read(dir.join(format!(".wqm-repo/keys/{key_id}"))).unwrap())
            .unwrap();
    assert_eq!(key["kdf"]["name"], "argon2id");
    holds_none(&files(&dir), &[FIRST]);

    // A second init of either, encrypted or not: refused, nothing changed.
    let before = files(tmp.path());
    let mut tmp = tmp;
    for args in [
        "backup init {TMP}/plain",
        "backup init {TMP}/plain --encrypt",
        "backup init {TMP}/secret --encrypt",
    ] {
        tmp = Test::in_dir(tmp)
            .env("WQM_BACKUP_PASSWORD", SECOND)
            .args(args)
            .status(2)
            .stderr_with(|e| {
                assert!(e.contains("is a repository already"), "{e}");
                assert!(e.contains("hint: it is ready"), "{e}");
            })
            .run()
            .1;
    }
    // A directory that holds backups (one whose manifest is unreadable counts), or a chunk
    // store: refused, saying to use an empty one.
    let backups = tmp.path().join("backups/night-1/metadata");
    fs::create_dir_all(&backups).unwrap();
    fs::write(backups.join("manifest.json"), "{}").unwrap();
    fs::create_dir_all(tmp.path().join("chunks/.wqm-chunks")).unwrap();
    fs::write(tmp.path().join("chunks/.wqm-chunks/store.json"), "{}").unwrap();
    let before_backups = files(tmp.path());
    for (dir, example) in [("backups", "night-1"), ("chunks", ".wqm-chunks/store.json")] {
        tmp = Test::in_dir(tmp)
            .env("WQM_BACKUP_PASSWORD", SECOND)
            .args(&format!("backup init {{TMP}}/{dir} --encrypt"))
            .status(2)
            .stderr_with(move |e| {
                assert!(
                    e.contains(&format!("holds backups already (`{example}`)")),
                    "{e}"
                );
                assert!(e.contains("an empty directory or a new prefix"), "{e}");
            })
            .run()
            .1;
    }
    assert_eq!(files(tmp.path()), before_backups);
    assert!(before.keys().all(|p| before_backups.contains_key(p)));
    // What is not wqm's is no reason to refuse.
    fs::create_dir_all(tmp.path().join("mount/lost+found")).unwrap();
    fs::create_dir_all(tmp.path().join("mount/.snapshots/1")).unwrap();
    fs::write(tmp.path().join("mount/README"), "backups go here").unwrap();
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup init {TMP}/mount")
        .stdout("Created a repository at `{TMP}/mount` (not encrypted)\n")
        .run();
    // `--password-file` belongs to `--encrypt`.
    Test::in_dir(tmp)
        .args("backup init {TMP}/other --password-file {TMP}/pw")
        .status(2)
        .stderr_with(|e| assert!(e.contains("--encrypt"), "{e}"))
        .run();
}

#[test]
fn each_password_source_is_taken_in_its_order() {
    let (_, tmp) = fast(Test::new())
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/r --encrypt")
        .stdout_with(|o| assert!(o.starts_with("Created an encrypted repository at `"), "{o}"))
        .run();
    fs::write(tmp.path().join("right"), format!("{FIRST}\n")).unwrap();
    fs::write(tmp.path().join("wrong"), "not it\r\n").unwrap();
    let command = format!("sh -c 'printf %s {FIRST}'");
    // Each source alone, then each before a wrong one of a later source; the source `-v` names.
    let file_var = "`WQM_BACKUP_PASSWORD_FILE` (`";
    let var = "`WQM_BACKUP_PASSWORD`";
    let config = "`backup.encryption.password_command`";
    // (environment, flags, the source `-v` names)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 8] = [
        (&[], "--password-file {TMP}/right", "`--password-file "),
        (&[("WQM_BACKUP_PASSWORD_FILE", "{TMP}/right")], "", file_var),
        (&[("WQM_BACKUP_PASSWORD", FIRST)], "", var),
        (
            &[("WQM_BACKUP__ENCRYPTION__PASSWORD_COMMAND", &command)],
            "",
            config,
        ),
        (
            &[("WQM_BACKUP_PASSWORD_FILE", "{TMP}/wrong")],
            "--password-file {TMP}/right",
            "`--password-file ",
        ),
        (
            &[
                ("WQM_BACKUP_PASSWORD_FILE", "{TMP}/right"),
                ("WQM_BACKUP_PASSWORD", "not it"),
            ],
            "",
            file_var,
        ),
        (
            &[
                ("WQM_BACKUP_PASSWORD", FIRST),
                ("WQM_BACKUP__ENCRYPTION__PASSWORD_COMMAND", "sh -c 'exit 1'"),
            ],
            "",
            var,
        ),
        (
            // Empty counts as unset.
            &[
                ("WQM_BACKUP_PASSWORD", ""),
                ("WQM_BACKUP__ENCRYPTION__PASSWORD_COMMAND", &command),
            ],
            "",
            config,
        ),
    ];
    let mut tmp = tmp;
    for (env, flags, source) in cases {
        let mut t = fast(Test::in_dir(tmp)).args(&format!("backup key list {{TMP}}/r {flags} -v"));
        for (k, v) in env {
            t = t.env(k, v);
        }
        let expected = format!("  Password from {source}");
        let (output, back) = t
            .stdout_with(|o| assert!(o.contains("1 key(s) in `"), "{o}"))
            .stderr_with(move |e| assert!(e.starts_with(&expected), "{e}"))
            .run();
        prints_none(&output);
        tmp = back;
    }
    // The config file's command, as an operator writes it.
    fs::write(
        tmp.path().join("config.yaml"),
        format!("backup:\n  encryption:\n    password_command: \"{command}\"\n"),
    )
    .unwrap();
    let (_, tmp) = fast(Test::in_dir(tmp))
        .args("backup key list {TMP}/r --config {TMP}/config.yaml -v")
        .stdout_with(|o| assert!(o.contains("1 key(s) in `"), "{o}"))
        .stderr("  Password from `backup.encryption.password_command`\n")
        .run();
    // A source that fails is an error, not a reason to try the next one.
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD_FILE", "{TMP}/missing")
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup key list {TMP}/r")
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.contains("cannot read the password file `")
                    && e.contains("/missing` (`WQM_BACKUP_PASSWORD_FILE`)"),
                "{e}"
            )
        })
        .run();
    let (output, _) = fast(Test::in_dir(tmp))
        .env(
            "WQM_BACKUP__ENCRYPTION__PASSWORD_COMMAND",
            &format!("sh -c 'echo {SECOND}; exit 3'"),
        )
        .args("backup key list {TMP}/r")
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.contains("`backup.encryption.password_command` (`sh`) failed: it exited with exit status: 3"),
                "{e}"
            );
            assert!(e.contains("runs without a shell"), "{e}");
        })
        .run();
    prints_none(&output);
}

#[test]
fn without_a_terminal_or_a_password_it_exits_2_naming_the_ways_and_changes_nothing() {
    let ways = "give it with `--password-file FILE`, `WQM_BACKUP_PASSWORD_FILE`, `WQM_BACKUP_PASSWORD` or `backup.encryption.password_command`, or run on a terminal to be asked";
    let (_, tmp) = fast(Test::new())
        .args("backup init {TMP}/r --encrypt")
        .status(2)
        .stderr_with(move |e| {
            assert!(
                e.contains("a new password is needed for `")
                    && e.contains("there is no terminal to ask on"),
                "{e}"
            );
            assert!(e.contains(ways), "{e}");
        })
        .run();
    // Made the directory, wrote no repository into it.
    assert!(!tmp.path().join("r/.wqm-repo").exists());
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/r --encrypt")
        .stdout_with(|_| {})
        .run();
    let before = files(&tmp.path().join("r"));
    let (_, tmp) = fast(Test::in_dir(tmp))
        .args("backup key list {TMP}/r --json")
        .status(2)
        .stdout_json(|v| assert_eq!(v["error"]["exit_code"], 2, "{v}"))
        .stderr_with(move |e| {
            assert!(
                e.contains("a password is needed") && e.contains(ways),
                "{e}"
            )
        })
        .run();
    // The new password of `key add` and `key passwd`: `--new-password-file` or the terminal.
    let mut tmp = tmp;
    for command in ["add", "passwd"] {
        tmp = fast(Test::in_dir(tmp))
            .env("WQM_BACKUP_PASSWORD", FIRST)
            .args(&format!("backup key {command} {{TMP}}/r"))
            .status(2)
            .stderr_with(|e| {
                assert!(e.contains("a new password is needed for `"), "{e}");
                assert!(e.contains("give it with `--new-password-file FILE`"), "{e}");
            })
            .run()
            .1;
    }
    assert_eq!(files(&tmp.path().join("r")), before);
}

#[test]
fn without_its_password_no_command_reads_or_writes_backups_in_an_encrypted_repository() {
    let double = Double::start();
    let (_, tmp) = fast(Test::in_dir(workspace()))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/enc --encrypt")
        .stdout_with(|_| {})
        .run();
    let before = files(&tmp.path().join("enc"));
    let refused = "is encrypted; password needed (repository format `1`, master key `";
    let mut tmp = tmp;
    for (args, env) in [
        ("backup create {TMP}/enc/night-1", None),
        ("backup create", Some("{TMP}/enc")),
        ("backup info {TMP}/enc/night-1", None),
        ("backup info {TMP}/enc", None),
        ("backup list {TMP}/enc", None),
        ("backup validate {TMP}/enc/night-1 --check-files", None),
        ("backup export {TMP}/enc/night-1 {TMP}/copy", None),
        ("backup export {TMP}/plain/b {TMP}/enc/copy", None),
        ("backup dump {TMP}/enc/night-1 sqlite/state.db.zst", None),
        ("backup prune {TMP}/enc --keep-last 1", None),
        ("backup prune --keep-last 1", Some("{TMP}/enc")),
        ("backup restore {TMP}/enc/night-1 --force", None),
    ] {
        let mut t = wqm(Test::in_dir(tmp), &double.url, args)
            .status(2)
            .stderr_with(move |e| {
                assert!(e.contains(refused), "{e}");
                assert!(
                    e.contains("hint: give its password: `--password-file FILE`, `WQM_BACKUP_PASSWORD_FILE`, `WQM_BACKUP_PASSWORD` or `backup.encryption.password_command`"),
                    "{e}"
                );
            });
        if let Some(dir) = env {
            t = t.env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", dir);
        }
        tmp = t.run().1;
    }
    // Nothing was written, and Qdrant was never asked.
    assert_eq!(files(&tmp.path().join("enc")), before);
    assert!(!tmp.path().join("copy").exists());
    assert!(double.requests().is_empty(), "{:?}", double.requests());
    // A restore from a plain directory whose safety backup would go into the encrypted one.
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup restore {TMP}/plain/b --force",
    )
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/enc")
    .status(2)
    .stderr_with(move |e| assert!(e.contains(refused), "{e}"))
    .run();
    // `--json`: the same refusal as the one JSON document.
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup list {TMP}/enc --json",
    )
    .status(2)
    .stdout_json(|v| {
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("encrypted; password needed"),
            "{v}"
        );
        assert_eq!(v["error"]["exit_code"], 2);
    })
    .stderr_with(|_| {})
    .run();
    // A plain repository is a backups directory as before.
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup init {TMP}/plain")
        .stdout_with(|_| {})
        .run();
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/plain/night-1",
    )
    .stdout_with(|o| assert!(o.contains("Backup created"), "{o}"))
    .stderr_with(|_| {})
    .run();
    let (_, tmp) = wqm(Test::in_dir(tmp), &double.url, "backup list {TMP}/plain")
        .stdout_with(|o| assert!(o.contains("night-1") && !o.contains(".wqm-repo"), "{o}"))
        .run();
    // The repository's own directory is wqm's, not something prune skips and reports.
    wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup prune {TMP}/plain --keep-last 5 --json",
    )
    .stdout_with(|o| assert!(o.contains("night-1") && !o.contains(".wqm-repo"), "{o}"))
    .run();
}

#[test]
fn of_racing_inits_one_wins_and_the_others_leave_no_key_behind() {
    let tmp = tempfile::Builder::new()
        .prefix("wqm-test-")
        .tempdir()
        .unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    // The default key derivation (about 0.15 s) between the check and the write: every run
    // finds the place free, and the conditional write of the config decides.
    let passwords: Vec<String> = (0..4).map(|i| format!("racer-{i}-Pa55word")).collect();
    let runs: Vec<_> = passwords
        .iter()
        .map(|password| {
            crate::test::wqm_command(&home, &["backup", "init", "r", "--encrypt"])
                .current_dir(tmp.path())
                .env("WQM_BACKUP_PASSWORD", password)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = runs
        .into_iter()
        .map(|run| run.wait_with_output().unwrap())
        .collect();
    let won: Vec<usize> = (0..4).filter(|&i| outputs[i].status.success()).collect();
    assert_eq!(won.len(), 1, "{outputs:?}");
    for (i, output) in outputs.iter().enumerate() {
        if i != won[0] {
            assert_eq!(output.status.code(), Some(2), "{output:?}");
            let err = String::from_utf8_lossy(&output.stderr);
            assert!(err.contains("is a repository already"), "{err}");
        }
    }
    let stored = files(&tmp.path().join("r/.wqm-repo/keys"));
    assert_eq!(stored.len(), 1, "{:?}", stored.keys());
    let passwords: Vec<&str> = passwords.iter().map(String::as_str).collect();
    holds_none(&files(&tmp.path().join("r")), &passwords);
    // The winner's password opens it; the losers' open nothing.
    let (listed, tmp) = keys(Test::in_dir(tmp), "{TMP}/r", passwords[won[0]]);
    assert_eq!(listed.len(), 1);
    let loser = passwords[(won[0] + 1) % 4];
    fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", loser)
        .args("backup key list {TMP}/r")
        .status(2)
        .stderr_with(|e| assert!(e.contains(WRONG_PASSWORD), "{e}"))
        .run();
}
