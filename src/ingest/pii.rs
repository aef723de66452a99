//! Personal columns at the door. Columns of `events` and `profiles` declared personal
//! (`ALTER TABLE … SET PII (…)`, stored in `_segdb/settings.json`, or `--pii` for one load) are
//! replaced before anything else sees them: an `EMAIL` column by `<col>_sha256` (= `hash_email`),
//! a `PHONE` column by `<col>_sha256` (E.164 digits without `+`, = `hash_phone`) and
//! `<col>_e164_sha256` (with `+`), a `DROP` column by nothing; `KEEP` keeps a column whose name
//! only looks personal. A value that does not normalise gives a NULL key and the row is kept.
//! An undeclared column whose name looks personal fails the load before anything is read or
//! written, naming the column and the statement that declares it. Raw values never reach
//! storage, logs or error messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};

use super::Kind;
use crate::error::{Error, Result};
use crate::privacy::hashing::{
    normalize_email, normalize_email_google, normalize_maid, normalize_name, normalize_phone,
    normalize_zip, sha256_hex,
};
use crate::storage::Database;
use crate::storage::settings::{PiiRule, Settings};

/// Exact column names that look personal (case-insensitive).
const PERSONAL: [&str; 17] = [
    "email",
    "e_mail",
    "phone",
    "mobile",
    "first_name",
    "last_name",
    "full_name",
    "name",
    "address",
    "street",
    "zip",
    "postcode",
    "ip",
    "ip_address",
    "ssn",
    "birth_date",
    "dob",
];

/// Columns segdb fills or requires, which cannot be declared personal.
const RESERVED: [&str; 6] = [
    "user_id",
    "uid",
    "event",
    "ts",
    "updated_at",
    "anonymous_id",
];

/// Does a column name look personal? Already hashed columns (`…_sha256`) do not.
pub fn looks_personal(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.ends_with("_sha256") {
        return false;
    }
    PERSONAL.contains(&n.as_str())
        || n.ends_with("_email")
        || n.starts_with("email_")
        || n.ends_with("_phone")
        || n.starts_with("phone_")
}

/// `ALTER TABLE events|profiles SET PII (…)`: merge the rules into the settings (KEEP is
/// audited).
pub async fn declare(
    db: &Database,
    table: &str,
    rules: &[(String, PiiRule)],
    who: &str,
) -> Result<()> {
    if !matches!(table, "events" | "profiles") {
        return Err(Error::invalid(format!(
            "personal columns are declared for events and profiles, not {table}"
        )));
    }
    for (c, _) in rules {
        if RESERVED.contains(&c.to_ascii_lowercase().as_str()) {
            return Err(Error::invalid(format!(
                "{c} is not a personal column: segdb pseudonymises or fills it"
            )));
        }
    }
    let mut s = Settings::read(db).await?;
    let m = s.pii.entry(table.to_string()).or_default();
    for (c, r) in rules {
        m.insert(c.to_ascii_lowercase(), r.clone());
    }
    s.write(db).await?;
    for (c, r) in rules {
        if *r == PiiRule::Keep {
            crate::erasure::audit_action(db, &format!("SET PII {table}.{c} AS KEEP"), who).await?;
        }
    }
    Ok(())
}

/// The rules of one load.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    kind: Option<Kind>,
    rules: BTreeMap<String, PiiRule>,
}

impl Rules {
    /// The declared rules of `kind`'s table with this load's `--pii` overrides.
    pub async fn for_load(
        db: &Database,
        kind: Kind,
        overrides: &[(String, PiiRule)],
    ) -> Result<Rules> {
        let applies = matches!(kind, Kind::Events | Kind::Profiles);
        let mut rules = if applies {
            Settings::read(db).await?.pii_of(kind.name())
        } else {
            BTreeMap::new()
        };
        if !overrides.is_empty() && !applies {
            return Err(Error::invalid(format!(
                "--pii applies to events and profiles loads, not {}",
                kind.name()
            )));
        }
        for (c, r) in overrides {
            if RESERVED.contains(&c.to_ascii_lowercase().as_str()) {
                return Err(Error::invalid(format!(
                    "--pii {c}: {c} is not a personal column (segdb pseudonymises or fills it)"
                )));
            }
            rules.insert(c.to_ascii_lowercase(), r.clone());
        }
        Ok(Rules {
            kind: applies.then_some(kind),
            rules,
        })
    }

    /// Refuse undeclared personal-looking columns of one input (before anything is read).
    pub fn check(&self, columns: &[String], file: &str) -> Result<()> {
        let Some(kind) = self.kind else {
            return Ok(());
        };
        for c in columns {
            let lower = c.to_ascii_lowercase();
            if looks_personal(c) && !self.rules.contains_key(&lower) {
                return Err(Error::ingest(format!(
                    "{file}: column {c:?} looks personal and is not declared; nothing was loaded. Say what to do with it: ALTER TABLE {t} SET PII ({c} AS EMAIL) — or AS PHONE 'DE', AS DROP, or AS KEEP if it is not personal — or for this load only: --pii {c}=EMAIL|PHONE[:CC]|DROP|KEEP",
                    t = kind.name()
                )));
            }
        }
        Ok(())
    }

