//! Sources and their write keys. `CREATE SOURCE` makes a key of 32 random bytes (base64url, 43
//! characters) and shows it once; `_segdb/sources` keeps only its keyed hash (keyring domain
//! `source-keys`) and its first 8 characters. A rotated key keeps working until its grace ends.
//! The catalog is rewritten whole at exactly the next version, like the other catalogs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::commit::{self, Committed};
use crate::storage::{Database, Table, base_schema, snapshot_column, ts_type};

/// The keyring domain of write-key hashes.
pub const DOMAIN: &str = "source-keys";

/// One source as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub key_hash: String,
    pub key_prefix: String,
    pub comment: Option<String>,
    pub created_at: i64,
    /// The key before the last rotation and until when it works.
    pub old_key: Option<(String, i64)>,
}

/// A new key, as `CREATE SOURCE` and `ROTATE KEY` show it (the only time it is shown).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub write_key: String,
    pub key_prefix: String,
}

fn new_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::invalid(format!("no randomness for a write key: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored hash of a write key.
pub fn key_hash(keyring: &Keyring, key: &str) -> String {
    Pseudonymizer::new(keyring, DOMAIN).pseudonymize(key)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(Error::invalid(format!(
            "source name {name:?}: use 1 to 64 letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

fn from_batches(batches: &[RecordBatch]) -> Result<BTreeMap<String, Source>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let text = |n: &str| -> Result<ArrayRef> { snapshot_column(b, n, &DataType::Utf8) };
        let (name, hash, prefix, comment, old) = (
            text("name")?,
            text("key_hash")?,
            text("key_prefix")?,
            text("comment")?,
            text("old_key_hash")?,
        );
        let created = snapshot_column(b, "created_at", &ts_type())?;
        let until = snapshot_column(b, "old_key_until", &ts_type())?;
        let (name, hash, prefix, comment, old) = (
            name.as_string::<i32>(),
            hash.as_string::<i32>(),
            prefix.as_string::<i32>(),
            comment.as_string::<i32>(),
            old.as_string::<i32>(),
        );
        let created = created.as_primitive::<TimestampMicrosecondType>();
        let until = until.as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            if !name.is_valid(i) {
                continue;
            }
            let s = Source {
                name: name.value(i).to_string(),
                key_hash: hash.value(i).to_string(),
                key_prefix: prefix.value(i).to_string(),
                comment: comment.is_valid(i).then(|| comment.value(i).to_string()),
                created_at: created.value(i),
                old_key: (old.is_valid(i) && until.is_valid(i))
                    .then(|| (old.value(i).to_string(), until.value(i))),
            };
            out.insert(s.name.clone(), s);
        }
    }
    Ok(out)
}

fn to_batch(all: &BTreeMap<String, Source>) -> Result<RecordBatch> {
    let v: Vec<&Source> = all.values().collect();
    let text = |f: &dyn Fn(&Source) -> Option<String>| -> ArrayRef {
        Arc::new(v.iter().map(|s| f(s)).collect::<StringArray>())
    };
    let ts = |f: &dyn Fn(&Source) -> Option<i64>| -> ArrayRef {
        Arc::new(
            v.iter()
                .map(|s| f(s))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    Ok(RecordBatch::try_new(
        base_schema(Table::Sources),
        vec![
            text(&|s| Some(s.name.clone())),
            text(&|s| Some(s.key_hash.clone())),
            text(&|s| Some(s.key_prefix.clone())),
            text(&|s| s.comment.clone()),
            ts(&|s| Some(s.created_at)),
            text(&|s| s.old_key.as_ref().map(|(h, _)| h.clone())),
            ts(&|s| s.old_key.as_ref().map(|(_, t)| *t)),
        ],
    )?)
}

/// Every source, by name, at the latest version.
pub async fn list(db: &Database) -> Result<(BTreeMap<String, Source>, u64)> {
    let table = db.latest(Table::Sources).await?;
    let version = table.version().unwrap_or(0) as u64;
    let all = from_batches(&crate::storage::read_pinned(db, Table::Sources, &table).await?)?;
    Ok((all, version))
}

/// Change the catalog at exactly the next version (re-read and re-apply on conflict).
async fn update<T>(
    db: &Database,
    mut change: impl FnMut(&mut BTreeMap<String, Source>) -> Result<T>,
) -> Result<T> {
    for _ in 0..50 {
        let table = db.load(Table::Sources).await?;
        let mut all =
            from_batches(&crate::storage::read_pinned(db, Table::Sources, &table).await?)?;
        let out = change(&mut all)?;
        if let Committed::Version(_) =
            commit::overwrite_exact(&table, vec![to_batch(&all)?], commit::op("sources")).await?
        {
            return Ok(out);
        }
    }
    Err(Error::storage(
        "the sources catalog kept changing; try again",
    ))
}

/// `CREATE SOURCE name [COMMENT '…']`.
pub async fn create(
    db: &Database,
    keyring: &Keyring,
    name: &str,
    comment: Option<&str>,
    if_not_exists: bool,
) -> Result<Option<NewKey>> {
    check_name(name)?;
    let key = new_key()?;
    let s = Source {
        name: name.to_string(),
        key_hash: key_hash(keyring, &key),
        key_prefix: key[..8].to_string(),
        comment: comment.map(str::to_string),
        created_at: chrono::Utc::now().timestamp_micros(),
        old_key: None,
    };
    let created = update(db, |all| {
        if all.contains_key(name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(Error::invalid(format!(
                "source '{name}' already exists; ALTER SOURCE {name} ROTATE KEY makes a new key"
            )));
        }
        all.insert(name.to_string(), s.clone());
        Ok(true)
    })
    .await?;
    Ok(created.then(|| NewKey {
        name: name.to_string(),
        key_prefix: s.key_prefix.clone(),
        write_key: key,
    }))
}

/// `ALTER SOURCE name ROTATE KEY`: a new key; the current one keeps working for `grace_micros`.
pub async fn rotate(
    db: &Database,
    keyring: &Keyring,
    name: &str,
    grace_micros: i64,
) -> Result<NewKey> {
    let key = new_key()?;
    let hash = key_hash(keyring, &key);
    let now = chrono::Utc::now().timestamp_micros();
    update(db, |all| {
        let Some(s) = all.get_mut(name) else {
            return Err(Error::NotFound(format!("source '{name}' does not exist")));
        };
        s.old_key = Some((s.key_hash.clone(), now + grace_micros));
        s.key_hash = hash.clone();
        s.key_prefix = key[..8].to_string();
        Ok(())
    })
    .await?;
    Ok(NewKey {
        name: name.to_string(),
        key_prefix: key[..8].to_string(),
        write_key: key,
    })
}

/// `DROP SOURCE [IF EXISTS] name`: its keys stop working at once.
pub async fn drop(db: &Database, name: &str, if_exists: bool) -> Result<()> {
    update(db, |all| {
        if all.remove(name).is_none() && !if_exists {
            return Err(Error::NotFound(format!("source '{name}' does not exist")));
        }
        Ok(())
    })
    .await
}

/// The server's view of the keys: key hash → source, reloaded when a key is not found (so a
/// source created by another process works at its next request).
pub struct Keys {
    db: Database,
    hasher: Pseudonymizer,
    state: tokio::sync::Mutex<KeysState>,
}

#[derive(Debug, Default)]
struct KeysState {
    version: Option<u64>,
    by_hash: HashMap<String, (String, Option<i64>)>,
    loaded_at: Option<std::time::Instant>,
}

impl Keys {
    pub fn new(db: Database, keyring: &Keyring) -> Self {
        Keys {
            db,
            hasher: Pseudonymizer::new(keyring, DOMAIN),
            state: tokio::sync::Mutex::new(KeysState::default()),
        }
    }

    async fn reload(&self, st: &mut KeysState) -> Result<()> {
        let (all, version) = list(&self.db).await?;
        st.loaded_at = Some(std::time::Instant::now());
        if st.version == Some(version) {
            return Ok(());
        }
        st.by_hash.clear();
        for s in all.into_values() {
            if let Some((h, until)) = &s.old_key {
                st.by_hash.insert(h.clone(), (s.name.clone(), Some(*until)));
            }
            st.by_hash.insert(s.key_hash.clone(), (s.name, None));
        }
        st.version = Some(version);
        Ok(())
    }

    /// The source a write key belongs to (`None`: no such key, or a rotated key past its grace).
    pub async fn source_of(&self, key: &str) -> Result<Option<String>> {
        if key.is_empty() || key.len() > 256 {
            return Ok(None);
        }
        let hash = self.hasher.pseudonymize(key);
        let now = chrono::Utc::now().timestamp_micros();
        let mut st = self.state.lock().await;
        let valid = |st: &KeysState| {
            st.by_hash
                .get(&hash)
                .filter(|(_, until)| until.is_none_or(|u| now < u))
                .map(|(n, _)| n.clone())
        };
        // Known keys are re-checked at most every second (a dropped source stops within it);
        // unknown keys look at the catalog's latest version each time.
        let age = st.loaded_at.map(|t| t.elapsed());
        let fresh = age.is_some_and(|a| a < std::time::Duration::from_secs(1));
        if fresh && let Some(n) = valid(&st) {
            return Ok(Some(n));
        }
        // Unknown keys reread the catalog at most every 200 ms, so a flood of made-up keys costs
        // one read per interval (a source created elsewhere works within it).
        if age.is_some_and(|a| a < std::time::Duration::from_millis(200)) && valid(&st).is_none() {
            return Ok(None);
        }
        self.reload(&mut st).await?;
        Ok(valid(&st))
    }
}

/// `SHOW SOURCES`: `name, key_prefix, created_at, last_seen_at, accepted, deduplicated,
/// rejected` (the counts are this process's since it started).
pub async fn show(
    db: &Database,
    stats: &super::stats::Stats,
) -> Result<crate::result::QueryResult> {
    use arrow::array::UInt64Array;
    use arrow::datatypes::{Field, Schema};
    let (all, _) = list(db).await?;
    let counts = stats.sources();
    let c = |n: &str| counts.get(n).cloned().unwrap_or_default();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("key_prefix", DataType::Utf8, false),
        Field::new("created_at", ts_type(), false),
        Field::new("last_seen_at", ts_type(), true),
        Field::new("accepted", DataType::UInt64, false),
        Field::new("deduplicated", DataType::UInt64, false),
        Field::new("rejected", DataType::UInt64, false),
    ]));
    let v: Vec<&Source> = all.values().collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|s| s.name.clone()),
            )) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                v.iter().map(|s| s.key_prefix.clone()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(v.iter().map(|s| s.created_at))
                    .with_timezone("UTC"),
            ),
            Arc::new(
                v.iter()
                    .map(|s| c(&s.name).last_seen_at)
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from_iter_values(
                v.iter().map(|s| c(&s.name).accepted),
            )),
            Arc::new(UInt64Array::from_iter_values(
                v.iter().map(|s| c(&s.name).deduplicated),
            )),
            Arc::new(UInt64Array::from_iter_values(
                v.iter().map(|s| c(&s.name).rejected_total()),
            )),
        ],
    )?;
    Ok(crate::result::QueryResult {
        schema,
        batches: vec![batch],
    })
}

/// The rows of `CREATE SOURCE` / `ROTATE KEY`: `name, write_key, key_prefix`.
pub fn key_batch(k: &NewKey) -> Result<RecordBatch> {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("name", DataType::Utf8, false),
        arrow::datatypes::Field::new("write_key", DataType::Utf8, false),
        arrow::datatypes::Field::new("key_prefix", DataType::Utf8, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![k.name.clone()])),
            Arc::new(StringArray::from(vec![k.write_key.clone()])),
            Arc::new(StringArray::from(vec![k.key_prefix.clone()])),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_43_characters_and_names_are_checked() {
        let k = new_key().unwrap();
        assert_eq!(k.len(), 43);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(k, new_key().unwrap());
        assert!(check_name("web-site_1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
    }
}
