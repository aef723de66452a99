//! The keyring: one 32-byte HMAC key per pseudonymisation domain, kept in a JSON file outside
//! the data URL (`{"keys": {"user": "<base64>", …}}`), created with mode 0600 on first use.
//! Keys never leave this module except as HMAC instances; `Debug` prints no key material.
//! The file may be sealed (`segdb keys seal`, `seal.rs`): every command then opens it with the
//! key-encryption key its environment names, and saves it sealed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default domain, used for `user_id` at ingest and for any domain without its own key.
pub const USER_DOMAIN: &str = "user";

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    keys: BTreeMap<String, String>,
}

/// Pseudonymisation keys by domain.
#[derive(Clone)]
pub struct Keyring {
    keys: BTreeMap<String, [u8; 32]>,
    path: Option<PathBuf>,
    /// How the file is sealed (`None`: a plain file).
    sealer: Option<super::seal::Sealer>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("domains", &self.keys.keys().collect::<Vec<_>>())
            .field("path", &self.path)
            .finish()
    }
}

fn random_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| Error::Keyring(format!("no randomness for a new key: {e}")))?;
    Ok(key)
}

impl Keyring {
    /// A keyring held only in memory (tests, library users who manage keys themselves).
    pub fn from_keys(keys: impl IntoIterator<Item = (String, [u8; 32])>) -> Result<Self> {
        let keys: BTreeMap<_, _> = keys.into_iter().collect();
        if !keys.contains_key(USER_DOMAIN) {
            return Err(Error::Keyring(
                "a keyring needs a key for the \"user\" domain".into(),
            ));
        }
        Ok(Keyring {
            keys,
            path: None,
            sealer: None,
        })
    }

