//! Where S3's endpoint, region and credentials come from: the standard AWS chain, as the AWS
//! CLI reads it — the environment (`AWS_ENDPOINT_URL[_S3]`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`), then the
//! profile `AWS_PROFILE` (or `default`) of `~/.aws/credentials` and `~/.aws/config`
//! (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE` move them). Explicit options (the
//! config's `backup.s3.*`, later) win over all of it. `object_store` reads only the
//! environment, hence the small reader of the two INI files here. Instance metadata (EC2,
//! ECS) is deliberately not asked: wqm runs on workstations, where that request would go to an
//! address nobody configured.

use std::fmt;
use std::path::{Path, PathBuf};

use super::BackendError;

/// A credential: never shown (`Debug` prints `***`), only handed to the signer.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What the user set explicitly; every field left `None` comes from the AWS chain.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub profile: Option<String>,
}

/// The settings a client is built with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `None`: AWS itself (`https://s3.REGION.amazonaws.com`).
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl Resolved {
    /// The endpoint as messages name it.
    pub fn shown_endpoint(&self) -> String {
        match &self.endpoint {
            Some(url) => crate::secrets::mask_userinfo(url),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }
}

impl S3Options {
    /// The settings from `self`, then the process's environment, then the profile files.
    pub fn resolve(&self) -> Result<Resolved, BackendError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        self.resolve_with(&|key| std::env::var(key).ok(), home.as_deref())
    }

    /// `resolve` with the environment and home directory given (for tests).
    pub fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<Resolved, BackendError> {
        let env = |key: &str| env(key).filter(|v| !v.is_empty());
        let file = |var: &str, default: &str| {
            env(var)
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".aws").join(default)))
        };
        let named = self.profile.clone().or_else(|| env("AWS_PROFILE"));
        let profile_name = named.clone().unwrap_or_else(|| "default".to_string());
        let credentials_path = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_path = file("AWS_CONFIG_FILE", "config");
        let credentials = read_profile(credentials_path.as_deref(), &profile_name, false)?;
        let config = read_profile(config_path.as_deref(), &profile_name, true)?;
        let from_files = |key: &str| {
            credentials
                .as_ref()
                .and_then(|p| p.get(key))
                .or_else(|| config.as_ref().and_then(|p| p.get(key)))
        };

        let region = self
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| config.as_ref().and_then(|p| p.get("region")))
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| config.as_ref().and_then(|p| p.get("endpoint_url")));
        let shown = Resolved {
            endpoint: endpoint.clone(),
            region: region.clone(),
            access_key_id: String::new(),
            secret_access_key: Secret::new(""),
            session_token: None,
        }
        .shown_endpoint();
        let no_credentials = |reason: String| BackendError::NoCredentials {
            endpoint: shown.clone(),
            reason,
        };

        // A source gives the key id and secret together, or not at all (as the AWS CLI).
        let explicit = pair(
            self.access_key_id.clone(),
            self.secret_access_key.clone(),
            self.session_token.clone(),
        );
        let environment = pair(
            env("AWS_ACCESS_KEY_ID"),
            env("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            env("AWS_SESSION_TOKEN").map(Secret::new),
        );
        let files = pair(
            from_files("aws_access_key_id"),
            from_files("aws_secret_access_key").map(Secret::new),
            from_files("aws_session_token").map(Secret::new),
        );
        let (access_key_id, secret_access_key, session_token) = match explicit
            .or(environment)
            .or(files)
        {
            Some(found) => found,
            None => {
                let unsupported = [
                    "credential_process",
                    "sso_start_url",
                    "sso_session",
                    "role_arn",
                    "web_identity_token_file",
                ]
                .into_iter()
                .find(|key| from_files(key).is_some());
                let reason = match (unsupported, &named, credentials.is_some() || config.is_some()) {
                    (Some(key), _, _) => format!(
                        "profile `{profile_name}` uses `{key}`, which wqm does not support; export static credentials (`aws configure export-credentials --profile {profile_name} --format env`)"
                    ),
                    (None, Some(name), false) => format!(
                        "profile `{name}` is in neither `{}` nor `{}`",
                        shown_path(credentials_path.as_deref()),
                        shown_path(config_path.as_deref())
                    ),
                    _ => format!(
                        "neither `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` nor profile `{profile_name}` gives a key id and a secret"
                    ),
                };
                return Err(no_credentials(reason));
            }
        };
        Ok(Resolved {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token,
        })
    }
}

