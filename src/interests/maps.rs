//! Category maps (DESIGN §17): from what a site sends in an event property to IAB taxonomy
//! nodes. `CREATE CATEGORY MAP name FROM EVENT PROPERTY col` stores a definition; `segdb ingest
//! category_map FILE --map name` replaces that map's rows (`value`, `category`). An event whose
//! `col` equals a value — or starts with it, when the value ends with `*` — belongs to the
//! category of the longest matching value (without the `*`; an exact value wins a tie) and to all
//! its ancestors. Maps live in `_segdb/category_maps`, one table for all of them: they are small
//! and change rarely, and one table version keys everything derived from them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};

use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::storage::commit::{self, Committed};
use crate::storage::{Database, Table, base_schema, ts_type};
use crate::taxonomy::taxonomy;

/// One map: its property and its rows (value as written, category id), in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryMap {
    pub name: String,
    pub property: String,
    pub created_at: i64,
    pub rows: Vec<(String, String)>,
}

/// Every map of one table version, by name.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    pub maps: BTreeMap<String, CategoryMap>,
}

fn text_col<'a>(b: &'a RecordBatch, n: &str) -> Result<&'a StringArray> {
    b.column_by_name(n)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::storage(format!("_segdb/category_maps has no text column {n}")))
}

/// The maps stored in `batches` (rows of `_segdb/category_maps`).
pub fn from_batches(batches: &[RecordBatch]) -> Result<Maps> {
    let mut defs: BTreeMap<String, CategoryMap> = BTreeMap::new();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for b in batches {
        let (m, p, v, c) = (
            text_col(b, "map")?,
            text_col(b, "property")?,
            text_col(b, "value")?,
            text_col(b, "category")?,
        );
        let at = b
            .column_by_name("created_at")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
        for i in 0..b.num_rows() {
            if m.is_null(i) {
                continue;
            }
            if v.is_null(i) {
                defs.insert(
                    m.value(i).to_string(),
                    CategoryMap {
                        name: m.value(i).to_string(),
                        property: p.value(i).to_string(),
                        created_at: at.filter(|a| a.is_valid(i)).map_or(0, |a| a.value(i)),
                        rows: Vec::new(),
                    },
                );
            } else if c.is_valid(i) {
                rows.push((
                    m.value(i).to_string(),
                    v.value(i).to_string(),
                    c.value(i).to_string(),
                ));
            }
        }
    }
    for (m, v, c) in rows {
        if let Some(d) = defs.get_mut(&m) {
            d.rows.push((v, c));
        }
    }
    Ok(Maps { maps: defs })
}

fn to_batch(maps: &Maps) -> Result<RecordBatch> {
    let (mut m, mut p, mut v, mut c, mut at) = (vec![], vec![], vec![], vec![], vec![]);
    for d in maps.maps.values() {
        m.push(d.name.clone());
        p.push(d.property.clone());
        v.push(None);
        c.push(None);
        at.push(d.created_at);
        for (value, cat) in &d.rows {
            m.push(d.name.clone());
            p.push(d.property.clone());
            v.push(Some(value.clone()));
            c.push(Some(cat.clone()));
            at.push(d.created_at);
        }
    }
    Ok(RecordBatch::try_new(
        base_schema(Table::CategoryMaps),
        vec![
            Arc::new(StringArray::from(m)) as ArrayRef,
            Arc::new(StringArray::from(p)),
            Arc::new(StringArray::from(v)),
            Arc::new(StringArray::from(c)),
            Arc::new(TimestampMicrosecondArray::from(at).with_timezone("UTC")),
        ],
    )?)
}

