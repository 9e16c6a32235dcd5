//! `wqm backup migrations [--from V]`: the registered version migrations.

use anyhow::Result;

use crate::cli::MigrationsArgs;
use crate::exit::{ExitCode, Failure};
use crate::format::compat::Version;
use crate::format::migrations::{self, Migration, REGISTRY};
use crate::output::Ui;

pub fn run(args: &MigrationsArgs, ui: &Ui) -> Result<ExitCode> {
    let current = Version::parse(crate::VERSION)?;
    let listed: Vec<&Migration> = match &args.from {
        None => REGISTRY.iter().collect(),
        Some(from) => {
            let from =
                Version::parse(from).map_err(|e| Failure::new(ExitCode::Usage, e.to_string()))?;
            match migrations::path((from.major, from.minor), (current.major, current.minor)) {
                Some(chain) => chain,
                None => {
                    return Err(Failure::new(
                        ExitCode::Incompatible,
                        format!(
                            "No migration path from {}.{} to {}.{}",
                            from.major, from.minor, current.major, current.minor
                        ),
                    )
                    .with_hint("`wqm backup migrations` lists every registered migration")
                    .into())
                }
            }
        }
    };
    if ui.json {
        ui.json(&listed);
        return Ok(ExitCode::Success);
    }
    if listed.is_empty() {
        ui.line("No migrations needed");
    }
    for migration in listed {
        ui.line(migration.label());
        ui.line(format!("  {}", migration.description));
    }
    Ok(ExitCode::Success)
}
