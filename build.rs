//! Marks the build with `real_qdrant` when a real Qdrant server is available to the tests
//! (`WQM_TEST_QDRANT_BIN` or `WQM_TEST_QDRANT_URL`), so the real-server tests show as ignored,
//! with the reason, when it is not.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(real_qdrant)");
    println!("cargo::rerun-if-env-changed=WQM_TEST_QDRANT_BIN");
    println!("cargo::rerun-if-env-changed=WQM_TEST_QDRANT_URL");
    let set = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("WQM_TEST_QDRANT_BIN") || set("WQM_TEST_QDRANT_URL") {
        println!("cargo::rustc-cfg=real_qdrant");
    }
}
