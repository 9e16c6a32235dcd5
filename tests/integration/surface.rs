//! The command line itself: version, help, usage errors, configuration errors.

use crate::test::Test;

#[test]
fn version_is_the_bare_product_version() {
    // Bare, so that `$(wqm --version)` is a version (the seed's recipes use it in paths).
    Test::new().args("--version").stdout("0.3.0\n").run();
    Test::new().args("-V").stdout("0.3.0\n").run();
    Test::new()
        .args("backup info --version")
        .stdout("0.3.0\n")
        .run();
}

#[test]
fn usage_errors_are_one_json_document_with_json() {
    for args in [
        "backup frobnicate --json",
        "backup info --json",
        "backup list --json --sort nope {TMP}",
        "--json backup validate {TMP} --no-such-flag",
    ] {
        Test::new()
            .args(args)
            .status(2)
            .stderr_with(|e| assert!(e.starts_with("error: "), "{e}"))
            .stdout_json(|v| {
                let error = &v["error"];
                assert_eq!(error["exit_code"], 2);
                let message = error["message"].as_str().unwrap();
                assert!(!message.is_empty() && !message.starts_with("error:"), "{v}");
                assert!(error["hint"].as_str().unwrap().contains("--help"), "{v}");
            })
            .run();
    }
    // Without --json stdout stays empty.
    Test::new()
        .args("backup frobnicate")
        .status(2)
        .stderr_with(|_| {})
        .run();
}

#[test]
fn bare_backup_prints_help_listing_the_commands() {
    Test::new()
        .args("backup")
        .status(2)
        .stderr_with(|err| {
            assert!(
                err.starts_with(
                    "Create, inspect, validate and restore backups\n\nUsage: wqm backup"
                ),
                "{err}"
            );
            for command in ["info ", "list ", "validate "] {
                assert!(
                    err.contains(&format!("\n  {command}")),
                    "{command} missing:\n{err}"
                );
            }
            assert!(
                err.contains("3    the backup is missing, invalid or corrupt"),
                "{err}"
            );
        })
        .run();
}

#[test]
fn help_documents_exit_codes_and_environment() {
    Test::new()
        .args("--help")
        .stdout_with(|out| {
            assert!(out.contains("Exit codes:\n  0    success\n"), "{out}");
            assert!(
                out.contains("130  interrupted (Ctrl-C, SIGINT), after cleaning up"),
                "{out}"
            );
            assert!(out.contains("QDRANT_URL, QDRANT_API_KEY"), "{out}");
        })
        .run();
    Test::new()
        .args("backup validate --help")
        .stdout_with(|out| {
            assert!(out.contains("Validate backup structure"), "{out}");
            assert!(out.contains("--check-files"), "{out}");
            assert!(
                out.contains("6    verification after restore failed"),
                "{out}"
            );
        })
        .run();
}

#[test]
fn unknown_subcommand_and_missing_argument_are_usage_errors() {
    Test::new()
        .args("backup frobnicate")
        .status(2)
        .stderr_with(|err| {
            assert!(
                err.starts_with("error: unrecognized subcommand 'frobnicate'"),
                "{err}"
            )
        })
        .run();
    Test::new()
        .args("backup info")
        .status(2)
        .stderr_with(|err| {
            assert!(
                err.contains("required arguments were not provided") && err.contains("<PATH>"),
                "{err}"
            )
        })
        .run();
}

#[test]
fn a_mistyped_config_key_is_named_with_its_line_and_the_closest_valid_key() {
    let t = Test::new();
    std::fs::write(t.join("c.yaml"), "qdrant:\n  url: http://x\n  timeout: 30s\nbackup:\n  verification:\n    checksum_algoritm: md5\n").unwrap();
    t.args("--config {TMP}/c.yaml backup list {TMP}")
        .status(2)
        .stderr(
            "wqm: error: unknown config key `backup.verification.checksum_algoritm` in `{TMP}/c.yaml` line 6; did you mean `backup.verification.checksum_algorithm`?\n\
             hint: every `backup:` key, its type and default are listed in config.example.yaml\n",
        )
        .run();
}

