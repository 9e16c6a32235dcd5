//! `wqm backup key list|add|remove|passwd`: a round trip, a wrong password, keys that are not
//! the repository's; and init, keys and the guard on the real SeaweedFS.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use wqm::backend::{self, Backend, Name};

use crate::incremental::wqm;
use crate::qdrant_double::Double;
use crate::repo::{
    current, fast, files, holds_none, json_of, keys, prints_none, FIRST, SECOND, THIRD,
    WRONG_PASSWORD,
};
use crate::s3_read::{fresh_prefix, with_s3};
use crate::test::Test;

#[test]
fn keys_are_added_listed_changed_and_removed_and_the_repository_holds_no_password() {
    let (_, tmp) = fast(Test::new())
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/r --encrypt")
        .stdout_with(|_| {})
        .run();
    let config = fs::read(tmp.path().join("r/.wqm-repo/config")).unwrap();
    fs::write(tmp.path().join("second"), SECOND).unwrap();
    fs::write(tmp.path().join("third"), format!("{THIRD}\n")).unwrap();
    let (first_keys, tmp) = keys(Test::in_dir(tmp), "{TMP}/r", FIRST);
    let first_id = current(&first_keys);

    // add: a second password for the same master key.
    let (output, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup key add {TMP}/r --new-password-file {TMP}/second --json")
        .stdout_with(|_| {})
        .run();
    prints_none(&output);
    let second_id = json_of(&output)["added"]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (listed, tmp) = keys(Test::in_dir(tmp), "{TMP}/r", SECOND);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(current(&listed), second_id);
    assert_eq!(
        listed[0]["kdf"],
        serde_json::json!({"m_kib": 8, "t": 1, "p": 1})
    );

    // passwd: the first password's key replaced by a key for the third.
    let (output, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup key passwd {TMP}/r --new-password-file {TMP}/third")
        .stdout_with(|o| assert!(o.starts_with("Changed the password of `"), "{o}"))
        .run();
    prints_none(&output);
    let (listed, tmp) = keys(Test::in_dir(tmp), "{TMP}/r", THIRD);
    let third_id = current(&listed);
    let ids: Vec<&str> = listed
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&first_id.as_str()) && ids.contains(&second_id.as_str()),
        "{ids:?}"
    );
    assert_eq!(ids.len(), 2);
    // The old password opens nothing any more.
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup key list {TMP}/r")
        .status(2)
        .stderr_with(|e| assert!(e.contains(WRONG_PASSWORD), "{e}"))
        .run();

    // remove: never the key in use (so never the last), never a key that is not there.
    let mut tmp = tmp;
    for (id, said) in [
        (
            third_id.clone(),
            "is the one this run opened the repository with",
        ),
        (
            "0123456789abcdef0123456789abcdef".to_string(),
            "no key `0123456789abcdef0123456789abcdef`",
        ),
    ] {
        tmp = fast(Test::in_dir(tmp))
            .env("WQM_BACKUP_PASSWORD", THIRD)
            .args(&format!("backup key remove {{TMP}}/r {id}"))
            .status(2)
            .stderr_with(move |e| assert!(e.contains(said), "{e}"))
            .run()
            .1;
    }
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", THIRD)
        .args(&format!("backup key remove {{TMP}}/r {second_id}"))
        .stdout(&format!("Removed key `{second_id}` from `{{TMP}}/r`\n"))
        .run();
    let (listed, tmp) = keys(Test::in_dir(tmp), "{TMP}/r", THIRD);
    assert_eq!(listed.len(), 1);
    // The last key: it is the one in use, so it cannot go.
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", THIRD)
        .args(&format!("backup key remove {{TMP}}/r {third_id}"))
        .status(2)
        .stderr_with(|e| assert!(e.contains("cannot remove itself"), "{e}"))
        .run();
    // The master key never changed: the config is the one init wrote.
    assert_eq!(
        fs::read(tmp.path().join("r/.wqm-repo/config")).unwrap(),
        config
    );
    holds_none(&files(&tmp.path().join("r")), &[FIRST, SECOND, THIRD]);
}

