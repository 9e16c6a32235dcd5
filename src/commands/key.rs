//! `wqm backup key list|add|remove|passwd DIR`: the passwords of an encrypted repository (see
//! `repo::Unlocked`). The password is checked before anything changes; no data is
//! re-encrypted.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::{backend_at, new_password, password, Asking};
use crate::cli::KeyCommand;
use crate::config::{Env, Settings};
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::repo::{self, KeyInfo, Unlocked};

pub async fn run(
    command: &KeyCommand,
    (settings, env, password_file): (&Settings, &Env, Option<&Path>),
    ui: &Ui,
) -> Result<ExitCode> {
    let args = command.key_args();
    let (backend, shown) = backend_at(&args.directory, settings, false).await?;
    let config = repo::encrypted_config(&*backend, &shown).await?;
    let opening = password(password_file, env, settings, &shown, Asking::Existing, ui)?;
    let mut keys = Unlocked::open(backend, &config, &opening).await?;
    drop(opening);
    for unreadable in &keys.unreadable {
        ui.warn(unreadable);
    }
    let params = repo::new_key_params();
    match command {
        KeyCommand::List(_) => {
            let list = keys.keys();
            if ui.json {
                ui.json(
                    &json!({ "repository": shown, "keys": list, "unreadable": keys.unreadable }),
                );
            } else {
                for key in &list {
                    ui.line(line(key));
                }
                ui.line(format!(
                    "{} key(s) in `{shown}`; * marks the one this password opened",
                    list.len()
                ));
            }
        }
        KeyCommand::Add(args) => {
            let new = new_password(args.new_password_file.as_deref(), &shown)?;
            let added = keys.add(&new, params).await?;
            report(
                ui,
                &shown,
                "added",
                &added,
                format!("Added key `{}` to `{shown}`", added.key_id),
            );
        }
        KeyCommand::Remove(args) => {
            let removed = keys.remove(&args.id).await?;
            report(
                ui,
                &shown,
                "removed",
                &removed,
                format!("Removed key `{}` from `{shown}`", removed.key_id),
            );
        }
        KeyCommand::Passwd(args) => {
            let new = new_password(args.new_password_file.as_deref(), &shown)?;
            let (added, removed) = keys.change_password(&new, params).await?;
            if ui.json {
                ui.json(&json!({ "repository": shown, "added": added, "removed": removed }));
            } else {
                ui.line(format!(
                    "Changed the password of `{shown}`: key `{}` replaces key `{}`",
                    added.key_id, removed.key_id
                ));
            }
        }
    }
    Ok(ExitCode::Success)
}

fn report(ui: &Ui, shown: &str, what: &str, key: &KeyInfo, text: String) {
    if ui.json {
        ui.json(&json!({ "repository": shown, what: key }));
    } else {
        ui.line(text);
    }
}

/// `* <id>  <user>@<host>  <created>  argon2id m=… KiB t=… p=…`
fn line(key: &KeyInfo) -> String {
    let who = match &key.username {
        Some(user) => format!("{user}@{}", key.host),
        None => key.host.clone(),
    };
    format!(
        "{} {}  {who}  {}  argon2id m={} KiB t={} p={}",
        if key.current { "*" } else { " " },
        key.key_id,
        key.created,
        key.kdf.memory_kib,
        key.kdf.iterations,
        key.kdf.parallelism
    )
}
