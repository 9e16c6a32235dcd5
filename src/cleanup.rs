//! Cleaning up after runs that died: every `create`, `restore`, `prune` and `wqm backup
//! cleanup` looks for working directories whose lock nobody holds (see `workdir`), deletes on
//! the Qdrant server exactly what their journals say was made and not removed, reports what a
//! dead restore had done and how to go back, and removes the directory. What a dead
//! `create --incremental` left in the chunk store goes too (`chunks::remove_dead`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend::local::LocalBackend;
use crate::backend::{Kind, Name};
use crate::config::Settings;
use crate::format::layout;
use crate::qdrant::{Client, QdrantError, Scope};
use crate::store::chunks;
use crate::workdir::{self, ObjectKind, Outstanding, Record};

/// Working directories of `create` (beside the backups) and of `restore` (in the data dir).
pub const RUN_SUFFIXES: [&str; 2] = [layout::STAGING_SUFFIX, RESTORE_WORK_DIR];
/// `<data dir>/.wqm-restore`: a restore's staged databases and journal.
pub const RESTORE_WORK_DIR: &str = ".wqm-restore";
/// Lock files beside each backup, left by wqm 0.3.0 before locks moved into staging dirs.
const LEGACY_LOCK_SUFFIX: &str = ".wqm-lock";
/// A snapshot asked for this recently may still be in the making: keep its journal and look
/// again on the next run instead of concluding it was never made.
const STILL_IN_THE_MAKING_SECONDS: f64 = 600.0;
/// Qdrant names snapshots by the second it started them; allow this much around the request.
const NAME_TIME_SLACK_SECONDS: f64 = 3.0;

/// What was found and done for one dead run.
#[derive(Clone, Debug, Serialize)]
pub struct Cleaned {
    pub path: PathBuf,
    /// `create` or `restore`, and what it worked on.
    pub run: String,
    /// Each thing done or left, one line each.
    pub lines: Vec<String>,
    /// Everything is gone (false: the directory stays so a later run can finish).
    pub complete: bool,
    /// The operator may have to act on it (what a dead run did on a server or to the live
    /// system); a dead run's unnamed chunks, removed, are only worth a note.
    #[serde(skip)]
    pub needs_action: bool,
}

impl Cleaned {
    /// One paragraph for the operator.
    pub fn report(&self) -> String {
        let mut text = format!(
            "cleaned up after a dead run: {}, in `{}`:",
            self.run,
            self.path.display()
        );
        for line in &self.lines {
            text.push_str("\n  ");
            text.push_str(line);
        }
        if !self.complete {
            text.push_str(&format!(
                "\n  not finished; `{}` stays for the next run (or `wqm backup cleanup`)",
                self.path.display()
            ));
        }
        text
    }
}

/// Cleans up every dead run in each of `dirs`, and removes wqm 0.3.0's stale lock files.
/// Runs that left nothing to do or tell (no server object, no restore step) are removed
/// without a report.
pub async fn dead_runs(dirs: &[&Path], settings: &Settings) -> Vec<Cleaned> {
    let mut cleaned = Vec::new();
    for dir in dirs {
        remove_legacy_locks(dir);
        cleaned.extend(chunks::remove_dead(dir).into_iter().map(chunk_leftovers));
        let Ok(dead) = workdir::dead_in(dir, &RUN_SUFFIXES) else {
            continue;
        };
        for path in dead {
            if let Some(done) = clean(&path, settings).await {
                if !done.lines.is_empty() || !done.complete {
                    cleaned.push(done);
                }
            }
        }
    }
    cleaned
}

/// Cleans one dead run's directory; `None` when another process got to it first.
async fn clean(path: &Path, settings: &Settings) -> Option<Cleaned> {
    // Whoever holds the dead run's lock cleans it; a second cleaner leaves it alone.
    let _lock = workdir::take_dead(path)?;
    let records = workdir::read_journal(path).unwrap_or_default();
    let run = records
        .iter()
        .find_map(|r| match r {
            Record::Run {
                command,
                path,
                pid,
                started,
            } => Some(format!(
                "`{command} {}` (pid {pid}, started {})",
                path.display(),
                crate::format::manifest::format_timestamp(*started)
            )),
            _ => None,
        })
        .unwrap_or_else(|| "wqm run".to_string());
    let mut lines = Vec::new();
    let mut complete = true;
    for object in workdir::outstanding(&records) {
        let (line, removed) = remove(&object, settings).await;
        lines.push(line);
        complete &= removed;
    }
    lines.extend(restore_report(&records));
    if complete {
        if let Err(e) = crate::store::remove_dir(path) {
            lines.push(format!("cannot remove `{}`: {e}", path.display()));
            complete = false;
        }
    }
    Some(Cleaned {
        path: path.to_path_buf(),
        run,
        lines,
        complete,
        needs_action: true,
    })
}