    /// Open the keyring file at `path`, creating it (mode 0600, with a fresh random `user` key)
    /// when it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Self::open(path);
        }
        let mut keys = BTreeMap::new();
        keys.insert(USER_DOMAIN.to_string(), random_key()?);
        let ring = Keyring {
            keys,
            path: Some(path.to_path_buf()),
            sealer: None,
        };
        ring.save()?;
        tracing::info!(path = %path.display(), "created a new keyring; back it up: without it raw ids cannot be matched to stored users");
        Ok(ring)
    }

    /// Open an existing keyring file, plain or sealed (with the key-encryption key the
    /// environment names; without it, or with a wrong one, this fails naming the variable).
    pub fn open(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Keyring(format!("cannot read {}: {e}", path.display())))?;
        let (text, sealer) = match serde_json::from_str::<super::seal::SealedFile>(&text) {
            Ok(sealed) => {
                let (plain, sealer) =
                    super::seal::Sealer::unseal(&sealed, &path.display().to_string())?;
                let plain = String::from_utf8(plain)
                    .map_err(|_| Error::Keyring(format!("{} is damaged", path.display())))?;
                (plain, Some(sealer))
            }
            Err(_) => (text, None),
        };
        let file: KeyringFile = serde_json::from_str(&text).map_err(|e| {
            Error::Keyring(format!(
                "{} is not a keyring ({{\"keys\": {{\"user\": \"<base64 of 32 bytes>\"}}}}): {}",
                path.display(),
                format!("{:?} at line {}", e.classify(), e.line())
            ))
        })?;
        let mut keys = BTreeMap::new();
        for (domain, b64) in file.keys {
            let bytes = STANDARD.decode(b64.trim()).map_err(|_| {
                Error::Keyring(format!(
                    "key for domain {domain:?} in {} is not base64",
                    path.display()
                ))
            })?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| {
                Error::Keyring(format!(
                    "key for domain {domain:?} in {} is not 32 bytes",
                    path.display()
                ))
            })?;
            keys.insert(domain, key);
        }
        if !keys.contains_key(USER_DOMAIN) {
            return Err(Error::Keyring(format!(
                "{} has no key for the \"user\" domain",
                path.display()
            )));
        }
        Ok(Keyring {
            keys,
            path: Some(path.to_path_buf()),
            sealer,
        })
    }

    /// Whether the file is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealer.is_some()
    }

    /// Seal the file under the key-encryption key the environment names (a new salt).
    pub fn seal(&mut self) -> Result<()> {
        self.sealer = Some(super::seal::Sealer::from_env()?);
        self.save()
    }

    /// Write the file in clear again.
    pub fn unseal(&mut self) -> Result<()> {
        self.sealer = None;
        self.save()
    }

    /// Replace (or add) the key of `domain` with a fresh random key and save the file.
    pub fn rotate(&mut self, domain: &str) -> Result<()> {
        self.keys.insert(domain.to_string(), random_key()?);
        self.save()
    }

    /// The key used for `domain`: its own, else the `user` key.
    pub(crate) fn key_for(&self, domain: &str) -> &[u8; 32] {
        self.keys
            .get(domain)
            .unwrap_or_else(|| &self.keys[USER_DOMAIN])
    }

    /// Where the keyring lives, if it is file backed.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = KeyringFile {
            keys: self
                .keys
                .iter()
                .map(|(d, k)| (d.clone(), STANDARD.encode(k)))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).expect("keyring serialises");
        let text = match &self.sealer {
            Some(s) => s.seal(text.as_bytes())?,
            None => text,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            // A mistyped --keyring must not leave directories and a stray key behind.
            return Err(Error::Keyring(format!(
                "cannot create the keyring {}: the directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }
        let tmp = path.with_extension("keyring.tmp");
        write_private(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_with_mode_0600_and_reopens_with_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.keyring");
        let a = Keyring::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let b = Keyring::open_or_create(&path).unwrap();
        assert_eq!(a.key_for("user"), b.key_for("user"));
        assert_eq!(a.key_for("partner_x"), a.key_for("user"));
        assert!(!format!("{a:?}").contains(&STANDARD.encode(a.key_for("user"))));
    }

    #[test]
    fn rejects_short_keys_and_missing_user_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.keyring");
        std::fs::write(&path, r#"{"keys":{"user":"AAAA"}}"#).unwrap();
        assert!(
            Keyring::open(&path)
                .unwrap_err()
                .to_string()
                .contains("not 32 bytes")
        );
        std::fs::write(&path, r#"{"keys":{}}"#).unwrap();
        assert!(
            Keyring::open(&path)
                .unwrap_err()
                .to_string()
                .contains("no key for the \"user\"")
        );
    }

    /// Sealing changes the file, not the keys; the wrong or a missing variable is named. (One
    /// test, as it sets process-wide variables.)
    #[test]
    fn sealed_keyrings_open_with_their_variable_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.keyring");
        let mut ring = Keyring::open_or_create(&path).unwrap();
        ring.rotate("partner_x").unwrap();
        let user = STANDARD.encode(ring.key_for("user"));
        let partner = STANDARD.encode(ring.key_for("partner_x"));
        // SAFETY: the only test in this binary that touches these variables.
        unsafe {
            std::env::remove_var(super::super::seal::KEK_VAR);
            std::env::set_var(super::super::seal::PASSPHRASE_VAR, "correct horse");
        }
        ring.seal().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"sealed\""), "{text}");
        assert!(
            !text.contains(&user) && !text.contains(&partner),
            "a key in clear"
        );
        // Rotating a sealed keyring keeps it sealed.
        let mut again = Keyring::open(&path).unwrap();
        assert!(again.is_sealed());
        assert_eq!(STANDARD.encode(again.key_for("user")), user);
        again.rotate("partner_y").unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"sealed\"")
        );
        unsafe { std::env::set_var(super::super::seal::PASSPHRASE_VAR, "wrong horse") };
        let e = Keyring::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("SEGDB_KEYRING_PASSPHRASE") && e.contains("wrong"),
            "{e}"
        );
        unsafe { std::env::remove_var(super::super::seal::PASSPHRASE_VAR) };
        let e = Keyring::open(&path).unwrap_err().to_string();
        assert!(e.contains("set SEGDB_KEYRING_PASSPHRASE"), "{e}");
        // A raw key-encryption key.
        unsafe {
            std::env::set_var(super::super::seal::PASSPHRASE_VAR, "correct horse");
        }
        let mut r = Keyring::open(&path).unwrap();
        unsafe {
            std::env::remove_var(super::super::seal::PASSPHRASE_VAR);
            std::env::set_var(super::super::seal::KEK_VAR, STANDARD.encode([9u8; 32]));
        }
        r.seal().unwrap();
        let r = Keyring::open(&path).unwrap();
        assert_eq!(STANDARD.encode(r.key_for("user")), user);
        unsafe { std::env::set_var(super::super::seal::PASSPHRASE_VAR, "x") };
        let e = Keyring::open(&path).unwrap_err().to_string();
        assert!(e.contains("both"), "{e}");
        unsafe {
            std::env::remove_var(super::super::seal::PASSPHRASE_VAR);
        }
        let mut r = Keyring::open(&path).unwrap();
        r.unseal().unwrap();
        unsafe { std::env::remove_var(super::super::seal::KEK_VAR) };
        let plain = std::fs::read_to_string(&path).unwrap();
        assert!(plain.contains(&user));
        assert_eq!(
            STANDARD.encode(Keyring::open(&path).unwrap().key_for("user")),
            user
        );
    }
}
