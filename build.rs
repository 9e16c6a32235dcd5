//! Marks the build with what the tests that need something outside the crate can use, so they
//! show as ignored, with the reason, when it is missing (never as passed):
//! - `real_qdrant`: a real Qdrant server (`WQM_TEST_QDRANT_BIN` or `WQM_TEST_QDRANT_URL`);
//! - `real_qdrant_bin`: a Qdrant binary the tests start themselves (`WQM_TEST_QDRANT_BIN`), for
//!   what a shared server cannot do (kill and restart it, API keys, TLS, clusters);
//! - `mount_namespaces`: `WQM_TEST_UNSHARE` set, which `.ci/run` does when `unshare -rm` works
//!   (a tiny filesystem mounted in a private namespace, to fill a disk);
//! - `real_s3`: a real S3 server (`WQM_TEST_S3`, with the `AWS_*` variables and `S3_BUCKET` that
//!   `../shared/bin/s3-serve` prints) for the S3 half of the backend conformance suite.

fn main() {
    for cfg in [
        "real_qdrant",
        "real_qdrant_bin",
        "mount_namespaces",
        "real_s3",
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    for var in [
        "WQM_TEST_QDRANT_BIN",
        "WQM_TEST_QDRANT_URL",
        "WQM_TEST_UNSHARE",
        "WQM_TEST_S3",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("WQM_TEST_QDRANT_BIN") || set("WQM_TEST_QDRANT_URL") {
        println!("cargo::rustc-cfg=real_qdrant");
    }
    if set("WQM_TEST_QDRANT_BIN") {
        println!("cargo::rustc-cfg=real_qdrant_bin");
    }
    if set("WQM_TEST_S3") {
        println!("cargo::rustc-cfg=real_s3");
    }
    if set("WQM_TEST_UNSHARE") {
        println!("cargo::rustc-cfg=mount_namespaces");
    }
}
