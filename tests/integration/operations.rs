//! The recipes of `docs/operations.md` and `contrib/`, run as written (with the path of wqm
//! replaced by this build's), against the Qdrant test double.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::fixtures::{self, Spec};
use crate::qdrant_double::Double;
use crate::test::Test;

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const SERVICE: &str = include_str!("../../contrib/wqm-backup.service");
const TIMER: &str = include_str!("../../contrib/wqm-backup.timer");
const INSTALLED: &str = "/usr/local/bin/wqm";

fn wqm() -> &'static str {
    env!("CARGO_BIN_EXE_wqm")
}

/// The first line of the fenced block of `language` that follows `after` in the operations guide.
fn block_line(language: &str, after: &str) -> String {
    let from = OPERATIONS
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in docs/operations.md"));
    let fence = format!("```{language}\n");
    let start = OPERATIONS[from..].find(&fence).unwrap() + from + fence.len();
    OPERATIONS[start..].lines().next().unwrap().to_string()
}

/// Runs a shell line with this build's wqm first on PATH, in `home`, against `double`.
fn shell(line: &str, home: &Path, double: &Double) -> Output {
    let bin_dir = Path::new(wqm()).parent().unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(line.replace(INSTALLED, wqm()))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("HOME", home)
        .envs(crate::test::NO_DAEMON)
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", home.join("data"))
        .env("WQM_BACKUP__DEFAULT_BACKUP_DIRECTORY", home.join("backups"))
        .output()
        .unwrap()
}

fn backups_in(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
    })
}

#[test]
fn the_nightly_cron_line_backs_up_and_prunes_quietly() {
    let double = Double::start();
    let home = tempfile::tempdir().unwrap();
    let line = block_line("cron", "## A nightly cron line");
    let command = line.splitn(6, ' ').nth(5).unwrap();
    for run in 1..=3 {
        let output = shell(command, home.path(), &double);
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "",
            "quiet: cron mails nothing"
        );
        assert_eq!(String::from_utf8_lossy(&output.stderr), "");
        // Backup names have one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(
        backups_in(&home.path().join("backups")),
        2,
        "--keep-daily keeps the newest of the day and, while it has room, the oldest backup (as restic 0.16); backup.retention_days does not join explicit rules"
    );
    assert!(double.snapshots_left().is_empty());
}

fn exec_lines(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| {
            l.strip_prefix("ExecStart=")
                .or_else(|| l.strip_prefix("ExecStartPost="))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_service_runs_and_the_units_verify() {
    let double = Double::start();
    let home = tempfile::tempdir().unwrap();
    let commands = exec_lines(SERVICE);
    assert_eq!(commands.len(), 2);
    for command in &commands {
        let output = shell(command, home.path(), &double);
        assert!(
            output.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(backups_in(&home.path().join("backups")), 1);

    let units = tempfile::tempdir().unwrap();
    fs::write(
        units.path().join("wqm-backup.service"),
        SERVICE.replace(INSTALLED, wqm()),
    )
    .unwrap();
    fs::write(units.path().join("wqm-backup.timer"), TIMER).unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(units.path().join("wqm-backup.timer"))
        .arg(units.path().join("wqm-backup.service"))
        .output()
    {
        Ok(output) => assert!(
            output.status.success() && output.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => {
            eprintln!("systemd-analyze is not installed: the unit files were run, not verified")
        }
    }
}

#[test]
fn ci_validation_fails_on_the_first_bad_backup() {
    let double = Double::start();
    let t = Test::new();
    fixtures::backup(&t.join("backups/good"), &Spec::default());
    let home = t.join("");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/validate-all.sh");
    let run = |line: &str| shell(line, &home, &double);

    let output = run(&format!("{} {}/backups", script.display(), home.display()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("1 backup(s) valid in {}/backups\n", home.display())
    );

    fixtures::backup(&t.join("backups/bad"), &Spec::default());
    fixtures::flip_byte(&t.join("backups/bad/collections/small-named.snapshot"));
    let output = run(&format!("{} {}/backups", script.display(), home.display()));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains(&format!("bad backup: {}/backups/bad\n", home.display())));

    let one_liner = block_line("sh", "The core of it")
        .replace("/backups", &format!("{}/backups", home.display()));
    let output = run(&one_liner);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("bad backup: "));
}

#[test]
fn completions_and_the_man_page_are_generated() {
    Test::new()
        .args("completions bash")
        .stdout_with(|o| assert!(o.contains("_wqm()") && o.contains("prune"), "{o}"))
        .run();
    Test::new()
        .args("completions zsh")
        .stdout_with(|o| assert!(o.starts_with("#compdef wqm"), "{o}"))
        .run();
    Test::new()
        .args("completions fish")
        .stdout_with(|o| assert!(o.contains("complete -c wqm"), "{o}"))
        .run();
    Test::new()
        .args("manpage")
        .stdout_with(|o| {
            assert!(
                o.contains(".TH wqm 1") && o.contains("Exit codes:"),
                "{}",
                &o[..o.len().min(400)]
            )
        })
        .run();
    Test::new()
        .args("completions tcsh")
        .status(2)
        .stderr_with(|e| {
            assert!(
                e.starts_with("error: invalid value 'tcsh' for '<SHELL>'"),
                "{e}"
            )
        })
        .run();
}
