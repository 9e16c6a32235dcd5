//! The restore's plan: what it shows, and every refusal it makes before anything changes.

use super::*;

#[test]
fn dry_run_shows_the_plan_and_changes_nothing() {
    let double = Double::start();
    let tmp = scene(&double, "");
    let db_before = fs::read(tmp.path().join("data/state.db")).unwrap();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .status(5)
        .stdout_with(|out| {
            assert!(out.contains("    conflict  small-named (120 points, "), "{out}");
            assert!(out.contains("  ✗ Restore failed: Collection small-named already exists\n    Restore failed: Collection small-plain already exists\n"), "{out}");
            assert!(out.ends_with("Dry-run complete. No changes made.\n"), "{out}");
        })
        .stderr(
            "wqm: error: Restore failed: Collection small-named already exists\nRestore failed: Collection small-plain already exists\n\
             hint: --overwrite replaces existing collections (after a safety backup of them); or delete them first\n",
        )
        .run();
    lose_everything(&double);
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --dry-run --json")
        .stdout_json(|v| {
            assert_eq!(v["dry_run"], true);
            let plan = &v["plan"];
            assert_eq!(plan["collections"][0]["action"], "create");
            assert_eq!(plan["databases"][0]["action"], "replace");
            assert_eq!(plan["aliases"][0]["alias"], "notes");
            assert!(plan["safety_backup"]["path"]
                .as_str()
                .unwrap()
                .contains("safety-"));
            assert_eq!(plan["blockers"], serde_json::json!([]));
            assert!(plan["estimated_seconds"].as_u64().unwrap() >= 1);
        })
        .run();
    assert!(uploads(&double).is_empty());
    assert_eq!(
        fs::read(tmp.path().join("data/state.db")).unwrap(),
        db_before
    );
    assert!(safety_backups(tmp.path()).is_empty());
}

#[test]
fn existing_collections_conflict_with_exit_5_and_nothing_is_touched() {
    let double = Double::start();
    let tmp = scene(&double, "");
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(5)
        .stdout_with(|o| assert!(o.starts_with("Restore plan: "), "{o}"))
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Restore failed: Collection small-named already exists\nRestore failed: Collection small-plain already exists\n"), "{e}"))
        .run();
    assert!(uploads(&double).is_empty());
    assert!(safety_backups(tmp.path()).is_empty());
}

#[test]
fn overwrite_refuses_a_collection_with_a_different_vector_config() {
    let double = Double::start();
    let tmp = scene(&double, "");
    double.state().collections.insert(
        "small-plain".into(),
        crate::qdrant_double::Collection::from_fixture(fixtures::SMALL_NAMED),
    );
    wqm(tmp, &double, "backup restore {TMP}/b --force --overwrite")
        .status(5)
        .stdout_with(|_| {})
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Restore failed: Collection small-plain exists with a different vector configuration"), "{e}"))
        .run();
    assert!(uploads(&double).is_empty());
}

#[test]
fn without_a_terminal_it_asks_for_force_instead_of_hanging() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    wqm(tmp, &double, "backup restore {TMP}/b")
        .status(2)
        .stdout_with(|o| assert!(o.starts_with("Restore plan: "), "{o}"))
        .stderr("wqm: error: Confirmation needed, but there is no terminal to ask on\nhint: pass --force to restore without a prompt (review the plan first with --dry-run)\n")
        .run();
    assert!(uploads(&double).is_empty());
}

#[test]
fn the_version_policy_decides() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    fixtures::edit_manifest(&tmp.path().join("b"), |m| m["version"] = "0.3.7".into());
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .status(4)
        .stdout_with(|_| {})
        .stderr(
            "wqm: error: Cannot restore from newer backup version 0.3.7 to older system version 0.3.0\nBackup is 7 patch version(s) newer\n\
             hint: Use --allow-downgrade to restore from newer backup (may cause issues), or set `backup.validation.allow_patch_downgrade: true`; create a safety backup first\n",
        )
        .run();
    let (_, tmp) = wqm(
        tmp,
        &double,
        "backup restore {TMP}/b --force --allow-downgrade",
    )
    .stdout_with(|o| {
        assert!(
            o.contains("⚠ Restoring newer backup version 0.3.7 onto older system version 0.3.0")
                && o.contains("Restore completed"),
            "{o}"
        )
    })
    .run();
    lose_everything(&double);
    fixtures::edit_manifest(&tmp.path().join("b"), |m| m["version"] = "0.4.0".into());
    wqm(tmp, &double, "backup restore {TMP}/b --force --allow-downgrade")
        .status(4)
        .stdout_with(|_| {})
        .stderr_with(|e| {
            assert!(e.starts_with("wqm: error: Backup version 0.4.0 is incompatible with current version 0.3.0\nMinor version mismatch: 0.4 vs 0.3\n"), "{e}");
            assert!(e.contains("allow_minor_downgrade"), "{e}");
        })
        .run();
}

