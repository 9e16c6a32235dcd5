//! A builder that runs `wqm` in a clean environment and checks stdout, stderr and the exit
//! status exactly. Unset expectations mean "empty" for stdout/stderr and 0 for the status.
//! `{TMP}` in expectations stands for the test's temporary directory.

use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// No test sees a daemon unless it starts one: a closed port, a process name nothing has.
pub const NO_DAEMON: [(&str, &str); 2] = [
    ("WQM_BACKUP__DAEMON__ADDRESS", "127.0.0.1:1"),
    ("WQM_BACKUP__DAEMON__PROCESS_NAME", "wqm-test-no-daemon"),
];

pub struct Test {
    tempdir: TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdout: Expect,
    stderr: Expect,
    status: i32,
}

enum Expect {
    Exactly(String),
    Check(Box<dyn Fn(&str)>),
}

impl Test {
    pub fn new() -> Self {
        Self::in_dir(
            tempfile::Builder::new()
                .prefix("wqm-test-")
                .tempdir()
                .unwrap(),
        )
    }

    /// Another command, in the temporary directory of an earlier one.
    pub fn in_dir(tempdir: TempDir) -> Self {
        std::fs::create_dir_all(tempdir.path().join("home")).unwrap();
        Test {
            tempdir,
            args: Vec::new(),
            env: Vec::new(),
            stdout: Expect::Exactly(String::new()),
            stderr: Expect::Exactly(String::new()),
            status: 0,
        }
    }

    /// A path inside the test's temporary directory.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.tempdir.path().join(rel)
    }

    pub fn tmp(&self) -> String {
        self.tempdir.path().display().to_string()
    }

    /// Arguments, split on whitespace; `{TMP}` is replaced.
    pub fn args(mut self, args: &str) -> Self {
        let tmp = self.tmp();
        self.args
            .extend(args.split_whitespace().map(|a| a.replace("{TMP}", &tmp)));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        let value = value.replace("{TMP}", &self.tmp());
        self.env.push((key.to_string(), value));
        self
    }

    pub fn stdout(mut self, expected: &str) -> Self {
        self.stdout = Expect::Exactly(expected.replace("{TMP}", &self.tmp()));
        self
    }

    pub fn stdout_with(mut self, check: impl Fn(&str) + 'static) -> Self {
        self.stdout = Expect::Check(Box::new(check));
        self
    }

    /// stdout must be one JSON document; `check` inspects it.
    pub fn stdout_json(self, check: impl Fn(&serde_json::Value) + 'static) -> Self {
        self.stdout_with(move |text| {
            let value: serde_json::Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{text}"));
            check(&value);
        })
    }

    pub fn stderr(mut self, expected: &str) -> Self {
        self.stderr = Expect::Exactly(expected.replace("{TMP}", &self.tmp()));
        self
    }

    pub fn stderr_with(mut self, check: impl Fn(&str) + 'static) -> Self {
        self.stderr = Expect::Check(Box::new(check));
        self
    }

    pub fn status(mut self, status: i32) -> Self {
        self.status = status;
        self
    }

    /// Runs `wqm` and checks everything; returns the output and keeps the tempdir alive.
    pub fn run(self) -> (Output, TempDir) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wqm"));
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tempdir.path().join("home"))
            .envs(NO_DAEMON)
            .current_dir(self.tempdir.path());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let output = command.output().expect("wqm runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let context = format!(
            "wqm {}\n--- status: {:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
            self.args.join(" "),
            output.status.code()
        );
        check("stdout", &self.stdout, &stdout, &context);
        check("stderr", &self.stderr, &stderr, &context);
        assert_eq!(
            output.status.code(),
            Some(self.status),
            "exit status\n{context}"
        );
        (output, self.tempdir)
    }
}

fn check(stream: &str, expected: &Expect, actual: &str, context: &str) {
    match expected {
        Expect::Exactly(text) => assert_eq!(actual, text, "{stream} differs\n{context}"),
        Expect::Check(f) => {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(actual))).is_err() {
                panic!("{stream} check failed\n{context}");
            }
        }
    }
}

/// `wqm ARGS` in a clean environment with `HOME` set, for tests that drive the process themselves.
pub fn wqm_command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wqm"));
    command
        .args(args)
        .env_clear()
        .env("HOME", home)
        .envs(NO_DAEMON);
    command
}

/// Starts `command`, presses Ctrl-C (SIGINT) once `ready` says so, and returns what it printed.
pub fn interrupted(command: Command, ready: impl Fn() -> bool) -> Output {
    signalled(command, &["INT"], ready)
}

/// Starts `command`, sends it each of `signals` (`INT`, `TERM`, `HUP`, `KILL`; 150 ms apart)
/// once `ready` says so, and returns what it printed.
pub fn signalled(mut command: Command, signals: &[&str], ready: impl Fn() -> bool) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "the moment to interrupt never came"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for signal in signals {
        std::thread::sleep(Duration::from_millis(150));
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }
    child.wait_with_output().unwrap()
}

/// `wqm backup validate BACKUP --check-files` succeeds.
pub fn validates(backup: &Path) {
    Test::new()
        .args(&format!(
            "backup validate {} --check-files",
            backup.display()
        ))
        .stdout(&format!(
            "Backup validation successful: {}\n",
            backup.display()
        ))
        .run();
}

/// `validate` refuses a staging directory as a backup, whatever it holds (exit 3).
pub fn refuses_as_unfinished(staged: &Path) {
    Test::new()
        .args(&format!("backup validate {} --check-files", staged.display()))
        .status(3)
        .stderr(&format!(
            "wqm: error: `{}` is the staging directory of an unfinished backup, not a backup\nhint: its run is still going or died before the backup was complete; use the finished backup beside it, and `wqm backup cleanup DIR` to remove a dead run's leftovers\n",
            staged.display()
        ))
        .run();
}

/// `sqlite3 DB .dump`: the schema and every row, for comparing two states exactly.
pub fn sqlite_dump(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(".dump")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The bytes of every regular file under `dir` (links not followed): what `info` and `list`
/// show as a backup's size, counted here independently of wqm.
pub fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            total += bytes_under(&entry.path());
        } else if kind.is_file() {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}
