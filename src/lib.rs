//! wqm: backup and restore for workspace-qdrant-mcp.
//!
//! `run` is the whole program; `main.rs` only calls it. See `docs/architecture.md` for how the
//! modules fit together.

pub mod backend;
pub(crate) mod backup;
pub mod checksum;
pub(crate) mod cleanup;
pub mod cli;
mod commands;
pub mod compress;
pub mod config;
pub mod copy;
/// Encryption at rest (issue 21): keys, the encrypted object format and keyed chunk names; `repo`
/// stores the keys, `store::seal` applies them on every data path.
pub mod crypto;
pub(crate) mod daemon;
pub(crate) mod dump;
pub mod exit;
pub(crate) mod export;
pub(crate) mod failpoint;
pub mod format;
pub mod fs;
#[doc(hidden)]
pub mod hostile;
pub mod output;
pub(crate) mod parallel;
pub(crate) mod process;
pub(crate) mod progress;
pub(crate) mod prune;
pub(crate) mod qdrant;
/// A repository's config and keys (issue 21): `wqm backup init`, `wqm backup key`, the guard.
pub mod repo;
pub(crate) mod restore;
pub(crate) mod secrets;
pub(crate) mod size;
pub mod snapshot;
pub(crate) mod sqlite;
pub mod store;
pub(crate) mod transfer;
pub(crate) mod verify;
pub(crate) mod workdir;

use std::ffi::OsString;

use clap::Parser;

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
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return output::parse_failure(&e, &args).code(),
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
    runtime.spawn(watch_signals());
    let code = match commands::dispatch(cli, &ui, &runtime) {
        Ok(code) => code,
        Err(error) => ui.fail(&error),
    };
    code.code()
}

/// The first SIGINT, SIGTERM or SIGHUP asks the running command to stop and clean up (it then
/// exits 130, 143 or 129); a second one exits at once, saying what is left for the next run.
async fn watch_signals() {
    let Some(mut signals) = Signals::install() else {
        return;
    };
    let (number, what) = signals.next().await;
    exit::record_signal(number);
    // A prompt that saw Ctrl-C itself has said what happened already.
    let handled = progress::is_interrupted();
    progress::set_interrupted();
    if !handled {
        eprintln!("wqm: {what}; cleaning up (press Ctrl-C again to quit at once)");
    }
    signals.next().await;
    for left in workdir::live() {
        eprintln!(
            "wqm: quitting before the cleanup finished: `{}` is left for the next run (or `wqm backup cleanup`)",
            left.display()
        );
    }
    std::process::exit(exit::signal_exit_code().code());
}

/// The stop signals, each with its number and how the run reports it.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Option<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Some(Signals {
            interrupt: signal(SignalKind::interrupt()).ok()?,
            terminate: signal(SignalKind::terminate()).ok()?,
            hangup: signal(SignalKind::hangup()).ok()?,
        })
    }

    async fn next(&mut self) -> (i32, &'static str) {
        use rustix::process::Signal;
        tokio::select! {
            _ = self.interrupt.recv() => (Signal::INT.as_raw(), "interrupted"),
            _ = self.terminate.recv() => (Signal::TERM.as_raw(), "terminated (SIGTERM)"),
            _ = self.hangup.recv() => (Signal::HUP.as_raw(), "hung up (SIGHUP)"),
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Option<Self> {
        Some(Signals)
    }

    async fn next(&mut self) -> (i32, &'static str) {
        let _ = tokio::signal::ctrl_c().await;
        (2, "interrupted")
    }
}