#[test]
fn a_legacy_python_backup_restores_its_state_database_through_a_migration() {
    let double = Double::empty();
    let t = Test::new();
    fixtures::legacy_backup(&t.join("old"));
    fs::create_dir_all(t.join("data")).unwrap();
    let (_, tmp) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .env("WQM_BACKUP__VALIDATION__VERSION_WARNING_THRESHOLD", "0")
        .args("backup restore {TMP}/old --force")
        .stdout_with(|o| {
            assert!(o.contains("  Migrations:\n    0.2 → 0.3 python-era-backup: Convert a backup of the earlier Python wqm"), "{o}");
            assert!(o.contains("      ⚠ collections a, b have no vector data in this backup and are not restored\n"), "{o}");
            assert!(o.contains("  Database state.db: replace "), "{o}");
            assert!(o.contains("Restore completed"), "{o}");
        })
        .run();
    assert_eq!(
        count(
            &tmp.path().join("data/state.db"),
            "SELECT MAX(version) FROM schema_version"
        ),
        49
    );
    assert!(uploads(&double).is_empty());
    assert!(
        fs::read_dir(tmp.path().join("old")).unwrap().count() == 3,
        "the backup itself is untouched"
    );
}

#[test]
fn migrations_are_listed() {
    Test::new()
        .args("backup migrations")
        .stdout_with(|o| {
            assert!(
                o.starts_with(
                    "0.2 → 0.3 python-era-backup\n  Convert a backup of the earlier Python wqm"
                ),
                "{o}"
            )
        })
        .run();
    Test::new()
        .args("backup migrations --from 0.2.5 --json")
        .stdout_json(|v| {
            assert_eq!(v[0]["id"], "python-era-backup");
            assert_eq!(v[0]["from"], "0.2");
            assert_eq!(v[0]["to"], "0.3");
            assert!(
                v[0].get("reversible").is_none(),
                "nothing runs a migration backwards"
            );
        })
        .run();
    Test::new()
        .args("backup migrations --from 0.3.0")
        .stdout("No migrations needed\n")
        .run();
    Test::new()
        .args("backup migrations --from 0.1.0")
        .status(4)
        .stderr("wqm: error: No migration path from 0.1 to 0.3\nhint: `wqm backup migrations` lists every registered migration\n")
        .run();
}

#[test]
fn a_read_only_key_is_found_by_the_plan_before_anything_changes() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    double.state().api_key = Some("writer".into());
    double.state().read_only_key = Some("reader".into());
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .env("QDRANT_API_KEY", "reader")
        .status(1)
        .stdout_with(|o| assert!(o.ends_with("Dry-run complete. No changes made.\n"), "{o}"))
        .stderr_with(|e| {
            assert!(e.starts_with("wqm: error: The API key cannot write to Qdrant at http://127.0.0.1:"), "{e}");
            assert!(e.ends_with("\nhint: a restore needs a key with write (manage) access: set QDRANT_API_KEY or `qdrant.api_key`; a read-only key can only list and download\n"), "{e}");
        })
        .run();
    // Without --dry-run it stops at the plan too: no safety backup, no upload.
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("QDRANT_API_KEY", "reader")
        .status(1)
        .stdout_with(|_| {})
        .stderr_with(|e| assert!(e.contains("The API key cannot write"), "{e}"))
        .run();
    assert!(uploads(&double).is_empty());
    assert!(safety_backups(tmp.path()).is_empty());
    wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .env("QDRANT_API_KEY", "writer")
        .stdout_with(|o| assert!(o.ends_with("Dry-run complete. No changes made.\n"), "{o}"))
        .run();
}

