//! `wqm backup validate PATH [--check-files]`: every finding, with a severity.

use anyhow::Result;

use crate::cli::ValidateArgs;
use crate::config::Settings;
use crate::exit::ExitCode;
use crate::output::Ui;
use crate::verify::{self, Severity};

pub fn run(args: &ValidateArgs, settings: &Settings, ui: &Ui) -> Result<ExitCode> {
    let depth = if args.check_files {
        verify::Depth::Full
    } else {
        verify::Depth::Structure
    };
    let validation = &settings.backup.validation;
    let options = verify::Options::new(depth, crate::compat::Policy::new(validation, false))
        .warning_after(validation.version_warning_threshold);
    let progress = ui.progress();
    crate::layout::refuse_unfinished(&args.path)?;
    let report = verify::audit(&args.path, &options, &progress)?;
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);

    if ui.json {
        let mut document = serde_json::to_value(&report)?;
        let object = document.as_object_mut().expect("a report is an object");
        object.insert("valid".into(), report.is_valid().into());
        object.insert("errors".into(), errors.into());
        object.insert("warnings".into(), warnings.into());
        if let Some(m) = &report.manifest {
            object.insert("format".into(), m.format_name().into());
            object.insert("version".into(), m.version.clone().into());
        }
        ui.json(&document);
    } else {
        for finding in &report.findings {
            let shown = ui.verbose || finding.severity >= Severity::Warning;
            if !shown {
                continue;
            }
            let mark = match finding.severity {
                Severity::Ok => "✓",
                Severity::Info => "ℹ",
                Severity::Warning => "⚠",
                Severity::Error => "✗",
            };
            let subject = finding
                .file
                .as_ref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default();
            let message = finding.message.replace('\n', "\n  ");
            ui.line(format!("{mark} {subject}{message}"));
        }
        if report.is_valid() {
            ui.line(format!(
                "Backup validation successful: {}",
                args.path.display()
            ));
        }
    }
    if report.is_valid() {
        return Ok(ExitCode::Success);
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    ui.error_lines(
        &format!(
            "Backup validation failed: {} ({}, {})",
            args.path.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
        Some(if args.check_files {
            "restore from another backup (`wqm backup list DIR --sort timestamp`); this one is damaged"
        } else {
            "run with --check-files --verbose to read every file"
        }),
    );
    Ok(if report.only_incompatible() {
        ExitCode::Incompatible
    } else {
        ExitCode::InvalidBackup
    })
}
