//! `_segdb/settings.json`: database-wide settings that are not tables — event retention
//! (`ALTER TABLE events SET RETENTION n DAYS`) and the declared personal columns of `events` and
//! `profiles` (`ALTER TABLE … SET PII (…)`), which every ingest applies at the door, and the
//! interests' half-life (`ALTER DATABASE SET INTERESTS HALF LIFE '7 days'`). Writers read,
//! change and write the whole file; it is small and rarely written.

use std::collections::BTreeMap;

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::Database;
use crate::error::{Error, Result};

const PATH: &str = "_segdb/settings.json";

/// What happens to a declared personal column at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PiiRule {
    /// Stored only as `<col>_sha256` = `hash_email(value)`.
    Email,
    /// Stored only as `<col>_sha256` (E.164 digits, no `+`) and `<col>_e164_sha256` (with `+`);
    /// the optional ISO country is the default for numbers without a country code.
    Phone(Option<String>),
    /// Not stored at all.
    Drop,
    /// Stored as it is (a column whose name only looks personal).
    Keep,
    /// Stored only as `<col>_sha256` of the name trimmed, lowercased, punctuation removed.
    FirstName,
    /// As [`PiiRule::FirstName`].
    LastName,
    /// Stored only as `<col>_sha256` of the postal code (US: first five digits; elsewhere
    /// lowercased without spaces); the optional ISO country says which.
    Zip(Option<String>),
    /// A mobile advertising id: stored only as `<col>_sha256` of it lowercased.
    Maid,
    /// An IP address: stored only as `<col>_country` (ISO 3166 alpha-2, NULL for private,
    /// reserved and unknown addresses).
    IpCountry,
    /// A user agent: stored only as `<col>_browser`, `<col>_os` and `<col>_device` (`desktop`,
    /// `mobile`, `bot` or `other`).
    UserAgent,
}

impl PiiRule {
    /// `EMAIL`, `PHONE`, `PHONE:DE`, `DROP`, `KEEP`.
    pub fn text(&self) -> String {
        match self {
            PiiRule::Email => "EMAIL".into(),
            PiiRule::Phone(None) => "PHONE".into(),
            PiiRule::Phone(Some(c)) => format!("PHONE:{c}"),
            PiiRule::Drop => "DROP".into(),
            PiiRule::Keep => "KEEP".into(),
            PiiRule::FirstName => "FIRST_NAME".into(),
            PiiRule::LastName => "LAST_NAME".into(),
            PiiRule::Zip(None) => "ZIP".into(),
            PiiRule::Zip(Some(c)) => format!("ZIP:{c}"),
            PiiRule::Maid => "MAID".into(),
            PiiRule::IpCountry => "IP_COUNTRY".into(),
            PiiRule::UserAgent => "USER_AGENT".into(),
        }
    }

