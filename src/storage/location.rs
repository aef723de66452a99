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