#[test]
fn backups_disabled_refuses_a_restore_that_needs_a_safety_backup_in_the_plan() {
    let page = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    assert!(page.contains("| `backup.enabled` | `true` | `false` makes `create` refuse, and a restore that needs a safety backup"));
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    let message = "Backups are disabled: `backup.enabled` is false, and this restore needs a safety backup of what it replaces";
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .env("WQM_BACKUP__ENABLED", "false")
        .status(2)
        .stdout_with(move |o| assert!(o.contains(&format!("  ✗ {message}\n")), "{o}"))
        .stderr(&format!("wqm: error: {message}\nhint: set `backup.enabled: true`, or `backup.auto_backup_before_restore: false` to restore without a safety backup\n"))
        .run();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__ENABLED", "false")
        .status(2)
        .stdout_with(|_| {})
        .stderr_with(move |e| assert!(e.starts_with(&format!("wqm: error: {message}\n")), "{e}"))
        .run();
    assert!(uploads(&double).is_empty() && safety_backups(tmp.path()).is_empty());
    // Without a safety backup, as the hint says, it restores.
    wqm(tmp, &double, "backup restore {TMP}/b --force")
        .env("WQM_BACKUP__ENABLED", "false")
        .env("WQM_BACKUP__AUTO_BACKUP_BEFORE_RESTORE", "false")
        .stdout_with(|o| assert!(o.contains("Restore completed"), "{o}"))
        .run();
}

/// `backup.validation.check_schema_compatibility` governs the schema check only; vector
/// configurations are compared whatever it says, as docs/configuration.md states.
#[test]
fn check_schema_compatibility_governs_the_schema_check_and_not_the_vector_config() {
    let page = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    assert!(page.contains("| `backup.validation.check_schema_compatibility` | `true` | compare state database schema versions before a restore: refuse a backup schema newer than the live one, and a partial restore whose schema differs. Collections' vector configurations are compared whatever this says"));

    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    let live = tmp.path().join("data/state.db");
    let newest = count(&live, "SELECT MAX(version) FROM schema_version");
    rusqlite::Connection::open(&live)
        .unwrap()
        .execute_batch(&format!(
            "DELETE FROM schema_version WHERE version = {newest}"
        ))
        .unwrap();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .status(4)
        .stdout_with(|_| {})
        .stderr_with(move |e| assert!(e.starts_with(&format!("wqm: error: The backup's state database schema v{newest} is newer than the live one")), "{e}"))
        .run();
    let (_, tmp) = wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .env(
            "WQM_BACKUP__VALIDATION__CHECK_SCHEMA_COMPATIBILITY",
            "false",
        )
        .stdout_with(|o| assert!(o.ends_with("Dry-run complete. No changes made.\n"), "{o}"))
        .run();

    double.state().collections.insert(
        "small-plain".into(),
        crate::qdrant_double::Collection::from_fixture(fixtures::SMALL_NAMED),
    );
    wqm(tmp, &double, "backup restore {TMP}/b --dry-run --overwrite")
        .env("WQM_BACKUP__VALIDATION__CHECK_SCHEMA_COMPATIBILITY", "false")
        .status(5)
        .stdout_with(|_| {})
        .stderr_with(|e| assert!(e.starts_with("wqm: error: Restore failed: Collection small-plain exists with a different vector configuration"), "{e}"))
        .run();
}

/// A 50 MB manifest is refused before it is parsed or anything is planned.
#[test]
fn a_huge_manifest_is_refused_before_planning() {
    let double = Double::start();
    let tmp = scene(&double, "");
    fixtures::edit_manifest(&tmp.path().join("b"), |m| {
        m["notes"] = serde_json::json!(vec!["x".repeat(1000); 50_000]);
    });
    wqm(tmp, &double, "backup restore {TMP}/b --dry-run")
        .status(3)
        .stderr_with(|err| {
            assert!(
                err.contains("larger than 16 MiB, the most a manifest may have; not read"),
                "{err}"
            )
        })
        .run();
}
