//! Hostile input: the functions the fuzz targets in `fuzz/` run (`wqm::hostile`), driven here
//! by property tests and by every input kept in `tests/fixtures/fuzz/<target>/` (crashes and
//! interesting inputs the fuzzers found). None may panic or allocate without bound.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use wqm::hostile;

use crate::fixtures;

/// Every kept input of `target` goes through its function.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        run(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no inputs in {}", dir.display());
}

#[test]
fn kept_inputs_replay_without_a_panic() {
    replay("manifest", hostile::manifest);
    replay("config", hostile::config);
    replay("version", hostile::version);
    replay("snapshot", hostile::snapshot);
    replay("chunk_index", hostile::chunk_index);
    replay("pack_index", hostile::pack_index);
}

/// Names as an attacker would write them.
fn hostile_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("../../victim/precious.txt".to_string()),
        Just("/etc/passwd".to_string()),
        Just("..".to_string()),
        Just("state.db".to_string()),
        Just("collections/a.snapshot".to_string()),
        "[a-z./\\\\]{0,12}",
        "\\PC{0,20}",
        "[\u{0}-\u{1f}a/.]{0,8}",
        "x{250,260}",
    ]
}

fn manifest_with(field: usize, name: &str) -> String {
    let mut m: serde_json::Value = serde_json::from_str(
        r#"{"format_version": 1, "version": "0.3.0", "timestamp": 1.0,
            "collections": {"a": 1}, "selected_collections": ["a"],
            "files": [{"path": "collections/a.snapshot", "kind": "collection_snapshot", "size": 1,
                       "compression": "none", "checksum": null, "content_size": 1, "content_sha256": ""},
                      {"path": "sqlite/state.db", "kind": "sqlite_database", "size": 1,
                       "compression": "none", "checksum": null, "content_size": 1, "content_sha256": ""}],
            "collection_details": {"a": {"points_count": 1, "snapshot": "collections/a.snapshot", "aliases": ["n"]}},
            "databases": [{"name": "state.db", "file": "sqlite/state.db"}]}"#,
    )
    .unwrap();
    let name = serde_json::Value::from(name);
    match field % 8 {
        0 => m["files"][0]["path"] = name,
        1 => m["databases"][0]["name"] = name,
        2 => m["databases"][0]["file"] = name,
        3 => m["collection_details"]["a"]["aliases"][0] = name,
        4 => m["collection_details"]["a"]["snapshot"] = name,
        5 => m["selected_collections"][0] = name,
        6 => {
            let details = m["collection_details"]["a"].take();
            m["collection_details"] = serde_json::json!({ name.as_str().unwrap(): details });
        }
        _ => m["collections"] = serde_json::json!([name]),
    }
    m.to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn manifests_with_hostile_names(field in 0usize..8, name in hostile_name()) {
        hostile::manifest(manifest_with(field, &name).as_bytes());
    }

    #[test]
    fn manifests_of_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        hostile::manifest(&data);
    }

    #[test]
    fn versions(text in "\\PC{0,24}|[0-9.+-]{0,16}\n[0-9.a-z]{0,10}", flags in any::<u8>()) {
        let mut data = vec![flags];
        data.extend_from_slice(text.as_bytes());
        hostile::version(&data);
        hostile::version(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn configs(text in "(backup:\n  [a-z_]{1,12}: [a-z0-9~/]{0,8}\n|qdrant:\n  url: [a-z:/.]{0,20}\n|[ -~\n]{0,40}){0,4}") {
        hostile::config(text.as_bytes());
    }

    /// Real snapshots, cut, flipped or given an extra member.
    #[test]
    fn damaged_snapshots(
        which in 0usize..2,
        cut in 0usize..1_000_000,
        flips in proptest::collection::vec((0usize..1_000_000, any::<u8>()), 0..4),
        member in prop_oneof![Just(None), hostile_name().prop_map(Some)],
    ) {
        let real = [fixtures::SMALL_PLAIN, fixtures::SMALL_NAMED][which];
        let mut bytes = match member.filter(|m| !m.is_empty() && m.len() < 100) {
            Some(member) => fixtures::with_member(real, &member),
            None => real.to_vec(),
        };
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] ^= value;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        hostile::snapshot(&bytes);
    }

    /// Chunk indexes: a real header, then lines almost right or entirely wrong.
    #[test]
    fn chunk_indexes(lines in proptest::collection::vec(
        prop_oneof![
            "[0-9a-f]{64} [0-9]{1,9} [0-9]{1,9}",
            "[0-9a-fA-F./]{0,70} -?[0-9]{0,25} [0-9 ]{0,30}",
            "\\PC{0,200}",
        ],
        0..8,
    )) {
        let text = format!("wqm-chunk-index 1\n{}\n", lines.join("\n"));
        hostile::chunk_index(text.as_bytes());
    }

    /// Pack indexes: a real header, then lines almost right or entirely wrong.
    #[test]
    fn pack_indexes(lines in proptest::collection::vec(
        prop_oneof![
            "[0-9a-f]{64} [0-9]{1,9} [0-9]{1,6} [0-9]{1,6}",
            "[0-9a-fA-F./]{0,70} -?[0-9]{0,25} [0-9 ]{0,30}",
            "\\PC{0,200}",
        ],
        0..8,
    )) {
        let text = format!("wqm-pack-index 1\n{}\n", lines.join("\n"));
        hostile::pack_index(text.as_bytes());
    }

    #[test]
    fn snapshots_of_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        hostile::snapshot(&data);
        hostile::compressed_snapshot(&data);
    }
}

