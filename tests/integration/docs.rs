//! The user guide stays true: every flag, every config key, every error message it documents.

use std::fs;
use std::path::Path;

use clap::CommandFactory;

fn doc(rel: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// All Rust source of the crate, concatenated.
fn source() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

#[test]
fn every_command_has_a_page_with_every_flag() {
    let cli = wqm::cli::Cli::command();
    let backup = cli.find_subcommand("backup").unwrap();
    for command in backup.get_subcommands() {
        let page = doc(&format!("docs/commands/{}.md", command.get_name()));
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if [
                "help",
                "version",
                "config",
                "qdrant-url",
                "json",
                "verbose",
                "quiet",
            ]
            .contains(&long)
            {
                // Common to every command: documented once, in docs/commands/README.md.
                continue;
            }
            assert!(
                page.contains(&format!("`--{long}")),
                "docs/commands/{}.md does not document --{long}",
                command.get_name()
            );
        }
    }
    let common = doc("docs/commands/README.md");
    for long in ["config", "qdrant-url", "json", "verbose", "quiet"] {
        assert!(
            common.contains(&format!("`--{long}")),
            "docs/commands/README.md does not document --{long}"
        );
    }
    let reference = doc("docs/commands/reference.md");
    assert!(reference.contains("wqm completions") && reference.contains("wqm manpage"));
}

#[test]
fn the_configuration_reference_lists_exactly_the_real_keys() {
    let page = doc("docs/configuration.md");
    let known = wqm::config::schema_paths();
    for key in &known {
        assert!(
            page.contains(&format!("`{key}`")),
            "docs/configuration.md does not document {key}"
        );
    }
    let is_key = |s: &&str| {
        s.starts_with("backup.")
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
    };
    for documented in page.split('`').skip(1).step_by(2).filter(is_key) {
        assert!(
            known.iter().any(|k| k == documented),
            "docs/configuration.md documents {documented}, which does not exist"
        );
    }
}

