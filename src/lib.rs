//! wqm: backup and restore for workspace-qdrant-mcp.
//!
//! `run` is the whole program; `main.rs` only calls it. See `docs/architecture.md` for how the
//! modules fit together.

pub mod backup;
pub mod checksum;
pub mod cli;
pub mod cluster;
mod commands;
pub mod compat;
pub mod compress;
pub mod config;
pub mod daemon;
pub mod exit;
#[doc(hidden)]
pub mod hostile;
pub mod layout;
pub mod manifest;
pub mod migrations;
pub mod names;
pub mod output;
pub mod progress;
pub mod prune;
pub mod qdrant;
pub mod restore;
pub mod snapshot;
pub mod sqlite;
pub mod store;
pub mod verify;

use std::ffi::OsString;

use clap::Parser;

use crate::exit::ExitCode;

/// The product version: what `wqm --version` prints and new manifests record.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Seconds since the epoch, as a manifest's `timestamp`.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Parses `args`, runs the command and returns the process exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage.code()
            } else {
                ExitCode::Success.code()
            };
        }
    };
    let ui = commands::ui_for(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return ui
                .fail(&anyhow::Error::new(e).context("cannot start the async runtime"))
                .code()
        }
    };
    runtime.spawn(watch_ctrl_c());
    let code = match commands::dispatch(cli, &ui, &runtime) {
        Ok(code) => code,
        Err(error) => ui.fail(&error),
    };
    code.code()
}

/// The first Ctrl-C asks the running command to stop and clean up; a second one exits at once.
async fn watch_ctrl_c() {
    if tokio::signal::ctrl_c().await.is_ok() {
        progress::set_interrupted();
        eprintln!("wqm: interrupted; cleaning up (press Ctrl-C again to quit at once)");
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(ExitCode::Interrupted.code());
        }
    }
}
