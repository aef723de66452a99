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
    /// Object-store options of a bucket (`[storage]`: server-side encryption).
    options: HashMap<String, String>,
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
                        options: HashMap::new(),
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
            options: HashMap::new(),
        })
    }

    /// The same location with object-store options for a bucket (ignored on a local disk).
    pub fn with_options(mut self, options: HashMap<String, String>) -> Location {
        self.options = options;
        self
    }

    /// The object-store options of a bucket (what exports to a bucket use as well).
    pub fn options(&self) -> &HashMap<String, String> {
        &self.options
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
            o.extend(self.options.clone());
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
    /// Open `url` as a place to write to. With `allowed` (`[export] allowed_urls`), a URL that
    /// does not lie under one of them is refused before anything is created; a local
    /// directory is created only after that check.
    pub fn open(
        url: &str,
        allowed: Option<&[String]>,
        options: &HashMap<String, String>,
    ) -> Result<Target> {
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
            for (k, v) in options {
                if let Ok(key) = k.parse::<object_store::aws::AmazonS3ConfigKey>() {
                    b = b.with_config(key, v);
                }
            }
            let store = b.build().map_err(|e| {
                Error::invalid(format!(
                    "cannot reach s3://{bucket}: {}",
                    e.to_string().lines().next().unwrap_or("")
                ))
            })?;
            let prefix = prefix.trim_matches('/');
            let canonical = format!("s3://{bucket}/{prefix}")
                .trim_end_matches('/')
                .to_string();
            refuse_outside(&canonical, allowed)?;
            return Ok(Target {
                store: Arc::new(store),
                prefix: object_store::path::Path::from(prefix),
                url: format!("s3://{bucket}/{prefix}")
                    .trim_end_matches('/')
                    .to_string(),
            });
        }
        let abs = local_target(u).ok_or_else(|| {
            Error::invalid(format!(
                "{u}: exports go to a directory, file://… or s3://bucket/prefix"
            ))
        })?;
        refuse_outside(&abs.display().to_string(), allowed)?;
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
}

/// Refuse a canonical target URL outside `allowed` (`None`: anything goes).
fn refuse_outside(canonical: &str, allowed: Option<&[String]>) -> Result<()> {
    match allowed {
        Some(a) if !under(canonical, a) => Err(Error::denied(format!(
            "exports may only be written under the [export] allowed_urls of the server's config; {canonical} is not under any of them"
        ))),
        _ => Ok(()),
    }
}

/// Whether the canonical `url` is one of `allowed` or lies below one (whole path segments: a
/// sibling sharing a prefix, `exports_ok_evil` beside `exports_ok`, is not below it).
fn under(url: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        let Some(a) = canonical_target(a) else {
            return false;
        };
        url == a || url.starts_with(&format!("{}/", a.trim_end_matches('/')))
    })
}

fn canonical_target(url: &str) -> Option<String> {
    let u = url.trim();
    if let Some(rest) = u.strip_prefix("s3://").or_else(|| u.strip_prefix("s3a://")) {
        return Some(format!("s3://{}", rest.trim_end_matches('/')));
    }
    local_target(u).map(|p| p.display().to_string())
}

/// The absolute local directory a target URL names (a path or a `file:` URL in any spelling),
/// with `.` and `..` resolved as text and its existing part through the file system, so a
/// link inside an allowed directory that points out of it is seen for what it is (`None`: not
/// local).
fn local_target(u: &str) -> Option<PathBuf> {
    let path = if u.len() > 5 && u[..5].eq_ignore_ascii_case("file:") {
        Url::parse(u).ok()?.to_file_path().ok()?
    } else if u.contains("://") {
        return None;
    } else {
        PathBuf::from(u)
    };
    Some(resolved(&lexical(&path)))
}

/// `p` made absolute with `.` and `..` resolved as text.
pub(crate) fn lexical(p: &std::path::Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    normalize(&p)
}

/// `p` (absolute) with its longest existing ancestor resolved through the file system (links
/// included) and the rest as written (it may be created later).
pub(crate) fn resolved(p: &std::path::Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            break;
        };
        rest.push(name.to_os_string());
        existing = parent;
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
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
    fn targets_outside_allowed_urls_are_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("exports_ok");
        std::fs::create_dir(&ok).unwrap();
        std::os::unix::fs::symlink(dir.path(), ok.join("up")).unwrap();
        let allowed = vec![ok.display().to_string()];
        let d = dir.path().display();
        for url in [
            format!("{d}/outside/etc/cron.d/segdb"),
            format!("{d}/exports_ok/../outside"),
            format!("file://{d}/outside"),
            format!("{d}/exports_ok_evil"),
            format!("{d}/exports_ok/up/outside"),
        ] {
            let e = Target::open(&url, Some(&allowed), &HashMap::new()).unwrap_err();
            assert!(matches!(e, Error::Denied(_)), "{url}: {e}");
        }
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries, vec!["exports_ok".to_string()]);
        for url in [
            format!("{d}/exports_ok/run1"),
            format!("file://{d}/exports_ok/run2"),
            format!("FILE://{d}/exports_ok/./run3"),
        ] {
            Target::open(&url, Some(&allowed), &HashMap::new()).unwrap();
        }
        assert!(ok.join("run3").is_dir());
    }

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
