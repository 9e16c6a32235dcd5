//! Encrypted repositories against the real servers: on the real SeaweedFS (a full backup sent
//! encrypted, read back, restored) and with a real Qdrant (incremental nights into an encrypted
//! local repository, restored point for point).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;
use wqm::backend::{self, Backend, Name};

use crate::encrypted::{found_in, DISTINCTIVE};
use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::real_qdrant::{self, Server};
use crate::repo::{fast, files, FIRST, SECOND, WRONG_PASSWORD};
use crate::restore::lose_everything;
use crate::s3_read::{fresh_prefix, object_names, with_s3};
use crate::test::Test;

/// `tmp` after `backup init URL --encrypt` with `password`: an encrypted repository on S3.
pub(crate) fn encrypted_on_s3(tmp: TempDir, url: &str, password: &str) -> TempDir {
    with_s3(fast(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", password)
        .args(&format!("backup init {url} --encrypt"))
        .stdout_with(|o| assert!(o.starts_with("Created an encrypted repository at `"), "{o}"))
        .run()
        .1
}

/// Every object under `prefixes` on S3, each checked to be an encrypted object, by name.
pub(crate) fn encrypted_objects(
    runtime: &tokio::runtime::Runtime,
    s3: &Arc<dyn Backend>,
    prefixes: &[&str],
) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut stored = BTreeMap::new();
    for prefix in prefixes {
        for name in object_names(runtime, s3, prefix) {
            let object = Name::new(name.clone()).unwrap();
            let bytes = runtime
                .block_on(async { backend::collect(s3.load(&object, None).await.unwrap()).await })
                .unwrap();
            assert!(bytes.starts_with(b"WQMCRYPT"), "{name}");
            stored.insert(PathBuf::from(name), bytes);
        }
    }
    stored
}

/// Strings a plain repository of the real workspace shows in its manifests: collection and
/// alias names.
const WORKSPACE_NAMES: &[&str] = &["libraries", "scratchpad", "current-project"];

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_backup_sent_to_an_encrypted_repository_on_s3_is_ciphertext_there_and_restores() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let tmp = encrypted_on_s3(workspace(), &url, FIRST);
    let (_, tmp) = with_s3(fast(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup create {url}/night-1"),
    )))
    .env("WQM_BACKUP_PASSWORD", FIRST)
    .env("WQM_BACKUP__COMPRESSION", "false")
    .env("TMPDIR", "{TMP}")
    .stdout_with(|o| assert!(o.starts_with("Backup created: s3://"), "{o}"))
    .run();
    // Every object of the backup is an encrypted object, and none shows the data.
    let stored = encrypted_objects(&runtime, &s3, &["night-1/"]);
    assert!(stored.len() >= 4, "{stored:?}");
    assert_eq!(found_in(&stored, DISTINCTIVE), Vec::<String>::new());
    // Without the password: exit 2, saying what the config says; with a wrong one: exit 2.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url}"))
        .status(2)
        .stderr_with(|e| assert!(e.contains("is encrypted; password needed"), "{e}"))
        .run();
    let (_, tmp) = with_s3(fast(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", SECOND)
        .args(&format!("backup info {url}/night-1"))
        .status(2)
        .stderr_with(|e| assert!(e.contains(WRONG_PASSWORD), "{e}"))
        .run();
    let (_, tmp) = with_s3(fast(Test::in_dir(tmp)))
        .env("WQM_BACKUP_PASSWORD", FIRST)
        .args(&format!("backup validate {url}/night-1 --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    lose_everything(&double);
    with_s3(fast(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/night-1 --force"),
    )))
    .env("WQM_BACKUP_PASSWORD", FIRST)
    .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/safety")
    .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
    .run();
    double.assert_holds_the_fixtures();
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn incremental_nights_of_a_real_qdrant_in_an_encrypted_repository_restore_point_for_point() {
    let server = Server::start();
    real_qdrant::workspace(&server);
    let before = real_qdrant::fingerprint(&server);
    let with_password = |t: Test| {
        fast(t)
            .env("WQM_BACKUP_PASSWORD", FIRST)
            .env("QDRANT_URL", &server.url)
    };
    let (_, tmp) = with_password(Test::new())
        .args("backup init {TMP}/enc --encrypt")
        .stdout_with(|_| {})
        .run();
    let (_, tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &server.url)
        .args("backup create {TMP}/plain/night-1 --incremental")
        .stdout_with(|_| {})
        .run();
    let mut tmp = tmp;
    for night in ["night-1", "night-2"] {
        tmp = with_password(Test::in_dir(tmp))
            .args(&format!(
                "backup create {{TMP}}/enc/{night} --incremental --json"
            ))
            .stdout_json(|v| assert_eq!(v["total_documents"], 500, "{v}"))
            .run()
            .1;
        real_qdrant::upsert(&server, "projects", 0..3, 7);
    }
    // The plain repository names the collections in its manifests; the encrypted one nowhere.
    assert_eq!(
        found_in(&files(&tmp.path().join("plain")), WORKSPACE_NAMES),
        WORKSPACE_NAMES
    );
    assert_eq!(
        found_in(&files(&tmp.path().join("enc")), WORKSPACE_NAMES),
        Vec::<String>::new()
    );
    server.delete_all_collections();
    let (_, tmp) = with_password(Test::in_dir(tmp))
        .args("backup restore {TMP}/enc/night-1 --force")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run();
    assert_eq!(real_qdrant::fingerprint(&server), before);
    with_password(Test::in_dir(tmp))
        .args("backup validate {TMP}/enc/night-2 --check-files")
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
}
