//! Normalise-then-hash for ad-platform matching: lowercase hex SHA-256 of a trimmed, lowercased
//! e-mail address, or of a phone number's E.164 digits (country code and subscriber number, no
//! `+`, no separators). Only for export; never stored by segdb.

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Google's rule on top of [`normalize_email`]: for gmail.com and googlemail.com addresses the
/// dots of the local part are removed (they do not change the mailbox).
pub fn normalize_email_google(s: &str) -> Option<String> {
    let e = normalize_email(s)?;
    let (local, domain) = e.split_once('@')?;
    if domain == "gmail.com" || domain == "googlemail.com" {
        Some(format!("{}@{domain}", local.replace('.', "")))
    } else {
        Some(e)
    }
}

/// A first or last name as ad platforms match it: trimmed, lowercased, punctuation removed
/// (`"  O'Brien-Smith. "` → `obriensmith`); `None` when nothing is left.
pub fn normalize_name(s: &str) -> Option<String> {
    let n: String = s
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    let n = n.split_whitespace().collect::<Vec<_>>().join(" ");
    (!n.is_empty()).then_some(n)
}

/// A postal code: for the US (`country` `US`) its first five digits; elsewhere lowercased with
/// the spaces removed (`"SW1A 1AA"` → `sw1a1aa`); `None` when nothing usable is left.
pub fn normalize_zip(s: &str, country: Option<&str>) -> Option<String> {
    if country.is_some_and(|c| c.eq_ignore_ascii_case("US")) {
        let digits: String = s
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        return (digits.len() >= 5).then(|| digits[..5].to_string());
    }
    let z: String = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_lowercase();
    (!z.is_empty()).then_some(z)
}

/// A mobile advertising id (IDFA, GAID): trimmed and lowercased; `None` when empty.
pub fn normalize_maid(s: &str) -> Option<String> {
    let m = s.trim().to_lowercase();
    (!m.is_empty()).then_some(m)
}

/// Trim and lowercase; `None` for something that is not an address (no `@` with text on both sides).
pub fn normalize_email(s: &str) -> Option<String> {
    let e = s.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || e.chars().any(char::is_whitespace)
    {
        return None;
    }
    Some(e)
}

/// Country calling codes for `default_country` (ISO 3166-1 alpha-2).
fn calling_code(country: &str) -> Option<&'static str> {
    Some(match country.trim().to_ascii_uppercase().as_str() {
        "US" | "CA" => "1",
        "GB" | "UK" => "44",
        "DE" => "49",
        "FR" => "33",
        "ES" => "34",
        "IT" => "39",
        "NL" => "31",
        "BE" => "32",
        "CH" => "41",
        "AT" => "43",
        "DK" => "45",
        "SE" => "46",
        "NO" => "47",
        "PL" => "48",
        "FI" => "358",
        "IE" => "353",
        "PT" => "351",
        "CZ" => "420",
        "BR" => "55",
        "MX" => "52",
        "AR" => "54",
        "AU" => "61",
        "NZ" => "64",
        "JP" => "81",
        "KR" => "82",
        "CN" => "86",
        "IN" => "91",
        "SG" => "65",
        "ZA" => "27",
        _ => return None,
    })
}

/// The E.164 digits of a phone number: `+CC…` and `00CC…` are international; anything else is a
/// national number of `default_country` (a leading trunk `0` is dropped). `None` when it cannot be
/// normalised (no digits, national without a known country, or outside E.164's 8–15 digits).
pub fn normalize_phone(s: &str, default_country: Option<&str>) -> Option<String> {
    let s = s.trim();
    if s.chars().any(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    let full = if s.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else {
        let cc = calling_code(default_country?)?;
        let national = digits.strip_prefix('0').unwrap_or(&digits);
        if cc == "1" && national.len() == 11 && national.starts_with('1') {
            national.to_string()
        } else {
            format!("{cc}{national}")
        }
    };
    (8..=15)
        .contains(&full.len())
        .then_some(full)
        .filter(|f| !f.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `../shared/vectors/hash_vectors.json`: the SHA-256 entries and the normalisations segdb uses
    /// (e-mail: trim + lowercase; phone: E.164 digits without `+`).
    #[test]
    fn shared_vectors() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors/hash_vectors.json"
        ))
        .unwrap();
        let all: Vec<(String, String, String)> = serde_json::from_str(&text).unwrap();
        let mut checked = 0;
        for (what, normalised, hash) in &all {
            if what.starts_with("sha256_hex")
                || what.starts_with("email basic")
                || what.starts_with("phone meta")
                || what.starts_with("phone google")
            {
                assert_eq!(&sha256_hex(normalised.as_bytes()), hash, "{what}");
                checked += 1;
            }
            // The raw input is quoted in the description: normalise it ourselves.
            if let Some(raw) = what
                .split_once(": '")
                .map(|(_, r)| r.trim_end_matches('\''))
            {
                if what.starts_with("email basic") {
                    assert_eq!(
                        normalize_email(raw).as_deref(),
                        Some(normalised.as_str()),
                        "{what}"
                    );
                    checked += 1;
                } else if what.starts_with("phone meta") {
                    assert_eq!(
                        normalize_phone(raw, None).as_deref(),
                        Some(normalised.as_str()),
                        "{what}"
                    );
                    checked += 1;
                } else if what.starts_with("phone google") {
                    // Google hashes the E.164 form with its '+' (the `<col>_e164_sha256` key).
                    assert_eq!(
                        normalize_phone(raw, None)
                            .map(|d| format!("+{d}"))
                            .as_deref(),
                        Some(normalised.as_str()),
                        "{what}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 12, "checked only {checked} vectors");
    }

    #[test]
    fn phone_forms() {
        assert_eq!(
            normalize_phone("030 901820", Some("DE")).as_deref(),
            Some("4930901820")
        );
        assert_eq!(
            normalize_phone("(800) 555-0100", Some("us")).as_deref(),
            Some("18005550100")
        );
        assert_eq!(
            normalize_phone("1-800-555-0100", Some("US")).as_deref(),
            Some("18005550100")
        );
        assert_eq!(normalize_phone("030 901820", None), None);
        assert_eq!(normalize_phone("call me", Some("DE")), None);
        assert_eq!(normalize_phone("+1 2", None), None);
        assert_eq!(normalize_email("not an address"), None);
        assert_eq!(normalize_email(" A@B.C ").as_deref(), Some("a@b.c"));
    }

    #[test]
    fn match_keys_of_names_zips_maids_and_google_emails() {
        assert_eq!(
            normalize_email_google(" John.Doe@GMail.com").as_deref(),
            Some("johndoe@gmail.com")
        );
        assert_eq!(
            normalize_email_google("john.doe@example.com").as_deref(),
            Some("john.doe@example.com")
        );
        assert_eq!(
            normalize_name("  O'Brien-Smith. ").as_deref(),
            Some("obriensmith")
        );
        assert_eq!(normalize_name("Anne  Marie").as_deref(), Some("anne marie"));
        assert_eq!(normalize_name(" .,- "), None);
        assert_eq!(
            normalize_zip("94103-1234", Some("US")).as_deref(),
            Some("94103")
        );
        assert_eq!(normalize_zip("941", Some("US")), None);
        assert_eq!(
            normalize_zip("SW1A 1AA", Some("GB")).as_deref(),
            Some("sw1a1aa")
        );
        assert_eq!(
            normalize_maid(" 6D92078A-8246-4BA4-AE5B-76104861E7DC ").as_deref(),
            Some("6d92078a-8246-4ba4-ae5b-76104861e7dc")
        );
        assert_eq!(normalize_maid("  "), None);
    }
}
