//! Parsing `--data`: a local path, `file:///…` or `s3://bucket/prefix`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use deltalake::ObjectStore;
use url::Url;

use crate::error::{Error, Result};
use crate::privacy::Keyring;

/// The place a database lives.
#[derive(Debug, Clone)]
pub struct Location {
    /// Always ends with `/`.
    root: Url,
    local: Option<PathBuf>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.local {
            Some(p) => write!(f, "{}", p.display()),
            None => write!(f, "{}", self.root.as_str().trim_end_matches('/')),
        }
    }
}

impl Location {
    /// Parse a `--data` value.
    pub fn parse(s: &str) -> Result<Location> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::invalid(
                "--data is empty; give a path, file:///… or s3://bucket/prefix",
            ));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            let mut url = Url::parse(s)
                .map_err(|e| Error::invalid(format!("--data {s:?} is not a valid URL: {e}")))?;
            match scheme {
                "file" => {
                    let path = url.to_file_path().map_err(|_| {
                        Error::invalid(format!("--data {s:?} is not a local file URL"))
                    })?;
                    return Self::local(path);
                }
                "s3" | "s3a" => {
                    if url.host_str().unwrap_or("").is_empty() {
                        return Err(Error::invalid(format!(
                            "--data {s:?} names no bucket (s3://bucket/prefix)"
                        )));
                    }
                    if !url.path().ends_with('/') {
                        let p = format!("{}/", url.path());
                        url.set_path(&p);
                    }
                    return Ok(Location {
                        root: url,
                        local: None,
                    });
                }
                other => {
                    return Err(Error::invalid(format!(
                        "--data scheme {other:?} is not supported; use a path, file:///… or s3://bucket/prefix"
                    )));
                }
            }
        }
        Self::local(PathBuf::from(s))
    }

    fn local(path: PathBuf) -> Result<Location> {
        let abs = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()?.join(path)
        };
        let abs = normalize(&abs);
        let root = Url::from_directory_path(&abs).map_err(|_| {
            Error::invalid(format!(
                "{} cannot be used as a database path",
                abs.display()
            ))
        })?;
        Ok(Location {
            root,
            local: Some(abs),
        })
    }

    /// The root URL (ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The local directory, when the database is on the local file system.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// URL of a table directory under the root.
    pub fn table_url(&self, rel: &str) -> Result<Url> {
        self.root
            .join(&format!("{rel}/"))
            .map_err(|e| Error::storage(format!("bad table path {rel}: {e}")))
    }

    /// Options handed to delta-rs (it also reads the standard `AWS_*` variables itself).
    pub fn storage_options(&self) -> HashMap<String, String> {
        let mut o = HashMap::new();
        if self.local.is_none() {
            // A plain http endpoint (a local S3 server) needs this; AWS_ALLOW_HTTP still wins.
            if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
                if ep.starts_with("http://") && std::env::var("AWS_ALLOW_HTTP").is_err() {
                    o.insert("AWS_ALLOW_HTTP".into(), "true".into());
                }
            }
        }
        o
    }

    /// Create the local directory if needed.
    pub(crate) fn prepare_local(&self) -> Result<()> {
        if let Some(p) = &self.local {
            if p.exists() && !p.is_dir() {
                return Err(Error::storage(format!(
                    "{} exists and is not a directory",
                    p.display()
                )));
            }
            std::fs::create_dir_all(p)
                .map_err(|e| Error::storage(format!("cannot create {}: {e}", p.display())))?;
        }
        Ok(())
    }

    /// The keyring is a secret: it must never live under the data location.
    pub(crate) fn check_keyring_outside(&self, keyring: &Keyring) -> Result<()> {
        if let (Some(root), Some(k)) = (&self.local, keyring.path()) {
            let k = if k.is_absolute() {
                k.to_path_buf()
            } else {
                std::env::current_dir()?.join(k)
            };
            if normalize(&k).starts_with(root) {
                return Err(Error::Keyring(format!(
                    "the keyring {} is inside the database {}; keys must never be stored under the data URL, move it elsewhere",
                    k.display(),
                    root.display()
                )));
            }
        }
        Ok(())
    }

    /// An object store rooted at this location.
    pub(crate) fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        let t = deltalake::DeltaTableBuilder::from_url(self.root.clone())?
            .with_storage_options(self.storage_options())
            .build()?;
        Ok(t.object_store())
    }
}

