//! What only a terminal shows: progress bars that appear and end cleanly, the restore prompt
//! (`y`, `n`, Enter, Ctrl-C), on a real pseudo-terminal against the Qdrant test double, and the
//! hidden password prompt of encrypted repositories.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::pty::Terminal;
use crate::qdrant_double::{Double, Faults};
use crate::repo::{files, holds_none, FIRST, SECOND};
use crate::restore::{lose_everything, safety_backups, scene, uploads};

fn restore_on_a_terminal(tmp: &Path, double: &Double) -> Terminal {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wqm"));
    command
        .args(["backup", "restore"])
        .arg(tmp.join("b"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", tmp.join("home"))
        .env("TERM", "xterm")
        .env("QDRANT_URL", &double.url)
        .env("WQM_DATA_DIR", tmp.join("data"))
        .current_dir(tmp);
    Terminal::spawn(command)
}

const PROMPT: &str = "Restore 2 collection(s) and the state database from ";

#[test]
fn y_restores_and_the_progress_bars_appear_and_end_cleanly() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    // Slow uploads, so the bars are drawn more than once.
    double.state().faults = Faults {
        upload_delay: Some(Duration::from_millis(700)),
        ..Faults::default()
    };
    let mut terminal = restore_on_a_terminal(tmp.path(), &double);
    terminal.wait_for("[y/N]");
    terminal.type_keys(b"y");
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{screen}");
    assert!(screen.contains(PROMPT), "{screen}");
    assert!(
        screen.contains("? yes\r\n"),
        "the answer is shown: {screen}"
    );
    // The upload bars were drawn, full at the end...
    for (name, size) in [("small-named", "201.50 KiB"), ("small-plain", "178.50 KiB")] {
        let full = format!("`{name}`            [==============================] {size}/{size} ");
        assert!(screen.contains(&full), "{full:?} never drawn:\n{screen:?}");
    }
    // ...and every bar line was cleared before anything else was printed on the terminal.
    let mut bars = 0;
    for (at, _) in screen.match_indices(" eta ") {
        let line = &screen[at..screen[at..].find('\n').map_or(screen.len(), |n| at + n)];
        assert!(
            line.contains("\r\u{1b}[2K"),
            "a bar left behind: {line:?}\n{screen:?}"
        );
        bars += 1;
    }
    assert!(bars >= 4, "{screen:?}");
    let results = &screen[screen.find("✓ safety backup: ").unwrap()..];
    assert!(
        !results.contains(" eta "),
        "bars after the results: {results:?}"
    );
    assert!(
        results.ends_with("s\r\n") && results.contains("Restore completed from "),
        "{results:?}"
    );
    assert_eq!(uploads(&double).len(), 2);
}

#[test]
fn n_and_enter_cancel_and_change_nothing() {
    for keys in [&b"n"[..], b"\r"] {
        let double = Double::start();
        let tmp = scene(&double, "");
        lose_everything(&double);
        let mut terminal = restore_on_a_terminal(tmp.path(), &double);
        terminal.wait_for("[y/N]");
        terminal.type_keys(keys);
        let (status, screen) = terminal.finish();
        assert_eq!(status.code(), Some(1), "{keys:?}: {screen}");
        assert!(screen.contains("? no\r\n"), "{screen:?}");
        assert!(
            screen.contains("wqm: error: Restore cancelled; nothing was changed"),
            "{screen}"
        );
        assert!(uploads(&double).is_empty());
        assert!(safety_backups(tmp.path()).is_empty());
    }
}

#[test]
fn ctrl_c_at_the_prompt_changes_nothing() {
    let double = Double::start();
    let tmp = scene(&double, "");
    lose_everything(&double);
    let mut terminal = restore_on_a_terminal(tmp.path(), &double);
    terminal.wait_for("[y/N]");
    terminal.type_keys(b"\x03");
    let (status, screen) = terminal.finish();
    assert_eq!(status.code(), Some(130), "{screen}");
    assert!(
        screen.ends_with("wqm: error: Restore cancelled (Ctrl-C); nothing was changed\r\n"),
        "{screen:?}"
    );
    // The prompt hid the cursor; it is shown again.
    let hidden = screen.rfind("\u{1b}[?25l").unwrap();
    assert!(screen[hidden..].contains("\u{1b}[?25h"), "{screen:?}");
    assert!(uploads(&double).is_empty());
    assert!(safety_backups(tmp.path()).is_empty());
}

#[test]
fn a_copy_shows_each_backups_bar_on_a_terminal_and_clears_it() {
    let double = Double::start();
    let (_, tmp) =
        crate::incremental::night(crate::incremental::workspace(), &double.url, "n1", "");
    let home = tmp.path();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wqm"));
    command
        .args(["backup", "copy"])
        .arg(home.join("backups"))
        .arg(home.join("offsite"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.join("home"))
        .env("TERM", "xterm")
        // Held a moment before its commit, every byte but the manifest's counted: drawn.
        .env("WQM_FAILPOINTS", "copy:before-manifest=wait")
        .env("WQM_FAILPOINT_DIR", home)
        .current_dir(home);
    let terminal = Terminal::spawn(command);
    terminal.wait_for("copying `n1`");
    let marker = home.join("copy-before-manifest");
    while !marker.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(marker).unwrap();
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("Copied `n1`: 5 file(s), "), "{screen}");
    // The bar was cleared before the result line was printed.
    let bar = screen.rfind("copying `n1`").unwrap();
    let result = screen.find("Copied `n1`").unwrap();
    assert!(bar < result, "{screen:?}");
    assert!(
        screen[bar..result].contains("\r\u{1b}[2K"),
        "the bar was left behind: {screen:?}"
    );
}

/// Waits until `text` has appeared `times` times on the terminal.
fn wait_for_count(terminal: &Terminal, text: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while terminal.screen().matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "{text:?} ×{times}:\n{}",
            terminal.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn on_a_terminal_a_new_password_is_asked_twice_and_never_shown() {
    let tmp = tempfile::Builder::new()
        .prefix("wqm-test-")
        .tempdir()
        .unwrap();
    let on_terminal = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wqm"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", tmp.path())
            .env("TERM", "xterm")
            .env("WQM_TEST_FAST_KDF", "1")
            .current_dir(tmp.path());
        Terminal::spawn(command)
    };
    let mut terminal = on_terminal(&["backup", "init", "r", "--encrypt"]);
    terminal.wait_for("New password for `r`");
    terminal.type_keys(format!("{FIRST}\r").as_bytes());
    wait_for_count(&terminal, "Repeat it", 1);
    terminal.type_keys(format!("{SECOND}\r").as_bytes());
    // Told, and asked again from the start.
    wait_for_count(&terminal, "The passwords do not match; again", 1);
    wait_for_count(&terminal, "New password for `r`", 2);
    terminal.type_keys(format!("{FIRST}\r").as_bytes());
    wait_for_count(&terminal, "Repeat it", 2);
    terminal.type_keys(format!("{FIRST}\r").as_bytes());
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains("Created an encrypted repository at `r`"),
        "{screen}"
    );
    assert!(
        !screen.contains(FIRST) && !screen.contains(SECOND),
        "{screen}"
    );
    // The typed password opens it; asked once.
    let mut terminal = on_terminal(&["backup", "key", "list", "r"]);
    terminal.wait_for("Password for `r`");
    terminal.type_keys(format!("{FIRST}\r").as_bytes());
    let (status, screen) = terminal.finish();
    assert!(status.success(), "{screen}");
    assert!(screen.contains("1 key(s) in `r`"), "{screen}");
    assert!(
        !screen.contains("Repeat it") && !screen.contains(FIRST),
        "{screen}"
    );
    holds_none(&files(&tmp.path().join("r")), &[FIRST, SECOND]);

    // Ctrl-C at the prompt: exit 130, nothing made, and the terminal echoes again.
    let mut terminal = on_terminal(&["backup", "init", "other", "--encrypt"]);
    terminal.wait_for("New password for `other`");
    let deadline = Instant::now() + Duration::from_secs(30);
    while terminal.echoes() {
        assert!(Instant::now() < deadline, "the prompt never hid the input");
        std::thread::sleep(Duration::from_millis(20));
    }
    terminal.type_keys(b"abc\x03");
    terminal.wait_for("nothing was changed");
    assert!(terminal.echoes(), "{}", terminal.screen());
    let (status, screen) = terminal.finish();
    assert_eq!(status.code(), Some(130), "{screen}");
    assert!(
        screen
            .contains("wqm: error: cancelled (Ctrl-C) at the password prompt; nothing was changed"),
        "{screen}"
    );
    assert!(!tmp.path().join("other/.wqm-repo").exists());
}
