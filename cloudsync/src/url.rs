//! Where the cloud disk lives: a store address and its credentials.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::SyncError;

/// The address of a user's cloud disk.
///
/// Parsed from `DIR`, `file://DIR`, `s3://BUCKET/PREFIX` or `webdav+http(s)://HOST/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreUrl {
    /// A local directory standing in for the cloud disk (the default, no set-up).
    LocalDir(PathBuf),
    /// S3-compatible object storage; `endpoint` for non-AWS servers (`http://` allowed).
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
    },
    /// A WebDAV collection (Nextcloud's protocol); `url` is `http(s)://HOST/PATH`.
    WebDav { url: String },
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::LocalDir(dir) => write!(f, "file://{}", dir.display()),
            StoreUrl::S3 {
                bucket,
                prefix,
                endpoint,
            } => {
                write!(f, "s3://{bucket}/{prefix}")?;
                if let Some(endpoint) = endpoint {
                    write!(f, " (endpoint {endpoint})")?;
                }
                Ok(())
            }
            StoreUrl::WebDav { url } => write!(f, "webdav+{url}"),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = SyncError;

    fn from_str(input: &str) -> Result<Self, SyncError> {
        let bad = |reason: &str| SyncError::BadStoreUrl {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = input.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name after s3://"));
            }
            let bucket_ok = bucket.len() >= 3
                && bucket.len() <= 63
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(bad(
                    "a bucket name has 3 to 63 characters: lowercase letters, digits, '-' and '.'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|part| part == "." || part == "..") {
                return Err(bad("the prefix may not contain `.` or `..` segments"));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                endpoint: None,
            });
        }
        if let Some(url) = input.strip_prefix("webdav+") {
            let host_path = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .ok_or_else(|| bad("webdav+ must be followed by http:// or https://"))?;
            if host_path.split('/').next().unwrap_or("").is_empty() {
                return Err(bad("no host after webdav+http(s)://"));
            }
            return Ok(StoreUrl::WebDav {
                url: url.trim_end_matches('/').to_owned(),
            });
        }
        let dir = match input.strip_prefix("file://") {
            Some(dir) => dir,
            None if input.contains("://") => {
                return Err(bad("unknown scheme"));
            }
            None => input,
        };
        if dir.is_empty() {
            return Err(bad("no directory after file://"));
        }
        let dir = Path::new(dir);
        if !dir.is_absolute() {
            return Err(bad("a local store directory must be an absolute path"));
        }
        Ok(StoreUrl::LocalDir(dir.to_owned()))
    }
}

/// S3 credentials (access key id, secret, region).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `us-east-1` when not given (what most S3-compatible servers expect).
    pub region: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// A store address and what is needed to reach it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// For S3: from [`S3Credentials::from_env`] or [`S3Credentials::from_file`].
    pub s3_credentials: Option<S3Credentials>,
    /// How long the engine waits for a network store, from the opening on.
    pub wait: StoreWait,
}

impl StoreConfig {
    /// A configuration without credentials (local directories, anonymous WebDAV), waiting as
    /// long as the store's own timeouts and retries take.
    pub fn new(url: StoreUrl) -> Self {
        StoreConfig {
            url,
            s3_credentials: None,
            wait: StoreWait::Unbounded,
        }
    }
}

/// How long the engine waits for a network store that does not answer. A store that accepts
/// connections and never answers costs minutes with [`StoreWait::Unbounded`] (the HTTP
/// client's 120 s timeout, its retries and the engine's); a caller that must get on (`elastos
/// run` starting an app from its local copy) bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreWait {
    /// As long as the store's timeouts and retries take.
    Unbounded,
    /// Every request must be answered by `deadline` (`budget`: how long that was, for messages).
    Until {
        deadline: std::time::Instant,
        budget: std::time::Duration,
    },
    /// The first request must be answered by `deadline`; once the store has answered, the wait
    /// is unbounded (a store that answers is given the time a large upload needs).
    FirstAnswerBy {
        deadline: std::time::Instant,
        budget: std::time::Duration,
    },
}

impl StoreWait {
    /// Every request answered within `budget` from now.
    pub fn within(budget: std::time::Duration) -> Self {
        StoreWait::Until {
            deadline: std::time::Instant::now() + budget,
            budget,
        }
    }

    /// The first answer within `budget` from now.
    pub fn first_answer_within(budget: std::time::Duration) -> Self {
        StoreWait::FirstAnswerBy {
            deadline: std::time::Instant::now() + budget,
            budget,
        }
    }
}

impl S3Credentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optional) `AWS_REGION`; `None`
    /// when the first two are not both set.
    pub fn from_env() -> Option<Self> {
        let access_key_id = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .filter(|v| !v.is_empty())?;
        let secret_access_key = std::env::var("AWS_SECRET_ACCESS_KEY")
            .ok()
            .filter(|v| !v.is_empty())?;
        let region = std::env::var("AWS_REGION")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        Some(S3Credentials {
            access_key_id,
            secret_access_key,
            region,
        })
    }

    /// From a file of `KEY=VALUE` lines (`aws_access_key_id`, `aws_secret_access_key`,
    /// `region`; case-insensitive, `#` comments, an AWS-style `[profile]` header is ignored).
    /// The file must not be readable or writable by group or others (mode 0600 or stricter).
    pub fn from_file(path: &Path) -> Result<Self, SyncError> {
        use std::os::unix::fs::PermissionsExt;
        let bad = |reason: String| SyncError::Credentials { reason };
        let meta = std::fs::metadata(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "{} has mode {mode:04o}; it holds a secret, so it must be 0600 (chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let (mut id, mut secret, mut region) = (None, None, None);
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| {
                bad(format!(
                    "{} line {}: expected KEY=VALUE",
                    path.display(),
                    number + 1
                ))
            })?;
            let value = value.trim().to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(value),
                "aws_secret_access_key" => secret = Some(value),
                "region" | "aws_region" => region = Some(value),
                other => {
                    return Err(bad(format!(
                        "{} line {}: unknown key {other:?} (expected aws_access_key_id, aws_secret_access_key, region)",
                        path.display(),
                        number + 1
                    )))
                }
            }
        }
        Ok(S3Credentials {
            access_key_id: id
                .ok_or_else(|| bad(format!("{} has no aws_access_key_id", path.display())))?,
            secret_access_key: secret
                .ok_or_else(|| bad(format!("{} has no aws_secret_access_key", path.display())))?,
            region: region.unwrap_or_else(|| "us-east-1".into()),
        })
    }
}
