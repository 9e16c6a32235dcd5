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

/// Whether the daemon runs, and how we know: its lock file is locked, a process of its name
/// runs (with its pid), something accepts connections at its gRPC address, or the status
/// command says so. Upstream's memexd does not take `daemon.lock`, so the other signs count.
pub fn running(settings: &DaemonSettings, data_dir: &Path) -> Option<String> {
    let mut signs = Vec::new();
    let lock = data_dir.join("daemon.lock");
    if crate::fs::lock_is_held(&lock) {
        signs.push(format!("`{}` is locked", lock.display()));
    }
    let pids = processes_named(&settings.process_name);
    if !pids.is_empty() {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        signs.push(format!(
            "process `{}` runs as pid {}",
            settings.process_name,
            list.join(", ")
        ));
    }
    if accepts_connections(&settings.address) {
        signs.push(format!("{} accepts connections", settings.address));
    }
    if let Some(command) = settings.status_command.as_deref() {
        if shell(command).is_ok_and(|status| status.success) {
            signs.push(format!("`{command}` says so"));
        }
    }
    (!signs.is_empty()).then(|| signs.join("; "))
}

/// Whether something accepts a TCP connection at `address` (within half a second).
fn accepts_connections(address: &str) -> bool {
    address
        .to_socket_addrs()
        .map(|mut addrs| {
            addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
        })
        .unwrap_or(false)
}

/// The pids of the processes named `name` (other than this one). Linux: `/proc/<pid>/comm`, or
/// the file name of the first `cmdline` argument (`comm` keeps only 15 bytes).
#[cfg(target_os = "linux")]
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            // A zombie (exited, not yet reaped) does not run.
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            if matches!(state, None | Some('Z' | 'X')) {
                return false;
            }
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end_matches('\n') == name {
                return true;
            }
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            Path::new(&*String::from_utf8_lossy(first))
                .file_name()
                .is_some_and(|f| f == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Other Unixes have no `/proc` to read: `pgrep -x NAME` (no pgrep: none found).
#[cfg(all(unix, not(target_os = "linux")))]
fn processes_named(name: &str) -> Vec<u32> {
    let own = std::process::id();
    Command::new("pgrep")
        .arg("-x")
        .arg(name)
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|&pid| pid != own)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(not(unix))]
fn processes_named(_name: &str) -> Vec<u32> {
    Vec::new()
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

/// Stops the daemon with `stop_command` and waits (up to `timeout` seconds) until no sign of it
/// is left: lock free, no process of its name, its address closed, the status command failing.
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
        if accepts_connections(&settings.address) {
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

    /// Settings that see no daemon unless a test starts one: a closed port, an unused name.
    fn settings(status: Option<&str>) -> DaemonSettings {
        DaemonSettings {
            status_command: status.map(str::to_string),
            timeout: 2,
            address: "127.0.0.1:1".to_string(),
            process_name: "wqm-test-none".to_string(),
            ..DaemonSettings::default()
        }
    }

    /// A running process named `name` (a copy of `sleep`), reaped when dropped.
    struct FakeDaemon {
        child: std::process::Child,
        // Holds the link to the binary.
        _dir: tempfile::TempDir,
    }

    impl FakeDaemon {
        fn start(name: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join(name);
            // A link, not a copy: a copy is open for writing while other tests fork, and
            // exec'ing it then fails with "Text file busy". The kernel names the process after
            // the path it was started by, so it still runs as `name`.
            std::os::unix::fs::symlink("/bin/sleep", &bin).unwrap();
            let child = Command::new(&bin).arg("60").spawn().unwrap();
            FakeDaemon { child, _dir: dir }
        }
    }

    impl Drop for FakeDaemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn a_process_of_the_daemons_name_is_seen_with_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(None);
        s.process_name = "memexd".to_string();
        assert_eq!(running(&s, dir.path()), None);
        let fake = FakeDaemon::start("memexd");
        let pid = fake.child.id();
        let seen = running(&s, dir.path()).unwrap();
        assert!(
            seen.contains(&format!("process `memexd` runs as pid {pid}")),
            "{seen}"
        );
        drop(fake);
        assert_eq!(running(&s, dir.path()), None, "a reaped process is gone");
    }

    #[test]
    fn an_open_grpc_port_means_running() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = settings(None);
        s.address = listener.local_addr().unwrap().to_string();
        assert_eq!(
            running(&s, dir.path()),
            Some(format!("{} accepts connections", s.address))
        );
        drop(listener);
        assert_eq!(running(&s, dir.path()), None);
    }

    #[test]
    fn stop_waits_until_the_process_is_gone_and_the_port_closed() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = settings(None);
        s.address = listener.local_addr().unwrap().to_string();
        s.timeout = 1;
        s.stop_command = Some("true".into());
        let err = stop(&s, dir.path()).unwrap_err();
        assert!(matches!(err, DaemonError::StillRunning { .. }), "{err}");
        // The port closes a moment after the stop command returned: stop waits for it.
        s.timeout = 10;
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            drop(listener);
        });
        let started = Instant::now();
        stop(&s, dir.path()).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(600));
        closer.join().unwrap();
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
