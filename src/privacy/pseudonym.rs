//! The pseudonym construction of DESIGN.md §6:
//! `'p1_' || base64url_nopad(HMAC-SHA256(key, 'segdb/v1' || 0x00 || domain || 0x00 || value)[0..16])`.
//! Anyone holding the key can recompute a pseudonym; nobody else can.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keyring::Keyring;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every pseudonym this version produces.
pub const PREFIX: &str = "p1_";

/// A reusable pseudonymiser for one domain: the keyed HMAC state is set up once.
#[derive(Clone)]
pub struct Pseudonymizer {
    base: HmacSha256,
}

impl Pseudonymizer {
    /// A pseudonymiser for `domain` with that domain's key from `keyring`.
    pub fn new(keyring: &Keyring, domain: &str) -> Self {
        let mut base =
            HmacSha256::new_from_slice(keyring.key_for(domain)).expect("HMAC takes any key length");
        base.update(b"segdb/v1");
        base.update(&[0]);
        base.update(domain.as_bytes());
        base.update(&[0]);
        Pseudonymizer { base }
    }

    /// The pseudonym of `value`.
    pub fn pseudonymize(&self, value: &str) -> String {
        let mut out = String::with_capacity(PREFIX.len() + 22);
        self.pseudonymize_into(value, &mut out);
        out
    }

    /// Appends the pseudonym of `value` to `out` (no allocation when `out` has room).
    pub fn pseudonymize_into(&self, value: &str, out: &mut String) {
        let mut mac = self.base.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&digest[..16], out);
    }

    /// A keyed 64-bit hash of `value` (the first 8 bytes of the same HMAC): for deterministic,
    /// unpredictable assignments such as holdout groups.
    pub fn keyed_u64(&self, value: &str) -> u64 {
        let mut mac = self.base.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    /// A keyed fingerprint: identifies the key without revealing it (stored in the database so a
    /// keyring that does not match can be refused).
    pub fn fingerprint(keyring: &Keyring) -> String {
        Pseudonymizer::new(keyring, "segdb/fingerprint").pseudonymize("key-check")
    }
}

/// Does `s` look like a pseudonym this version produces (prefix + 22 base64url chars)?
pub fn is_pseudonym(s: &str) -> bool {
    s.len() == PREFIX.len() + 22
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_keys([
            ("user".to_string(), [7u8; 32]),
            ("partner_x".to_string(), [9u8; 32]),
        ])
        .unwrap()
    }

    /// The `pseudonymize` and HMAC rows of `../shared/vectors/hash_vectors.json` (key 00 01 … 1f).
    #[test]
    fn shared_vectors() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors/hash_vectors.json"
        ))
        .unwrap();
        let all: Vec<(String, String, String)> = serde_json::from_str(&text).unwrap();
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut checked = 0;
        for (what, value, want) in &all {
            let Some(domain) = what
                .split_once("domain='")
                .map(|(_, r)| r.split('\'').next().unwrap_or(""))
                .or_else(|| {
                    what.split_once("0x00 '")
                        .map(|(_, r)| r.split('\'').next().unwrap_or(""))
                })
            else {
                continue;
            };
            let ring =
                Keyring::from_keys([("user".to_string(), key), (domain.to_string(), key)]).unwrap();
            let p = Pseudonymizer::new(&ring, domain);
            if what.starts_with("pseudonymize(") {
                assert_eq!(&p.pseudonymize(value), want, "{what}");
                checked += 1;
            } else if what.starts_with("HMAC-SHA256(key=000102") {
                let mut mac = p.base.clone();
                mac.update(value.as_bytes());
                let hex: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(&hex, want, "{what}");
                checked += 1;
            }
        }
        assert!(checked >= 6, "checked only {checked} vectors");
    }

    #[test]
    fn shape_and_determinism() {
        let p = Pseudonymizer::new(&ring(), "user");
        let a = p.pseudonymize("alice@example.com");
        assert!(is_pseudonym(&a), "{a}");
        assert_eq!(a, p.pseudonymize("alice@example.com"));
        assert_ne!(a, p.pseudonymize("bob@example.com"));
    }

    #[test]
    fn domains_separate_even_with_same_key() {
        let r = ring();
        let user = Pseudonymizer::new(&r, "user").pseudonymize("x");
        let other = Pseudonymizer::new(&r, "other").pseudonymize("x"); // falls back to user key
        let partner = Pseudonymizer::new(&r, "partner_x").pseudonymize("x");
        assert_ne!(user, other);
        assert_ne!(user, partner);
        assert_ne!(other, partner);
    }

    #[test]
    fn known_answer() {
        // Computed independently with Python's hmac/hashlib for key = 32 bytes of 0x07:
        // base64.urlsafe_b64encode(hmac.new(b"\x07"*32, b"segdb/v1\x00user\x00alice@example.com",
        //   hashlib.sha256).digest()[:16]).rstrip(b"=")
        let p = Pseudonymizer::new(&ring(), "user");
        assert_eq!(p.pseudonymize("alice@example.com"), KNOWN_ALICE);
    }

    const KNOWN_ALICE: &str = "p1_6jhT6dieD04NGp3JJssJBQ";
}