/// 50 MB of manifest is refused as too large, before it is parsed.
#[test]
fn a_50_mb_manifest_is_refused() {
    let huge = format!(
        "{{\"version\": \"0.3.0\", \"timestamp\": 1, \"notes\": [{}]}}",
        vec!["\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\""; 1_200_000].join(",")
    );
    assert!(huge.len() > 50_000_000);
    let err = wqm::format::manifest::Manifest::read_from(huge.as_bytes(), Path::new("m.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than 16 MiB"), "{err}");
    hostile::manifest(huge.as_bytes());
}

/// Deep nesting ends in an error, not a stack overflow: JSON (serde_json's depth limit)...
#[test]
fn deeply_nested_json_is_an_error() {
    let deep_json = format!(
        "{{\"version\": \"0.3.0\", \"timestamp\": 1, \"custom_metadata\": {{\"a\": {}{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    hostile::manifest(deep_json.as_bytes());
}

/// ...YAML (refused by depth before the parser, whose time grows with the square of it)...
#[test]
fn deeply_nested_yaml_is_refused_quickly() {
    let deep_yaml = format!("backup: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = std::time::Instant::now();
    let err = hostile::config_refusal(deep_yaml.as_bytes()).unwrap();
    assert!(err.contains("more than 64 levels deep"), "{err}");
    hostile::config(deep_yaml.as_bytes());
    // Parsed, 100 000 levels take minutes (the parser's time grows with the square of the
    // depth); refused by depth, milliseconds. The bound leaves room for a loaded debug build.
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

/// ...YAML aliases expanding a billion times (the YAML parser's expansion limit)...
#[test]
fn a_billion_laughs_config_is_harmless() {
    let laughs = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    hostile::config(laughs.as_bytes());
}

/// ...and tars nested in segment tars (one level is walked, the rest is data).
#[test]
fn nested_segment_tars_are_walked_one_level() {
    // A segment whose data is itself a snapshot whose segment is a snapshot, 50 levels deep.
    let mut inner = fixtures::SMALL_PLAIN.to_vec();
    for _ in 0..50 {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(inner.len() as u64);
        header.set_cksum();
        builder
            .append_data(&mut header, "0/segments/s.tar", &inner[..])
            .unwrap();
        inner = builder.into_inner().unwrap();
    }
    hostile::snapshot(&inner);
}

/// Absurd sizes: a member claiming more bytes than the stream has, or than any disk holds.
#[test]
fn absurd_sizes_are_errors() {
    for size in [u64::MAX >> 1, 1 << 40, 8 << 30] {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 1024]);
        hostile::snapshot(&bytes);
        assert!(wqm::snapshot::inspect(&bytes[..]).is_err());
    }
}

/// A genuine key object with a few bytes changed, cut, or replaced by anything.
fn key_object_bytes() -> impl Strategy<Value = Vec<u8>> {
    use wqm::crypto::{KdfParams, KeyLabel, KeyObject, MasterKey, Password};
    let label = KeyLabel {
        created: "2026-12-04T00:00:00Z".into(),
        host: "h".into(),
        username: None,
    };
    let genuine = KeyObject::new(
        &MasterKey::generate().unwrap(),
        &Password::new("pw"),
        KdfParams::FOR_TESTS,
        label,
    )
    .unwrap()
    .to_json();
    prop_oneof![
        (
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(flips, cut)| {
                let mut bytes = genuine.clone();
                for (at, value) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                bytes.truncate(cut.index(bytes.len()) + 1);
                bytes
            }),
        "\\{\"version\":1,\"kdf\":\\{\"name\":\"argon2id\",\"params\":\\{\"m_kib\":[0-9]{1,12},\"t\":[0-9]{1,12},\"p\":[0-9]{1,4}\\},\"salt\":\"[A-Za-z0-9+/=]{0,30}\"\\},\"created\":\"x\",\"host\":\"h\",\"key_id\":\"[0-9a-f]{32}\",\"wrapped\":\"[A-Za-z0-9+/=]{0,170}\"\\}"
            .prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..600),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn key_objects(bytes in key_object_bytes()) {
        hostile::key_object(&bytes);
    }

    #[test]
    fn encrypted_objects(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        hostile::encrypted_object(&bytes);
    }
}
