//! Everything the user sees: results on stdout (text or one JSON document), warnings and errors
//! on stderr, progress bars only on a terminal.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::OutputArgs;
use crate::exit::{self, ExitCode};
use crate::progress::{self, Meter, Progress};
// Whatever reaches the screen or a log, a URL's userinfo never does.
use crate::secrets::mask_userinfo;

/// How a command talks to the user.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub json: bool,
    pub verbose: bool,
    /// Nothing but errors, the warnings that need action (`warn_action`), and the JSON document
    /// when asked for.
    pub quiet: bool,
    /// stderr is a terminal: progress bars and prompts are possible.
    pub interactive: bool,
}

impl Ui {
    pub fn new(args: OutputArgs) -> Self {
        if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            console::set_colors_enabled(false);
            console::set_colors_enabled_stderr(false);
        }
        Ui {
            json: args.json,
            verbose: args.verbose,
            quiet: args.quiet,
            interactive: io::stderr().is_terminal(),
        }
    }

    /// A result line on stdout (text mode only).
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.json && !self.quiet {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{}", mask_userinfo(text.as_ref()));
        }
    }

    /// The command's one JSON document.
    pub fn json<T: Serialize>(&self, value: &T) {
        let text = serde_json::to_string_pretty(value).expect("results always serialize");
        let _ = writeln!(io::stdout().lock(), "{}", mask_userinfo(&text));
    }

    pub fn warn(&self, text: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let _ = writeln!(
            io::stderr().lock(),
            "wqm: warning: {}",
            mask_userinfo(text.as_ref())
        );
    }

    /// A warning the operator must act on (a snapshot left on the server, the way back after a
    /// failed restore, a journal of a dead run cleaned up): always on stderr, even with `--quiet`
    /// and `--json`, so cron mails it; marked `wqm: action needed:`.
    pub fn warn_action(&self, text: impl AsRef<str>) {
        let _ = writeln!(
            io::stderr().lock(),
            "wqm: action needed: {}",
            mask_userinfo(text.as_ref())
        );
    }

    /// Reports a failure on stderr (and as JSON on stdout with `--json`); returns its exit code.
    pub fn fail(&self, error: &anyhow::Error) -> ExitCode {
        let (code, hint) = classify(error);
        let message = exit::said(error);
        self.error_lines(&message, hint.as_deref());
        if self.json {
            self.json(&serde_json::json!({
                "error": { "message": message, "hint": hint, "exit_code": code.code() }
            }));
        }
        code
    }

    /// `wqm: error: …` and `hint: …` on stderr.
    pub fn error_lines(&self, message: &str, hint: Option<&str>) {
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "wqm: error: {}", mask_userinfo(message));
        if let Some(hint) = hint {
            let _ = writeln!(err, "hint: {}", mask_userinfo(hint));
        }
    }

    /// Progress for long operations: bars on a terminal, `--verbose` steps as plain lines.
    pub fn progress(&self) -> TerminalProgress {
        TerminalProgress {
            bars: self.interactive && !self.quiet,
            verbose: self.verbose,
            screen: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            showing: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Progress bars on stderr when it is a terminal; nothing otherwise (cron gets plain lines).
pub struct TerminalProgress {
    bars: bool,
    verbose: bool,
    /// Where every bar is drawn, one line each.
    screen: MultiProgress,
    /// How many bars are on the screen (steps are printed above them then).
    showing: Arc<AtomicUsize>,
}

/// One transfer's bar on the terminal.
struct TerminalBar {
    bar: ProgressBar,
    showing: Arc<AtomicUsize>,
}

impl progress::Bar for TerminalBar {
    fn inc(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
        self.showing.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Progress for TerminalProgress {
    fn transfer(&self, label: &str, total: Option<u64>) -> Meter {
        if !self.bars {
            return Meter::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        let template = if total.is_some() {
            "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
        } else {
            "{msg:24!} {spinner} {bytes} {binary_bytes_per_sec}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        let bar = self.screen.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.showing.fetch_add(1, Ordering::Relaxed);
        Meter::new(TerminalBar {
            bar,
            showing: self.showing.clone(),
        })
    }

    fn step(&self, message: &str) {
        if self.verbose {
            let line = format!("  {}", mask_userinfo(message));
            if self.showing.load(Ordering::Relaxed) > 0 {
                let _ = self.screen.println(line);
            } else {
                let _ = writeln!(io::stderr().lock(), "{line}");
            }
        }
    }
}

/// What a command line clap cannot parse ends as: `--version` prints the bare version (so that
/// `$(wqm --version)` is one), help goes to stdout, and usage errors go to stderr as clap words
/// them and, when `--json` is among the arguments, also as the JSON error document every
/// command prints. Returns the exit code.
pub fn parse_failure(error: &clap::Error, args: &[OsString]) -> ExitCode {
    if error.kind() == clap::error::ErrorKind::DisplayVersion {
        let _ = writeln!(io::stdout().lock(), "{}", crate::VERSION);
        return ExitCode::Success;
    }
    let _ = error.print();
    if !error.use_stderr() {
        return ExitCode::Success;
    }
    let code = ExitCode::Usage;
    if args.iter().skip(1).any(|a| a == "--json") {
        let rendered = error.render().to_string();
        let (message, rest) = rendered.split_once("\n\n").unwrap_or((&rendered, ""));
        let message = message.trim().trim_start_matches("error: ");
        let hint = rest.trim();
        let document = serde_json::json!({
            "error": {
                "message": message,
                "hint": (!hint.is_empty()).then_some(hint),
                "exit_code": code.code(),
            }
        });
        let text = serde_json::to_string_pretty(&document).expect("JSON always serializes");
        let _ = writeln!(io::stdout().lock(), "{text}");
    }
    code
}

/// `1.2 MiB (1234567 bytes)`.
pub fn size(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", indicatif::BinaryBytes(bytes))
}

// ---- exit codes of errors -------------------------------------------------------------------

/// Finds the first error in the chain that knows its exit code (`exit::Classify`); the rest are
/// runtime failures. The edge's job: the domain modules only say what each of their errors means.
/// An error kept inside an `io::Error` (a domain error passed through an `io::Result`) counts.
pub fn classify(error: &anyhow::Error) -> (ExitCode, Option<String>) {
    for cause in error.chain() {
        if let Some(found) = classify_one(cause) {
            return found;
        }
        let inner = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref());
        if let Some(found) = inner.and_then(|inner| classify_one(inner)) {
            return found;
        }
    }
    let disk_full = error
        .chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::StorageFull);
    let hint = disk_full.then(|| exit::DISK_FULL_HINT.to_string());
    (ExitCode::Failure, hint)
}

/// Asks for a password on the terminal (stderr), hidden; a new one is typed twice and asked
/// again until both match. The caller has checked that stdin is a terminal. Ctrl-C: exit 130,
/// nothing changed. The prompt turns echo off while it reads a line, and the line discipline
/// turns Ctrl-C into SIGINT, which the signal watcher takes (the read just goes on): so the
/// prompt reads on a thread of its own while this one watches for the interruption, puts the
/// terminal's mode back and returns.
pub fn ask_password(prompt: &str, new: bool) -> anyhow::Result<crate::crypto::Password> {
    let mode = terminal_mode();
    let (sender, answer) = std::sync::mpsc::channel();
    let prompt = prompt.to_string();
    std::thread::spawn(move || {
        let mut asking = dialoguer::Password::new().with_prompt(prompt);
        if new {
            asking = asking.with_confirmation("Repeat it", "The passwords do not match; again");
        }
        let typed = asking
            .interact_on(&console::Term::stderr())
            .map(zeroize::Zeroizing::new);
        let _ = sender.send(typed);
    });
    let cancelled = || -> anyhow::Error {
        set_terminal_mode(mode.as_ref());
        let _ = console::Term::stderr().show_cursor();
        let _ = writeln!(io::stderr());
        exit::Failure::new(
            ExitCode::Interrupted,
            "cancelled (Ctrl-C) at the password prompt; nothing was changed",
        )
        .into()
    };
    loop {
        match answer.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(typed)) => return Ok(crate::repo::password::typed(typed)?),
            Ok(Err(dialoguer::Error::IO(e))) if e.kind() == io::ErrorKind::Interrupted => {
                crate::progress::set_interrupted();
                return Err(cancelled());
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                if crate::progress::is_interrupted() =>
            {
                return Err(cancelled())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(anyhow::anyhow!(
                    "the password prompt ended without an answer"
                ))
            }
        }
    }
}

#[cfg(unix)]
type TerminalMode = rustix::termios::Termios;
#[cfg(not(unix))]
type TerminalMode = ();

/// The terminal's mode (stdin's), to put back after an interrupted prompt.
fn terminal_mode() -> Option<TerminalMode> {
    #[cfg(unix)]
    return rustix::termios::tcgetattr(io::stdin()).ok();
    #[cfg(not(unix))]
    None
}

fn set_terminal_mode(mode: Option<&TerminalMode>) {
    #[cfg(unix)]
    if let Some(mode) = mode {
        let _ =
            rustix::termios::tcsetattr(io::stdin(), rustix::termios::OptionalActions::Now, mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
}

/// The registry of error types that know their exit code: `classify_one` tries each, and each
/// gets `exit::Registered`, without which `impl Classify` does not compile.
macro_rules! registry {
    ($($ty:ty),+ $(,)?) => {
        $(impl exit::Registered for $ty {})+

        fn classify_one(
            cause: &(dyn std::error::Error + 'static),
        ) -> Option<(ExitCode, Option<String>)> {
            $(
                if let Some(e) = cause.downcast_ref::<$ty>() {
                    return Some((exit::Classify::exit_code(e), exit::Classify::hint(e)));
                }
            )+
            None
        }
    };
}

registry!(
    exit::Failure,
    exit::Interrupted,
    crate::config::ConfigError,
    crate::format::manifest::ManifestError,
    crate::format::compat::CompatError,
    crate::format::layout::LayoutError,
    crate::qdrant::QdrantError,
    crate::daemon::DaemonError,
    crate::qdrant::cluster::ClusterError,
    crate::workdir::WorkDirError,
    crate::store::chunks::ChunkError,
    crate::store::lock::RepoLockError,
    crate::store::Damaged,
    crate::verify::AuditError,
    crate::backup::DatabaseCopyError,
    crate::backend::BackendError,
    crate::backend::LocationError,
    crate::backend::lock::LockError,
    crate::backup::remote::TargetTaken,
    crate::crypto::CryptoError,
    crate::copy::CopyError,
    crate::dump::DumpError,
    crate::repo::RepoError,
    crate::repo::password::PasswordError,
);

#[cfg(test)]
mod classify_tests {
    use std::path::PathBuf;

    use super::*;

    fn code_of(error: impl std::error::Error + Send + Sync + 'static) -> ExitCode {
        // As the commands see them: inside an anyhow chain, under context.
        classify(&anyhow::Error::new(error).context("while doing something")).0
    }

    #[test]
    fn an_error_says_each_cause_once() {
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        let wrapped = crate::format::layout::LayoutError::Io {
            action: "cannot write",
            path: PathBuf::from("x"),
            source: full,
        };
        let error = anyhow::Error::new(wrapped).context("cannot back up `c`");
        assert_eq!(
            exit::said(&error),
            "cannot back up `c`: cannot write `x`: no space left"
        );
        assert_eq!(format!("{error:#}").matches("no space left").count(), 2);
    }

    /// One of each error type (and each distinct code a type gives), with its documented code.
    #[test]
    fn every_error_type_exits_with_its_documented_code() {
        use crate::format::{compat, layout, manifest};
        use crate::qdrant::cluster;
        use crate::store::chunks;
        use crate::{backend, config, daemon, qdrant, verify, workdir};
        let path = PathBuf::from("x");
        let cases: Vec<(ExitCode, ExitCode)> = vec![
            (
                code_of(exit::Failure::new(ExitCode::Conflict, "c")),
                ExitCode::Conflict,
            ),
            (code_of(exit::Interrupted), ExitCode::Interrupted),
            (code_of(config::ConfigError::NoHome), ExitCode::Usage),
            (
                code_of(manifest::ManifestError::Missing { path: path.clone() }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(compat::CompatError::DevVersion {
                    backup: "0.3.0.dev1".into(),
                    current: "0.3.0".into(),
                }),
                ExitCode::Incompatible,
            ),
            (
                code_of(layout::LayoutError::NotFound { path: path.clone() }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(layout::LayoutError::AlreadyExists { path: path.clone() }),
                ExitCode::Failure,
            ),
            (
                code_of(qdrant::QdrantError::BadUrl {
                    url: "u".into(),
                    reason: "r".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(qdrant::QdrantError::Server {
                    status: 500,
                    message: "m".into(),
                }),
                ExitCode::Failure,
            ),
            (
                code_of(daemon::DaemonError::Running { reason: "r".into() }),
                ExitCode::Failure,
            ),
            (
                code_of(cluster::ClusterError::Stranger {
                    url: "u".into(),
                    peer: "p".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(workdir::WorkDirError::Busy { path: path.clone() }),
                ExitCode::Failure,
            ),
            (
                code_of(chunks::ChunkError::NoStore { path: path.clone() }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(chunks::ChunkError::Locked { path: path.clone() }),
                ExitCode::Failure,
            ),
            (
                code_of(chunks::ChunkError::Interrupted { path: path.clone() }),
                ExitCode::Interrupted,
            ),
            (
                code_of(crate::store::lock::RepoLockError::Locked {
                    path: path.clone(),
                    holder: "h".into(),
                }),
                ExitCode::Failure,
            ),
            (
                code_of(crate::store::lock::RepoLockError::Interrupted { path: path.clone() }),
                ExitCode::Interrupted,
            ),
            (
                code_of(crate::store::lock::RepoLockError::Lock {
                    path: path.clone(),
                    source: backend::lock::LockError::Backend(backend::BackendError::NotFound {
                        name: "n".into(),
                        repository: "r".into(),
                    }),
                }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(verify::AuditError::StoreBusy(chunks::ChunkError::Locked {
                    path: path.clone(),
                })),
                ExitCode::Failure,
            ),
            (
                code_of(verify::AuditError::Interrupted(exit::Interrupted)),
                ExitCode::Interrupted,
            ),
            (
                code_of(crate::store::Damaged::new("collections/a.snapshot", "x")),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(crate::dump::DumpError::NoSuchFile {
                    backup: "b".into(),
                    file: "f".into(),
                    closest: None,
                    held: "`g`".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(crate::dump::DumpError::Damaged {
                    damaged: crate::store::Damaged::new("collections/a.snapshot", "x"),
                    written: 1,
                }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(crate::dump::DumpError::Write {
                    file: "f".into(),
                    written: 1,
                    source: std::io::ErrorKind::BrokenPipe.into(),
                }),
                ExitCode::Failure,
            ),
            (
                code_of(backend::BackendError::NotFound {
                    repository: "r".into(),
                    name: "n".into(),
                }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(backend::BackendError::AlreadyExists {
                    repository: "r".into(),
                    name: "n".into(),
                }),
                ExitCode::Failure,
            ),
            (
                code_of(backend::BackendError::Unauthorized {
                    endpoint: "e".into(),
                    bucket: "b".into(),
                    reason: "r".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(backend::BackendError::NoSuchBucket {
                    endpoint: "e".into(),
                    bucket: "b".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(backend::BackendError::Unreachable {
                    endpoint: "e".into(),
                    bucket: "b".into(),
                    reason: "r".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(backend::BackendError::Io {
                    what: "cannot write",
                    path: "p".into(),
                    source: std::io::Error::other("x"),
                }),
                ExitCode::Failure,
            ),
            (
                code_of(backend::Location::parse("s3:bucket").unwrap_err()),
                ExitCode::Usage,
            ),
            (
                code_of(backend::lock::LockError::Locked {
                    repository: "r".into(),
                    holder: "h".into(),
                }),
                ExitCode::Failure,
            ),
            // A lock's backend failure keeps the backend's code.
            (
                code_of(backend::lock::LockError::Backend(
                    backend::BackendError::NoSuchBucket {
                        endpoint: "e".into(),
                        bucket: "b".into(),
                    },
                )),
                ExitCode::Usage,
            ),
            (
                code_of(crate::backup::remote::TargetTaken::Backup {
                    repository: "r".into(),
                    target: "t".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(crate::copy::CopyError::Differs {
                    name: "n".into(),
                    dest: "d".into(),
                }),
                ExitCode::Usage,
            ),
            // A domain error passed through an `io::Result` keeps its code.
            (
                code_of(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    chunks::ChunkError::NoStore { path: path.clone() },
                )),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(chunks::ChunkError::Link { path: path.clone() }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(crate::crypto::CryptoError::WrongPassword),
                ExitCode::Usage,
            ),
            (
                code_of(crate::crypto::CryptoError::Damaged {
                    what: "chunk/ab".into(),
                }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(crate::crypto::CryptoError::KdfParams {
                    what: "keys/k".into(),
                    reason: "r".into(),
                }),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(crate::crypto::CryptoError::Random { reason: "r".into() }),
                ExitCode::Failure,
            ),
            // As a `DecryptingReader` reports damage: inside the `io::Error` of a read.
            (
                code_of(
                    crate::crypto::CryptoError::Truncated {
                        what: "manifest/b".into(),
                    }
                    .into_io(),
                ),
                ExitCode::InvalidBackup,
            ),
            (
                code_of(crate::repo::RepoError::Encrypted {
                    repository: "r".into(),
                    version: 1,
                    master_key_id: "k".into(),
                }),
                ExitCode::Usage,
            ),
            (
                code_of(crate::repo::RepoError::NewerFormat {
                    repository: "r".into(),
                    version: 2,
                }),
                ExitCode::Incompatible,
            ),
            (
                code_of(crate::repo::RepoError::BadConfig {
                    repository: "r".into(),
                    reason: "x".into(),
                }),
                ExitCode::InvalidBackup,
            ),
            // Wrapped errors keep their own code.
            (
                code_of(crate::repo::RepoError::Crypto(
                    crate::crypto::CryptoError::WrongPassword,
                )),
                ExitCode::Usage,
            ),
            (
                code_of(crate::repo::password::PasswordError::Empty { from: "f".into() }),
                ExitCode::Usage,
            ),
            (code_of(std::io::Error::other("plain")), ExitCode::Failure),
        ];
        for (i, (actual, expected)) in cases.into_iter().enumerate() {
            assert_eq!(actual, expected, "case {i}");
        }
    }

    /// The hint travels with the code: a locked directory says how a dead run's lock goes.
    #[test]
    fn a_locked_backups_directory_says_how_a_dead_runs_lock_goes() {
        let error = anyhow::Error::new(crate::store::lock::RepoLockError::Locked {
            path: PathBuf::from("/b"),
            holder: "`wqm backup prune` (pid 1 on `h`, since now) holds an exclusive lock".into(),
        })
        .context("cannot make the backup incremental");
        let (code, hint) = classify(&error);
        assert_eq!(code, ExitCode::Failure);
        assert!(
            hint.as_deref()
                .is_some_and(|h| h.contains("`wqm backup cleanup DIR` removes it")),
            "{hint:?}"
        );
    }
}
