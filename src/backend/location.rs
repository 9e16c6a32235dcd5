//! Where a repository is: a local directory or `s3://BUCKET/PREFIX`.

use std::fmt;
use std::path::PathBuf;

use crate::exit::{Classify, ExitCode};

/// A repository's place, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// A bucket and a key prefix inside it (`""` for the whole bucket; never with a trailing
    /// `/`).
    S3 {
        bucket: String,
        prefix: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("`{given}` is not a valid S3 location: {reason}")]
    BadS3 { given: String, reason: String },
    #[error("`{given}` uses `{scheme}://`, which wqm does not support")]
    UnsupportedScheme { given: String, scheme: String },
}

impl Classify for LocationError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }

    fn hint(&self) -> Option<String> {
        Some("write a local path or `s3://BUCKET/PREFIX`".to_string())
    }
}

impl Location {
    /// `s3://BUCKET[/PREFIX]` is S3; `SCHEME://…` of another scheme, and `s3:` without `//`
    /// (a typo that would otherwise make a local directory named `s3:`), are refused; anything
    /// else is a local path.
    pub fn parse(given: &str) -> Result<Self, LocationError> {
        let bad = |reason: &str| LocationError::BadS3 {
            given: crate::format::names::shown(given),
            reason: reason.to_string(),
        };
        if let Some(rest) = strip_prefix_ignore_case(given, "s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(bad)?;
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() {
                super::Name::new(prefix).map_err(|e| match e {
                    super::BackendError::BadName { reason, .. } => {
                        bad(&format!("the prefix {reason}"))
                    }
                    other => bad(&other.to_string()),
                })?;
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if strip_prefix_ignore_case(given, "s3:").is_some() {
            return Err(bad("an S3 location starts with `s3://`"));
        }
        if let Some((scheme, _)) = given.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(LocationError::UnsupportedScheme {
                    given: crate::format::names::shown(given),
                    scheme: scheme.to_string(),
                });
            }
        }
        Ok(Location::Local(PathBuf::from(given)))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// S3's rules for a bucket name: 3 to 63 lowercase letters, digits, `.` and `-`, starting and
/// ending with a letter or digit, no `..`.
fn check_bucket(bucket: &str) -> Result<(), &'static str> {
    if bucket.is_empty() {
        return Err("the bucket name is missing");
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err("a bucket name has 3 to 63 characters");
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return Err("a bucket name has only lowercase letters, digits, `.` and `-`");
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(bucket.chars().next()) || !edge(bucket.chars().last()) || bucket.contains("..") {
        return Err("a bucket name starts and ends with a letter or digit, without `..`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> Location {
        Location::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn s3_locations_parse_into_bucket_and_prefix() {
        assert_eq!(
            Location::parse("s3://wqm-test").unwrap(),
            s3("wqm-test", "")
        );
        assert_eq!(
            Location::parse("s3://wqm-test/").unwrap(),
            s3("wqm-test", "")
        );
        assert_eq!(Location::parse("s3://b.1-x/n1").unwrap(), s3("b.1-x", "n1"));
        assert_eq!(
            Location::parse("S3://bkt/a/b/c/").unwrap(),
            s3("bkt", "a/b/c")
        );
        assert_eq!(
            Location::parse("s3://bkt/a/b").unwrap().to_string(),
            "s3://bkt/a/b"
        );
        assert_eq!(Location::parse("s3://bkt").unwrap().to_string(), "s3://bkt");
    }

    #[test]
    fn local_paths_stay_paths() {
        for path in ["/var/backups", "backups", "./s3", "s3", "dir/s3:x", "a:b"] {
            assert_eq!(
                Location::parse(path).unwrap(),
                Location::Local(PathBuf::from(path)),
                "{path}"
            );
        }
    }

    #[test]
    fn bad_s3_locations_are_refused_with_the_reason() {
        for (given, reason) in [
            ("s3://", "missing"),
            ("s3:///prefix", "missing"),
            ("s3://ab", "3 to 63"),
            ("s3://Bucket", "lowercase"),
            ("s3://bucket_x", "lowercase"),
            ("s3://-bucket", "starts and ends"),
            ("s3://a..b", "starts and ends"),
            (
                "s3://bucket/a/../b",
                "the prefix has a `.` or `..` component",
            ),
            ("s3://bucket/a//b", "empty component"),
            ("s3://bucket/.wqm-backend", "the prefix is inside"),
            ("s3:bucket/n1", "starts with `s3://`"),
            ("s3:/bucket", "starts with `s3://`"),
        ] {
            let error = Location::parse(given).unwrap_err();
            assert!(
                matches!(error, LocationError::BadS3 { .. }),
                "{given}: {error}"
            );
            assert!(error.to_string().contains(reason), "{given}: {error}");
        }
        let error = Location::parse("gs://bucket/x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`gs://bucket/x` uses `gs://`, which wqm does not support"
        );
        assert_eq!(error.exit_code(), ExitCode::Usage);
    }
}
