//! A real three-node Qdrant cluster on 127.0.0.1: shard-by-shard backup and restore, nodes
//! down, and moving between a cluster and a single node. Needs `WQM_TEST_QDRANT_BIN` (a cluster
//! cannot be made of `WQM_TEST_QDRANT_URL`).

use serde_json::{json, Value};

use crate::real_qdrant::{self, Cluster, Rest, Server};
use crate::test::Test;

/// `projects`: 3 shards, 2 replicas, named dense and sparse vectors, a payload index, an alias.
/// `rules`: custom sharding with the keys `alpha` (40 points) and `beta` (25), 2 replicas.
fn cluster_workspace(node: &Rest) {
    node.ok(
        "PUT",
        "/collections/projects",
        Some(json!({"vectors": {"dense": {"size": 16, "distance": "Cosine"}}, "sparse_vectors": {"keywords": {}}, "shard_number": 3, "replication_factor": 2})),
    );
    node.ok(
        "PUT",
        "/collections/projects/index?wait=true",
        Some(json!({"field_name": "tenant_id", "field_schema": "keyword"})),
    );
    real_qdrant::upsert(node, "projects", 0..300, 0);
    node.ok("POST", "/collections/aliases", Some(json!({"actions": [{"create_alias": {"collection_name": "projects", "alias_name": "current-project"}}]})));
    node.ok("PUT", "/collections/rules", Some(json!({"vectors": {"size": 16, "distance": "Dot"}, "sharding_method": "custom", "shard_number": 1, "replication_factor": 2})));
    for (key, ids) in [("alpha", 0..40u64), ("beta", 1000..1025)] {
        node.ok(
            "PUT",
            "/collections/rules/shards",
            Some(json!({"shard_key": key})),
        );
        let points: Vec<Value> = ids.map(|id| json!({"id": id, "vector": real_qdrant::vector(id, 3), "payload": {"key": key}})).collect();
        node.ok(
            "PUT",
            "/collections/rules/points?wait=true",
            Some(json!({"points": points, "shard_key": key})),
        );
    }
}

/// `wqm` pointed at node 0 with every node listed.
fn wqm(t: Test, cluster: &Cluster, nodes: &[String]) -> Test {
    t.env("QDRANT_URL", &cluster.node(0).url)
        .env("QDRANT_NODES", &nodes.join(","))
}