    /// Declared columns are read as text (phone numbers keep their `+` and leading zeros).
    pub fn text_columns(&self) -> impl Iterator<Item = String> + '_ {
        self.rules.keys().cloned()
    }

    /// Whether this load has any rule to apply.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Replace the declared columns of a batch.
    pub fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.rules.is_empty() {
            return Ok(batch);
        }
        let schema = batch.schema();
        let mut fields: Vec<Field> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let lower = f.name().to_ascii_lowercase();
            let Some(rule) = self.rules.get(&lower) else {
                fields.push(f.as_ref().clone());
                cols.push(batch.column(i).clone());
                continue;
            };
            let text = arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(|_| {
                Error::ingest(format!("column {:?} cannot be read as text", f.name()))
            })?;
            let text = text.as_string::<i32>();
            let hashed = |g: &dyn Fn(&str) -> Option<String>| -> ArrayRef {
                let mut b = StringBuilder::with_capacity(text.len(), text.len() * 64);
                for r in 0..text.len() {
                    b.append_option(if text.is_valid(r) {
                        g(text.value(r)).map(|n| sha256_hex(n.as_bytes()))
                    } else {
                        None
                    });
                }
                Arc::new(b.finish())
            };
            match rule {
                PiiRule::Keep => {
                    fields.push(f.as_ref().clone());
                    cols.push(batch.column(i).clone());
                }
                PiiRule::Drop => {}
                PiiRule::Email => {
                    fields.push(Field::new(format!("{lower}_sha256"), DataType::Utf8, true));
                    cols.push(hashed(&|v| normalize_email(v)));
                    // Google's own rule (dots of a Gmail local part removed): PRESET google.
                    fields.push(Field::new(
                        format!("{lower}_google_sha256"),
                        DataType::Utf8,
                        true,
                    ));
                    cols.push(hashed(&|v| normalize_email_google(v)));
                }
                PiiRule::FirstName | PiiRule::LastName => {
                    fields.push(Field::new(format!("{lower}_sha256"), DataType::Utf8, true));
                    cols.push(hashed(&|v| normalize_name(v)));
                }
                PiiRule::Zip(cc) => {
                    let cc = cc.as_deref();
                    fields.push(Field::new(format!("{lower}_sha256"), DataType::Utf8, true));
                    cols.push(hashed(&|v| normalize_zip(v, cc)));
                }
                PiiRule::Maid => {
                    fields.push(Field::new(format!("{lower}_sha256"), DataType::Utf8, true));
                    cols.push(hashed(&|v| normalize_maid(v)));
                }
                PiiRule::IpCountry => {
                    fields.push(Field::new(format!("{lower}_country"), DataType::Utf8, true));
                    let countries: arrow::array::StringArray = (0..text.len())
                        .map(|r| {
                            text.is_valid(r)
                                .then(|| crate::privacy::enrich::ip_country(text.value(r)))
                                .flatten()
                        })
                        .collect();
                    cols.push(Arc::new(countries));
                }
                PiiRule::UserAgent => {
                    let agents: Vec<_> = (0..text.len())
                        .map(|r| {
                            text.is_valid(r)
                                .then(|| crate::privacy::enrich::user_agent(text.value(r)))
                                .unwrap_or_default()
                        })
                        .collect();
                    for (suffix, part) in [("browser", 0), ("os", 1), ("device", 2)] {
                        fields.push(Field::new(
                            format!("{lower}_{suffix}"),
                            DataType::Utf8,
                            true,
                        ));
                        let col: arrow::array::StringArray = agents
                            .iter()
                            .map(|a| match part {
                                0 => a.browser.clone(),
                                1 => a.os.clone(),
                                _ => a.device.clone(),
                            })
                            .collect();
                        cols.push(Arc::new(col));
                    }
                }
                PiiRule::Phone(cc) => {
                    let cc = cc.as_deref();
                    fields.push(Field::new(format!("{lower}_sha256"), DataType::Utf8, true));
                    cols.push(hashed(&|v| normalize_phone(v, cc)));
                    fields.push(Field::new(
                        format!("{lower}_e164_sha256"),
                        DataType::Utf8,
                        true,
                    ));
                    cols.push(hashed(&|v| normalize_phone(v, cc).map(|d| format!("+{d}"))));
                }
            }
        }
        let options =
            arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &options,
        )?)
    }
}

/// Parse a `--pii col=EMAIL|PHONE[:CC]|DROP|KEEP` argument.
pub fn parse_arg(s: &str) -> std::result::Result<(String, PiiRule), String> {
    let (c, r) = s
        .split_once('=')
        .ok_or_else(|| format!("--pii {s}: expected column=EMAIL|PHONE[:CC]|FIRST_NAME|LAST_NAME|ZIP[:CC]|MAID|IP_COUNTRY|USER_AGENT|DROP|KEEP"))?;
    let rule = PiiRule::parse(r).ok_or_else(|| {
        format!("--pii {s}: the rule is EMAIL, PHONE, PHONE:CC (e.g. PHONE:DE), FIRST_NAME, LAST_NAME, ZIP, ZIP:CC (e.g. ZIP:US), MAID, IP_COUNTRY, USER_AGENT, DROP or KEEP")
    })?;
    if c.trim().is_empty() {
        return Err(format!("--pii {s}: no column name"));
    }
    Ok((c.trim().to_string(), rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_names() {
        for n in [
            "email",
            "Email",
            "E_MAIL",
            "work_email",
            "email_2",
            "Phone",
            "phone_home",
            "mobile_phone",
            "ip",
            "DOB",
            "name",
        ] {
            assert!(looks_personal(n), "{n}");
        }
        for n in [
            "email_sha256",
            "plan",
            "country",
            "username",
            "phones_count",
            "zipper",
            "named",
        ] {
            assert!(!looks_personal(n), "{n}");
        }
    }

    #[test]
    fn pii_arguments() {
        assert_eq!(
            parse_arg("email=EMAIL").unwrap(),
            ("email".into(), PiiRule::Email)
        );
        assert_eq!(
            parse_arg("tel=phone:de").unwrap(),
            ("tel".into(), PiiRule::Phone(Some("DE".into())))
        );
        assert!(parse_arg("email").is_err());
        assert!(parse_arg("email=HASH").is_err());
    }
}
