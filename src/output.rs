//! Everything the user sees: results on stdout (text or one JSON document), warnings and errors
//! on stderr, progress bars only on a terminal.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::OutputArgs;
use crate::exit::{self, ExitCode};
use crate::progress::Progress;

/// How a command talks to the user.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    pub json: bool,
    pub verbose: bool,
    /// Nothing but errors (and the JSON document when asked for).
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
            let _ = writeln!(out, "{}", text.as_ref());
        }
    }

    /// The command's one JSON document.
    pub fn json<T: Serialize>(&self, value: &T) {
        let text = serde_json::to_string_pretty(value).expect("results always serialize");
        let _ = writeln!(io::stdout().lock(), "{text}");
    }

    pub fn warn(&self, text: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        let _ = writeln!(io::stderr().lock(), "wqm: warning: {}", text.as_ref());
    }

    /// Reports a failure on stderr (and as JSON on stdout with `--json`); returns its exit code.
    pub fn fail(&self, error: &anyhow::Error) -> ExitCode {
        let (code, hint) = exit::classify(error);
        self.error_lines(&format!("{error:#}"), hint.as_deref());
        if self.json {
            self.json(&serde_json::json!({
                "error": { "message": format!("{error:#}"), "hint": hint, "exit_code": code.code() }
            }));
        }
        code
    }

    /// `wqm: error: …` and `hint: …` on stderr.
    pub fn error_lines(&self, message: &str, hint: Option<&str>) {
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "wqm: error: {message}");
        if let Some(hint) = hint {
            let _ = writeln!(err, "hint: {hint}");
        }
    }

    /// Progress for long operations: bars on a terminal, `--verbose` steps as plain lines.
    pub fn progress(&self) -> TerminalProgress {
        TerminalProgress {
            bars: self.interactive && !self.quiet,
            verbose: self.verbose,
            bar: Mutex::new(None),
        }
    }
}

/// Progress bars on stderr when it is a terminal; nothing otherwise (cron gets plain lines).
pub struct TerminalProgress {
    bars: bool,
    verbose: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Progress for TerminalProgress {
    fn begin(&self, label: &str, total: Option<u64>) {
        if !self.bars {
            return;
        }
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
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
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.inc(bytes);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }

    fn step(&self, message: &str) {
        if self.verbose {
            let line = format!("  {message}");
            match self.bar.lock().expect("progress lock").as_ref() {
                Some(bar) => bar.println(line),
                None => {
                    let _ = writeln!(io::stderr().lock(), "{line}");
                }
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
