//! Where a repository's password comes from without asking, in this order: `--password-file
//! FILE`, `WQM_BACKUP_PASSWORD_FILE`, `WQM_BACKUP_PASSWORD`, `backup.encryption.password_command`.
//! None of them: the edge asks on the terminal, or refuses when there is none
//! (`PasswordError::Needed`). A file's content and a command's output lose their trailing line
//! ends (`\n`, `\r\n`) and nothing else, so a password may hold spaces.
//!
//! The command runs **without a shell**, as restic runs `--password-command`: its words are
//! split as a POSIX shell would split them (quotes, backslashes; `shell-words`), the first is
//! the program, found on `PATH`; write `sh -c '…'` for pipes or redirections. stdin and stderr
//! are the terminal's (a password manager may ask there), stdout is the password. No shell also
//! means nothing in the command is expanded by accident.
//!
//! A password is never printed, written or put into an error: errors name the source (the file,
//! the variable, the command's program), never what it gave.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::config::Env;
use crate::crypto::Password;
use crate::exit::{Classify, ExitCode};

/// The variable that names a file holding the password.
pub const PASSWORD_FILE_VAR: &str = "WQM_BACKUP_PASSWORD_FILE";
/// The variable that holds the password itself.
pub const PASSWORD_VAR: &str = "WQM_BACKUP_PASSWORD";
/// The ways to give a password without a terminal, as errors name them.
pub const WAYS: &str = crate::crypto::PASSWORD_WAYS;
/// A password file or command output larger than this is refused (no password is that long).
const LIMIT: u64 = 64 * 1024;

/// Why no password could be had.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("{what} is needed for `{repository}`, and there is no terminal to ask on")]
    Needed {
        what: &'static str,
        repository: String,
        /// How to give it instead, for the hint.
        ways: &'static str,
    },
    #[error("cannot read the password file `{path}` ({from}): {source}")]
    File {
        path: PathBuf,
        from: &'static str,
        source: std::io::Error,
    },
    #[error("`backup.encryption.password_command` (`{program}`) failed: {reason}")]
    Command { program: String, reason: String },
    #[error("the password from {from} is empty")]
    Empty { from: String },
}

impl Classify for PasswordError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }

    fn hint(&self) -> Option<String> {
        match self {
            PasswordError::Needed { ways, .. } => Some(format!("give it with {ways}, or run on a terminal to be asked")),
            PasswordError::Command { .. } => Some("the command runs without a shell and its output is the password; write `sh -c '…'` for pipes".to_string()),
            PasswordError::File { .. } | PasswordError::Empty { .. } => None,
        }
    }
}

/// Where the password came from (shown with `--verbose`; never the password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(PathBuf),
    FileVar(PathBuf),
    Var,
    Command,
    Prompt,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(path) => write!(f, "`--password-file {}`", path.display()),
            Source::FileVar(path) => write!(f, "`{PASSWORD_FILE_VAR}` (`{}`)", path.display()),
            Source::Var => write!(f, "`{PASSWORD_VAR}`"),
            Source::Command => f.write_str("`backup.encryption.password_command`"),
            Source::Prompt => f.write_str("the terminal"),
        }
    }
}

/// The password from the first source that is set (`file`: `--password-file`), or `None` when
/// none is (the edge may then ask).
pub fn from_sources(
    file: Option<&Path>,
    env: &Env,
    command: Option<&str>,
) -> Result<Option<(Password, Source)>, PasswordError> {
    if let Some(path) = file {
        let source = Source::Flag(path.to_path_buf());
        return Ok(Some((
            read_file(path, "`--password-file`", &source)?,
            source,
        )));
    }
    if let Some(path) = env.get(PASSWORD_FILE_VAR) {
        let source = Source::FileVar(PathBuf::from(path));
        let password = read_file(Path::new(path), "`WQM_BACKUP_PASSWORD_FILE`", &source)?;
        return Ok(Some((password, source)));
    }
    if let Some(text) = env.get(PASSWORD_VAR) {
        return Ok(Some((Password::new(text.as_bytes()), Source::Var)));
    }
    if let Some(command) = command.filter(|c| !c.trim().is_empty()) {
        return Ok(Some((run_command(command)?, Source::Command)));
    }
    Ok(None)
}

