//! A keyring file sealed at rest (DESIGN §18): the plain keyring's JSON encrypted with
//! AES-256-GCM under a key-encryption key (KEK). The KEK comes from the environment, never from
//! a file beside the keyring:
//! - `SEGDB_KEYRING_PASSPHRASE`: a passphrase stretched with argon2id (salt and cost stored in
//!   the file), or
//! - `SEGDB_KEYRING_KEK`: the base64 of 32 bytes, used as it is (for a secret manager).
//!
//! Setting both is an error. A sealed file holds no key in clear:
//! `{"sealed": {"v": 1, "kdf": "argon2id"|"kek", "m", "t", "p", "salt", "nonce", "ciphertext"}}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PASSPHRASE_VAR: &str = "SEGDB_KEYRING_PASSPHRASE";
pub const KEK_VAR: &str = "SEGDB_KEYRING_KEK";

/// Bound into every ciphertext, so that a sealed keyring cannot be passed off as anything else.
const AAD: &[u8] = b"segdb-keyring/v1";

/// argon2id cost of a passphrase (OWASP's first recommendation: 19 MiB, 2 passes).
const M_KIB: u32 = 19_456;
const T: u32 = 2;
const P: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(crate) struct SealedFile {
    pub(crate) sealed: Sealed,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Sealed {
    v: u32,
    kdf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    nonce: String,
    ciphertext: String,
}

/// Where the KEK comes from.
#[derive(Clone)]
enum Source {
    Passphrase(String),
    Kek([u8; 32]),
}

/// A key-encryption key ready to seal and unseal (with the salt it was derived with).
#[derive(Clone)]
pub(crate) struct Sealer {
    kek: [u8; 32],
    kdf: Kdf,
}

#[derive(Clone)]
enum Kdf {
    Argon2id {
        salt: [u8; 16],
        m: u32,
        t: u32,
        p: u32,
    },
    Raw,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kdf {
            Kdf::Argon2id { .. } => "Sealer(passphrase)",
            Kdf::Raw => "Sealer(kek)",
        })
    }
}

/// The KEK source the environment names (`None`: neither variable is set).
fn source() -> Result<Option<Source>> {
    let pass = std::env::var(PASSPHRASE_VAR).ok().filter(|v| !v.is_empty());
    let kek = std::env::var(KEK_VAR).ok().filter(|v| !v.is_empty());
    match (pass, kek) {
        (Some(_), Some(_)) => Err(Error::Keyring(format!(
            "both {PASSPHRASE_VAR} and {KEK_VAR} are set; set one"
        ))),
        (Some(p), None) => Ok(Some(Source::Passphrase(p))),
        (None, Some(k)) => {
            let bytes = STANDARD
                .decode(k.trim())
                .map_err(|_| Error::Keyring(format!("{KEK_VAR} is not base64 (of 32 bytes)")))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| Error::Keyring(format!("{KEK_VAR} is not 32 bytes")))?;
            Ok(Some(Source::Kek(key)))
        }
        (None, None) => Ok(None),
    }
}

fn argon2(pass: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<[u8; 32]> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| Error::Keyring(format!("bad argon2id parameters in the keyring: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(pass.as_bytes(), salt, &mut out)
        .map_err(|e| Error::Keyring(format!("cannot derive the keyring's key: {e}")))?;
    Ok(out)
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Keyring(format!("no randomness: {e}")))?;
    Ok(b)
}

fn cipher(kek: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).expect("32-byte key"))
}

fn b64<const N: usize>(what: &str, s: &Option<String>) -> Result<[u8; N]> {
    s.as_deref()
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Keyring(format!("the sealed keyring's {what} is damaged")))
}

impl Sealer {
    /// A new sealer from the environment, for `segdb keys seal` (a fresh salt).
    pub(crate) fn from_env() -> Result<Sealer> {
        match source()? {
            None => Err(Error::Keyring(format!(
                "set {PASSPHRASE_VAR} (a passphrase) or {KEK_VAR} (base64 of 32 bytes) to seal the keyring"
            ))),
            Some(Source::Kek(kek)) => Ok(Sealer { kek, kdf: Kdf::Raw }),
            Some(Source::Passphrase(p)) => {
                let salt = random::<16>()?;
                Ok(Sealer {
                    kek: argon2(&p, &salt, M_KIB, T, P)?,
                    kdf: Kdf::Argon2id {
                        salt,
                        m: M_KIB,
                        t: T,
                        p: P,
                    },
                })
            }
        }
    }

    /// Encrypt `plain` (a keyring's JSON) into the sealed file's text.
    pub(crate) fn seal(&self, plain: &[u8]) -> Result<String> {
        let nonce = random::<12>()?;
        let mut buf = plain.to_vec();
        cipher(&self.kek)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| Error::Keyring("cannot seal the keyring".into()))?;
        let (kdf, m, t, p, salt) = match &self.kdf {
            Kdf::Argon2id { salt, m, t, p } => (
                "argon2id",
                Some(*m),
                Some(*t),
                Some(*p),
                Some(STANDARD.encode(salt)),
            ),
            Kdf::Raw => ("kek", None, None, None, None),
        };
        let file = SealedFile {
            sealed: Sealed {
                v: 1,
                kdf: kdf.into(),
                m,
                t,
                p,
                salt,
                nonce: STANDARD.encode(nonce),
                ciphertext: STANDARD.encode(&buf),
            },
        };
        Ok(serde_json::to_string_pretty(&file).expect("sealed keyring serialises"))
    }

    /// Decrypt a sealed file with the KEK the environment names; returns the plain JSON and
    /// the sealer to seal it again with (same salt and cost).
    pub(crate) fn unseal(file: &SealedFile, path: &str) -> Result<(Vec<u8>, Sealer)> {
        let s = &file.sealed;
        if s.v != 1 {
            return Err(Error::Keyring(format!(
                "{path} is sealed with format version {}; this segdb reads version 1",
                s.v
            )));
        }
        let (var, sealer) = match (s.kdf.as_str(), source()?) {
            ("argon2id", Some(Source::Passphrase(pass))) => {
                let (m, t, p) = (s.m.unwrap_or(M_KIB), s.t.unwrap_or(T), s.p.unwrap_or(P));
                let salt = b64::<16>("salt", &s.salt)?;
                let kek = argon2(&pass, &salt, m, t, p)?;
                (
                    PASSPHRASE_VAR,
                    Sealer {
                        kek,
                        kdf: Kdf::Argon2id { salt, m, t, p },
                    },
                )
            }
            ("kek", Some(Source::Kek(kek))) => (KEK_VAR, Sealer { kek, kdf: Kdf::Raw }),
            ("argon2id", _) => {
                return Err(Error::Keyring(format!(
                    "{path} is sealed with a passphrase: set {PASSPHRASE_VAR}"
                )));
            }
            ("kek", _) => {
                return Err(Error::Keyring(format!(
                    "{path} is sealed with a key-encryption key: set {KEK_VAR} (base64 of 32 bytes)"
                )));
            }
            (other, _) => {
                return Err(Error::Keyring(format!(
                    "{path} is sealed with an unknown method {other:?}"
                )));
            }
        };
        let nonce = b64::<12>("nonce", &Some(s.nonce.clone()))?;
        let mut buf = STANDARD
            .decode(&s.ciphertext)
            .map_err(|_| Error::Keyring(format!("the sealed keyring {path} is damaged")))?;
        let plain = cipher(&sealer.kek)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| {
                Error::Keyring(format!(
                    "cannot unseal {path}: {var} is wrong (or the file was altered)"
                ))
            })?;
        Ok((plain.to_vec(), sealer))
    }
}
