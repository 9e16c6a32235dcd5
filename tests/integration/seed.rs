//! The seed's recipes as written: every command line of the Troubleshooting and Best Practices
//! (Version Management included) sections of `BACKUP_RESTORE.md` (a verbatim copy in
//! `tests/fixtures/seed/`) that names only `wqm backup …`, `wqm --version` and shell tools is
//! typed into a terminal, as its reader would, and must succeed. Lines that name other programs
//! (`pip`, workspace-qdrant-mcp's own `wqm admin`/`service`/`search`) or are no command (a
//! directory diagram) are listed, so a change in the seed is noticed.
//!
//! The one change to a line: `/backups`, the seed's backups directory, is rooted in a temporary
//! directory. Each line runs on a fresh copy of one scene: a state database, `my-backup` made by
//! wqm from the Qdrant test double, `newer-backup` (the same, of patch version 0.3.1) and
//! `daily/backup-20261127` (as the seed's nightly line makes). Lines that restore run against a
//! Qdrant that lost its collections (what a restore is for), the others against one holding them.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::fixtures;
use crate::pty::Terminal;
use crate::qdrant_double::Double;
use crate::test::Test;

const SEED: &str = include_str!("../fixtures/seed/BACKUP_RESTORE.md");
const SHELL_TOOLS: [&str; 10] = [
    "find", "xargs", "du", "rm", "ls", "cat", "jq", "grep", "cut", "date",
];

/// The `## TITLE` section, up to the next `## ` heading.
fn section(title: &str) -> &'static str {
    let start = SEED
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?} in the seed"));
    let end = SEED[start + 4..]
        .find("\n## ")
        .map_or(SEED.len(), |n| start + 4 + n);
    &SEED[start..end]
}

/// The command lines of the ```bash blocks: continuation lines joined, comments dropped.
fn command_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with("```") {
            in_block = line == "```bash";
            continue;
        }
        if !in_block || line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => pending.push_str(start),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
}

/// A crontab line's command (the five schedule fields dropped).
fn without_schedule(line: &str) -> &str {
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    let schedule = fields.len() == 6
        && fields[..5]
            .iter()
            .all(|f| f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c)));
    if schedule {
        fields[5]
    } else {
        line
    }
}

/// Whether the line names only `wqm backup …`, `wqm --version` and shell tools.
fn runnable(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let is_wqm = |w: &str| w.trim_start_matches(['"', '$', '(']) == "wqm";
    (words[0] == "wqm" || SHELL_TOOLS.contains(&words[0]))
        && words.iter().enumerate().all(|(i, w)| {
            !is_wqm(w) || matches!(words.get(i + 1), Some(&"backup") | Some(&"--version"))
        })
}

fn copy(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The scene every line starts from, in `root`.
fn scene(root: &Path) {
    let double = Double::start();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::create_dir_all(root.join("backups/daily")).unwrap();
    fixtures::state_db(&root.join("data/state.db"));
    let t = Test::new();
    let my_backup = root.join("backups/my-backup");
    let (_, _t) = t
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", &root.join("data").display().to_string())
        .args(&format!("backup create {} --quiet", my_backup.display()))
        .run();
    copy(&my_backup, &root.join("backups/newer-backup"));
    fixtures::edit_manifest(&root.join("backups/newer-backup"), |m| {
        m["version"] = "0.3.1".into()
    });
    copy(&my_backup, &root.join("backups/daily/backup-20261127"));
}

/// Types `line` into `sh` on a terminal, in a fresh copy of the scene; answers `y` to a prompt.
fn run(line: &str, scene: &Path) -> (tempfile::TempDir, std::process::ExitStatus, String) {
    let root = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(scene).unwrap() {
        copy(&entry.unwrap().path(), root.path());
    }
    fs::create_dir_all(root.path().join("home")).unwrap();
    let double = if line.contains("wqm backup restore") {
        Double::empty()
    } else {
        Double::start()
    };
    let rooted = line.replace(" /backups", &format!(" {}/backups", root.path().display()));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_wqm")).parent().unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&rooted)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", root.path().join("home"))
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", root.path().join("data"))
        .current_dir(root.path());
    let (status, screen) = Terminal::spawn(command).finish_answering("[y/N]", b"y");
    (root, status, screen)
}

#[test]
fn the_seeds_recipes_run_as_written() {
    let mut lines = command_lines(section("Troubleshooting"));
    lines.extend(command_lines(section("Best Practices")));
    assert!(
        section("Best Practices").contains("\n### Version Management\n"),
        "Version Management is part of Best Practices"
    );
    let (run_lines, other): (Vec<String>, Vec<String>) = lines
        .iter()
        .map(|l| without_schedule(l).to_string())
        .partition(|l| runnable(l));
    assert_eq!(
        other,
        [
            "pip install workspace-qdrant-mcp==X.Y.Z",
            "pip install workspace-qdrant-mcp --upgrade",
            "wqm admin collections delete collection-name",
            "wqm service status",
            "wqm service restart",
            "/backups/",
            "├── daily/    # 7-day retention",
            "├── weekly/   # 28-day retention",
            "└── monthly/  # 365-day retention",
            "wqm admin status",
            "wqm admin collections list",
            "wqm search project \"test query\"",
        ],
        "the lines that are not run"
    );
    assert_eq!(run_lines.len(), 21, "{run_lines:#?}");

    let scene_dir = tempfile::tempdir().unwrap();
    scene(scene_dir.path());
    let has_jq = Command::new("jq").arg("--version").output().is_ok();
    for line in &run_lines {
        if line.contains("| jq") && !has_jq {
            eprintln!("jq is not installed: not run: {line}");
            continue;
        }
        let (root, status, screen) = run(line, scene_dir.path());
        assert!(status.success(), "{line}\n--- {status}:\n{screen}");
        let backups = root.path().join("backups");
        if line.contains("grep \"$(wqm --version | cut -d. -f1-2)\"") {
            assert!(screen.contains("  Version: 0.3.0"), "{line}: {screen}");
        }
        if line.contains("backup-$(wqm --version)") {
            let m = wqm::format::manifest::Manifest::load(
                &backups.join("backup-0.3.0/metadata/manifest.json"),
            )
            .unwrap_or_else(|e| panic!("{line}: {e}\n{screen}"));
            assert_eq!(m.description.as_deref(), Some("System backup at v0.3.0"));
        }
        if line.contains("xargs -I {} wqm backup validate {}") {
            assert!(
                screen.contains("Backup validation successful: ")
                    && screen.contains("/backups/daily/backup-20261127"),
                "{line}: {screen}"
            );
        }
        if line.contains("wqm backup restore") && !line.contains("--dry-run") {
            assert!(
                screen.contains("Restore completed from "),
                "{line}: {screen}"
            );
        }
        if line.contains("> /backups/catalog.json") {
            let catalog: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(backups.join("catalog.json")).unwrap())
                    .unwrap();
            assert_eq!(
                catalog.as_array().unwrap().len(),
                2,
                "my-backup and newer-backup"
            );
        }
    }
}