fn shard_count(manifest: &wqm::format::manifest::Manifest, collection: &str) -> usize {
    manifest.collection_details[collection].shards.len()
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (a cluster of three)"
)]
fn a_cluster_is_backed_up_and_restored_shard_by_shard() {
    let cluster = Cluster::start(3);
    let nodes = cluster.all_urls();
    cluster_workspace(cluster.node(0));
    let before = real_qdrant::fingerprint(cluster.node(0));
    let (_, tmp) = wqm(Test::new(), &cluster, &nodes)
        .args("backup create {TMP}/c --json")
        .stdout_json(|v| assert_eq!(v["collections"], json!({"projects": 300, "rules": 65})))
        .run();
    let backup = tmp.path().join("c");
    let m = wqm::format::manifest::Manifest::load(&backup.join("metadata/manifest.json")).unwrap();
    assert_eq!(shard_count(&m, "projects"), 3);
    let rules = &m.collection_details["rules"];
    assert_eq!(
        rules
            .shards
            .iter()
            .map(|s| (s.key.clone(), s.points_count))
            .collect::<Vec<_>>(),
        [(Some(json!("alpha")), 40), (Some(json!("beta")), 25)]
    );
    assert_eq!(
        m.collection_details["projects"]
            .shards
            .iter()
            .map(|s| s.points_count)
            .sum::<u64>(),
        300
    );
    assert!(
        m.notes.iter().any(|n| n.contains("shard by shard")),
        "{:?}",
        m.notes
    );
    assert!(backup
        .join("collections/projects/shard-0.snapshot.zst")
        .is_file());
    crate::test::validates(&backup);
    assert_eq!(
        cluster.snapshots_left(),
        Vec::<String>::new(),
        "no snapshot left on any node"
    );

    for name in ["projects", "rules"] {
        cluster
            .node(0)
            .ok("DELETE", &format!("/collections/{name}"), None);
    }
    let (_, tmp) = wqm(Test::in_dir(tmp), &cluster, &nodes)
        .args("backup restore {TMP}/c --force")
        .stdout_with(|o| {
            assert!(
                o.contains("    create    projects (300 points, 3 shards, "),
                "{o}"
            );
            assert!(o.contains("  ✓ shard 2 of `projects`: expected "), "{o}");
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    assert_eq!(real_qdrant::fingerprint(cluster.node(0)), before);
    for node in cluster.running() {
        assert_eq!(
            node.exact_count("projects"),
            300,
            "every node sees every point"
        );
    }
    assert_eq!(cluster.snapshots_left(), Vec::<String>::new());

    // The same backup restores into a single node: all shards local, custom keys become plain shards.
    let single = Server::start();
    let (_, _tmp) = Test::in_dir(tmp)
        .env("QDRANT_URL", &single.url)
        .args("backup restore {TMP}/c --force")
        .stdout_with(|o| {
            assert!(
                o.contains("`rules` uses custom sharding, which a single Qdrant node cannot do"),
                "{o}"
            );
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    assert_eq!(
        real_qdrant::points(&single, "projects"),
        real_qdrant::points(cluster.node(0), "projects")
    );
    // The cluster reports each point's shard key; a single node has none.
    let mut cluster_rules = real_qdrant::points(cluster.node(0), "rules");
    for point in &mut cluster_rules {
        point.as_object_mut().unwrap().remove("shard_key");
    }
    assert_eq!(real_qdrant::points(&single, "rules"), cluster_rules);
    assert_eq!(single.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (a cluster of three)"
)]
fn one_node_down_is_fine_two_are_not() {
    let mut cluster = Cluster::start(3);
    let nodes = cluster.all_urls();
    cluster_workspace(cluster.node(0));
    cluster.stop(2);
    let (_, tmp) = wqm(Test::new(), &cluster, &nodes)
        .args("backup create {TMP}/one-down --json")
        .stdout_json(|v| assert_eq!(v["collections"], json!({"projects": 300, "rules": 65})))
        .run();
    let backup = tmp.path().join("one-down");
    crate::test::validates(&backup);

    cluster.stop(1);
    let (_, tmp) = wqm(Test::in_dir(tmp), &cluster, &nodes)
        .args("backup create {TMP}/two-down")
        .status(1)
        .stderr_with(|e| {
            assert!(e.starts_with("wqm: error: shard "), "{e}");
            assert!(
                e.contains(" has no active replica on a reachable node (replicas: peer "),
                "{e}"
            );
            assert!(e.contains("unreachable"), "{e}");
            assert!(
                e.contains("hint: bring the nodes holding that shard back"),
                "{e}"
            );
        })
        .run();
    assert!(!tmp.path().join("two-down").exists());
    assert!(std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("two-down.wqm-staging")));
    assert_eq!(cluster.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (a cluster of three)"
)]
fn a_single_node_backup_restores_into_a_cluster() {
    let single = Server::start();
    real_qdrant::workspace(&single);
    let before = real_qdrant::fingerprint(&single);
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &single.url)
        .args("backup create {TMP}/s")
        .stdout_with(|o| assert!(o.contains("Backup created"), "{o}"))
        .run();
    let cluster = Cluster::start(3);
    let nodes = cluster.all_urls();
    wqm(Test::in_dir(tmp), &cluster, &nodes)
        .args("backup restore {TMP}/s --force")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run();
    assert_eq!(real_qdrant::fingerprint(cluster.node(0)), before);
    assert_eq!(cluster.snapshots_left(), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(real_qdrant_bin),
    ignore = "needs WQM_TEST_QDRANT_BIN: a server this test starts itself (a cluster of three)"
)]
fn shards_on_different_nodes_are_snapshotted_side_by_side() {
    let cluster = Cluster::start(3);
    let nodes = cluster.all_urls();
    cluster_workspace(cluster.node(0));
    let making = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = making.clone();
    let (_, tmp) = wqm(Test::new(), &cluster, &nodes)
        .env("WQM_BACKUP__TRANSFER__PARALLEL", "3")
        .args("backup create {TMP}/c --json")
        .stdout_json(move |v| {
            for file in v["files"].as_array().unwrap() {
                let t = &file["seconds"];
                let started = t["started"].as_f64().unwrap();
                let made = started + t["making"].as_f64().unwrap();
                let detail = file["detail"].as_str().unwrap().to_string();
                let peer = detail.rsplit("from peer ").next().unwrap().to_string();
                seen.borrow_mut().push((peer, started, made));
            }
        })
        .run();
    let making = making.borrow();
    assert_eq!(making.len(), 5, "{making:?}");
    // Two nodes were making snapshots at the same time; one node never made two at once.
    let together = |a: &(String, f64, f64), b: &(String, f64, f64)| a.1 < b.2 && b.1 < a.2;
    let pairs: Vec<_> = making
        .iter()
        .enumerate()
        .flat_map(|(i, a)| making[i + 1..].iter().map(move |b| (a, b)))
        .collect();
    assert!(
        pairs.iter().any(|(a, b)| a.0 != b.0 && together(a, b)),
        "{making:?}"
    );
    assert!(
        !pairs.iter().any(|(a, b)| a.0 == b.0 && together(a, b)),
        "{making:?}"
    );
    crate::test::validates(&tmp.path().join("c"));
    assert_eq!(cluster.snapshots_left(), Vec::<String>::new());
}