/// Change the stored maps at exactly the next version (re-applying `change` when another process
/// committed first).
async fn update<T>(db: &Database, mut change: impl FnMut(&mut Maps) -> Result<T>) -> Result<T> {
    for _ in 0..50 {
        let table = db.load(Table::CategoryMaps).await?;
        let batches = crate::storage::read_pinned(db, Table::CategoryMaps, &table).await?;
        let mut maps = from_batches(&batches)?;
        let out = change(&mut maps)?;
        match commit::overwrite_exact(&table, vec![to_batch(&maps)?], commit::op("category_maps"))
            .await?
        {
            Committed::Version(_) => return Ok(out),
            Committed::Conflict => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    Err(Error::Conflict(
        "the category maps kept changing underneath this statement; try again".into(),
    ))
}

/// `CREATE CATEGORY MAP [IF NOT EXISTS] name FROM EVENT PROPERTY col`.
pub async fn create(db: &Database, name: &str, property: &str, if_not_exists: bool) -> Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    update(db, |maps| {
        if let Some(d) = maps.maps.get(name) {
            if if_not_exists {
                return Ok(());
            }
            return Err(Error::Conflict(format!(
                "category map '{name}' already exists (on event property {}); DROP CATEGORY MAP {name} first",
                d.property
            )));
        }
        maps.maps.insert(
            name.to_string(),
            CategoryMap {
                name: name.to_string(),
                property: property.to_string(),
                created_at: now,
                rows: Vec::new(),
            },
        );
        Ok(())
    })
    .await
}

/// `DROP CATEGORY MAP [IF EXISTS] name`.
pub async fn drop(db: &Database, name: &str, if_exists: bool) -> Result<()> {
    update(db, |maps| {
        if maps.maps.remove(name).is_none() && !if_exists {
            return Err(not_found(maps, name));
        }
        Ok(())
    })
    .await
}

fn not_found(maps: &Maps, name: &str) -> Error {
    let known: Vec<&str> = maps.maps.keys().map(String::as_str).collect();
    Error::NotFound(if known.is_empty() {
        format!(
            "category map '{name}' does not exist; there are none yet (CREATE CATEGORY MAP {name} FROM EVENT PROPERTY column)"
        )
    } else {
        format!(
            "category map '{name}' does not exist (SHOW CATEGORY MAPS lists them: {})",
            known.join(", ")
        )
    })
}

/// `SHOW CATEGORY MAPS`: `name, property, rows, created_at`.
pub fn show(maps: &Maps) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("property", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("created_at", ts_type(), false),
    ]));
    let v: Vec<&CategoryMap> = maps.maps.values().collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(v.iter().map(|m| &m.name))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(v.iter().map(|m| &m.property))),
            Arc::new(UInt64Array::from_iter_values(
                v.iter().map(|m| m.rows.len() as u64),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(v.iter().map(|m| m.created_at))
                    .with_timezone("UTC"),
            ),
        ],
    )?;
    Ok(QueryResult {
        schema,
        batches: vec![batch],
    })
}

/// Rows a map file may hold.
const MAX_ROWS: usize = 1_000_000;

/// Read a map file (CSV with a header naming `value` and `category`; other columns are
/// ignored). Every category must resolve in the taxonomy (by id, path or name) and is stored
/// as its id; a value appears once. Any bad row refuses the whole file, naming its row number.
pub fn read_file(path: &Path) -> Result<Vec<(String, String)>> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| Error::invalid(format!("cannot read {shown}: {e}")))?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(std::io::BufReader::new(file));
    let header: Vec<String> = r
        .headers()
        .map_err(|e| Error::invalid(format!("{shown}: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let col = |n: &str| {
        header.iter().position(|h| h == n).ok_or_else(|| {
            Error::invalid(format!(
                "{shown}: a category map file is CSV with the columns value and category (its header has {})",
                header.join(", ")
            ))
        })
    };
    let (vi, ci) = (col("value")?, col("category")?);
    let t = taxonomy();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, rec) in r.records().enumerate() {
        // Row numbers count the header as row 1, as a spreadsheet shows them.
        let row = n + 2;
        let rec = rec.map_err(|e| Error::invalid(format!("{shown} row {row}: {e}")))?;
        let value = rec.get(vi).unwrap_or("").to_string();
        let category = rec.get(ci).unwrap_or("").trim();
        if value.is_empty() || value == "*" {
            return Err(Error::invalid(format!(
                "{shown} row {row}: the value is empty (a value is matched exactly, or as a prefix when it ends with '*')"
            )));
        }
        let c = t
            .resolve(category)
            .map_err(|e| Error::invalid(format!("{shown} row {row}: {e}")))?;
        if let Some(first) = seen.insert(value.clone(), row) {
            return Err(Error::invalid(format!(
                "{shown} row {row}: this value is already mapped on row {first}; a value maps to one category"
            )));
        }
        out.push((value, c.id.clone()));
        if out.len() > MAX_ROWS {
            return Err(Error::invalid(format!(
                "{shown}: more than {MAX_ROWS} rows; a category map holds at most that many"
            )));
        }
    }
    Ok(out)
}

