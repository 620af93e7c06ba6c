//! Where a store is and how to reach it: `--backend s3://BUCKET[/PREFIX]`
//! or the `[backend]` table of the config file, with the endpoint, region
//! and addressing from there or from the environment, and the credentials
//! from the environment or a credentials file, never from the command line
//! (a command line is visible to every local user in /proc).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::backend::strict;
use crate::error::{Error, IoContext, OssCode, Result};

/// The `[backend]` table of the config file. Every key is optional; the
/// environment fills what it leaves out (see [`StoreSpec::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTable {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: Option<String>,
    /// One or more endpoints of the same store (`http://127.0.0.1:3900`):
    /// the first that answers is used.
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub region: Option<String>,
    /// `path` (the default: `ENDPOINT/BUCKET/KEY`, what self-hosted stores
    /// want) or `virtual` (`BUCKET.ENDPOINT/KEY`).
    pub addressing: Option<String>,
    /// An AWS-style credentials file (`[default]`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_session_token`), mode 0600.
    pub credentials_file: Option<PathBuf>,
    /// This host's own directory for the store: staged uploads. Default:
    /// `$SSEFS_STATE_DIR`, else /var/lib/ssefs-store for root, else
    /// `$XDG_STATE_HOME/ssefs` (`~/.local/state/ssefs`).
    pub state_dir: Option<PathBuf>,
    /// Retries of a failed request, with backoff (default 10).
    pub retries: Option<usize>,
    /// Per-request timeout (default 30 s).
    pub timeout_ms: Option<u64>,
    /// How changes to ssefs's records are serialised across hosts: "etag"
    /// (the store honours If-Match / If-None-Match on PUT), "lock" (the
    /// ticket lock, for stores that ignore them, as Garage 2.5 does), or
    /// "auto" (the default: probe the store and remember for an hour).
    pub conditional: Option<String>,
}

/// Access keys for the store. The secret is zeroized on drop and never
/// printed.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Everything needed to open a store, resolved and checked.
#[derive(Debug)]
pub struct StoreSpec {
    /// The store's bucket.
    pub bucket: String,
    /// Where ssefs's buckets live in it: "" or `a/b` (no slashes around).
    pub prefix: String,
    pub endpoints: Vec<String>,
    pub region: String,
    pub virtual_hosted: bool,
    pub credentials: Credentials,
    pub state_dir: PathBuf,
    pub retries: usize,
    pub timeout_ms: u64,
    /// "auto", "etag" or "lock" (see `BackendTable::conditional`).
    pub conditional: String,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::new(OssCode::InvalidArgument, msg)
}

/// `s3://BUCKET[/PREFIX]` → (bucket, prefix).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        bad(format!(
            "backend {url:?}: not a store URL (s3://BUCKET[/PREFIX]); a data directory is \
             named with --data-dir"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    // S3 bucket names: 3-63 of [a-z0-9.-]; the store checks the rest.
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if !bucket_ok {
        return Err(bad(format!(
            "backend {url:?}: {bucket:?} is not a store bucket name (3-63 of a-z, 0-9, '.', '-')"
        )));
    }
    // Each prefix segment must be a name object_store keeps as it is.
    if prefix.split('/').any(|s| {
        s.is_empty() && !prefix.is_empty()
            || s == "."
            || s == ".."
            || s.starts_with(".ssefs")
            || s.chars().any(char::is_control)
    }) {
        return Err(bad(format!(
            "backend {url:?}: the prefix {prefix:?} has an empty, '.', '..', '.ssefs*' or control-character segment"
        )));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The default state directory of this host (see `BackendTable::state_dir`).
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = env("SSEFS_STATE_DIR") {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ssefs-store");
    }
    let base = env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("ssefs")
}