#[test]
fn a_wrong_password_changes_nothing() {
    let (_, tmp) = fast(Test::new())
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/r --encrypt")
        .stdout_with(|_| {})
        .run();
    fs::write(tmp.path().join("new"), SECOND).unwrap();
    let (listed, tmp) = keys(Test::in_dir(tmp), "{TMP}/r", FIRST);
    let id = current(&listed);
    let before = files(&tmp.path().join("r"));
    let mut tmp = tmp;
    for command in [
        "list {TMP}/r".to_string(),
        "add {TMP}/r --new-password-file {TMP}/new".to_string(),
        "passwd {TMP}/r --new-password-file {TMP}/new".to_string(),
        format!("remove {{TMP}}/r {id}"),
    ] {
        let (output, back) = fast(Test::in_dir(tmp))
            .env("WQM_BACKUP_PASSWORD", THIRD)
            .args(&format!("backup key {command}"))
            .status(2)
            .stderr_with(|e| {
                assert!(
                    e.starts_with(&format!("wqm: error: {WRONG_PASSWORD}\n")),
                    "{e}"
                )
            })
            .run();
        prints_none(&output);
        tmp = back;
    }
    assert_eq!(files(&tmp.path().join("r")), before);
    // A directory that is no repository, and a plain one: no keys to open.
    let (_, mut tmp) = Test::in_dir(tmp)
        .args("backup init {TMP}/plain")
        .stdout_with(|_| {})
        .run();
    for (dir, said) in [
        ("nothing", "is not a repository"),
        ("plain", "is not encrypted"),
    ] {
        let (_, back) = fast(Test::in_dir(tmp))
            .env("WQM_BACKUP_PASSWORD", FIRST)
            .args(&format!("backup key list {{TMP}}/{dir}"))
            .status(2)
            .stderr_with(move |e| assert!(e.contains(said), "{e}"))
            .run();
        tmp = back;
    }
    assert!(!tmp.path().join("nothing").exists());
}