/// The variable that names a file holding the password of `copy`'s SOURCE.
pub const FROM_PASSWORD_FILE_VAR: &str = "WQM_FROM_PASSWORD_FILE";
/// The variable that holds the password of `copy`'s SOURCE.
pub const FROM_PASSWORD_VAR: &str = "WQM_FROM_PASSWORD";

/// The password of `copy`'s SOURCE when it is given apart (`file`: `--from-password-file`,
/// else `WQM_FROM_PASSWORD_FILE`, else `WQM_FROM_PASSWORD`); `None`: SOURCE takes DEST's.
pub fn from_source(file: Option<&Path>, env: &Env) -> Result<Option<Password>, PasswordError> {
    if let Some(path) = file {
        let source = Source::Flag(path.to_path_buf());
        return read_file(path, "`--from-password-file`", &source).map(Some);
    }
    if let Some(path) = env.get(FROM_PASSWORD_FILE_VAR) {
        let source = Source::FileVar(PathBuf::from(path));
        return read_file(Path::new(path), "`WQM_FROM_PASSWORD_FILE`", &source).map(Some);
    }
    Ok(env
        .get(FROM_PASSWORD_VAR)
        .map(|text| Password::new(text.as_bytes())))
}

/// A typed password (not confirmed: it opens an existing key).
pub fn typed(text: Zeroizing<String>) -> Result<Password, PasswordError> {
    non_empty(Zeroizing::new(text.as_bytes().to_vec()), &Source::Prompt)
}

/// The password a file holds, its trailing line ends removed.
pub fn read_file(
    path: &Path,
    from: &'static str,
    source: &Source,
) -> Result<Password, PasswordError> {
    let failed = |source| PasswordError::File {
        path: path.to_path_buf(),
        from,
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > LIMIT {
        return Err(failed(std::io::Error::other(
            "larger than 64 KiB, no password file",
        )));
    }
    non_empty(bytes, source)
}

/// Runs `backup.encryption.password_command` (no shell) and takes its stdout.
fn run_command(command: &str) -> Result<Password, PasswordError> {
    let words = shell_words::split(command).map_err(|e| PasswordError::Command {
        program: command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        reason: format!("its quoting is broken: {e}"),
    })?;
    let Some((program, args)) = words.split_first() else {
        return Err(PasswordError::Command {
            program: String::new(),
            reason: "it is empty".into(),
        });
    };
    let failed = |reason: String| PasswordError::Command {
        program: program.clone(),
        reason,
    };
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(failed(format!("it exited with {}", output.status)));
    }
    if stdout.len() as u64 > LIMIT {
        return Err(failed("it printed more than 64 KiB".into()));
    }
    non_empty(stdout, &Source::Command)
}

/// `bytes` without trailing line ends, refused when nothing is left.
fn non_empty(mut bytes: Zeroizing<Vec<u8>>, source: &Source) -> Result<Password, PasswordError> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(PasswordError::Empty {
            from: source.to_string(),
        });
    }
    Ok(Password::new(bytes.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_source_set_wins_and_loses_only_its_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, " from file \r\n\n").unwrap();
        let env = Env::from_pairs([(PASSWORD_VAR, "from var")]);
        let (_, source) = from_sources(Some(&file), &env, Some("false"))
            .unwrap()
            .unwrap();
        assert_eq!(source, Source::Flag(file.clone()));
        let (_, source) = from_sources(None, &env, Some("false")).unwrap().unwrap();
        assert_eq!(source, Source::Var);
        let none = Env::from_pairs([]);
        assert!(from_sources(None, &none, None).unwrap().is_none());
        let (_, source) = from_sources(None, &none, Some("echo 'a b'"))
            .unwrap()
            .unwrap();
        assert_eq!(source, Source::Command);
        // An empty file, a failing command: refused, naming the source and nothing it gave.
        std::fs::write(&file, "\n").unwrap();
        let e = from_sources(Some(&file), &none, None).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = from_sources(None, &none, Some("sh -c 'echo secret; exit 3'")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("`sh`"), "{e}");
    }
}
