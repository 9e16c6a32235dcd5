//! Pack files on the real SeaweedFS: a store on S3 keeps its chunks in a few large objects with
//! an index each; a restore reads runs of them with one request; the garbage collection deletes
//! packs nothing references, repacks those mostly garbage and removes a dead run's pack that
//! never got its index; damage inside a pack is named; a store of loose chunks (made before
//! packs) stays readable and writable.

use serde_json::Value;
use std::sync::Arc;
use tempfile::TempDir;

use wqm::backend::{self, Backend, Name};

use crate::incremental::{grow_state_db, workspace, wqm};
use crate::qdrant_double::Double;
use crate::real_encrypted::encrypted_on_s3;
use crate::repo::{fast, FIRST};
use crate::s3_faults::{proxy, through};
use crate::s3_incremental::{added, killed_night, night};
use crate::s3_proxy::Faults;
use crate::s3_read::{fresh_prefix, indexed_chunks, load, object_names, stored_chunks, with_s3};
use crate::test::Test;

const PACKS: &str = ".wqm-chunks/packs/";
const INDEXES: &str = ".wqm-chunks/index/";

/// The pack objects without an index object.
fn unindexed(runtime: &tokio::runtime::Runtime, s3: &Arc<dyn Backend>) -> Vec<String> {
    let indexed: Vec<String> = object_names(runtime, s3, INDEXES)
        .iter()
        .map(|name| name.rsplit('/').next().unwrap().to_string())
        .collect();
    object_names(runtime, s3, PACKS)
        .into_iter()
        .filter(|name| !indexed.iter().any(|pack| name.ends_with(pack.as_str())))
        .collect()
}

/// The first chunk the index of file `file` names.
fn first_chunk_of(runtime: &tokio::runtime::Runtime, s3: &Arc<dyn Backend>, file: &str) -> String {
    let index = String::from_utf8(load(runtime, s3, file)).unwrap();
    index
        .lines()
        .find_map(|l| l.split(' ').next().filter(|id| id.len() == 64))
        .unwrap()
        .to_string()
}

