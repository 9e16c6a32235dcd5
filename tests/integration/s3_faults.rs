//! A create to S3 through a faulty network (`s3_proxy` in front of the real SeaweedFS):
//! `503 SlowDown` is retried with backoff, a server gone for a moment mid-upload is waited for,
//! and one gone for good fails the run cleanly — no backup visible, and the next run removes
//! what it left.

use std::time::Duration;

use tempfile::TempDir;

use crate::backend::NEEDS_S3;
use crate::incremental::{workspace, wqm};
use crate::qdrant_double::Double;
use crate::s3_proxy::{Faults, Proxy};
use crate::s3_read::{fresh_prefix, with_s3};
use crate::test::Test;

/// A proxy in front of the test's S3 server.
pub(crate) fn proxy(faults: Faults) -> Proxy {
    Proxy::start(&std::env::var("AWS_ENDPOINT_URL").expect(NEEDS_S3), faults)
}

/// `t` with the S3 server's variables, its endpoint the proxy.
pub(crate) fn through(proxy: &Proxy, t: Test) -> Test {
    with_s3(t).env("AWS_ENDPOINT_URL", &proxy.url)
}

/// `wqm backup create TARGET` of the double's collections, in `tmp` (a new workspace when
/// `None`), through the proxy.
fn create_through(proxy: &Proxy, double: &Double, tmp: Option<TempDir>, target: &str) -> Test {
    let t = Test::in_dir(tmp.unwrap_or_else(workspace));
    through(
        proxy,
        wqm(t, &double.url, &format!("backup create {target}")),
    )
    .env("TMPDIR", "{TMP}")
}

/// Runs `t`, which must say it created the backup.
fn created(t: Test) -> TempDir {
    t.stdout_with(|o| assert!(o.starts_with("Backup created: s3://"), "{o}"))
        .run()
        .1
}

/// `backup validate BACKUP --check-files` passes.
pub(crate) fn validates(tmp: TempDir, backup: &str) {
    validates_in(tmp, backup);
}

/// `validates`, giving the directory back.
pub(crate) fn validates_in(tmp: TempDir, backup: &str) -> TempDir {
    with_s3(Test::in_dir(tmp))
        .args(&format!("backup validate {backup} --check-files"))
        .stdout_with(|o| assert!(o.starts_with("Backup validation successful"), "{o}"))
        .run()
        .1
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn slow_down_is_retried_with_backoff() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_backend, url) = fresh_prefix(&runtime);
    let proxy = proxy(Faults {
        slow_down: 3,
        ..Faults::default()
    });
    let t = create_through(&proxy, &double, None, &format!("{url}/first"));
    let tmp = created(t);
    proxy.seen(|seen| {
        // The first write was answered `SlowDown` three times, each time retried later (100 ms,
        // then more: the client's backoff), then passed.
        assert_eq!(seen.slowed.len(), 3, "{:?}", seen.slowed);
        let path = &seen.slowed[0].0;
        assert!(
            seen.slowed.iter().all(|(p, _)| p == path),
            "{:?}",
            seen.slowed
        );
        for pair in seen.slowed.windows(2) {
            let waited = pair[1].1 - pair[0].1;
            assert!(waited >= Duration::from_millis(80), "{waited:?}");
        }
        let last = seen.slowed[2].1;
        assert!(
            seen.passed
                .iter()
                .any(|(request, at)| request.ends_with(path.as_str()) && *at > last),
            "{path} never passed"
        );
    });
    validates(tmp, &format!("{url}/first"));
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_server_gone_for_a_moment_mid_upload_is_waited_for() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_backend, url) = fresh_prefix(&runtime);
    let proxy = proxy(Faults {
        cut_write_to: Some("/first/collections/".to_string()),
        gone_for: Some(Duration::from_millis(500)),
        ..Faults::default()
    });
    let t = create_through(&proxy, &double, None, &format!("{url}/first"));
    let tmp = created(t);
    assert_eq!(proxy.seen(|s| s.cut.len()), 1);
    validates(tmp, &format!("{url}/first"));
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_server_gone_for_good_mid_upload_fails_cleanly_and_the_next_run_removes_what_it_left() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let proxy = proxy(Faults {
        cut_write_to: Some("/first/sqlite/".to_string()),
        gone_for: None,
        ..Faults::default()
    });
    let t = create_through(&proxy, &double, None, &format!("{url}/first"));
    let (_, tmp) = t
        .status(1)
        .stdout_with(|o| assert_eq!(o, ""))
        .stderr_with(|e| assert!(e.starts_with("wqm: error: "), "{e}"))
        .run();
    // Its snapshots are there, its run record too, but no manifest: no backup.
    let left = runtime.block_on(backend.list("first/")).unwrap();
    assert!(
        left.iter().any(|o| o.name.contains("collections/")),
        "{left:?}"
    );
    assert_eq!(
        runtime.block_on(backend.list(".wqm-runs/")).unwrap().len(),
        1
    );
    assert!(
        left.iter().all(|o| !o.name.ends_with("manifest.json")),
        "{left:?}"
    );
    proxy.back();
    let (_, tmp) = through(&proxy, Test::in_dir(tmp))
        .args(&format!("backup list {url}"))
        .stdout(&format!("No backups found in {url}\n"))
        .run();
    // The next create removes what the failed one left, saying so.
    let next = create_through(&proxy, &double, Some(tmp), &format!("{url}/next"));
    created(next.stderr_with(|e| {
        assert!(
            e.contains("removed what a killed run left of `first`"),
            "{e}"
        )
    }));
    for prefix in ["first/", ".wqm-runs/"] {
        assert!(
            runtime.block_on(backend.list(prefix)).unwrap().is_empty(),
            "{prefix}"
        );
    }
}

#[test]
#[cfg_attr(
    not(real_s3),
    ignore = "needs the real S3 server .ci/run starts: WQM_TEST_S3=1"
)]
fn a_server_that_ignores_conditional_writes_is_refused_before_anything_is_written() {
    let double = Double::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, url) = fresh_prefix(&runtime);
    let proxy = proxy(Faults {
        ignore_if_none_match: true,
        ..Faults::default()
    });
    let said = |e: &str| {
        assert!(
            e.contains("does not honour conditional writes (`If-None-Match: *`)"),
            "{e}"
        )
    };
    let (_, tmp) = create_through(&proxy, &double, None, &format!("{url}/first"))
        .status(2)
        .stdout_with(|o| assert_eq!(o, ""))
        .stderr_with(said)
        .run();
    // Neither Qdrant nor the bucket got anything of it.
    assert!(double.requests().iter().all(|r| !r.contains("/snapshots")));
    assert!(runtime.block_on(backend.list("")).unwrap().is_empty());
    // Nor does a copy write there.
    let (_, tmp) = wqm(
        Test::in_dir(tmp),
        &double.url,
        "backup create {TMP}/backups/full",
    )
    .stdout_with(|_| {})
    .run();
    through(&proxy, Test::in_dir(tmp))
        .args(&format!("backup copy {{TMP}}/backups {url}"))
        .status(2)
        .stdout_with(|o| assert_eq!(o, ""))
        .stderr_with(said)
        .run();
    assert!(runtime.block_on(backend.list("")).unwrap().is_empty());
}
