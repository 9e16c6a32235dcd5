//! `wqm completions SHELL` and `wqm manpage`: generated from the clap definitions.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::ExitCode;

pub fn completions(shell: clap_complete::Shell) -> Result<ExitCode> {
    clap_complete::generate(shell, &mut Cli::command(), "wqm", &mut std::io::stdout());
    Ok(ExitCode::Success)
}

pub fn manpage() -> Result<ExitCode> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(ExitCode::Success)
}