    /// Parse the [`PiiRule::text`] form (case-insensitive; `PHONE DE` also accepted).
    pub fn parse(s: &str) -> Option<PiiRule> {
        let s = s.trim();
        let (kind, cc) = match s.split_once([':', ' ']) {
            Some((k, c)) => (k, Some(c.trim().trim_matches('\'').to_ascii_uppercase())),
            None => (s, None),
        };
        match kind.to_ascii_uppercase().as_str() {
            "EMAIL" if cc.is_none() => Some(PiiRule::Email),
            "PHONE" => match cc {
                Some(c) if c.len() == 2 && c.chars().all(|x| x.is_ascii_alphabetic()) => {
                    Some(PiiRule::Phone(Some(c)))
                }
                Some(_) => None,
                None => Some(PiiRule::Phone(None)),
            },
            "DROP" if cc.is_none() => Some(PiiRule::Drop),
            "KEEP" if cc.is_none() => Some(PiiRule::Keep),
            "FIRST_NAME" if cc.is_none() => Some(PiiRule::FirstName),
            "LAST_NAME" if cc.is_none() => Some(PiiRule::LastName),
            "MAID" if cc.is_none() => Some(PiiRule::Maid),
            "IP_COUNTRY" if cc.is_none() => Some(PiiRule::IpCountry),
            "USER_AGENT" if cc.is_none() => Some(PiiRule::UserAgent),
            "ZIP" => match cc {
                Some(c) if c.len() == 2 && c.chars().all(|x| x.is_ascii_alphabetic()) => {
                    Some(PiiRule::Zip(Some(c)))
                }
                Some(_) => None,
                None => Some(PiiRule::Zip(None)),
            },
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct File {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events_retention_days: Option<u32>,
    /// table → column → rule text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pii: BTreeMap<String, BTreeMap<String, String>>,
    /// The interests' half-life as written (`'7 days'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interests_half_life: Option<String>,
}

/// The interests' half-life when none is set: 7 days.
pub const DEFAULT_HALF_LIFE_US: i64 = 7 * 86_400_000_000;

/// The database settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub events_retention_days: Option<u32>,
    /// table → (lower-case column name → rule), in declaration order of the column names.
    pub pii: BTreeMap<String, BTreeMap<String, PiiRule>>,
    /// The interests' half-life as written, `None` for the default (7 days).
    pub interests_half_life: Option<String>,
}

impl Settings {
    /// Read the settings (defaults when the file does not exist).
    pub async fn read(db: &Database) -> Result<Settings> {
        let f: File = match db.store().get(&object_store::path::Path::from(PATH)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| db.unreachable(e))?;
                serde_json::from_slice(&bytes)
                    .map_err(|_| Error::storage(format!("{PATH} is damaged (not JSON)")))?
            }
            Err(object_store::Error::NotFound { .. }) => File::default(),
            Err(e) => return Err(db.unreachable(e)),
        };
        let mut pii = BTreeMap::new();
        for (table, cols) in f.pii {
            let mut m = BTreeMap::new();
            for (c, r) in cols {
                let rule = PiiRule::parse(&r).ok_or_else(|| {
                    Error::storage(format!("{PATH}: column {table}.{c} has an unknown rule"))
                })?;
                m.insert(c, rule);
            }
            pii.insert(table, m);
        }
        if let Some(h) = &f.interests_half_life
            && half_life_micros(h).is_none()
        {
            return Err(Error::storage(format!(
                "{PATH}: the interests' half-life {h:?} is not a duration"
            )));
        }
        Ok(Settings {
            events_retention_days: f.events_retention_days,
            pii,
            interests_half_life: f.interests_half_life,
        })
    }

    /// Write the settings whole.
    pub async fn write(&self, db: &Database) -> Result<()> {
        let f = File {
            events_retention_days: self.events_retention_days,
            pii: self
                .pii
                .iter()
                .filter(|(_, c)| !c.is_empty())
                .map(|(t, cols)| {
                    (
                        t.clone(),
                        cols.iter().map(|(c, r)| (c.clone(), r.text())).collect(),
                    )
                })
                .collect(),
            interests_half_life: self.interests_half_life.clone(),
        };
        let body = serde_json::to_vec_pretty(&f).expect("settings serialise");
        db.store()
            .put(
                &object_store::path::Path::from(PATH),
                object_store::PutPayload::from(body),
            )
            .await
            .map_err(|e| db.unreachable(e))?;
        Ok(())
    }

    /// The interests' half-life in microseconds.
    pub fn half_life_us(&self) -> i64 {
        self.interests_half_life
            .as_deref()
            .and_then(half_life_micros)
            .unwrap_or(DEFAULT_HALF_LIFE_US)
    }

    /// The declared rules of `table`.
    pub fn pii_of(&self, table: &str) -> BTreeMap<String, PiiRule> {
        self.pii.get(table).cloned().unwrap_or_default()
    }
}

/// A half-life as written (`'7 days'`, `'36 hours'`): at least one hour (a day's decay weights,
/// 2^(hours since midnight / half-life), then stay finite), at most 10 years.
pub fn half_life_micros(text: &str) -> Option<i64> {
    crate::time::duration_micros(text)
        .filter(|us| (3_600_000_000..=3650 * 86_400_000_000).contains(us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_and_reject_junk() {
        for r in [
            PiiRule::Email,
            PiiRule::Phone(None),
            PiiRule::Phone(Some("DE".into())),
            PiiRule::Drop,
            PiiRule::Keep,
        ] {
            assert_eq!(PiiRule::parse(&r.text()), Some(r));
        }
        assert_eq!(
            PiiRule::parse("phone 'de'"),
            Some(PiiRule::Phone(Some("DE".into())))
        );
        for bad in ["", "HASH", "EMAIL:DE", "PHONE:GERMANY", "PHONE:1"] {
            assert_eq!(PiiRule::parse(bad), None, "{bad}");
        }
    }
}
