//! Where things are: the config file, workspace-qdrant's data directory and its state database.

use std::path::{Path, PathBuf};

use super::env::{Env, Overrides};
use super::parse::ConfigError;

/// `--config` > `WQM_CONFIG_PATH` > `<config dir>/config.yaml` > `<config dir>/config.yml`, where
/// the config dir is `WQM_CONFIG_DIR` > `$XDG_CONFIG_HOME/workspace-qdrant` > `~/.config/workspace-qdrant`.
/// No file at the default places means defaults; an explicitly named file must exist.
pub fn discover_config_file(
    env: &Env,
    overrides: &Overrides,
) -> Result<Option<PathBuf>, ConfigError> {
    let explicit = overrides
        .config
        .clone()
        .map(|p| (p, "--config"))
        .or_else(|| env.path("WQM_CONFIG_PATH").map(|p| (p, "WQM_CONFIG_PATH")));
    if let Some((path, from)) = explicit {
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(ConfigError::NotFound { path, from })
        };
    }
    let Some(dir) = config_dir(env) else {
        return Ok(None);
    };
    Ok(["config.yaml", "config.yml"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file()))
}

/// `WQM_CONFIG_DIR` > `$XDG_CONFIG_HOME/workspace-qdrant` > `~/.config/workspace-qdrant`.
pub(super) fn config_dir(env: &Env) -> Option<PathBuf> {
    env.path("WQM_CONFIG_DIR")
        .or_else(|| {
            env.path("XDG_CONFIG_HOME")
                .map(|xdg| xdg.join("workspace-qdrant"))
        })
        .or_else(|| {
            env.home()
                .ok()
                .map(|home| home.join(".config/workspace-qdrant"))
        })
}

/// workspace-qdrant's data directory (`WQM_DATA_DIR` > `$XDG_DATA_HOME/workspace-qdrant` >
/// `~/.local/share/workspace-qdrant`) and its state database (`WQM_DATABASE_PATH` >
/// `state.db` in the data directory).
pub(super) fn data_paths(env: &Env) -> Result<(PathBuf, PathBuf), ConfigError> {
    let data_dir = match env.path("WQM_DATA_DIR") {
        Some(dir) => dir,
        None => match env.path("XDG_DATA_HOME") {
            Some(xdg) => xdg.join("workspace-qdrant"),
            None => env.home()?.join(".local/share/workspace-qdrant"),
        },
    };
    let state_db = env
        .path("WQM_DATABASE_PATH")
        .unwrap_or_else(|| data_dir.join("state.db"));
    Ok((data_dir, state_db))
}

/// `~/x` → `$HOME/x`.
pub(super) fn expand_tilde(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{load_with, write};
    use super::*;

    #[test]
    fn discovers_the_config_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let home = d.join("home");
        let env_home = [("HOME", home.to_str().unwrap())];
        assert_eq!(
            discover_config_file(&Env::from_pairs(env_home), &Overrides::default()).unwrap(),
            None
        );

        let yml = write(&home, ".config/workspace-qdrant/config.yml", "");
        assert_eq!(
            discover_config_file(&Env::from_pairs(env_home), &Overrides::default()).unwrap(),
            Some(yml)
        );
        let yaml = write(&home, ".config/workspace-qdrant/config.yaml", "");
        assert_eq!(
            discover_config_file(&Env::from_pairs(env_home), &Overrides::default()).unwrap(),
            Some(yaml)
        );

        let xdg = d.join("xdg");
        let xdg_file = write(&xdg, "workspace-qdrant/config.yaml", "");
        let env = Env::from_pairs([
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
        ]);
        assert_eq!(
            discover_config_file(&env, &Overrides::default()).unwrap(),
            Some(xdg_file)
        );

        let own = d.join("own");
        let own_file = write(&own, "config.yml", "");
        let env = Env::from_pairs([
            ("HOME", home.to_str().unwrap()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
            ("WQM_CONFIG_DIR", own.to_str().unwrap()),
        ]);
        assert_eq!(
            discover_config_file(&env, &Overrides::default()).unwrap(),
            Some(own_file)
        );

        let named = write(d, "named.yaml", "");
        let env = Env::from_pairs([
            ("HOME", home.to_str().unwrap()),
            ("WQM_CONFIG_PATH", named.to_str().unwrap()),
        ]);
        assert_eq!(
            discover_config_file(&env, &Overrides::default()).unwrap(),
            Some(named.clone())
        );
        let flag = write(d, "flag.yaml", "");
        let overrides = Overrides {
            config: Some(flag.clone()),
            ..Overrides::default()
        };
        assert_eq!(discover_config_file(&env, &overrides).unwrap(), Some(flag));

        let env = Env::from_pairs([("WQM_CONFIG_PATH", "/nonexistent/c.yaml")]);
        let err = discover_config_file(&env, &Overrides::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file `/nonexistent/c.yaml` (from WQM_CONFIG_PATH) does not exist"
        );
    }

    #[test]
    fn state_db_discovery() {
        let s = load_with(
            &[("HOME", "/h"), ("XDG_DATA_HOME", "/xdg")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.state_db, Path::new("/xdg/workspace-qdrant/state.db"));
        let s = load_with(
            &[
                ("HOME", "/h"),
                ("XDG_DATA_HOME", "/xdg"),
                ("WQM_DATA_DIR", "/data"),
            ],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.data_dir, Path::new("/data"));
        assert_eq!(s.state_db, Path::new("/data/state.db"));
        let s = load_with(
            &[("WQM_DATA_DIR", "/data"), ("WQM_DATABASE_PATH", "/db/s.db")],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.state_db, Path::new("/db/s.db"));
        assert!(matches!(
            load_with(&[], Overrides::default()),
            Err(ConfigError::NoHome)
        ));
    }
}
