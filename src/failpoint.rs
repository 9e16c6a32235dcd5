//! Failpoints for the fault-injection tests: named places at the phase boundaries of `create`,
//! `restore`, `export` and `prune` where a test makes wqm die, fail or wait. Compiled into debug builds only
//! (what `cargo test` runs); in a release build `hit` does nothing.
//!
//! `WQM_FAILPOINTS="create:snapshot-made=kill;restore:uploaded=error"`, actions:
//! - `kill`: SIGKILL this process (as `kill -9` or a power cut would);
//! - `term`: send this process SIGTERM (the clean path systemd takes);
//! - `error`: fail the step with an I/O error;
//! - `wait`: create the file `$WQM_FAILPOINT_DIR/<name>` and wait (at most 60 s) until the test
//!   removes it, so it can, say, kill Qdrant at exactly this point.

use std::io;

/// Reached the failpoint `name`; does what `WQM_FAILPOINTS` says for it, if anything.
#[cfg(debug_assertions)]
pub fn hit(name: &str) -> io::Result<()> {
    use rustix::process::{getpid, kill_process as kill, Signal};
    let Ok(spec) = std::env::var("WQM_FAILPOINTS") else {
        return Ok(());
    };
    let action = spec.split(';').find_map(|entry| {
        let (point, action) = entry.split_once('=')?;
        (point.trim() == name).then(|| action.trim().to_string())
    });
    match action.as_deref() {
        None => Ok(()),
        Some("kill") => {
            let _ = kill(getpid(), Signal::KILL);
            unreachable!("SIGKILL cannot be caught")
        }
        Some("term") => {
            let _ = kill(getpid(), Signal::TERM);
            // Give the signal watcher a moment to set the flag the work checks.
            std::thread::sleep(std::time::Duration::from_millis(200));
            Ok(())
        }
        Some("error") => Err(io::Error::other(format!("failpoint `{name}`"))),
        Some("wait") => {
            let dir = std::env::var_os("WQM_FAILPOINT_DIR").unwrap_or_else(|| ".".into());
            let marker = std::path::Path::new(&dir).join(name.replace(':', "-"));
            std::fs::write(&marker, b"")?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while marker.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(())
        }
        Some(other) => Err(io::Error::other(format!(
            "unknown failpoint action `{other}` for `{name}`"
        ))),
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) -> io::Result<()> {
    Ok(())
}
