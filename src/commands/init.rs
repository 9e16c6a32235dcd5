//! `wqm backup init DIR [--encrypt]`: make a repository (see `repo::init`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tokio::runtime::Handle;

use super::{backend_at, password, Asking};
use crate::backend::Location;
use crate::cli::InitArgs;
use crate::config::{Env, Settings};
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::repo;
use crate::store::{self, Remote, Repository};

pub async fn run(
    args: &InitArgs,
    (settings, env, password_file): (&Settings, &Env, Option<&Path>),
    ui: &Ui,
    handle: &Handle,
) -> Result<ExitCode> {
    if password_file.is_some() && !args.encrypt {
        return Err(crate::exit::Failure::new(
            ExitCode::Usage,
            "`--password-file` is the password of an encrypted repository: `init` makes one only with `--encrypt`",
        )
        .with_hint("add `--encrypt`, or leave `--password-file` out")
        .into());
    }
    let (backend, shown) = backend_at(&args.directory, settings, true).await?;
    // What is there already, through the one scanner of a backups directory.
    let repository = match super::location(&args.directory)? {
        Location::Local(path) => Repository::Local(path),
        Location::S3 { .. } => {
            Repository::Remote(Remote::new(backend.clone(), handle.clone(), shown.clone()))
        }
    };
    let scan = tokio::task::block_in_place(|| store::scan_at(&repository))
        .with_context(|| format!("cannot look into `{shown}`"))?;
    // Refused where there is a repository or backups already, before a password is asked.
    repo::check_free(&*backend, &shown, &scan).await?;
    let new = match args.encrypt {
        true => Some(password(
            password_file,
            env,
            settings,
            &shown,
            Asking::New,
            ui,
        )?),
        false => None,
    };
    let params = repo::new_key_params();
    let made = repo::init(&*backend, &shown, new.as_ref().map(|p| (p, params))).await?;
    drop(new);
    if ui.json {
        ui.json(&json!({
            "repository": shown,
            "encrypted": made.config.encrypted,
            "version": made.config.version,
            "key": made.key.as_ref().map(|k| json!({"key_id": k.key_id(), "kdf": k.params()})),
        }));
    } else if let Some(key) = &made.key {
        let kdf = key.params();
        ui.line(format!(
            "Created an encrypted repository at `{shown}`: key `{}` (Argon2id, m={} KiB, t={}, p={})",
            key.key_id(),
            kdf.memory_kib,
            kdf.iterations,
            kdf.parallelism
        ));
        ui.line("Keep the password safe: without it no backup in this repository can be read, by anyone");
    } else {
        ui.line(format!("Created a repository at `{shown}` (not encrypted)"));
    }
    Ok(ExitCode::Success)
}