#[test]
fn every_documented_message_is_one_wqm_prints() {
    let source = source();
    let page = doc("docs/troubleshooting.md");
    let headings: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .collect();
    assert!(headings.len() > 40, "{} messages", headings.len());
    let missing: Vec<String> = headings
        .iter()
        .flat_map(|heading| {
            heading
                .split('…')
                .map(str::trim)
                .filter(|f| f.len() > 2)
                .map(move |f| (heading, f))
        })
        .filter(|(_, fragment)| !source.contains(fragment))
        .map(|(heading, fragment)| format!("`{fragment}` (of `{heading}`)"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md has messages wqm does not print:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_lists_the_exit_codes_of_the_help() {
    let readme = doc("README.md");
    for line in wqm::exit::EXIT_CODES_HELP.lines().skip(1) {
        let code = line.split_whitespace().next().unwrap();
        assert!(
            readme.contains(&format!("| {code} |")),
            "README lacks exit code {code}"
        );
    }
}

/// The shell block of docs/reliability.md that restores a backup without wqm.
fn by_hand_recipe() -> String {
    let page = doc("docs/reliability.md");
    let section = page
        .split("## Restoring a backup by hand, without wqm")
        .nth(1)
        .expect("the by-hand section");
    section
        .split("```sh\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("its shell block")
        .to_string()
}

/// Runs the by-hand recipe as written on `backup`, against `url`, into `data_dir`.
fn restore_by_hand(backup: &Path, url: &str, data_dir: &Path) {
    let output = std::process::Command::new("bash")
        .args(["-c", &by_hand_recipe()])
        .env("BACKUP", backup)
        .env("QDRANT_URL", url)
        .env("QDRANT_API_KEY", "")
        .env("DATA_DIR", data_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("restored {}\n", backup.display())
    );
}

#[test]
fn the_by_hand_restore_recipe_runs_as_written() {
    use crate::qdrant_double::Double;
    let double = Double::start();
    let tmp = crate::restore::scene(&double, "");
    crate::restore::lose_everything(&double);
    fs::write(tmp.path().join("data/state.db"), b"not the backup's").unwrap();
    restore_by_hand(&tmp.path().join("b"), &double.url, &tmp.path().join("data"));
    double.assert_holds_the_fixtures();
    assert!(
        double.snapshots_left().is_empty(),
        "the uploaded copies are deleted"
    );
    same_database(&tmp.path().join("data/state.db"), &tmp.path().join("b"));

    // A damaged file stops it before anything is uploaded.
    let b = tmp.path().join("b");
    let db = b.join("sqlite/state.db.zst");
    let mut bytes = fs::read(&db).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&db, bytes).unwrap();
    double.state().requests.clear();
    let output = std::process::Command::new("bash")
        .args(["-c", &by_hand_recipe()])
        .env("BACKUP", &b)
        .env("QDRANT_URL", &double.url)
        .env("QDRANT_API_KEY", "")
        .env("DATA_DIR", tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(double.requests().is_empty(), "nothing was sent");
}

#[test]
#[cfg_attr(
    not(real_qdrant),
    ignore = "needs a real Qdrant: set WQM_TEST_QDRANT_BIN or WQM_TEST_QDRANT_URL"
)]
fn the_by_hand_restore_recipe_brings_a_real_workspace_back_exactly() {
    use crate::real_qdrant::{self, Server};
    let server = Server::start();
    real_qdrant::workspace(&server);
    let before = real_qdrant::fingerprint(&server);
    let t = crate::test::Test::new();
    fs::create_dir_all(t.join("data")).unwrap();
    crate::fixtures::state_db(&t.join("data/state.db"));
    let (_, tmp) = t
        .env("QDRANT_URL", &server.url)
        .env("WQM_DATA_DIR", "{TMP}/data")
        .args("backup create {TMP}/b")
        .stdout_with(|_| {})
        .run();
    server.delete_all_collections();
    fs::remove_file(tmp.path().join("data/state.db")).unwrap();
    restore_by_hand(&tmp.path().join("b"), &server.url, &tmp.path().join("data"));
    assert_eq!(real_qdrant::fingerprint(&server), before);
    assert_eq!(server.snapshots_left(), Vec::<String>::new());
    same_database(&tmp.path().join("data/state.db"), &tmp.path().join("b"));
}

/// `live` holds exactly the rows and schema of the state database in `backup` (`.dump`).
fn same_database(live: &Path, backup: &Path) {
    let copy = backup.with_extension("check.db");
    let bytes =
        zstd::decode_all(fs::File::open(backup.join("sqlite/state.db.zst")).unwrap()).unwrap();
    fs::write(&copy, bytes).unwrap();
    let (expected, actual) = (
        crate::test::sqlite_dump(&copy),
        crate::test::sqlite_dump(live),
    );
    assert!(expected.len() > 1000, "a real dump");
    assert!(
        actual == expected,
        "the restored database differs from the backup's"
    );
}

/// Every `wqm …` a message, hint or page names is a command this wqm has (no `wqm service …`).
#[test]
fn every_wqm_command_named_in_a_hint_or_page_exists() {
    let cli = wqm::cli::Cli::command();
    let mut texts = vec![("src".to_string(), source())];
    for page in [
        "README.md",
        "config.example.yaml",
        "docs/configuration.md",
        "docs/troubleshooting.md",
        "docs/operations.md",
    ] {
        texts.push((page.to_string(), doc(page)));
    }
    for entry in fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/commands")).unwrap()
    {
        let path = entry.unwrap().path();
        texts.push((
            path.display().to_string(),
            fs::read_to_string(&path).unwrap(),
        ));
    }
    let mut checked = 0;
    for (name, text) in &texts {
        for (at, _) in text.match_indices("`wqm ") {
            let rest = &text[at + 5..];
            let words: Vec<&str> = rest[..rest.find('`').unwrap()].split_whitespace().collect();
            let mut command = &cli;
            for word in words
                .iter()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
            {
                if !command.has_subcommands() {
                    break;
                }
                command = command.find_subcommand(word).unwrap_or_else(|| {
                    panic!(
                        "{name} names `wqm {}`: `{word}` is no command of this wqm",
                        words.join(" ")
                    )
                });
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} commands named");
}
