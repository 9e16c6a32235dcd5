//! Backups read from S3: a local backups directory (a full backup and two incremental nights)
//! copied object by object to the real SeaweedFS, then `list`, `info`, `validate` and `restore`
//! on `s3://BUCKET/PREFIX`, as on the directory itself.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use tempfile::TempDir;

use wqm::backend::s3::S3Backend;
use wqm::backend::{self, Backend, Name, S3Options};

use crate::backend::NEEDS_S3;
use crate::incremental::{first_chunk, night, workspace, wqm};
use crate::qdrant_double::Double;
use crate::restore::lose_everything;
use crate::test::Test;

/// The variables that name the test's S3 server and its credentials.
const S3_VARIABLES: [&str; 4] = [
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
];

/// `t` with the S3 server's variables, as the user's shell would have them.
pub(crate) fn with_s3(mut t: Test) -> Test {
    for key in S3_VARIABLES {
        t = t.env(key, &std::env::var(key).expect(NEEDS_S3));
    }
    t
}

/// The names of the objects under `prefix` of `backend`, sorted.
pub(crate) fn object_names(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
    prefix: &str,
) -> Vec<String> {
    let mut names: Vec<String> = runtime
        .block_on(backend.list(prefix))
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    names
}

/// The chunks a plain repository's store on S3 holds, by id, sorted: its loose chunk objects
/// and every chunk its pack indexes list.
pub(crate) fn stored_chunks(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
) -> Vec<String> {
    let loose = object_names(runtime, backend, ".wqm-chunks/chunks/");
    let mut ids: std::collections::BTreeSet<String> = loose
        .iter()
        .map(|name| name.rsplit('/').next().unwrap().to_string())
        .collect();
    ids.extend(indexed_chunks(runtime, backend));
    ids.into_iter().collect()
}

/// Every chunk id a plain repository's pack indexes list, sorted, as often as they list it.
pub(crate) fn indexed_chunks(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for index in object_names(runtime, backend, ".wqm-chunks/index/") {
        let text = String::from_utf8(load(runtime, backend, &index)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("wqm-pack-index 1"), "{index}");
        ids.extend(lines.map(|line| line.split(' ').next().unwrap().to_string()));
    }
    ids.sort();
    ids
}

/// The bytes of the object `name`.
pub(crate) fn load(
    runtime: &tokio::runtime::Runtime,
    backend: &Arc<dyn Backend>,
    name: &str,
) -> Vec<u8> {
    let name = Name::new(name).unwrap();
    runtime
        .block_on(async { wqm::backend::collect(backend.load(&name, None).await.unwrap()).await })
        .unwrap()
}

/// A `wqm` process of its own with the S3 server's variables.
pub(crate) fn s3_variables(command: &mut std::process::Command) {
    for key in S3_VARIABLES {
        command.env(key, std::env::var(key).expect(NEEDS_S3));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh prefix of the test bucket: its backend and its `s3://` location.
pub(crate) fn fresh_prefix(runtime: &tokio::runtime::Runtime) -> (Arc<dyn Backend>, String) {
    let bucket = std::env::var("S3_BUCKET").expect(NEEDS_S3);
    let prefix = format!("test-{}", backend::random_id());
    let settings = S3Options::default().resolve().expect(NEEDS_S3);
    let backend = S3Backend::open(&bucket, &prefix, &settings).unwrap();
    runtime.block_on(backend.check()).expect(NEEDS_S3);
    (Arc::new(backend), format!("s3://{bucket}/{prefix}"))
}

/// Every file under `dir` saved as the object of its relative path (what `rclone copy` does).
pub(crate) fn upload(runtime: &tokio::runtime::Runtime, backend: &Arc<dyn Backend>, dir: &Path) {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bytes = fs::read(&path).unwrap();
            runtime
                .block_on(backend.save(&Name::new(rel).unwrap(), backend::once(bytes)))
                .unwrap();
        }
    }
}