/// Where chunk `chunk` is packed: its pack object, its index object, and its stored bytes'
/// place in the pack.
fn packed_at(
    runtime: &tokio::runtime::Runtime,
    s3: &Arc<dyn Backend>,
    chunk: &str,
) -> (String, String, std::ops::Range<usize>) {
    for index in object_names(runtime, s3, INDEXES) {
        let text = String::from_utf8(load(runtime, s3, &index)).unwrap();
        let Some(line) = text.lines().find(|l| l.starts_with(chunk)) else {
            continue;
        };
        let fields: Vec<usize> = line
            .split(' ')
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        let id = &index[INDEXES.len()..];
        let pack = format!("{PACKS}{}/{id}", &id[..2]);
        return (pack, index, fields[0]..fields[0] + fields[1]);
    }
    panic!("`{chunk}` is in no pack index");
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn packs_are_read_in_runs_and_collected_repacked_or_whole() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let (first, tmp) = night(Test::in_dir(workspace()), &double, &format!("{url}/n1"), "");
    let chunks = added(&first, "chunks_added");
    let first_pack = object_names(&runtime, &s3, PACKS)[0].clone();
    grow_state_db(tmp.path());
    let (second, tmp) = night(Test::in_dir(tmp), &double, &format!("{url}/n2"), "");
    assert!(added(&second, "chunks_added") >= 1, "{second}");
    assert_eq!(
        object_names(&runtime, &s3, PACKS).len(),
        2,
        "a pack a night"
    );
    // A run killed between a pack and its index leaves a pack nothing names.
    grow_state_db(tmp.path());
    killed_night(&double, &tmp, &format!("{url}/k"), "pack:before-index");
    let orphans = unindexed(&runtime, &s3);
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(object_names(&runtime, &s3, INDEXES).len(), 2);

    // An export reads each file's chunks in runs: far fewer requests than chunks.
    let proxy = proxy(Faults::default());
    let (_, tmp) = through(&proxy, Test::in_dir(tmp))
        .args(&format!("backup export {url}/n1 {{TMP}}/away/n1"))
        .stdout_with(|_| {})
        .run();
    let pack_gets = proxy.seen(|seen| {
        seen.passed
            .iter()
            .filter(|(request, _)| request.starts_with("GET ") && request.contains(PACKS))
            .count()
    });
    assert!(pack_gets >= 1);
    assert!(
        (pack_gets as u64) * 2 <= chunks,
        "{pack_gets} requests for {chunks} chunks"
    );
    // Nothing is asked twice before the reading: the manifest read once (its size from the
    // listing), the store's parameters once, the run's own lock never read back (the killed
    // run's is, before and after the run's own is written).
    let count = |method: &str, part: &str| {
        proxy.seen(|seen| {
            seen.passed
                .iter()
                .filter(|(r, _)| r.starts_with(&format!("{method} ")) && r.contains(part))
                .count()
        })
    };
    let all: Vec<String> = proxy.seen(|seen| seen.passed.iter().map(|(r, _)| r.clone()).collect());
    assert_eq!(count("HEAD", "/n1/metadata/manifest.json"), 0, "{all:#?}");
    assert_eq!(count("GET", "/n1/metadata/manifest.json"), 1, "{all:#?}");
    assert_eq!(count("GET", "/.wqm-chunks/store.json"), 1, "{all:#?}");
    let own_lock = all
        .iter()
        .find_map(|r| {
            r.strip_prefix("PUT ")
                .filter(|path| path.contains("/.wqm-locks/"))
        })
        .expect("the run's lock")
        .to_string();
    assert_eq!(count("GET", &own_lock), 0, "{all:#?}");
    assert_eq!(count("GET", "/.wqm-locks/"), 2, "{all:#?}");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup validate {TMP}/away/n1 --check-files")
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();

    // One collection's night (of the database grown again) kept alone: the dead run's pack
    // goes, night 1's is mostly garbage and is repacked; night 3's stays.
    let (third, tmp) = night(
        Test::in_dir(tmp).stderr_with(|e| assert!(e.contains("a killed run left of `k`"), "{e}")),
        &double,
        &format!("{url}/n3"),
        "--collections small-plain",
    );
    assert!(
        added(&third, "chunks_added") >= 1,
        "its grown database: {third}"
    );
    let kept_chunks = stored_chunks(&runtime, &s3);
    // Set-aside markers (of a chunk none of these packs holds) go with their pack, repacked or
    // deleted as a dead run's, and one of a pack that is gone goes too.
    let id_of = |object: &str| object.rsplit('/').next().unwrap().to_string();
    let gone = "0123456789abcdef0123456789abcdef".to_string();
    for pack in [id_of(&first_pack), id_of(&orphans[0]), gone] {
        let marker = Name::new(format!(".wqm-chunks/aside/{pack}/{}", "ab".repeat(32))).unwrap();
        runtime
            .block_on(s3.save(&marker, backend::once(Vec::new())))
            .unwrap();
    }
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(|v| {
            let gc = &v["chunk_store"]["collected"];
            assert!(gc["packs_deleted"].as_u64().unwrap() >= 1, "{v}");
            assert!(gc["packs_repacked"].as_u64().unwrap() >= 1, "{v}");
            assert!(gc["chunks_deleted"].as_u64().unwrap() >= 1, "{v}");
            assert_eq!(gc["damaged"], Value::Array(Vec::new()), "{v}");
        })
        .run();
    let packs = object_names(&runtime, &s3, PACKS);
    assert!(!packs.contains(&orphans[0]), "{packs:?}");
    assert!(!packs.contains(&first_pack), "{packs:?}");
    assert!(object_names(&runtime, &s3, ".wqm-chunks/aside/").is_empty());
    assert_eq!(unindexed(&runtime, &s3), Vec::<String>::new());
    let left = stored_chunks(&runtime, &s3);
    assert!(left.len() < kept_chunks.len());
    assert!(left.iter().all(|id| kept_chunks.contains(id)));
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/n3 --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    // Nothing left to collect: a second prune changes nothing.
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(crate::packs::no_pack_collected)
        .run();
    assert_eq!(object_names(&runtime, &s3, PACKS), packs);
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_prune_killed_after_repacking_loses_nothing_and_the_next_removes_the_copies() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url, tmp) = whole_then_one_collection(&double, &runtime);
    // Killed once the kept chunks are in new packs, before the old index and pack go: those
    // chunks are in two packs, and night 2 reads as before.
    let mut command = crate::test::wqm_command(
        &tmp.path().join("home"),
        &["backup", "prune", &url, "--keep-last", "1"],
    );
    command.env("WQM_FAILPOINTS", "prune:repacked=kill");
    crate::s3_read::s3_variables(&mut command);
    let output = command.output().unwrap();
    assert!(crate::faults::killed(&output), "{output:?}");
    let listed = indexed_chunks(&runtime, &s3);
    let mut once = listed.clone();
    once.dedup();
    assert!(once.len() < listed.len(), "some chunks are in two packs");
    assert_eq!(unindexed(&runtime, &s3), Vec::<String>::new());
    let tmp = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/n2 --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .stderr_with(|_| {})
        .run()
        .1;
    // The next prune finds the old pack mostly garbage (its kept chunks' first copies are in
    // the new pack or not, either way one copy goes): each chunk is then in one pack.
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(|v| {
            let gc = &v["chunk_store"]["collected"];
            let gone =
                gc["packs_deleted"].as_u64().unwrap() + gc["packs_repacked"].as_u64().unwrap();
            assert!(gone >= 1, "{v}");
        })
        .stderr_with(|_| {})
        .run();
    let listed = indexed_chunks(&runtime, &s3);
    let mut once = listed.clone();
    once.dedup();
    assert_eq!(once, listed, "no chunk in two packs");
    crate::s3_faults::validates(tmp, &format!("{url}/n2"));
}

