//! The workspace-qdrant daemon (memexd): whether it runs, and stopping and starting it around
//! a restore with the configured commands.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::config::DaemonSettings;
use crate::exit::{Classify, ExitCode};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("Cannot restore while daemon is running ({reason})")]
    Running { reason: String },
    #[error("stopping the daemon failed: `{command}` {outcome}")]
    StopFailed { command: String, outcome: String },
    #[error("the daemon still runs {seconds} s after `{command}`")]
    StillRunning { command: String, seconds: u64 },
    #[error("Daemon connection failed during restore: {reason}")]
    NotReady { reason: String },
}

impl Classify for DaemonError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            DaemonError::Running { .. } | DaemonError::StopFailed { .. } | DaemonError::StillRunning { .. } => {
                "stop the daemon first with workspace-qdrant-mcp's own service command (its CLI's `service stop`; this wqm has no `service` command) or `systemctl --user stop memexd`, or set `backup.daemon.stop_command` and `backup.daemon.start_command` so restore can do it".to_string()
            }
            DaemonError::NotReady { .. } => "the restored data is in place; start the daemon with your `backup.daemon.start_command`, workspace-qdrant-mcp's own service command (its CLI's `service start`; this wqm has no `service` command) or `systemctl --user start memexd`, and check it with `backup.daemon.status_command`".to_string(),
        })
    }
}

/// Whether the daemon runs, and how we know.
pub fn running(settings: &DaemonSettings, data_dir: &Path) -> Option<String> {
    let lock = data_dir.join("daemon.lock");
    if crate::layout::lock_is_held(&lock) {
        return Some(format!("`{}` is locked", lock.display()));
    }
    let command = settings.status_command.as_deref()?;
    let status = shell(command).ok()?;
    status.success.then(|| format!("`{command}` says so"))
}

struct Outcome {
    success: bool,
    detail: String,
}

fn shell(command: &str) -> std::io::Result<Outcome> {
    let output = Command::new("sh").arg("-c").arg(command).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let detail = match output.status.code() {
        Some(code) if stderr.is_empty() => format!("exited with {code}"),
        Some(code) => format!("exited with {code}: {stderr}"),
        None => "was killed by a signal".to_string(),
    };
    Ok(Outcome {
        success: output.status.success(),
        detail,
    })
}

/// Stops the daemon with `stop_command` and waits until it no longer runs.
pub fn stop(settings: &DaemonSettings, data_dir: &Path) -> Result<(), DaemonError> {
    let Some(command) = settings.stop_command.as_deref() else {
        let reason = running(settings, data_dir).unwrap_or_default();
        return Err(DaemonError::Running { reason });
    };
    let outcome = shell(command).map_err(|e| DaemonError::StopFailed {
        command: command.to_string(),
        outcome: e.to_string(),
    })?;
    if !outcome.success {
        return Err(DaemonError::StopFailed {
            command: command.to_string(),
            outcome: outcome.detail,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(settings.timeout);
    while running(settings, data_dir).is_some() {
        if Instant::now() > deadline {
            return Err(DaemonError::StillRunning {
                command: command.to_string(),
                seconds: settings.timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Starts the daemon with `start_command` and waits until it accepts connections at `address`.
pub fn start(settings: &DaemonSettings) -> Result<(), DaemonError> {
    let Some(command) = settings.start_command.as_deref() else {
        return Err(DaemonError::NotReady {
            reason: "no `backup.daemon.start_command` is set, so it was not started again"
                .to_string(),
        });
    };
    let outcome = shell(command).map_err(|e| DaemonError::NotReady {
        reason: format!("`{command}` failed: {e}"),
    })?;
    if !outcome.success {
        return Err(DaemonError::NotReady {
            reason: format!("`{command}` {}", outcome.detail),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(settings.timeout);
    loop {
        let reachable = settings
            .address
            .to_socket_addrs()
            .map(|mut addrs| {
                addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
            })
            .unwrap_or(false);
        if reachable {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DaemonError::NotReady {
                reason: format!(
                    "nothing accepts connections at {} {} s after `{command}`",
                    settings.address, settings.timeout
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(status: Option<&str>) -> DaemonSettings {
        DaemonSettings {
            status_command: status.map(str::to_string),
            timeout: 2,
            ..DaemonSettings::default()
        }
    }

    #[test]
    fn a_held_lock_or_a_successful_status_command_means_running() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running(&settings(None), dir.path()), None);
        let lock = std::fs::File::create(dir.path().join("daemon.lock")).unwrap();
        assert_eq!(
            running(&settings(None), dir.path()),
            None,
            "an unlocked lock file means stopped"
        );
        lock.lock().unwrap();
        assert!(running(&settings(None), dir.path())
            .unwrap()
            .contains("daemon.lock"));
        drop(lock);
        assert!(running(&settings(Some("true")), dir.path()).is_some());
        assert!(running(&settings(Some("false")), dir.path()).is_none());
    }

    #[test]
    fn stop_needs_a_command_and_checks_it_worked() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("running");
        std::fs::write(&flag, "").unwrap();
        let mut s = settings(Some(&format!("test -e {}", flag.display())));
        assert!(matches!(
            stop(&s, dir.path()),
            Err(DaemonError::Running { .. })
        ));
        s.stop_command = Some("exit 3".into());
        assert!(stop(&s, dir.path())
            .unwrap_err()
            .to_string()
            .contains("exited with 3"));
        s.stop_command = Some("true".into());
        assert!(matches!(
            stop(&s, dir.path()),
            Err(DaemonError::StillRunning { .. })
        ));
        s.stop_command = Some(format!("rm {}", flag.display()));
        stop(&s, dir.path()).unwrap();
    }

    #[test]
    fn start_waits_for_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = settings(None);
        s.address = listener.local_addr().unwrap().to_string();
        s.start_command = Some("true".into());
        start(&s).unwrap();
        drop(listener);
        s.timeout = 1;
        let err = start(&s).unwrap_err().to_string();
        assert!(
            err.starts_with("Daemon connection failed during restore: nothing accepts connections"),
            "{err}"
        );
    }
}