/// A full backup `full` and incremental nights `n1`, `n2` in `backups/`, copied to S3.
pub(crate) fn backups_on_s3(
    double: &Double,
) -> (TempDir, tokio::runtime::Runtime, Arc<dyn Backend>, String) {
    let (_, tmp) = wqm(
        Test::in_dir(workspace()),
        &double.url,
        "backup create {TMP}/backups/full",
    )
    .stdout_with(|_| {})
    .run();
    let (_, tmp) = night(tmp, &double.url, "n1", "");
    let (_, tmp) = night(tmp, &double.url, "n2", "");
    let runtime = runtime();
    let (backend, url) = fresh_prefix(&runtime);
    upload(&runtime, &backend, &tmp.path().join("backups"));
    (tmp, runtime, backend, url)
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn backups_copied_to_s3_are_listed_validated_and_restored() {
    let double = Double::start();
    let (tmp, _runtime, _backend, url) = backups_on_s3(&double);

    let listed = url.clone();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup list {url} --check --json"))
        .stdout_json(move |v| {
            let items = v.as_array().unwrap();
            let names: Vec<&str> = items.iter().map(|b| b["name"].as_str().unwrap()).collect();
            assert_eq!(names.len(), 3, "{v}");
            for name in ["full", "n1", "n2"] {
                assert!(names.contains(&name), "{v}");
            }
            for item in items {
                assert_eq!(item["valid"], true, "{item}");
                assert!(item["size_bytes"].as_u64().unwrap() > 0, "{item}");
                let path = item["path"].as_str().unwrap();
                assert!(path.starts_with(&format!("{listed}/")), "{item}");
            }
        })
        .run();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup info {url}/n2 --json"))
        .stdout_json(|v| {
            assert!(v["chunk_store"]["chunks"].as_u64().unwrap() > 0, "{v}");
        })
        .run();
    let mut tmp = tmp;
    for name in ["full", "n1", "n2"] {
        tmp = with_s3(Test::in_dir(tmp))
            .args(&format!("backup validate {url}/{name} --check-files"))
            .stdout_with(|o| assert!(o.starts_with("Backup validation successful: s3://"), "{o}"))
            .run()
            .1;
    }
    // The live state DB is replaced: without a local directory for it, its safety backup goes
    // beside the backup on S3.
    lose_everything(&double);
    let beside = url.clone();
    let (_, tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/full --force --json"),
    ))
    .env("TMPDIR", "{TMP}")
    .stdout_json(move |v| {
        let safety = v["result"]["journal"]["safety_backup"]
            .as_str()
            .unwrap_or_default();
        assert!(safety.starts_with(&format!("{beside}/safety-")), "{v}");
    })
    .stderr_with(|_| {})
    .run();
    double.assert_holds_the_fixtures();
    let mut tmp = tmp;
    for name in ["full", "n2"] {
        lose_everything(&double);
        tmp = with_s3(wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup restore {url}/{name} --force"),
        ))
        .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", "{TMP}/safety")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run()
        .1;
        double.assert_holds_the_fixtures();
    }
    // Two safety backups (beside the directory lock's hidden parts).
    let safety_backups = fs::read_dir(tmp.path().join("safety"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(safety_backups, 2);
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_damaged_object_on_s3_is_named_by_validate() {
    let double = Double::start();
    let (tmp, runtime, backend, url) = backups_on_s3(&double);
    // One chunk of night 2, altered on the server.
    let chunk = first_chunk(
        &tmp.path().join("backups/n2"),
        "collections/small-plain.snapshot.chunks",
    );
    let id = chunk.id.clone();
    // Where it is stored (a pack's or its own file), as an object of the copy on S3.
    let rel = chunk.path.strip_prefix(tmp.path().join("backups")).unwrap();
    let name = Name::new(rel.to_str().unwrap()).unwrap();
    let mut bytes = fs::read(&chunk.path).unwrap();
    bytes[chunk.range.start + chunk.range.len() / 2] ^= 1;
    runtime
        .block_on(backend.save(&name, backend::once(bytes)))
        .unwrap();
    let needed = format!("chunk `{id}` is damaged: ");
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/n2 --check-files"))
        .status(3)
        .stdout_with(move |o| {
            assert!(o.contains(&needed), "{o}");
            assert!(o.contains("backups that need it: n1, n2\n"), "{o}");
        })
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Backup validation failed"), "{e}"))
        .run();
    // A full backup's snapshot cut short.
    let full = tmp.path().join("backups/full");
    let manifest =
        wqm::format::manifest::Manifest::load(&full.join("metadata/manifest.json")).unwrap();
    let rel = manifest.files[0].path.clone();
    let mut stored = fs::read(full.join(&rel)).unwrap();
    stored.truncate(stored.len() / 2);
    runtime
        .block_on(backend.save(
            &Name::new(format!("full/{rel}")).unwrap(),
            backend::once(stored),
        ))
        .unwrap();
    let shown = rel.clone();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/full --check-files"))
        .status(3)
        .stdout_with(move |o| assert!(o.contains(&format!("{shown}: ")), "{o}"))
        .stderr_with(|_| {})
        .run();
    // A restore refuses it before touching anything.
    lose_everything(&double);
    with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/full --force"),
    ))
    .status(3)
    .stdout_with(|_| {})
    .stderr_with(|e| assert!(e.contains("Backup validation failed"), "{e}"))
    .run();
    assert!(double.state().collections.is_empty());
}