/// A fresh repository on S3 with night `n1` of the whole workspace and `n2` of one collection:
/// once `n1` goes, most of its pack is garbage. The backend, the URL and the test's directory.
fn whole_then_one_collection(
    double: &Double,
    runtime: &tokio::runtime::Runtime,
) -> (Arc<dyn Backend>, String, tempfile::TempDir) {
    let (s3, url) = fresh_prefix(runtime);
    let (_, tmp) = night(Test::in_dir(workspace()), double, &format!("{url}/n1"), "");
    let (_, tmp) = night(
        Test::in_dir(tmp),
        double,
        &format!("{url}/n2"),
        "--collections small-plain",
    );
    (s3, url, tmp)
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_pack_whose_kept_chunk_is_damaged_is_kept_as_it_is_and_named() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url, tmp) = whole_then_one_collection(&double, &runtime);
    // A chunk night 2 keeps, damaged inside night 1's pack.
    let kept = first_chunk_of(&runtime, &s3, "n2/collections/small-plain.snapshot.chunks");
    let (pack, _, range) = packed_at(&runtime, &s3, &kept);
    let mut bytes = load(&runtime, &s3, &pack);
    bytes[range.start + range.len() / 2] ^= 1;
    runtime
        .block_on(s3.save(&Name::new(pack.clone()).unwrap(), backend::once(bytes)))
        .unwrap();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(move |v| {
            let gc = &v["chunk_store"]["collected"];
            assert_eq!(gc["packs_repacked"], 0, "{v}");
            assert_eq!(gc["bytes_repacked"], 0, "{v}");
            let said = gc["damaged"].to_string();
            assert!(said.contains(&format!("chunk `{kept}`")), "{v}");
        })
        .run();
    assert!(object_names(&runtime, &s3, PACKS).contains(&pack));
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/n2 --check-files"))
        .status(3)
        .stdout_with(|o| assert!(o.contains("is damaged"), "{o}"))
        .stderr_with(|_| {})
        .run();
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_chunk_altered_or_cut_off_in_its_pack_is_named_by_validate() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let (_, tmp) = night(Test::in_dir(workspace()), &double, &format!("{url}/n1"), "");
    let packs = object_names(&runtime, &s3, PACKS);
    assert_eq!(packs.len(), 1);
    let name = Name::new(packs[0].clone()).unwrap();
    let original = load(&runtime, &s3, &packs[0]);
    let chunks = stored_chunks(&runtime, &s3);

    // A byte altered in the middle, then the pack cut short.
    let mut altered = original.clone();
    altered[original.len() / 2] ^= 1;
    // (Its last bytes are the copy of its index: half of it goes.)
    let cut = original[..original.len() / 2].to_vec();
    let mut tmp = tmp;
    for (bytes, said) in [(altered, "damaged"), (cut, "ends before it")] {
        runtime
            .block_on(s3.save(&name, backend::once(bytes)))
            .unwrap();
        tmp = with_s3(Test::in_dir(tmp))
            .args(&format!("backup validate {url}/n1 --check-files"))
            .status(3)
            .stdout_with({
                let chunks = chunks.clone();
                move |o| {
                    let named = chunks.iter().any(|id| o.contains(&format!("chunk `{id}`")));
                    assert!(o.contains(said) && named, "{o}")
                }
            })
            .stderr_with(|_| {})
            .run()
            .1;
    }
    // The pack whole again but its index object lost: its chunks are missing, and a prune
    // writes the index again from the copy at the pack's end instead of deleting the pack as a
    // dead run's.
    runtime
        .block_on(s3.save(&name, backend::once(original.clone())))
        .unwrap();
    let lose_indexes = || {
        for index in object_names(&runtime, &s3, INDEXES) {
            runtime
                .block_on(s3.remove(&Name::new(index).unwrap()))
                .unwrap();
        }
    };
    lose_indexes();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {url}/n1 --check-files"))
        .status(3)
        .stdout_with(|o| {
            assert!(o.contains("missing"), "{o}");
            assert!(
                o.contains("1 pack file(s) of the chunk store have no index object"),
                "{o}"
            );
            assert!(o.contains("`wqm backup prune s3://"), "{o}");
        })
        .stderr_with(|_| {})
        .run();
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(|v| {
            let gc = &v["chunk_store"]["collected"];
            assert_eq!(
                (gc["packs_deleted"].clone(), gc["packs_recovered"].clone()),
                (0.into(), 1.into()),
                "{v}"
            );
        })
        .run();
    let tmp = crate::s3_faults::validates_in(tmp, &format!("{url}/n1"));
    // Lost again, and the copy at its end cut off too: the prune keeps the pack, saying why.
    lose_indexes();
    runtime
        .block_on(s3.save(
            &name,
            backend::once(original[..original.len() - 8].to_vec()),
        ))
        .unwrap();
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1 --json"))
        .stdout_json(|v| {
            let gc = &v["chunk_store"]["collected"];
            assert_eq!(gc["packs_deleted"], 0, "{v}");
            let said = gc["damaged"][0].as_str().unwrap_or_default();
            assert!(said.contains("are in no index: kept `"), "{v}");
            assert!(said.contains("is missing"), "{v}");
        })
        .run();
    assert_eq!(object_names(&runtime, &s3, PACKS), packs);
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_store_of_loose_chunks_on_s3_stays_readable_and_writable() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    // A store made before pack files: no `packs` among its features.
    let params = r#"{"format":2,"chunker":"fastcdc-2020","min_size":16384,"avg_size":65536,"max_size":262144,"hash":"sha256","compression":"zstd","required_features":["lock-objects"]}"#;
    let name = Name::new(".wqm-chunks/store.json").unwrap();
    runtime
        .block_on(s3.save(&name, backend::once(params.as_bytes().to_vec())))
        .unwrap();
    let (first, tmp) = night(Test::in_dir(workspace()), &double, &format!("{url}/n1"), "");
    let loose = object_names(&runtime, &s3, ".wqm-chunks/chunks/");
    assert_eq!(loose.len() as u64, added(&first, "chunks_added"));
    assert!(object_names(&runtime, &s3, PACKS).is_empty());
    grow_state_db(tmp.path());
    let (_, tmp) = night(Test::in_dir(tmp), &double, &format!("{url}/n2"), "");
    let (_, tmp) = with_s3(Test::in_dir(tmp))
        .args(&format!("backup prune {url} --keep-last 1"))
        .stdout_with(|_| {})
        .run();
    assert!(object_names(&runtime, &s3, PACKS).is_empty());
    crate::s3_faults::validates(tmp, &format!("{url}/n2"));
}

