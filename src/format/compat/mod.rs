//! Version compatibility: the Python `VersionValidator` algorithm, exactly, and the
//! `backup.validation.*` policy that decides what a restore allows.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use crate::exit::{Classify, ExitCode};

/// A version as the Python `parse_version` read it: MAJOR.MINOR from bare integers, PATCH from the
/// leading digits of the third part; anything after that is a suffix the comparison ignores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub major: i64,
    pub minor: i64,
    pub patch: u64,
    /// True when the string carries more than MAJOR.MINOR[.PATCH] (`0.2.1dev1`, `0.2.1-rc1`, `0.2.1.dev1`).
    pub has_suffix: bool,
}

impl Version {
    pub fn parse(text: &str) -> Result<Self, CompatError> {
        let invalid = |detail: Option<String>| CompatError::InvalidVersion {
            version: text.to_string(),
            detail,
        };
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() < 2 {
            return Err(invalid(None));
        }
        let major = python_int(parts[0]).ok_or_else(|| invalid(Some(int_error(parts[0]))))?;
        let minor = python_int(parts[1]).ok_or_else(|| invalid(Some(int_error(parts[1]))))?;
        let third = parts.get(2).copied().unwrap_or("");
        let digits = third.bytes().take_while(u8::is_ascii_digit).count();
        // Python's int() of a long digit run never overflows; saturate instead.
        let patch =
            third[..digits]
                .parse::<u64>()
                .unwrap_or(if digits == 0 { 0 } else { u64::MAX });
        let has_suffix = digits < third.len() || parts.len() > 3;
        Ok(Version {
            major,
            minor,
            patch,
            has_suffix,
        })
    }

    fn same_line(&self, other: &Version) -> bool {
        self.major == other.major && self.minor == other.minor
    }

    /// The (major, minor, patch) order used to sort versions.
    pub fn key(&self) -> (i64, i64, u64) {
        (self.major, self.minor, self.patch)
    }
}

/// Python's `int(s)`: optional surrounding whitespace, an optional sign, digits with single
/// underscores between them.
fn python_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let valid = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !valid {
        return None;
    }
    let value: i64 = digits.replace('_', "").parse().ok()?;
    Some(if negative { -value } else { value })
}

fn int_error(part: &str) -> String {
    format!("invalid literal for int() with base 10: '{part}'")
}

/// The compatibility status of the Python validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Compatible,
    Incompatible,
    UpgradeAvailable,
    Downgrade,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Compatible => "COMPATIBLE",
            Status::Incompatible => "INCOMPATIBLE",
            Status::UpgradeAvailable => "UPGRADE_AVAILABLE",
            Status::Downgrade => "DOWNGRADE",
        })
    }
}

/// `check_compatibility(backup, current)`: MAJOR.MINOR must match; then the patch decides.
pub fn check_compatibility(backup: &str, current: &str) -> Result<Status, CompatError> {
    let b = Version::parse(backup)?;
    let c = Version::parse(current)?;
    Ok(status_of(&b, &c))
}

fn status_of(b: &Version, c: &Version) -> Status {
    if !b.same_line(c) {
        return Status::Incompatible;
    }
    match b.patch.cmp(&c.patch) {
        Ordering::Equal => Status::Compatible,
        Ordering::Less => Status::UpgradeAvailable,
        Ordering::Greater => Status::Downgrade,
    }
}

/// `get_compatibility_message`: one sentence naming both versions.
pub fn compatibility_message(status: Status, backup: &str, current: &str) -> String {
    match status {
        Status::Compatible => format!("Backup version {backup} is compatible with current version {current}"),
        Status::UpgradeAvailable => format!(
            "Backup version {backup} is older than current version {current} (patch difference only)"
        ),
        Status::Downgrade => format!("Backup version {backup} is newer than current version {current}"),
        Status::Incompatible => format!(
            "Backup version {backup} is incompatible with current version {current} (major or minor version differs)"
        ),
    }
}

/// What a restore does with a backup under the current settings: the one verdict `info`,
/// `list`, `validate` and `restore` all show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Compatible,
    UpgradeAvailable,
    /// An older MAJOR.MINOR that restore migrates.
    MigrationAvailable,
    /// Newer: restore needs `--allow-downgrade` (or proceeds, when the settings allow it).
    Downgrade,
    /// Restore needs `backup.validation.allow_dev_versions`.
    DevVersion,
    Incompatible,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Compatible => "COMPATIBLE",
            Verdict::UpgradeAvailable => "UPGRADE_AVAILABLE",
            Verdict::MigrationAvailable => "MIGRATION_AVAILABLE",
            Verdict::Downgrade => "DOWNGRADE",
            Verdict::DevVersion => "DEV_VERSION",
            Verdict::Incompatible => "INCOMPATIBLE",
        })
    }
}