fn pair(
    id: Option<String>,
    secret: Option<Secret>,
    token: Option<Secret>,
) -> Option<(String, Secret, Option<Secret>)> {
    Some((id?, secret?, token))
}

fn shown_path(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.aws/...".to_string())
}

/// One profile's `key = value` pairs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile(Vec<(String, String)>);

impl Profile {
    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }
}

/// The profile `name` of an AWS INI file (`None` when the file or the profile is missing). In
/// the config file a profile's section is `[profile NAME]` (`[default]` for the default); in
/// the credentials file it is `[NAME]`.
fn read_profile(
    path: Option<&Path>,
    name: &str,
    config: bool,
) -> Result<Option<Profile>, BackendError> {
    let Some(path) = path else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BackendError::Io {
                what: "cannot read the AWS profile file",
                path: path.display().to_string(),
                source,
            })
        }
    };
    Ok(parse_profile(&text, name, config))
}

/// The INI dialect of `~/.aws/{config,credentials}`: `[section]` lines, `key = value` lines,
/// `#` and `;` comment lines, and indented lines under a key with an empty value (a nested
/// setting such as `s3 =` / `  addressing_style = path`), which are skipped.
pub fn parse_profile(text: &str, name: &str, config: bool) -> Option<Profile> {
    let wanted = |section: &str| {
        let section = section.trim();
        if config && name != "default" {
            section
                .strip_prefix("profile")
                .filter(|rest| rest.starts_with(char::is_whitespace))
                .is_some_and(|rest| rest.trim() == name)
        } else {
            section == name
                || (config
                    && section
                        .strip_prefix("profile")
                        .is_some_and(|r| r.trim() == name && r.starts_with(char::is_whitespace)))
        }
    };
    let mut found: Option<Profile> = None;
    let mut inside = false;
    for line in text.lines() {
        let nested = line.starts_with(char::is_whitespace);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(section);
            if inside && found.is_none() {
                found = Some(Profile::default());
            }
            continue;
        }
        if !inside || nested {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if let Some(profile) = found.as_mut() {
                profile
                    .0
                    .push((key.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const CONFIG: &str = "\
# a comment
[default]
region = eu-west-1
s3 =
  addressing_style = path
  endpoint_url = http://nested.invalid

[profile work]
region=us-west-2
endpoint_url = http://127.0.0.1:8333
; another comment
aws_access_key_id = CONFIGKEY
aws_secret_access_key = configsecret

[work]
region = ignored-in-config

[profile sso]
sso_start_url = https://example.invalid/start
";

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = defaultsecret

[work]
aws_access_key_id = WORKKEY
aws_secret_access_key = worksecret
aws_session_token = worktoken
";

    fn home() -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/config"), CONFIG).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), CREDENTIALS).unwrap();
        home
    }

    fn resolve(
        options: &S3Options,
        vars: &[(&str, &str)],
        home: &Path,
    ) -> Result<Resolved, BackendError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        options.resolve_with(&|key| vars.get(key).cloned(), Some(home))
    }

    #[test]
    fn the_config_file_names_profiles_with_their_prefix() {
        let work = parse_profile(CONFIG, "work", true).unwrap();
        assert_eq!(work.get("region").as_deref(), Some("us-west-2"));
        assert_eq!(
            work.get("endpoint_url").as_deref(),
            Some("http://127.0.0.1:8333")
        );
        let default = parse_profile(CONFIG, "default", true).unwrap();
        assert_eq!(default.get("region").as_deref(), Some("eu-west-1"));
        // The nested `s3 =` settings are not the profile's own.
        assert_eq!(default.get("endpoint_url"), None);
        assert_eq!(default.get("s3"), None);
        let credentials = parse_profile(CREDENTIALS, "work", false).unwrap();
        assert_eq!(
            credentials.get("aws_session_token").as_deref(),
            Some("worktoken")
        );
        assert!(parse_profile(CREDENTIALS, "missing", false).is_none());
        assert!(parse_profile(CONFIG, "missing", true).is_none());
    }

    #[test]
    fn the_environment_comes_before_the_profile_files() {
        let home = home();
        let vars = [
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "ap-south-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ];
        let resolved = resolve(&S3Options::default(), &vars, home.path()).unwrap();
        assert_eq!(resolved.access_key_id, "ENVKEY");
        assert_eq!(resolved.secret_access_key.expose(), "envsecret");
        assert_eq!(resolved.session_token, None);
        assert_eq!(resolved.region, "ap-south-1");
        assert_eq!(resolved.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        // AWS_ENDPOINT_URL_S3 is the more specific one.
        let mut specific = vars.to_vec();
        specific.push(("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001"));
        let resolved = resolve(&S3Options::default(), &specific, home.path()).unwrap();
        assert_eq!(resolved.endpoint.as_deref(), Some("http://127.0.0.1:9001"));
        // Explicit options win over everything.
        let explicit = S3Options {
            region: Some("sa-east-1".into()),
            access_key_id: Some("OPTKEY".into()),
            secret_access_key: Some(Secret::new("optsecret")),
            ..S3Options::default()
        };
        let resolved = resolve(&explicit, &vars, home.path()).unwrap();
        assert_eq!(
            (resolved.access_key_id.as_str(), resolved.region.as_str()),
            ("OPTKEY", "sa-east-1")
        );
    }

    #[test]
    fn a_profile_gives_credentials_region_and_endpoint() {
        let home = home();
        let resolved = resolve(
            &S3Options::default(),
            &[("AWS_PROFILE", "work")],
            home.path(),
        )
        .unwrap();
        assert_eq!(resolved.access_key_id, "WORKKEY");
        assert_eq!(resolved.secret_access_key.expose(), "worksecret");
        assert_eq!(
            resolved.session_token.as_ref().map(Secret::expose),
            Some("worktoken")
        );
        assert_eq!(resolved.region, "us-west-2");
        assert_eq!(resolved.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        let resolved = resolve(&S3Options::default(), &[], home.path()).unwrap();
        assert_eq!(resolved.access_key_id, "DEFAULTKEY");
        assert_eq!(resolved.region, "eu-west-1");
        assert_eq!(resolved.endpoint, None);
        assert_eq!(
            resolved.shown_endpoint(),
            "https://s3.eu-west-1.amazonaws.com"
        );
        // Half a pair in the environment does not hide the profile's whole one.
        let resolved = resolve(
            &S3Options::default(),
            &[("AWS_ACCESS_KEY_ID", "HALF")],
            home.path(),
        )
        .unwrap();
        assert_eq!(resolved.access_key_id, "DEFAULTKEY");
        // Moved files.
        let moved = tempfile::tempdir().unwrap();
        let path = moved.path().join("creds");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = MOVED\naws_secret_access_key = s\n",
        )
        .unwrap();
        let resolved = resolve(
            &S3Options::default(),
            &[("AWS_SHARED_CREDENTIALS_FILE", path.to_str().unwrap())],
            home.path(),
        )
        .unwrap();
        assert_eq!(resolved.access_key_id, "MOVED");
    }

    #[test]
    fn missing_credentials_say_why_without_any_secret() {
        let home = home();
        let error = resolve(
            &S3Options::default(),
            &[("AWS_PROFILE", "sso")],
            home.path(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("uses `sso_start_url`"),
            "{error}"
        );
        let empty = tempfile::tempdir().unwrap();
        let error = resolve(
            &S3Options::default(),
            &[("AWS_PROFILE", "nope")],
            empty.path(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("profile `nope` is in neither"),
            "{error}"
        );
        let error = resolve(
            &S3Options::default(),
            &[("AWS_SECRET_ACCESS_KEY", "topsecret")],
            empty.path(),
        )
        .unwrap_err();
        assert!(
            matches!(error, BackendError::NoCredentials { .. }),
            "{error}"
        );
        assert!(!format!("{error} {error:?}").contains("topsecret"));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let home = home();
        let resolved = resolve(
            &S3Options::default(),
            &[("AWS_PROFILE", "work")],
            home.path(),
        )
        .unwrap();
        let shown = format!("{resolved:?}");
        assert!(
            !shown.contains("worksecret") && !shown.contains("worktoken"),
            "{shown}"
        );
        assert!(shown.contains("WORKKEY"), "{shown}");
    }
}