impl StoreSpec {
    /// Resolves a store from the command line's URL (which wins) and the
    /// config file's table, then the environment: `SSEFS_S3_ENDPOINTS`
    /// (comma-separated) or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`;
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`; `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, else the credentials
    /// file (the table's, `$AWS_SHARED_CREDENTIALS_FILE`, or
    /// `$CREDENTIALS_DIRECTORY/s3` under systemd).
    pub fn resolve(url: Option<&str>, table: Option<&BackendTable>) -> Result<StoreSpec> {
        let t = table.cloned().unwrap_or_default();
        let url = url
            .map(str::to_owned)
            .or(t.url.clone())
            .ok_or_else(|| bad("no store named: give --backend s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = parse_url(&url)?;
        let mut endpoints = t.endpoints.clone();
        if endpoints.is_empty() {
            if let Some(e) = env("SSEFS_S3_ENDPOINTS")
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"))
            {
                endpoints = e.split(',').map(|s| s.trim().to_owned()).collect();
            }
        }
        endpoints.retain(|e| !e.is_empty());
        if endpoints.is_empty() {
            return Err(bad(format!(
                "backend {url}: no endpoint: set `endpoints` under [backend] or $AWS_ENDPOINT_URL_S3"
            )));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(bad(format!(
                    "backend {url}: endpoint {e:?} is not an http:// or https:// URL"
                )));
            }
        }
        let region = t
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let virtual_hosted = match t.addressing.as_deref() {
            None | Some("path") => false,
            Some("virtual") => true,
            Some(o) => {
                return Err(bad(format!(
                    "backend {url}: addressing {o:?}: use \"path\" or \"virtual\""
                )))
            }
        };
        let conditional = t.conditional.clone().unwrap_or_else(|| "auto".into());
        if !["auto", "etag", "lock"].contains(&conditional.as_str()) {
            return Err(bad(format!(
                "backend {url}: conditional {conditional:?}: use \"auto\", \"etag\" or \"lock\""
            )));
        }
        let credentials =
            credentials(t.credentials_file.as_deref()).map_err(|e| e.resource(url.clone()))?;
        Ok(StoreSpec {
            bucket,
            prefix,
            endpoints,
            region,
            virtual_hosted,
            credentials,
            state_dir: t.state_dir.clone().unwrap_or_else(default_state_dir),
            retries: t.retries.unwrap_or(10),
            timeout_ms: t.timeout_ms.unwrap_or(30_000),
            conditional,
        })
    }

    /// `s3://BUCKET/PREFIX at ENDPOINT`, for messages.
    pub fn shown(&self) -> String {
        let p = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        format!("s3://{}{p} at {}", self.bucket, self.endpoints.join(","))
    }
}

/// The access keys: the environment, else a credentials file.
fn credentials(file: Option<&Path>) -> Result<Credentials> {
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: Zeroizing::new(secret),
            session_token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
        });
    }
    let path = file
        .map(Path::to_path_buf)
        .or_else(|| env("AWS_SHARED_CREDENTIALS_FILE").map(PathBuf::from))
        .or_else(|| {
            env("CREDENTIALS_DIRECTORY")
                .map(|d| Path::new(&d).join("s3"))
                .filter(|p| p.exists())
        })
        .ok_or_else(|| {
            bad("no credentials for the store: set $AWS_ACCESS_KEY_ID and \
                 $AWS_SECRET_ACCESS_KEY, or `credentials_file` under [backend]")
        })?;
    // Someone who can write it could point us at their store; someone who
    // can read it has our keys.
    let mut f = strict::open_secret_file(&path)?;
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut f, &mut text).ctx(path.display())?;
    parse_credentials(&text, &path)
}

/// The `[default]` section of an AWS-style credentials file.
fn parse_credentials(text: &str, path: &Path) -> Result<Credentials> {
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_owned();
            continue;
        }
        if section != "default" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
                "aws_session_token" => token = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => Err(bad(format!(
            "credentials file {}: no aws_access_key_id and aws_secret_access_key under [default]",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_into_bucket_and_prefix() {
        assert_eq!(parse_url("s3://bkt").unwrap(), ("bkt".into(), "".into()));
        assert_eq!(
            parse_url("s3://bkt/a/b/").unwrap(),
            ("bkt".into(), "a/b".into())
        );
        for bad in [
            "bkt",
            "http://bkt",
            "s3://b",
            "s3://Bkt",
            "s3://bkt/a//b",
            "s3://bkt/../x",
            "s3://bkt/.ssefs",
            "s3://bkt/a\nb",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.code, OssCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_credentials_file_gives_its_default_section_only() {
        let text = "[other]\naws_access_key_id = X\naws_secret_access_key = Y\n\
                    [default]\naws_access_key_id = GK1\naws_secret_access_key = s3cr3t\n";
        let c = parse_credentials(text, Path::new("f")).unwrap();
        assert_eq!(c.access_key_id, "GK1");
        assert_eq!(c.secret_access_key.as_str(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = parse_credentials("[other]\naws_access_key_id = X\n", Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("[default]"), "{e}");
    }
}