/// Replace the rows of map `name` with `rows`; returns how many.
pub async fn load(db: &Database, name: &str, rows: Vec<(String, String)>) -> Result<usize> {
    let n = rows.len();
    update(db, |maps| {
        let known = maps.clone();
        match maps.maps.get_mut(name) {
            Some(m) => {
                m.rows = rows.clone();
                Ok(n)
            }
            None => Err(not_found(&known, name)),
        }
    })
    .await
}

/// One map compiled for matching.
#[derive(Debug, Default)]
pub struct Matcher {
    exact: HashMap<String, u32>,
    prefix: HashMap<String, u32>,
    /// The distinct prefix lengths in bytes, longest first.
    lens: Vec<usize>,
}

impl Matcher {
    /// Compile a map's rows; categories are taxonomy positions (unknown ids are skipped: the
    /// compiled-in taxonomy only grows).
    pub fn new(m: &CategoryMap) -> Matcher {
        let t = taxonomy();
        let mut out = Matcher::default();
        for (v, c) in &m.rows {
            let Some(pos) = t.position(c) else { continue };
            match v.strip_suffix('*') {
                Some(p) => {
                    out.prefix.insert(p.to_string(), pos as u32);
                }
                None => {
                    out.exact.insert(v.clone(), pos as u32);
                }
            }
        }
        out.lens = out.prefix.keys().map(String::len).collect();
        out.lens.sort_unstable_by(|a, b| b.cmp(a));
        out.lens.dedup();
        out
    }

    /// The category of `value`: the longest matching value wins, an exact one on a tie.
    pub fn category(&self, value: &str) -> Option<u32> {
        let exact = self.exact.get(value).copied();
        for &l in &self.lens {
            if l > value.len() {
                continue;
            }
            if l < value.len() && exact.is_some() {
                break;
            }
            if let Some(p) = value.get(..l)
                && let Some(c) = self.prefix.get(p)
            {
                return if l == value.len() {
                    exact.or(Some(*c))
                } else {
                    Some(*c)
                };
            }
        }
        exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rows: &[(&str, &str)]) -> Matcher {
        Matcher::new(&CategoryMap {
            name: "m".into(),
            property: "p".into(),
            created_at: 0,
            rows: rows
                .iter()
                .map(|(v, c)| (v.to_string(), c.to_string()))
                .collect(),
        })
    }

    #[test]
    fn the_longest_matching_value_wins() {
        let t = taxonomy();
        let m = map(&[
            ("/cars/*", "content:1"),
            ("/cars/parts/*", "content:2"),
            ("/cars/parts/", "content:3"),
            ("/travel", "content:653"),
        ]);
        let id = |v: &str| m.category(v).map(|p| t.categories[p as usize].id.clone());
        assert_eq!(id("/cars/bmw").as_deref(), Some("content:1"));
        assert_eq!(id("/cars/").as_deref(), Some("content:1"));
        assert_eq!(id("/cars/parts/brakes").as_deref(), Some("content:2"));
        // An exact value as long as a prefix wins the tie.
        assert_eq!(id("/cars/parts/").as_deref(), Some("content:3"));
        assert_eq!(id("/travel").as_deref(), Some("content:653"));
        assert_eq!(id("/travel/x"), None);
        assert_eq!(id("/car"), None);
    }
}