#[test]
fn a_key_of_another_master_key_opens_nothing_and_an_unreadable_one_is_named() {
    let (_, mut tmp) = fast(Test::new())
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/r")
        .args("--encrypt")
        .stdout_with(|_| {})
        .run();
    // Another repository with the same password: its key object, planted here (as a killed
    // or beaten init would leave one), unwraps with the password, to another master key.
    tmp = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup init {TMP}/other --encrypt")
        .stdout_with(|_| {})
        .run()
        .1;
    let keys_of = |dir: &Path| -> Vec<PathBuf> {
        fs::read_dir(dir.join(".wqm-repo/keys"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let own = keys_of(&tmp.path().join("r")).remove(0);
    let foreign = keys_of(&tmp.path().join("other")).remove(0);
    let keys_dir = tmp.path().join("r/.wqm-repo/keys");
    fs::copy(&foreign, keys_dir.join(foreign.file_name().unwrap())).unwrap();
    fs::write(keys_dir.join("0000"), "not a key object").unwrap();
    let own_bytes = fs::read(&own).unwrap();
    fs::remove_file(&own).unwrap();
    let (_, tmp) = fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup key list {TMP}/r")
        .status(2)
        .stderr_with(|e| assert!(e.contains(WRONG_PASSWORD), "{e}"))
        .run();
    // With its own key back, it opens with that one, naming the unreadable object.
    fs::write(&own, own_bytes).unwrap();
    let own_id = own.file_name().unwrap().to_string_lossy().into_owned();
    fast(Test::in_dir(tmp))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args("backup key list {TMP}/r")
        .stdout_with(move |o| {
            assert!(o.contains(&format!("* {own_id}  ")), "{o}");
            assert!(o.contains("2 key(s) in `"), "{o}");
        })
        .stderr_with(|e| {
            assert!(
                e.contains("wqm: warning: key object `.wqm-repo/keys/0000` is unreadable"),
                "{e}"
            )
        })
        .run();
}

/// Every object under the repository's prefix and its bytes.
fn objects(runtime: &tokio::runtime::Runtime, backend: &dyn Backend) -> BTreeMap<PathBuf, Vec<u8>> {
    runtime.block_on(async {
        let mut out = BTreeMap::new();
        for object in backend.list("").await.unwrap() {
            let data = backend
                .load(&Name::new(object.name.clone()).unwrap(), None)
                .await
                .unwrap();
            out.insert(
                PathBuf::from(object.name),
                backend::collect(data).await.unwrap(),
            );
        }
        out
    })
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn init_and_keys_on_s3() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (plain_backend, plain) = fresh_prefix(&runtime);
    let (backend, url) = fresh_prefix(&runtime);
    let (_, tmp) = with_s3(Test::new())
        .args(&format!("backup init {plain}"))
        .stdout(&format!(
            "Created a repository at `{plain}` (not encrypted)\n"
        ))
        .run();
    let stored = objects(&runtime, &*plain_backend);
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        [Path::new(".wqm-repo/config")]
    );
    // A prefix that holds a backup (its manifest, even unreadable): refused, nothing written.
    let (taken_backend, taken) = fresh_prefix(&runtime);
    let manifest = Name::new("night-1/metadata/manifest.json").unwrap();
    runtime
        .block_on(taken_backend.save(&manifest, backend::once("{}")))
        .unwrap();
    let (_, tmp) = fast(with_s3(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args(&format!("backup init {taken} --encrypt"))
        .status(2)
        .stderr_with(|e| assert!(e.contains("holds backups already (`night-1`)"), "{e}"))
        .run();
    assert_eq!(objects(&runtime, &*taken_backend).len(), 1);
    let (output, tmp) = fast(with_s3(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args(&format!("backup init {url} --encrypt --json"))
        .stdout_json(|v| assert_eq!(v["encrypted"], true, "{v}"))
        .run();
    prints_none(&output);
    // A second init: refused, on either.
    let mut tmp = tmp;
    for target in [&plain, &url] {
        tmp = fast(with_s3(Test::in_dir(tmp)))
            .env("WQM_BACKUP_PASSWORD", FIRST)
            .args(&format!("backup init {target} --encrypt"))
            .status(2)
            .stderr_with(|e| assert!(e.contains("is a repository already"), "{e}"))
            .run()
            .1;
    }
    fs::write(tmp.path().join("second"), SECOND).unwrap();
    fs::write(tmp.path().join("third"), THIRD).unwrap();
    let (_, tmp) = fast(with_s3(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args(&format!(
            "backup key add {url} --new-password-file {{TMP}}/second"
        ))
        .stdout_with(|o| assert!(o.starts_with("Added key `"), "{o}"))
        .run();
    let (_, tmp) = fast(with_s3(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", SECOND)
        .args(&format!(
            "backup key passwd {url} --new-password-file {{TMP}}/third"
        ))
        .stdout_with(|o| assert!(o.starts_with("Changed the password of `"), "{o}"))
        .run();
    let before = objects(&runtime, &*backend);
    assert_eq!(
        before
            .keys()
            .filter(|k| k.starts_with(".wqm-repo/keys"))
            .count(),
        2,
        "{:?}",
        before.keys()
    );
    // The replaced password opens nothing, and changes nothing.
    let (_, tmp) = fast(with_s3(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", SECOND)
        .args(&format!(
            "backup key add {url} --new-password-file {{TMP}}/second"
        ))
        .status(2)
        .stderr_with(|e| assert!(e.contains(WRONG_PASSWORD), "{e}"))
        .run();
    let (listed, tmp) = keys(with_s3(Test::in_dir(tmp)), &url, THIRD);
    assert_eq!(listed.len(), 2);
    // Nothing reads or writes backups there yet, and Qdrant is not asked.
    let double = Double::start();
    let mut tmp = tmp;
    for args in [
        format!("backup list {url}"),
        format!("backup info {url}/night-1"),
        format!("backup create {url}/night-1"),
    ] {
        tmp = with_s3(wqm(Test::in_dir(tmp), &double.url, &args))
            .status(2)
            .stderr_with(|e| assert!(e.contains("encrypted; password needed"), "{e}"))
            .run()
            .1;
    }
    assert!(double.requests().is_empty(), "{:?}", double.requests());
    let after = objects(&runtime, &*backend);
    assert_eq!(after, before);
    holds_none(&after, &[FIRST, SECOND, THIRD]);
}