/// Where files are written to or read from outside the database: a local directory, a
/// `file://` URL or `s3://bucket/prefix` (S3 settings from the `AWS_*` variables).
#[derive(Debug, Clone)]
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    /// The prefix inside the store (no leading or trailing `/`).
    pub prefix: object_store::path::Path,
    /// The URL in canonical form (`/abs/dir`, `s3://bucket/prefix`), for messages and results.
    pub url: String,
}

impl Target {
    /// Open `url` as a place to write to (a local directory is created).
    pub fn open(url: &str) -> Result<Target> {
        let u = url.trim();
        if u.is_empty() {
            return Err(Error::invalid("the target URL is empty"));
        }
        if let Some(rest) = u.strip_prefix("s3://").or_else(|| u.strip_prefix("s3a://")) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!(
                    "{u} names no bucket (s3://bucket/prefix)"
                )));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            let store = b.build().map_err(|e| {
                Error::invalid(format!(
                    "cannot reach s3://{bucket}: {}",
                    e.to_string().lines().next().unwrap_or("")
                ))
            })?;
            let prefix = prefix.trim_matches('/');
            return Ok(Target {
                store: Arc::new(store),
                prefix: object_store::path::Path::from(prefix),
                url: format!("s3://{bucket}/{prefix}")
                    .trim_end_matches('/')
                    .to_string(),
            });
        }
        let path = if let Some(rest) = u.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if u.contains("://") {
            return Err(Error::invalid(format!(
                "{u}: exports go to a directory, file://… or s3://bucket/prefix"
            )));
        } else {
            PathBuf::from(u)
        };
        let abs = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()?.join(path)
        };
        let abs = normalize(&abs);
        std::fs::create_dir_all(&abs)
            .map_err(|e| Error::invalid(format!("cannot create {}: {e}", abs.display())))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| Error::invalid(format!("cannot write to {}: {e}", abs.display())))?;
        Ok(Target {
            store: Arc::new(store),
            prefix: object_store::path::Path::from(""),
            url: abs.display().to_string(),
        })
    }

    /// The path of `name` under the prefix.
    pub fn child(&self, name: &str) -> object_store::path::Path {
        if self.prefix.as_ref().is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Whether `url` (canonical) lies under one of `allowed` (URL prefixes).
    pub fn is_under(&self, allowed: &[String]) -> bool {
        allowed.iter().any(|a| {
            let a = match Target::canonical(a) {
                Some(a) => a,
                None => return false,
            };
            self.url == a
                || self
                    .url
                    .starts_with(&format!("{}/", a.trim_end_matches('/')))
        })
    }

    fn canonical(url: &str) -> Option<String> {
        let u = url.trim();
        if let Some(rest) = u.strip_prefix("s3://").or_else(|| u.strip_prefix("s3a://")) {
            return Some(format!("s3://{}", rest.trim_end_matches('/')));
        }
        let p = PathBuf::from(u.strip_prefix("file://").unwrap_or(u));
        p.is_absolute().then(|| normalize(&p).display().to_string())
    }
}

/// Lexically normalise `.` and `..` (the directory may not exist yet, so no canonicalize).
fn normalize(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let l = Location::parse("/tmp/x/../db").unwrap();
        assert_eq!(l.root().as_str(), "file:///tmp/db/");
        let l = Location::parse("file:///tmp/db").unwrap();
        assert_eq!(l.local_path().unwrap(), std::path::Path::new("/tmp/db"));
        let l = Location::parse("s3://bucket/some/prefix").unwrap();
        assert_eq!(l.root().as_str(), "s3://bucket/some/prefix/");
        assert_eq!(
            l.table_url("events").unwrap().as_str(),
            "s3://bucket/some/prefix/events/"
        );
        assert!(
            Location::parse("gs://b/p")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(Location::parse("s3:///p").is_err());
    }
}