/// What a dead `create --incremental` left in (or beside) the chunk store, now removed: its
/// temporary chunks (never named, so no backup needs them), or a store it was making.
fn chunk_leftovers(removed: chunks::Removed) -> Cleaned {
    let making = removed
        .path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(chunks::STORE_DIR));
    let line = if making {
        "removed the chunk store it was making".to_string()
    } else {
        format!(
            "removed its temporary directory in the chunk store: {} unnamed chunk file(s), {} bytes, that no backup needs",
            removed.files, removed.bytes
        )
    };
    Cleaned {
        path: removed.path,
        run: "`create --incremental`".to_string(),
        lines: vec![line],
        complete: true,
        needs_action: false,
    }
}

/// What a dead restore had changed, and the way back.
fn restore_report(records: &[Record]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut safety = None;
    let mut daemon_stopped = false;
    for record in records {
        match record {
            Record::Done { text } => lines.push(format!("the restore had done: {text}")),
            Record::SafetyBackup { path } => safety = Some(path.clone()),
            Record::DaemonStopped => daemon_stopped = true,
            Record::DaemonStarted => daemon_stopped = false,
            _ => {}
        }
    }
    if daemon_stopped {
        lines.push(
            "the restore had stopped the daemon and did not start it again: start it".to_string(),
        );
    }
    let changed = records
        .iter()
        .any(|r| matches!(r, Record::Done { .. } | Record::UploadStarted { .. }));
    if changed {
        lines.push(match safety {
            Some(path) => format!(
                "the way back: wqm backup restore {} --force --overwrite",
                path.display()
            ),
            None => "no safety backup was complete; rerun the restore to finish it".to_string(),
        });
    }
    lines
}

/// What a run that just failed left on a Qdrant server, as its working directory's journal
/// (which stays, see `workdir::WorkDir`) names it: one `action needed` line per object, saying
/// what is left, where, and what removes it (the next run in the directory, or `wqm backup
/// cleanup`; a `curl` command for a snapshot of a configured server).
pub fn left_on_server(work_dir: &Path, settings: &Settings) -> Vec<String> {
    let Ok(records) = workdir::read_journal(work_dir) else {
        return Vec::new();
    };
    let dir = crate::fs::parent_dir(work_dir);
    workdir::outstanding(&records)
        .iter()
        .map(|object| {
            let place = &object.place;
            let scope = match place.shard {
                Some(id) => Scope::Shard(&place.collection, id),
                None => Scope::Collection(&place.collection),
            };
            let left = match object.kind {
                ObjectKind::SnapshotRequested { .. } => "may be left",
                _ => "is left",
            };
            let mut line = format!(
                "{} of {scope} {left} on Qdrant at {}: the run could not delete it; the next wqm run in `{}` (or `wqm backup cleanup {}`) deletes it",
                describe(&object.kind),
                place.node,
                dir.display(),
                dir.display()
            );
            if let (ObjectKind::Snapshot(name) | ObjectKind::Upload(name), Some(client)) =
                (&object.kind, client_for(&place.node, settings))
            {
                line.push_str(&format!(
                    ", or delete it now with: {}",
                    client.delete_command(scope, name)
                ));
            }
            line
        })
        .collect()
}

/// Removes one object from the server; the line says what happened, the flag whether it is gone.
async fn remove(object: &Outstanding, settings: &Settings) -> (String, bool) {
    let place = &object.place;
    let scope = match place.shard {
        Some(id) => Scope::Shard(&place.collection, id),
        None => Scope::Collection(&place.collection),
    };
    let Some(client) = client_for(&place.node, settings) else {
        return (
            format!(
                "{} of {scope} on {} was left, and that server is not configured (`qdrant.url`, `qdrant.nodes`); delete it by hand",
                describe(&object.kind),
                place.node
            ),
            false,
        );
    };
    let name = match &object.kind {
        ObjectKind::Snapshot(name) | ObjectKind::Upload(name) => name.clone(),
        ObjectKind::SnapshotRequested { at } => match requested_snapshot(&client, scope, *at).await
        {
            Ok(Some(name)) => name,
            Ok(None) if crate::now() - at < STILL_IN_THE_MAKING_SECONDS => {
                return (
                    format!(
                        "a snapshot of {scope} asked for at {} may still be in the making on {}; run `wqm backup cleanup` again later",
                        crate::format::manifest::format_timestamp(*at),
                        place.node
                    ),
                    false,
                )
            }
            Ok(None) => {
                return (
                    format!(
                        "no snapshot of {scope} from {} is on {}: nothing to delete",
                        crate::format::manifest::format_timestamp(*at),
                        place.node
                    ),
                    true,
                )
            }
            Err(e) => return (format!("cannot list the snapshots of {scope}: {e}"), false),
        },
    };
    match client.delete_snapshot(scope, &name).await {
        Ok(()) => (
            format!("deleted snapshot `{name}` of {scope} from {}", place.node),
            true,
        ),
        Err(QdrantError::NotFound { .. }) => (
            format!("snapshot `{name}` of {scope} was already gone"),
            true,
        ),
        Err(e) => (
            format!(
                "could not delete snapshot `{name}` of {scope} ({e}); delete it with: {}",
                client.delete_command(scope, &name)
            ),
            false,
        ),
    }
}