/// A repository on S3 synced down to a directory object for object (`aws s3 sync`, `rclone
/// sync`: the bucket's copy on a disk, to restore without it) is used there as it is: listed,
/// validated and exported; a night made there adds packs of its own, none loose, and a prune
/// collects them.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_repository_synced_down_from_s3_is_used_in_its_directory() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let (_, tmp) = night(Test::in_dir(workspace()), &double, &format!("{url}/n1"), "");
    grow_state_db(tmp.path());
    let (_, tmp) = night(Test::in_dir(tmp), &double, &format!("{url}/n2"), "");
    let synced = tmp.path().join("synced");
    for name in object_names(&runtime, &s3, "") {
        let path = synced.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, load(&runtime, &s3, &name)).unwrap();
    }
    let packs = |dir: &std::path::Path| crate::test::bytes_under(&dir.join(PACKS));
    assert!(packs(&synced) > 0, "a store of packs");
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup list {TMP}/synced --json")
        .stdout_json(|v| {
            let mut names: Vec<&str> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["name"].as_str().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["n1", "n2"], "{v}");
        })
        .run();
    crate::test::validates(&synced.join("n2"));
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup export {TMP}/synced/n1 {TMP}/full")
        .stdout_with(|_| {})
        .run();
    crate::test::validates(&tmp.path().join("full"));

    grow_state_db(tmp.path());
    let before = packs(&tmp.path().join("synced"));
    let (output, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/synced/n3 --incremental --json",
    )
    .stdout_with(|_| {})
    .run();
    let third: Value = serde_json::from_slice(&output.stdout).unwrap();
    let synced = tmp.path().join("synced");
    // The night's new chunks went into packs there too, none loose.
    assert!(!synced.join(".wqm-chunks/chunks").exists());
    assert!(added(&third, "chunks_added") > 0, "{third}");
    assert!(packs(&synced) > before, "new packs");
    crate::test::validates(&synced.join("n3"));
    let (_, tmp) = Test::in_dir(tmp)
        .args("backup prune {TMP}/synced --keep-last 1 --json")
        .stdout_json(|v| {
            let gc = &v["chunk_store"]["collected"];
            assert!(gc["chunks_kept"].as_u64().unwrap() > 0, "{v}");
            assert_eq!(gc["damaged"], Value::Array(Vec::new()), "{v}");
        })
        .run();
    let synced = tmp.path().join("synced");
    assert!(synced.join("n3").is_dir() && !synced.join("n1").exists());
    crate::test::validates(&synced.join("n3"));
}

