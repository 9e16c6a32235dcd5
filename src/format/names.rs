//! The names a backup carries — collection and alias names, database names, stored file paths —
//! and the rules they must meet before any of them becomes part of a path, a URL or an upload
//! file name. A backup is read as hostile input: every name in a manifest is checked here when
//! the manifest is parsed (`Manifest::from_json`), and the places that build paths take the
//! checked forms (`Database`, `EntryPath`).

use std::path::{Path, PathBuf};

/// Longest collection or alias name (Qdrant's own limit), and longest path component, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest `files[].path`, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a name was refused.
pub type Reason = &'static str;

/// A name as a message may show it: control characters and quotes escaped, cut when overlong.
pub fn shown(name: &str) -> String {
    let escaped: String = name.escape_debug().collect();
    match escaped.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// One path component's rules: what no name may contain, whatever it names.
fn check_component(name: &str) -> Result<(), Reason> {
    if name.is_empty() {
        Err("is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Err("is longer than 255 bytes")
    } else if name.contains('/') || name.contains('\\') {
        Err("contains a path separator")
    } else if name.contains('\0') {
        Err("contains NUL")
    } else if name.chars().any(char::is_control) {
        Err("contains a control character")
    } else if name.starts_with('.') {
        Err("starts with `.`")
    } else {
        Ok(())
    }
}

/// A collection or alias name: one safe path component, without `..` anywhere.
pub fn check_collection_name(name: &str) -> Result<(), Reason> {
    check_component(name)?;
    if name.contains("..") {
        return Err("contains `..`");
    }
    Ok(())
}

/// A `files[].path`: relative, `/`-separated, in the backup layout
/// (`collections/<file>`, `collections/<dir>/<file>`, `sqlite/<file>`, `config/<file>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPath<'a>(&'a str);

impl<'a> EntryPath<'a> {
    pub fn parse(path: &'a str) -> Result<Self, Reason> {
        if path.len() > MAX_PATH_BYTES {
            return Err("is longer than 1024 bytes");
        }
        if path.starts_with('/') || Path::new(path).is_absolute() {
            return Err("is an absolute path");
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| *p == ".." || *p == ".") {
            return Err("leaves the backup directory");
        }
        for part in &parts {
            check_component(part)?;
        }
        let in_layout = matches!(
            parts.as_slice(),
            ["collections", _] | ["collections", _, _] | ["sqlite", _] | ["config", _]
        );
        if !in_layout {
            return Err("is not in the backup layout (`collections/`, `sqlite/`, `config/`)");
        }
        Ok(EntryPath(path))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A database a backup may hold. The live file it replaces comes from the settings, never from
/// the manifest: `databases[].name` only chooses one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Database {
    State,
    Search,
    Graph,
}

impl Database {
    pub const ALL: [Database; 3] = [Database::State, Database::Search, Database::Graph];

    pub fn parse(name: &str) -> Result<Self, Reason> {
        Database::ALL
            .into_iter()
            .find(|d| d.file_name() == name)
            .ok_or("is not a database wqm restores (`state.db`, `search.db`, `graph.db`)")
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Database::State => "state.db",
            Database::Search => "search.db",
            Database::Graph => "graph.db",
        }
    }

    /// The live file: the configured state database, or its sibling of this name.
    pub fn live_path(self, state_db: &Path) -> PathBuf {
        match self {
            Database::State => state_db.to_path_buf(),
            other => state_db
                .parent()
                .unwrap_or(Path::new("."))
                .join(other.file_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn collection_names() {
        for ok in ["projects", "my-notes_2", "a.b", "é-ü", &"x".repeat(255)] {
            check_collection_name(ok).unwrap();
        }
        for bad in [
            "",
            "a/b",
            "a\\b",
            "..",
            ".",
            "a..b",
            "nul\0",
            ".hidden",
            "tab\there",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
            &"x".repeat(256),
        ] {
            assert!(check_collection_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entry_paths() {
        for ok in [
            "collections/a.snapshot.zst",
            "collections/a/shard-0.snapshot",
            "sqlite/state.db",
            "config/config.yaml",
        ] {
            EntryPath::parse(ok).unwrap();
        }
        for bad in [
            "/etc/passwd",
            "../x",
            "collections/../../x",
            "collections/./a",
            "collections//a",
            "collections/a\\b",
            "",
            "./a",
            "a\0b",
            "metadata/manifest.json",
            "collections",
            "sqlite/a/b",
            "collections/a/b/c",
            "elsewhere/a",
            "collections/.hidden",
            "collections/a\nb",
        ] {
            assert!(EntryPath::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("collections/{}", "a".repeat(1100));
        assert_eq!(
            EntryPath::parse(&long).unwrap_err(),
            "is longer than 1024 bytes"
        );
    }

    #[test]
    fn databases_map_to_the_configured_paths_only() {
        let state = Path::new("/data/wq/state.db");
        assert_eq!(Database::parse("state.db").unwrap().live_path(state), state);
        assert_eq!(
            Database::parse("graph.db").unwrap().live_path(state),
            Path::new("/data/wq/graph.db")
        );
        for bad in [
            "../../victim/precious.txt",
            "/tmp/x",
            "state.db/../x",
            "other.db",
            "",
        ] {
            assert!(Database::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shown_names_escape_control_characters_and_are_cut() {
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown(&"x".repeat(100)).chars().count(), 81);
    }

    proptest! {
        /// Whatever a name is, an accepted one stays a single component inside its directory.
        #[test]
        fn accepted_names_never_leave_their_directory(name in "\\PC{0,40}|[./\\\\a\u{0}-\u{1f}]{0,8}") {
            if check_collection_name(&name).is_ok() {
                let joined = Path::new("/root/collections").join(&name);
                prop_assert_eq!(joined.parent(), Some(Path::new("/root/collections")));
                prop_assert!(!name.chars().any(char::is_control));
            }
        }

        #[test]
        fn accepted_paths_stay_inside_the_backup(path in "[a-z./\\\\\u{0}]{0,30}") {
            if let Ok(p) = EntryPath::parse(&path) {
                let joined = Path::new("/root").join(p.as_str());
                prop_assert!(joined.starts_with("/root"));
                prop_assert!(joined.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::RootDir)));
            }
        }
    }
}