fn describe(kind: &ObjectKind) -> String {
    match kind {
        ObjectKind::Snapshot(name) => format!("snapshot `{name}`"),
        ObjectKind::Upload(name) => format!("uploaded copy `{name}`"),
        ObjectKind::SnapshotRequested { at } => format!(
            "a snapshot asked for at {}",
            crate::format::manifest::format_timestamp(*at)
        ),
    }
}

/// A client for `node` (a URL as journals record it, without password), when it is the
/// configured server or one of the configured cluster nodes: wqm sends its key nowhere else.
fn client_for(node: &str, settings: &Settings) -> Option<Client> {
    let qdrant = &settings.qdrant;
    std::iter::once(&qdrant.url)
        .chain(&qdrant.nodes)
        .filter_map(|url| {
            Client::new(
                url,
                qdrant.api_key.as_deref(),
                qdrant.ca_cert.as_deref(),
                settings.backup.transfer.timeouts(),
            )
            .ok()
        })
        .find(|client| client.display_url() == node)
}

/// The snapshot of `scope` Qdrant started within a few seconds of `at`: the name
/// `{collection}-{peer}-{YYYY-MM-DD-HH-MM-SS}.snapshot` carries the second it began (UTC).
async fn requested_snapshot(
    client: &Client,
    scope: Scope<'_>,
    at: f64,
) -> Result<Option<String>, QdrantError> {
    let collection = match scope {
        Scope::Collection(c) | Scope::Shard(c, _) => c,
    };
    let snapshots = match client.list_snapshots(scope).await {
        Ok(snapshots) => snapshots,
        Err(QdrantError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(snapshots
        .into_iter()
        .map(|s| s.name)
        .find(|name| made_near(name, collection, at)))
}

fn made_near(name: &str, collection: &str, at: f64) -> bool {
    let Some(rest) = name
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".snapshot"))
    else {
        return false;
    };
    let Some(stamp) = rest.len().checked_sub(19).and_then(|i| rest.get(i..)) else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d-%H-%M-%S")
        .map(|t| (t.and_utc().timestamp() as f64 - at).abs() <= NAME_TIME_SLACK_SECONDS)
        .unwrap_or(false)
}

/// wqm 0.3.0 left `.NAME.wqm-lock` beside every backup; nobody holding one means it is stale.
fn remove_legacy_locks(dir: &Path) {
    let Ok(files) = LocalBackend::existing(dir) else {
        return;
    };
    let mut locks = Vec::new();
    let _ = files.visit_blocking(".", |entry| {
        if entry.kind == Kind::File && entry.name.ends_with(LEGACY_LOCK_SUFFIX) {
            locks.extend(Name::new(entry.name).ok());
        }
        false
    });
    for lock in locks {
        // Held while it goes, so no older run takes it meanwhile.
        if let Ok(Some(_held)) = files.try_lock_blocking(&lock) {
            let _ = files.remove_blocking(&lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_snapshot_is_recognised_by_its_name_and_second() {
        let at = chrono::NaiveDateTime::parse_from_str("2026-11-29-10-00-00", "%Y-%m-%d-%H-%M-%S")
            .unwrap()
            .and_utc()
            .timestamp() as f64;
        assert!(made_near(
            "projects-123-2026-11-29-10-00-01.snapshot",
            "projects",
            at
        ));
        assert!(made_near(
            "projects-123-2026-11-29-09-59-58.snapshot",
            "projects",
            at
        ));
        assert!(!made_near(
            "projects-123-2026-11-29-10-00-09.snapshot",
            "projects",
            at
        ));
        assert!(!made_near(
            "projects-x-123-2026-11-29-10-00-00.snapshot.tmp",
            "projects",
            at
        ));
        assert!(!made_near(
            "other-123-2026-11-29-10-00-00.snapshot",
            "projects",
            at
        ));
        assert!(!made_near("projects-.snapshot", "projects", at));
    }

    #[test]
    fn a_dead_restore_reports_what_it_did_and_the_way_back() {
        let records = vec![
            Record::SafetyBackup {
                path: PathBuf::from("/b/safety"),
            },
            Record::DaemonStopped,
            Record::Done {
                text: "collection `a` restored".to_string(),
            },
        ];
        assert_eq!(
            restore_report(&records),
            [
                "the restore had done: collection `a` restored",
                "the restore had stopped the daemon and did not start it again: start it",
                "the way back: wqm backup restore /b/safety --force --overwrite",
            ]
        );
        assert!(
            restore_report(&records[..1]).is_empty(),
            "nothing changed yet"
        );
    }
}