/// Wrong credentials, a missing bucket and an unreachable endpoint stop the run with exit 2,
/// naming the endpoint and the bucket, before Qdrant is asked anything; no secret is printed,
/// in any output mode.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn an_unusable_s3_server_stops_the_run_before_qdrant() {
    let double = Double::start();
    let bucket = std::env::var("S3_BUCKET").expect(NEEDS_S3);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(NEEDS_S3);
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").expect(NEEDS_S3);
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
    };
    let wrong = "wrong-secret-0a9b8c";
    let cases: [(&str, &str, String, &str, &str); 3] = [
        (
            "AWS_SECRET_ACCESS_KEY",
            wrong,
            bucket.clone(),
            &endpoint,
            "credentials were refused",
        ),
        (
            "AWS_REGION",
            "us-east-1",
            "no-such-bucket-wqm".to_string(),
            &endpoint,
            "does not exist",
        ),
        (
            "AWS_ENDPOINT_URL",
            &unreachable,
            bucket.clone(),
            &unreachable,
            "cannot reach",
        ),
    ];
    let mut tmp = workspace();
    for (key, value, bucket, endpoint, said) in cases {
        for (command, flags) in [
            ("restore", "--force --verbose"),
            ("restore", "--force --json"),
            ("validate", "--verbose"),
            ("info", "--json"),
        ] {
            let (output, next) = with_s3(wqm(
                Test::in_dir(tmp),
                &double.url,
                &format!("backup {command} s3://{bucket}/p/night {flags}"),
            ))
            .env(key, value)
            .status(2)
            .stdout_with(|_| {})
            .stderr_with(|_| {})
            .run();
            tmp = next;
            let shown = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(shown.contains(said), "{command} {flags}: {shown}");
            assert!(
                shown.contains(&format!("`{bucket}`")) && shown.contains(endpoint),
                "{command} {flags}: {shown}"
            );
            assert!(
                !shown.contains(wrong) && !shown.contains(&secret),
                "{command} {flags}: {shown}"
            );
        }
    }
    assert_eq!(double.state().requests, Vec::<String>::new());
}

/// `backup.s3.endpoint` in the config file wins over `AWS_ENDPOINT_URL`.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn the_config_names_the_s3_endpoint() {
    let runtime = runtime();
    let (_backend, url) = fresh_prefix(&runtime);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(NEEDS_S3);
    let tmp = workspace();
    fs::write(
        tmp.path().join("config.yaml"),
        format!("backup:\n  s3:\n    endpoint: \"{endpoint}\"\n    region: us-east-1\n"),
    )
    .unwrap();
    with_s3(Test::in_dir(tmp))
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "eu-west-3")
        .env("WQM_CONFIG_PATH", "{TMP}/config.yaml")
        .args(&format!("backup list {url}"))
        .stdout(&format!("No backups found in {url}\n"))
        .run();
}

/// A restore from S3 whose safety backup went beside the backup there, stopped by a damaged
/// snapshot before it changed anything: the safety backup is no way back to anything, and goes.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_restore_refused_before_any_change_removes_its_safety_backup_on_s3() {
    let double = Double::start();
    let (tmp, runtime, backend, url) = backups_on_s3(&double);
    let collections = tmp.path().join("backups/full/collections");
    let file = fs::read_dir(&collections).unwrap().next().unwrap().unwrap();
    let mut bytes = fs::read(file.path()).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let name = format!("full/collections/{}", file.file_name().to_string_lossy());
    runtime
        .block_on(backend.save(&Name::new(name).unwrap(), backend::once(bytes)))
        .unwrap();
    lose_everything(&double);
    let (_, _tmp) = with_s3(wqm(
        Test::in_dir(tmp),
        &double.url,
        &format!("backup restore {url}/full --force"),
    ))
    .env("TMPDIR", "{TMP}")
    .status(3)
    .stdout_with(|_| {})
    .stderr_with(|e| {
        assert!(e.contains("Backup validation failed: s3://"), "{e}");
        assert!(e.contains("checksum mismatch"), "{e}");
        assert!(e.contains("the safety backup `s3://"), "{e}");
    })
    .run();
    assert!(double.state().collections.is_empty());
    let left: Vec<String> = object_names(&runtime, &backend, "")
        .into_iter()
        .filter(|name| name.starts_with("safety-") || name.starts_with(".wqm-deleting/"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