/// A night to `target` comparing every chunk it reuses (a cycle of 1), which finds none to
/// repair: its summary.
fn sound_night(t: Test, double: &Double, target: &str) -> (Value, TempDir) {
    let compare_all = t.env("WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE", "1");
    let (summary, tmp) = night(compare_all, double, target, "");
    let repaired = &summary["chunk_store"]["chunks_repaired"];
    assert_eq!(repaired, &serde_json::json!([]), "{summary}");
    (summary, tmp)
}

/// A chunk damaged in the repository is found by the next night's comparison (a cycle of 1:
/// every chunk it reuses), kept as `.wqm-chunks/quarantine/<id>`, its name taken away where it
/// was (its entry dropped from its pack's index; a loose chunk's object removed) and sent again
/// from the night's data: the older backup naming it reads whole again.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_damaged_chunk_a_night_reuses_is_set_aside_and_sent_again() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut tmp = workspace();
    for packed in [true, false] {
        let (s3, url) = fresh_prefix(&runtime);
        if !packed {
            let params = r#"{"format":2,"chunker":"fastcdc-2020","min_size":16384,"avg_size":65536,"max_size":262144,"hash":"sha256","compression":"zstd","required_features":["lock-objects"]}"#;
            let name = Name::new(".wqm-chunks/store.json").unwrap();
            runtime
                .block_on(s3.save(&name, backend::once(params.as_bytes().to_vec())))
                .unwrap();
        }
        tmp = night(Test::in_dir(tmp), &double, &format!("{url}/n1"), "").1;
        let chunk = first_chunk_of(&runtime, &s3, "n1/collections/small-plain.snapshot.chunks");
        // One byte of its stored bytes altered where they are.
        let (object, range, pack_index) = match packed {
            true => {
                let (pack, index, range) = packed_at(&runtime, &s3, &chunk);
                (pack, range, Some(index))
            }
            false => {
                let object = format!(".wqm-chunks/chunks/{}/{chunk}", &chunk[..2]);
                let len = load(&runtime, &s3, &object).len();
                (object, 0..len, None)
            }
        };
        let mut bytes = load(&runtime, &s3, &object);
        bytes[range.start + range.len() / 2] ^= 1;
        let damaged = bytes[range.clone()].to_vec();
        runtime
            .block_on(s3.save(&Name::new(object.clone()).unwrap(), backend::once(bytes)))
            .unwrap();

        let expected = format!(
            "wqm: warning: the chunk store held 1 damaged chunk(s) this backup needed (`{chunk}`): each was moved to `{url}/.wqm-chunks/quarantine` and stored again from this backup's data, so every backup naming it is whole again; other backups may still name damaged data: `wqm backup list {url} --check` finds them\n"
        );
        let (output, back) = with_s3(wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup create {url}/n2 --incremental --json"),
        ))
        .env("TMPDIR", "{TMP}")
        .env("WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE", "1")
        .stdout_with(|_| {})
        .stderr(&expected)
        .run();
        let second: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            second["chunk_store"]["chunks_repaired"],
            serde_json::json!([chunk]),
            "{second}"
        );
        assert_eq!(
            load(&runtime, &s3, &format!(".wqm-chunks/quarantine/{chunk}")),
            damaged,
            "the damaged bytes are kept aside"
        );
        if let Some(index) = pack_index {
            // Its pack and index as they were, a marker beside them; the new copy in a new pack.
            let pack_id = &index[INDEXES.len()..];
            let marker = format!(".wqm-chunks/aside/{pack_id}/{chunk}");
            assert_eq!(object_names(&runtime, &s3, ".wqm-chunks/aside/"), [marker]);
            assert!(object_names(&runtime, &s3, PACKS).contains(&object), "kept");
            let copies = indexed_chunks(&runtime, &s3);
            assert_eq!(copies.iter().filter(|id| **id == chunk).count(), 2);
        }
        // Both nights read whole; the next night finds nothing to repair.
        tmp = crate::s3_faults::validates_in(back, &format!("{url}/n1"));
        let (third, back) = sound_night(Test::in_dir(tmp), &double, &format!("{url}/n3"));
        assert_eq!(added(&third, "chunks_added"), 0, "{third}");
        tmp = back;
    }
}