#[test]
fn a_wrong_type_names_the_key_the_expected_type_and_the_line() {
    let t = Test::new();
    std::fs::create_dir_all(t.join("home/.config/workspace-qdrant")).unwrap();
    std::fs::write(
        t.join("home/.config/workspace-qdrant/config.yaml"),
        "backup:\n  retention_days: 30\n  compression: yes\n",
    )
    .unwrap();
    t.args("backup list {TMP}")
        .status(2)
        .stderr(
            "wqm: error: invalid value for `backup.compression` in `{TMP}/home/.config/workspace-qdrant/config.yaml` line 3: invalid type: string \"yes\", expected a boolean\n\
             hint: every `backup:` key, its type and default are listed in config.example.yaml\n",
        )
        .run();
}

#[test]
fn a_missing_named_config_file_is_an_error() {
    Test::new()
        .env("WQM_CONFIG_PATH", "{TMP}/nope.yaml")
        .args("backup list {TMP} --json")
        .status(2)
        .stderr("wqm: error: config file `{TMP}/nope.yaml` (from WQM_CONFIG_PATH) does not exist\nhint: pass an existing file with --config, or unset `WQM_CONFIG_PATH` to use the default location\n")
        .stdout_json(|v| {
            assert_eq!(v["error"]["exit_code"], 2);
            assert!(v["error"]["message"].as_str().unwrap().contains("does not exist"));
        })
        .run();
}

/// An S3 location is never a local directory named `s3:` (as it once was): the commands that
/// take one ask the server first (here: no credentials, exit 2, nothing done, Qdrant asked
/// nothing); the others refuse it before anything is done; a mistyped one is refused too.
#[test]
fn an_s3_location_is_refused_before_anything_is_done() {
    let double = crate::qdrant_double::Double::start();
    let (_, tmp) = Test::new()
        .env("QDRANT_URL", &double.url)
        .args("backup create s3://bucket/n1")
        .status(2)
        .stderr_with(|e| assert!(e.starts_with("wqm: error: no S3 credentials for "), "{e}"))
        .run();
    assert!(!tmp.path().join("s3:").exists());
    assert!(double.requests().is_empty(), "Qdrant was asked nothing");
    for args in [
        "backup info s3://bucket/n1",
        "backup list s3://bucket",
        "backup validate s3://bucket/n1",
        "backup restore s3://bucket/n1 --dry-run",
        "backup cleanup s3://bucket",
        "backup prune s3://bucket --keep-last 1",
        "backup copy s3://bucket {TMP}/copy",
        "backup copy {TMP} s3://bucket",
        "backup export {TMP}/b s3://bucket/e",
    ] {
        Test::new()
            .args(args)
            .status(2)
            .stderr_with(|e| assert!(e.contains("no S3 credentials"), "{e}"))
            .run();
    }
    Test::new()
        .args("backup create s3:bucket/n1")
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.starts_with("wqm: error: `s3:bucket/n1` is not a valid S3 location: an S3 location starts with `s3://`"),
                "{e}"
            )
        })
        .run();
    let t = Test::new();
    std::fs::write(
        t.join("c.yaml"),
        "backup:\n  default_backup_directory: s3://bucket/nightly\n",
    )
    .unwrap();
    // The repository there is used (and its server asked first).
    let (_, t) = t
        .args("--config {TMP}/c.yaml backup prune --keep-last 1")
        .status(2)
        .stderr_with(|e| assert!(e.contains("no S3 credentials"), "{e}"))
        .run();
    std::fs::write(
        t.path().join("c.yaml"),
        "backup:\n  default_backup_directory: s3:bucket/nightly\n",
    )
    .unwrap();
    Test::in_dir(t)
        .args("--config {TMP}/c.yaml backup list {TMP}")
        .status(2)
        .stderr_with(|e| assert!(e.contains("an S3 location starts with `s3://`"), "{e}"))
        .run();
}