/// The compatibility as `info`, `validate`, `list` and the restore plan report it: the Python
/// status, and the verdict and message of what restore would do.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The Python validator's status.
    pub status: Status,
    pub verdict: Verdict,
    /// Whether restore goes ahead under the policy decided with (for `info`, `list` and
    /// `validate`: the configuration, without `--allow-downgrade`).
    pub restorable: bool,
    pub backup_version: String,
    pub current_version: String,
    pub message: String,
}

/// The report of `decision` (what [`decide`] said about `backup` on `current`).
pub fn report(backup: &str, current: &str, decision: &Decision) -> Result<Report, CompatError> {
    let status = check_compatibility(backup, current)?;
    let python = compatibility_message(status, backup, current);
    let (verdict, restorable, message) = match decision {
        Decision::Proceed { status: Status::Incompatible, notes } => (
            Verdict::Incompatible,
            true,
            notes.first().cloned().unwrap_or(python),
        ),
        Decision::Proceed { status, .. } => (
            match status {
                Status::Compatible => Verdict::Compatible,
                Status::UpgradeAvailable => Verdict::UpgradeAvailable,
                _ => Verdict::Downgrade,
            },
            true,
            python,
        ),
        Decision::Migrate => (
            Verdict::MigrationAvailable,
            true,
            format!("Backup version {backup} is older than current version {current}; restore migrates it (`wqm backup migrations --from {backup}` lists the steps)"),
        ),
        Decision::Refuse(CompatError::Downgrade { .. }) => (
            Verdict::Downgrade,
            false,
            format!("{python}; restore needs --allow-downgrade"),
        ),
        Decision::Refuse(CompatError::DevVersion { .. }) => (
            Verdict::DevVersion,
            false,
            format!("Backup version {backup} is a development version; restore needs `backup.validation.allow_dev_versions: true`"),
        ),
        Decision::Refuse(CompatError::InvalidVersion { version, detail }) => {
            return Err(CompatError::InvalidVersion {
                version: version.clone(),
                detail: detail.clone(),
            })
        }
        Decision::Refuse(CompatError::Incompatible { .. }) => {
            (Verdict::Incompatible, false, python)
        }
    };
    Ok(Report {
        status,
        verdict,
        restorable,
        backup_version: backup.to_string(),
        current_version: current.to_string(),
        message,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    #[error("Invalid version format: {version}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    InvalidVersion {
        version: String,
        detail: Option<String>,
    },
    #[error("Backup version {backup} is incompatible with current version {current}\n{detail}")]
    Incompatible {
        backup: String,
        current: String,
        /// "Major version mismatch: 1 vs 0" or "Minor version mismatch: 0.2 vs 0.3".
        detail: String,
        hint: String,
    },
    #[error("Cannot restore from newer backup version {backup} to older system version {current}\nBackup is {patches} patch version(s) newer")]
    Downgrade {
        backup: String,
        current: String,
        patches: u64,
        /// The backup is a newer minor version let through by `allow_minor_downgrade`.
        minor: bool,
    },
    #[error(
        "Backup version {backup} is a development version; restoring it onto {current} is disabled"
    )]
    DevVersion { backup: String, current: String },
}

impl Classify for CompatError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CompatError::InvalidVersion { .. } => ExitCode::InvalidBackup,
            _ => ExitCode::Incompatible,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            CompatError::InvalidVersion { .. } => {
                "the manifest's `version` must look like MAJOR.MINOR.PATCH".to_string()
            }
            CompatError::Incompatible { hint, .. } => hint.clone(),
            CompatError::Downgrade { minor: false, .. } => "Use --allow-downgrade to restore from newer backup (may cause issues), or set `backup.validation.allow_patch_downgrade: true`; create a safety backup first".to_string(),
            CompatError::Downgrade { minor: true, .. } => "Use --allow-downgrade to restore from a newer minor version (allowed by `backup.validation.allow_minor_downgrade`); create a safety backup first".to_string(),
            CompatError::DevVersion { .. } => {
                "set `backup.validation.allow_dev_versions: true` to restore development versions".to_string()
            }
        })
    }
}

/// The `backup.validation.*` keys that bear on versions, plus `--allow-downgrade`.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub strict_version_check: bool,
    pub allow_dev_versions: bool,
    pub allow_patch_downgrade: bool,
    pub allow_minor_downgrade: bool,
    /// The `--allow-downgrade` flag.
    pub allow_downgrade: bool,
}