/// The same in an encrypted repository: the damaged chunk's marker and its new copy's pack
/// index are written there as every object, so the store stays readable and both nights read
/// whole.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_damaged_chunk_is_set_aside_in_an_encrypted_repository_too() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let tmp = encrypted_on_s3(workspace(), &url, FIRST);
    let encrypted = |tmp: TempDir| fast(Test::in_dir(tmp)).env("WQM_BACKUP_PASSWORD", FIRST);
    let (_, tmp) = night(encrypted(tmp), &double, &format!("{url}/n1"), "");
    let packs = object_names(&runtime, &s3, PACKS);
    assert_eq!(packs.len(), 1);
    let name = Name::new(packs[0].clone()).unwrap();
    let mut bytes = load(&runtime, &s3, &packs[0]);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    runtime
        .block_on(s3.save(&name, backend::once(bytes)))
        .unwrap();
    let (output, tmp) = with_s3(wqm(
        encrypted(tmp),
        &double.url,
        &format!("backup create {url}/n2 --incremental --json"),
    ))
    .env("TMPDIR", "{TMP}")
    .env("WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE", "1")
    .stdout_with(|_| {})
    .stderr_with(|e| assert!(e.contains("held 1 damaged chunk(s)"), "{e}"))
    .run();
    let second: Value = serde_json::from_slice(&output.stdout).unwrap();
    let repaired = second["chunk_store"]["chunks_repaired"].as_array().unwrap();
    assert_eq!(repaired.len(), 1, "{second}");
    let aside = format!(".wqm-chunks/quarantine/{}", repaired[0].as_str().unwrap());
    assert_eq!(
        object_names(&runtime, &s3, ".wqm-chunks/quarantine/"),
        [aside]
    );
    let (_, tmp) = with_s3(encrypted(tmp))
        .args(&format!("backup validate {url}/n1 --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run();
    sound_night(encrypted(tmp), &double, &format!("{url}/n3"));
}

/// A comparison whose read fails (the server answering `500` again and again, after the
/// backend's retries) fails the night, naming the chunk: nothing is set aside, no pack index
/// changes, no backup is made. The next night, the server well, reads it whole.
#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_comparison_the_server_cannot_answer_fails_the_night_and_sets_nothing_aside() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, url) = fresh_prefix(&runtime);
    let (_, tmp) = night(Test::in_dir(workspace()), &double, &format!("{url}/n1"), "");
    let indexes = |s3: &Arc<dyn Backend>| -> Vec<Vec<u8>> {
        object_names(&runtime, s3, INDEXES)
            .iter()
            .map(|index| load(&runtime, s3, index))
            .collect()
    };
    let before = indexes(&s3);
    let failing = proxy(Faults {
        fail_reads_of: Some(PACKS.to_string()),
        ..Faults::default()
    });
    let (_, tmp) = through(
        &failing,
        wqm(
            Test::in_dir(tmp),
            &double.url,
            &format!("backup create {url}/n2 --incremental"),
        ),
    )
    .env("TMPDIR", "{TMP}")
    .env("WQM_BACKUP__VERIFICATION__COMPARE_REUSED_CYCLE", "1")
    .status(1)
    .stdout_with(|_| {})
    .stderr_with(|e| {
        // Said once (the wrapper's message ends with its cause).
        assert_eq!(e.matches("back from the repository").count(), 1, "{e}");
        assert!(e.contains("500 Internal Server Error"), "{e}");
    })
    .run();
    assert!(failing.seen(|seen| !seen.reads_failed.is_empty()));
    assert!(object_names(&runtime, &s3, ".wqm-chunks/quarantine/").is_empty());
    assert!(object_names(&runtime, &s3, "n2/").is_empty());
    assert_eq!(indexes(&s3), before, "no index written again");
    let (second, _) = sound_night(Test::in_dir(tmp), &double, &format!("{url}/n2"));
    assert!(second["chunk_store"]["chunks_compared"].as_u64().unwrap() > 0);
}
