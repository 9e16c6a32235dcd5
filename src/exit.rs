//! Exit codes, and the `Classify` trait through which each module's errors say theirs (and a
//! hint). A leaf: it imports no other module; the edge (`output::classify`) maps an error chain
//! to a code.

use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};

/// The documented exit codes of `wqm` (README, `wqm --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// A runtime failure: I/O, Qdrant unreachable, a declined confirmation, ...
    Failure = 1,
    /// A usage or configuration error, or a prompt was needed without a terminal.
    Usage = 2,
    /// The backup is missing, invalid or corrupt.
    InvalidBackup = 3,
    /// The backup's version is incompatible, or a downgrade was refused.
    Incompatible = 4,
    /// A restore conflict: a collection already exists.
    Conflict = 5,
    /// Verification after a restore failed.
    VerificationFailed = 6,
    /// The command completed, but left something the operator must act on (a snapshot it could
    /// not delete from the Qdrant server); the `wqm: action needed:` lines on stderr say what.
    ActionNeeded = 7,
    /// Hung up (SIGHUP).
    HangUp = 129,
    /// Interrupted (Ctrl-C, SIGINT).
    Interrupted = 130,
    /// Terminated (SIGTERM, as systemd stops a service).
    Terminated = 143,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// As its number, which is what a JSON reader compares with the process's exit status.
impl serde::Serialize for ExitCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i32(self.code())
    }
}

/// The text `wqm --help` and the README show for the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    runtime failure (I/O, Qdrant unreachable, declined confirmation, ...)
  2    usage or configuration error, or a prompt needed with no terminal
  3    the backup is missing, invalid or corrupt
  4    version incompatible, or downgrade refused
  5    restore conflict (a collection already exists)
  6    verification after restore failed
  7    completed, but action is needed (e.g. a snapshot left on the Qdrant server; see stderr)
  129  hung up (SIGHUP), after cleaning up
  130  interrupted (Ctrl-C, SIGINT), after cleaning up
  143  terminated (SIGTERM), after cleaning up";

/// An error that knows its exit code and what the user can do about it. Only a type in the
/// edge's registry (`output::classify`'s list) can implement it: the list implements
/// `Registered` for each, so an error type left out of it does not compile, and one in it that
/// does not implement `Classify` does not either.
pub trait Classify: Registered {
    fn exit_code(&self) -> ExitCode;

    fn hint(&self) -> Option<String> {
        None
    }
}

/// Implemented only by `output::classify`'s list of error types: the proof that `classify`
/// looks for a type when it walks an error chain. Never implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` implements `Classify` but is not in the registry of error types",
    note = "add `{Self}` to the `registry!` list in src/output.rs, or it would exit 1"
)]
pub trait Registered {}

/// A command-level error with an explicit exit code and hint; also a reason a restore plan
/// cannot go ahead (its `blockers`, as JSON `{"exit_code", "message", "hint"}`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failure {
    #[serde(rename = "exit_code")]
    pub code: ExitCode,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Classify for Failure {
    fn exit_code(&self) -> ExitCode {
        self.code
    }

    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// The user pressed Ctrl-C, or the process got SIGTERM or SIGHUP.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The signal that stopped the run; 0 until one arrives.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Records the signal that asked the run to stop (the first one wins).
pub fn record_signal(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// What a run stopped by the recorded signal exits with: 128 + the signal's number.
pub fn signal_exit_code() -> ExitCode {
    match SIGNAL.load(Ordering::SeqCst) {
        1 => ExitCode::HangUp,
        15 => ExitCode::Terminated,
        _ => ExitCode::Interrupted,
    }
}

impl Classify for Interrupted {
    fn exit_code(&self) -> ExitCode {
        signal_exit_code()
    }
}

/// An error and its causes, `: `-separated, each said once: a cause its wrapper's message
/// already ends with (`cannot write `X`: {source}`, whose source is also the next cause) is
/// not said again.
pub fn said(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let shown = cause.to_string();
        if text.ends_with(&shown) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&shown);
    }
    text
}

/// What to do when a disk filled up; nothing partial is ever left behind.
pub const DISK_FULL_HINT: &str =
    "the disk is full: free space or choose another target; nothing partial was left behind";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_serializes_as_a_restore_plans_blocker() {
        let failure = Failure::new(ExitCode::Conflict, "Collection `a` already exists")
            .with_hint("--overwrite");
        assert_eq!(
            serde_json::to_value(&failure).unwrap(),
            serde_json::json!({"exit_code": 5, "message": "Collection `a` already exists", "hint": "--overwrite"})
        );
        let bare = Failure::new(ExitCode::InvalidBackup, "damaged");
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"exit_code":3,"message":"damaged","hint":null}"#
        );
    }
}