impl Policy {
    /// The configured policy; `allow_downgrade` is the `--allow-downgrade` flag.
    pub fn new(validation: &crate::config::ValidationSettings, allow_downgrade: bool) -> Self {
        Policy {
            strict_version_check: validation.strict_version_check,
            allow_dev_versions: validation.allow_dev_versions,
            allow_patch_downgrade: validation.allow_patch_downgrade,
            allow_minor_downgrade: validation.allow_minor_downgrade,
            allow_downgrade,
        }
    }
}

/// What a restore may do with a backup of a given version.
#[derive(Debug)]
pub enum Decision {
    /// Restore as is; the notes are printed as warnings.
    Proceed {
        status: Status,
        notes: Vec<String>,
    },
    /// The backup is an older MAJOR.MINOR with a registered migration path.
    Migrate,
    Refuse(CompatError),
}

/// Applies the policy of `wqm-design.md` ("Versions") on top of the Python status.
/// `has_migration_path` answers whether registered migrations lead from the backup's version
/// to the current one.
pub fn decide(
    backup: &str,
    current: &str,
    policy: &Policy,
    has_migration_path: impl Fn(&Version, &Version) -> bool,
) -> Decision {
    let (b, c) = match (Version::parse(backup), Version::parse(current)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => return Decision::Refuse(e),
    };
    if b.has_suffix && !policy.allow_dev_versions {
        return Decision::Refuse(CompatError::DevVersion {
            backup: backup.to_string(),
            current: current.to_string(),
        });
    }
    let status = status_of(&b, &c);
    let downgrade = |minor: bool| {
        let allowed = policy.allow_downgrade || (!minor && policy.allow_patch_downgrade);
        if allowed {
            Decision::Proceed {
                status: Status::Downgrade,
                notes: vec![format!(
                    "Restoring newer backup version {backup} onto older system version {current}; newer versions may have changed the data format"
                )],
            }
        } else {
            Decision::Refuse(CompatError::Downgrade {
                backup: backup.to_string(),
                current: current.to_string(),
                patches: b.patch.saturating_sub(c.patch),
                minor,
            })
        }
    };
    match status {
        Status::Compatible => Decision::Proceed {
            status,
            notes: Vec::new(),
        },
        Status::UpgradeAvailable => Decision::Proceed {
            status,
            notes: vec![compatibility_message(status, backup, current)],
        },
        Status::Downgrade => downgrade(false),
        Status::Incompatible => {
            let newer = (b.major, b.minor) > (c.major, c.minor);
            if newer && b.major == c.major && policy.allow_minor_downgrade {
                return downgrade(true);
            }
            if !newer && has_migration_path(&b, &c) {
                return Decision::Migrate;
            }
            if !newer && b.major == c.major && !policy.strict_version_check {
                return Decision::Proceed {
                    status,
                    notes: vec![format!(
                        "Backup version {backup} is an older minor version than {current} and no migration path exists; restoring anyway because `backup.validation.strict_version_check` is false"
                    )],
                };
            }
            Decision::Refuse(incompatible(backup, current, &b, &c, newer))
        }
    }
}

fn incompatible(backup: &str, current: &str, b: &Version, c: &Version, newer: bool) -> CompatError {
    let detail = if b.major != c.major {
        format!("Major version mismatch: {} vs {}", b.major, c.major)
    } else {
        format!(
            "Minor version mismatch: {}.{} vs {}.{}",
            b.major, b.minor, c.major, c.minor
        )
    };
    let same_major = b.major == c.major;
    let hint = match (newer, same_major) {
        (true, true) => format!("upgrade wqm to {}.{}.x, or set `backup.validation.allow_minor_downgrade: true` and pass --allow-downgrade (dangerous)", b.major, b.minor),
        (true, false) => format!("upgrade wqm to {}.{}.x to restore this backup", b.major, b.minor),
        (false, true) => format!("no migration path from {backup} to {current} (see `wqm backup migrations`); find a backup from the {}.{} series, or set `backup.validation.strict_version_check: false` to restore it anyway", c.major, c.minor),
        (false, false) => format!("no migration path from {backup} to {current} (see `wqm backup migrations`); find a backup from the {}.{} series", c.major, c.minor),
    };
    CompatError::Incompatible {
        backup: backup.to_string(),
        current: current.to_string(),
        detail,
        hint,
    }
}

#[cfg(test)]
mod tests;
