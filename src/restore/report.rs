//! What a restore reports: the steps it took (in memory; the on-disk journal is the working
//! directory's), how it ended, and the way back.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::{Plan, Verified};
use crate::cleanup::Cleaned;
use crate::transfer;
use crate::workdir::{Record, WorkDir};

/// The steps a restore took so far, in memory, for the report when it stops part-way (what it
/// must find again after a crash is in its working directory's on-disk journal, `workdir`).
#[derive(Debug, Default, Serialize)]
pub struct Steps {
    pub done: Vec<String>,
    pub safety_backup: Option<PathBuf>,
    /// Collections this restore created (a safety backup cannot hold them).
    pub created: Vec<String>,
    pub daemon_stopped: bool,
    /// Whether anything changed yet (or may have: an upload Qdrant got all of).
    pub changed: bool,
    /// The safety backup, removed because the restore stopped before changing anything.
    pub safety_backup_removed: Option<PathBuf>,
    /// Dead runs found and cleaned up first.
    pub cleaned: Vec<Cleaned>,
    /// Parts whose state the failure left unknown.
    pub uncertain: Vec<String>,
    /// Parts the failure stopped before they changed anything (an upload Qdrant did not get
    /// all of).
    pub unchanged: Vec<String>,
    /// Snapshots the safety backup could not delete from the server.
    pub leftovers: Vec<String>,
}

/// A restore that did not finish (it failed, or was interrupted), and the steps it took.
#[derive(Debug)]
pub struct Unfinished {
    pub error: anyhow::Error,
    pub steps: Steps,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    /// (`journal` in the JSON output, as before.)
    #[serde(rename = "journal")]
    pub steps: Steps,
    pub verification: Vec<Verified>,
    pub seconds: f64,
    /// Where the time went, step by step.
    pub phases: Vec<transfer::Phase>,
}

impl Outcome {
    pub fn verified(&self) -> bool {
        self.verification.iter().all(|v| v.ok)
    }
}

impl Steps {
    /// A step that changed the live system: reported, and recorded on disk before the next.
    pub(super) fn done(&mut self, work: &WorkDir, text: String) -> Result<()> {
        work.record(&Record::Done { text: text.clone() })?;
        self.done.push(text);
        Ok(())
    }
}

/// The command that puts the safety backup back.
pub fn way_back(steps: &Steps, plan: &Plan) -> Option<String> {
    let safety = steps.safety_backup.as_ref()?;
    let config = if plan.safety_backup.as_ref().is_some_and(|s| s.config) {
        " --with-config"
    } else {
        ""
    };
    Some(format!(
        "wqm backup restore {} --force --overwrite{config}",
        safety.display()
    ))
}
