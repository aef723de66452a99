//! Validation and shaping of one input batch into rows of a segdb table: required columns are
//! checked, `user_id` is pseudonymised and given its ordinal, timestamps are parsed, property
//! columns get Delta-compatible types (and the table's type where the column already exists).
//! Rows that fail are reported by row number and dropped; nothing here ever echoes a raw id.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Int64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::compute::{cast, filter};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::identity::Identity;
use super::read::{SourceBatch, TextColumns, type_word};
use super::{BadRow, Kind};
use crate::error::{Error, Result};
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::ts_type;
use crate::time::parse_micros;

/// Columns each kind reads as text before validating them itself.
/// The consent columns segdb reads (everything else on a consent row is ignored).
const CONSENT_COLUMNS: [&str; 7] = [
    "tc_string",
    "us_privacy",
    "gpp",
    "purpose",
    "granted",
    "expires_at",
    "recorded_at",
];

pub(crate) fn text_columns(kind: Kind) -> TextColumns {
    let mut t: TextColumns = ["user_id".to_string()].into_iter().collect();
    match kind {
        Kind::Events => t.extend(["event", "ts", "anonymous_id"].map(String::from)),
        Kind::Profiles => {}
        Kind::Consent => t.extend(CONSENT_COLUMNS.into_iter().chain(["ts"]).map(String::from)),
        Kind::Links => t.extend(["linked_id", "id_type"].map(String::from)),
    }
    t
}

/// Shapes batches of one load.
pub(crate) struct Normalizer {
    kind: Kind,
    pseudo: Pseudonymizer,
    /// raw id → (pseudonym, forgotten?), for this load only (memory, never persisted or logged).
    cache: HashMap<String, (Arc<str>, bool)>,
    /// Keyed hashes of forgotten pseudonyms, and the hasher that makes them.
    forgotten: std::collections::HashSet<String>,
    forget_hasher: Option<Pseudonymizer>,
    /// The target table's schema before this load (existing columns keep their type).
    table: SchemaRef,
    now: i64,
    /// Place of the next kept row in this load (consent ties go to the later row).
    seq: i64,
    /// `user_id` ↔ `anonymous_id` links found in an events load (ordinals).
    pub(crate) links: Vec<(u32, u32)>,
}

impl Normalizer {
    pub(crate) fn new(kind: Kind, pseudo: Pseudonymizer, table: SchemaRef, now: i64) -> Self {
        Normalizer {
            kind,
            pseudo,
            cache: HashMap::new(),
            forgotten: Default::default(),
            forget_hasher: None,
            table,
            now,
            seq: 0,
            links: Vec::new(),
        }
    }

    /// Reject rows of users who were forgotten (their keyed hashes, and the hasher).
    pub(crate) fn with_forgotten(
        mut self,
        hashes: std::collections::HashSet<String>,
        hasher: Pseudonymizer,
    ) -> Self {
        self.forgotten = hashes;
        self.forget_hasher = Some(hasher);
        self
    }

    fn pseudonym(&mut self, raw: &str) -> (Arc<str>, bool) {
        if let Some(v) = self.cache.get(raw) {
            return v.clone();
        }
        let p: Arc<str> = self.pseudo.pseudonymize(raw).into();
        let forgotten = !self.forgotten.is_empty()
            && self
                .forget_hasher
                .as_ref()
                .is_some_and(|h| self.forgotten.contains(&h.pseudonymize(&p)));
        self.cache.insert(raw.to_string(), (p.clone(), forgotten));
        (p, forgotten)
    }

    /// Remember the types of columns first seen in this load, so later batches (and later files)
    /// are cast to the same type.
    pub(crate) fn note_schema(&mut self, out: &Schema) {
        let new: Vec<Field> = out
            .fields()
            .iter()
            .filter(|f| self.table.column_with_name(f.name()).is_none())
            .map(|f| f.as_ref().clone())
            .collect();
        if !new.is_empty() {
            let mut fields: Vec<Field> = self
                .table
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(new);
            self.table = Arc::new(Schema::new(fields));
        }
    }

    /// File-level checks: required and reserved columns.
    pub(crate) fn check_columns(&self, schema: &Schema, file: &str) -> Result<()> {
        let has = |n: &str| schema.column_with_name(n).is_some();
        let mut required = vec!["user_id"];
        if self.kind == Kind::Events {
            required.extend(["event", "ts"]);
        }
        for r in required {
            if !has(r) {
                return Err(Error::ingest(format!(
                    "{file} has no {r:?} column; {} need {}",
                    self.kind.name(),
                    match self.kind {
                        Kind::Events => "user_id, event and ts",
                        _ => "user_id",
                    }
                )));
            }
        }
        if self.kind == Kind::Consent
            && !["tc_string", "us_privacy", "gpp", "purpose"]
                .iter()
                .any(|c| has(c))
        {
            return Err(Error::ingest(format!(
                "{file} has none of tc_string, us_privacy, gpp or purpose (+ granted); consent rows need one"
            )));
        }
        let reserved: &[&str] = match self.kind {
            Kind::Profiles => &["uid", "updated_at"],
            Kind::Consent => &["uid", "ingested_at", "row_seq"],
            Kind::Events => &["uid"],
            Kind::Links => &[],
        };
        for r in reserved {
            if has(r) {
                return Err(Error::ingest(format!(
                    "{file}: column {r:?} is reserved (segdb fills it); drop it from the input"
                )));
            }
        }
        Ok(())
    }

    /// Validate and shape one batch. Bad rows are appended to `bad`.
    pub(crate) fn normalize(
        &mut self,
        sb: SourceBatch,
        identity: &mut Identity,
        bad: &mut Vec<BadRow>,
        file: &str,
    ) -> Result<RecordBatch> {
        let SourceBatch {
            batch,
            rows,
            bad: parse_bad,
            ..
        } = sb;
        bad.extend(parse_bad);
        let n = batch.num_rows();
        let mut ok: Vec<bool> = rows.iter().map(|&r| r != 0).collect();
        let mut reject = |ok: &mut Vec<bool>, i: usize, why: String| {
            if ok[i] {
                ok[i] = false;
                bad.push(BadRow::new(file, rows[i], why));
            }
        };
        let schema = batch.schema();
        let col = |name: &str| schema.index_of(name).ok().map(|i| batch.column(i).clone());

        let raw_ids = as_text(&col("user_id").expect("checked"))?;
        // Events may carry an anonymous_id: a row without a user_id belongs to it, and a row with
        // both links them (placeholders never link).
        let anon = match (self.kind, col("anonymous_id")) {
            (Kind::Events, Some(a)) => Some(as_text(&a)?),
            _ => None,
        };
        let usable =
            |a: &StringArray, i: usize| a.is_valid(i) && !crate::links::is_junk(a.value(i));
        let raw_ids = match &anon {
            Some(an) => (0..n)
                .map(|i| {
                    if usable(&raw_ids, i) {
                        Some(raw_ids.value(i).to_string())
                    } else if usable(an, i) {
                        Some(an.value(i).to_string())
                    } else {
                        raw_ids.is_valid(i).then(|| raw_ids.value(i).to_string())
                    }
                })
                .collect::<StringArray>(),
            None => raw_ids,
        };
        let pending_links: Vec<Option<String>> = match &anon {
            Some(an) => (0..n)
                .map(|i| {
                    (usable(an, i) && raw_ids.is_valid(i) && raw_ids.value(i) != an.value(i))
                        .then(|| an.value(i).to_string())
                })
                .collect(),
            None => Vec::new(),
        };
        // One placeholder rule at every door (DESIGN §4): a row whose only id is a
        // placeholder (null, undefined, guest, -1, …) belongs to nobody.
        for i in 0..n {
            if raw_ids.is_null(i) || crate::links::is_junk(raw_ids.value(i)) {
                let why = if anon.is_some() {
                    "user_id and anonymous_id are missing or placeholders (such as null, undefined, guest, -1)"
                } else {
                    "user_id is missing or a placeholder (such as null, undefined, guest, -1)"
                };
                reject(&mut ok, i, why.into());
            }
        }

        let mut fixed: Vec<(Field, ArrayRef)> = Vec::new();
        let mut consumed: Vec<&str> = vec!["user_id", "anonymous_id"];
        match self.kind {
            Kind::Events => {
                let ev = as_text(&col("event").expect("checked"))?;
                for i in 0..n {
                    if ev.is_null(i) || ev.value(i).is_empty() {
                        reject(&mut ok, i, "event is missing".into());
                    }
                }
                let (ts, errs) = to_micros(&col("ts").expect("checked"))?;
                for (i, e) in errs {
                    reject(&mut ok, i, format!("ts {e}"));
                }
                fixed.push((Field::new("event", DataType::Utf8, true), Arc::new(ev)));
                fixed.push((Field::new("ts", ts_type(), true), Arc::new(ts)));
                consumed.extend(["event", "ts"]);
            }
            Kind::Profiles => {
                let now = TimestampMicrosecondArray::from(vec![self.now; n]).with_timezone("UTC");
                fixed.push((Field::new("updated_at", ts_type(), true), Arc::new(now)));
            }
            Kind::Links => unreachable!("links are loaded by ingest::links"),
            Kind::Consent => {
                let text = |c: &str| -> Result<StringArray> {
                    Ok(match col(c) {
                        Some(a) => as_text(&a)?,
                        None => StringArray::new_null(n),
                    })
                };
                let tc = text("tc_string")?;
                let usp = text("us_privacy")?;
                let gpp = text("gpp")?;
                let purpose = text("purpose")?;
                let (granted, gerrs) = match col("granted") {
                    Some(a) => to_bool(&a)?,
                    None => (BooleanArray::new_null(n), Vec::new()),
                };
                for (i, e) in gerrs {
                    reject(&mut ok, i, format!("granted {e}"));
                }
                let (expires, eerrs) = match col("expires_at") {
                    Some(a) => to_micros(&a)?,
                    None => (
                        TimestampMicrosecondArray::new_null(n).with_timezone("UTC"),
                        Vec::new(),
                    ),
                };
                for (i, e) in eerrs
                    .into_iter()
                    .filter(|(i, _)| !is_blank(&col("expires_at"), *i))
                {
                    reject(&mut ok, i, format!("expires_at {e}"));
                }
                // When a record takes effect: its recorded_at (or ts) when given; else, for a TC
                // string, the string's own LastUpdated (when the user chose); else the load.
                let from_tc = |i: usize| -> Option<i64> {
                    if tc.is_null(i) || tc.value(i).trim().is_empty() {
                        return None;
                    }
                    let d = crate::privacy::tcf::decode(tc.value(i).trim()).ok()?;
                    i64::try_from(d.core.last_updated)
                        .ok()?
                        .checked_mul(100_000)
                };
                let rec_col = col("recorded_at").or_else(|| col("ts"));
                let given = match rec_col.clone() {
                    Some(a) => {
                        let (t, errs) = to_micros(&a)?;
                        for (i, e) in errs.into_iter().filter(|(i, _)| !is_blank(&rec_col, *i)) {
                            reject(&mut ok, i, format!("recorded_at {e}"));
                        }
                        Some(t)
                    }
                    None => None,
                };
                let recorded: TimestampMicrosecondArray = (0..n)
                    .map(|i| {
                        Some(match &given {
                            Some(t) if t.is_valid(i) => t.value(i),
                            _ => from_tc(i).unwrap_or(self.now),
                        })
                    })
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC");
                let present =
                    |a: &StringArray, i: usize| a.is_valid(i) && !a.value(i).trim().is_empty();
                for i in 0..n {
                    let has_purpose = present(&purpose, i);
                    if has_purpose && granted.is_null(i) {
                        reject(&mut ok, i, "has a purpose but no granted value".into());
                    } else if !has_purpose
                        && granted.is_valid(i)
                        && !(present(&tc, i) || present(&usp, i) || present(&gpp, i))
                    {
                        reject(&mut ok, i, "has granted but no purpose".into());
                    } else if !(has_purpose
                        || present(&tc, i)
                        || present(&usp, i)
                        || present(&gpp, i))
                    {
                        reject(
                            &mut ok,
                            i,
                            "has no tc_string, us_privacy, gpp or purpose".into(),
                        );
                    }
                }
                for (name, a) in [
                    ("tc_string", tc),
                    ("us_privacy", usp),
                    ("gpp", gpp),
                    ("purpose", purpose),
                ] {
                    fixed.push((Field::new(name, DataType::Utf8, true), Arc::new(a)));
                }
                fixed.push((
                    Field::new("granted", DataType::Boolean, true),
                    Arc::new(granted),
                ));
                fixed.push((Field::new("expires_at", ts_type(), true), Arc::new(expires)));
                fixed.push((
                    Field::new("recorded_at", ts_type(), true),
                    Arc::new(recorded),
                ));
                fixed.push((
                    Field::new("ingested_at", ts_type(), true),
                    Arc::new(
                        TimestampMicrosecondArray::from(vec![self.now; n]).with_timezone("UTC"),
                    ),
                ));
                let seq: arrow::array::Int64Array =
                    (0..n as i64).map(|i| Some(self.seq + i)).collect();
                self.seq += n as i64;
                fixed.push((Field::new("row_seq", DataType::Int64, true), Arc::new(seq)));
                consumed.extend(CONSENT_COLUMNS);
                if schema.column_with_name("recorded_at").is_none() {
                    consumed.push("ts");
                }
            }
        }

        // Properties / attributes: every other column.
        let mut props: Vec<(Field, ArrayRef)> = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if consumed.contains(&f.name().as_str()) {
                continue;
            }
            let (arr, errs) = self.property(f.name(), batch.column(i))?;
            for r in errs {
                reject(
                    &mut ok,
                    r,
                    format!(
                        "column {:?} does not hold a {}",
                        f.name(),
                        type_word(arr.data_type())
                    ),
                );
            }
            props.push((Field::new(f.name(), arr.data_type().clone(), true), arr));
        }

        // Forgotten users stay forgotten: a load that brings one back rejects those rows.
        if self.forget_hasher.is_some() {
            for i in 0..n {
                if ok[i] && self.pseudonym(raw_ids.value(i)).1 {
                    ok[i] = false;
                    bad.push(BadRow::new(
                        file,
                        rows[i],
                        "belongs to a forgotten user (FORGET USER); not loaded".into(),
                    ));
                }
            }
        }
        // Keep the good rows, then pseudonymise and assign ordinals (bad rows create no identity).
        let pending_links: Vec<Option<String>> = pending_links
            .into_iter()
            .zip(ok.iter())
            .filter(|(_, k)| **k)
            .map(|(l, _)| l)
            .collect();
        let mask = BooleanArray::from(ok);
        let raw_ids = filter(&raw_ids, &mask)?;
        let raw_ids = raw_ids.as_string::<i32>();
        let kept = raw_ids.len();
        let mut pseudo = StringBuilder::with_capacity(kept, kept * 25);
        let mut uids = Int64Builder::with_capacity(kept);
        for i in 0..kept {
            let (p, _) = self.pseudonym(raw_ids.value(i));
            let u = identity.ordinal(&p)?;
            pseudo.append_value(&*p);
            uids.append_value(u);
            if let Some(Some(other)) = pending_links.get(i) {
                let (q, forgotten) = self.pseudonym(other);
                if !forgotten {
                    let v = identity.ordinal(&q)?;
                    self.links.push((u as u32, v as u32));
                }
            }
        }
        let mut fields = vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("uid", DataType::Int64, true),
        ];
        let mut cols: Vec<ArrayRef> = vec![Arc::new(pseudo.finish()), Arc::new(uids.finish())];
        for (f, a) in fixed.into_iter().chain(props) {
            fields.push(f);
            cols.push(filter(&a, &mask)?);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
    }

    /// Give a property column a Delta-compatible type: the table's type if the column exists,
    /// else a widened common type. Returns the rows whose value could not be converted.
    fn property(&self, name: &str, a: &ArrayRef) -> Result<(ArrayRef, Vec<usize>)> {
        let target = match self.table.column_with_name(name) {
            Some((_, f)) => f.data_type().clone(),
            None => storage_type(a.data_type()),
        };
        if a.data_type() == &target {
            return Ok((a.clone(), Vec::new()));
        }
        let cannot = || {
            Error::ingest(format!(
                "column {name:?} ({}) cannot be stored as {target}",
                a.data_type()
            ))
        };
        if matches!(target, DataType::Timestamp(..)) && is_text(a.data_type()) {
            let (t, _) = to_micros(a)?;
            let errs = (0..a.len())
                .filter(|&i| a.is_valid(i) && t.is_null(i))
                .collect();
            return Ok((Arc::new(t) as ArrayRef, errs));
        }
        // Text into a number goes through Float64 (or, for whole numbers, a parse of its own:
        // arrow refuses "5.0" for Int64), so that it meets the same exactness check as numbers.
        let given = a;
        let a = if is_text(a.data_type()) && target.is_integer() {
            Arc::new(text_to_i64(a)?) as ArrayRef
        } else if is_text(a.data_type()) && (target.is_floating() || is_decimal(&target)) {
            cast(a, &DataType::Float64).map_err(|_| cannot())?
        } else {
            a.clone()
        };
        let out = cast(&a, &target).map_err(|_| cannot())?;
        // Never change a value silently (DESIGN §4): a value that does not come back the same
        // from the stored type (49.99 into Int64, 2 into Boolean, 1.005 into DECIMAL(10,2))
        // rejects its row, as a value out of range does.
        let exact = if is_text(a.data_type()) {
            None
        } else {
            cast(&out, a.data_type())
                .ok()
                .and_then(|back| arrow::compute::kernels::cmp::eq(&a, &back).ok())
        };
        let errs = (0..a.len())
            .filter(|&i| {
                given.is_valid(i)
                    && (out.is_null(i)
                        || exact
                            .as_ref()
                            .is_some_and(|eq| !eq.is_valid(i) || !eq.value(i)))
            })
            .collect();
        Ok((out, errs))
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_blank(a: &Option<ArrayRef>, i: usize) -> bool {
    match a {
        None => true,
        Some(a) => {
            if a.is_null(i) {
                return true;
            }
            if is_text(a.data_type()) {
                if let Ok(s) = cast(a, &DataType::Utf8) {
                    return s.as_string::<i32>().value(i).trim().is_empty();
                }
            }
            false
        }
    }
}

/// The type a new property column is stored with.
fn storage_type(t: &DataType) -> DataType {
    use DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Int64,
        Float16 | Float32 | Float64 => Float64,
        Decimal128(..) | Boolean | Date32 | Binary | Utf8 => t.clone(),
        Decimal256(..) => Float64,
        Date64 => Date32,
        Timestamp(..) => ts_type(),
        LargeBinary | BinaryView | FixedSizeBinary(_) => Binary,
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) | FixedSizeList(f, _) => List(
            Arc::new(Field::new("element", storage_type(f.data_type()), true)),
        ),
        Struct(fs) => Struct(
            fs.iter()
                .map(|f| Arc::new(Field::new(f.name(), storage_type(f.data_type()), true)))
                .collect(),
        ),
        _ => Utf8,
    }
}

/// Any column as text (ids may arrive as numbers).
fn as_text(a: &ArrayRef) -> Result<StringArray> {
    let s = cast(a, &DataType::Utf8)
        .map_err(|_| Error::ingest(format!("a {} column cannot be read as text", a.data_type())))?;
    Ok(s.as_string::<i32>().clone())
}

/// A timestamp column in any accepted representation → UTC microseconds, with per-row errors
/// (missing values included).
fn to_micros(a: &ArrayRef) -> Result<(TimestampMicrosecondArray, Vec<(usize, &'static str)>)> {
    let n = a.len();
    let mut errs = Vec::new();
    let mut b = TimestampMicrosecondBuilder::with_capacity(n);
    match a.data_type() {
        t if is_text(t) => {
            let s = cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            for i in 0..n {
                if s.is_null(i) || s.value(i).trim().is_empty() {
                    errs.push((i, "is missing"));
                    b.append_null();
                } else {
                    match parse_micros(s.value(i)) {
                        Some(v) => b.append_value(v),
                        None => {
                            errs.push((i, "is not an ISO-8601 timestamp or epoch milliseconds"));
                            b.append_null();
                        }
                    }
                }
            }
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64 => {
            let ms = cast(a, &DataType::Float64)?;
            let ms = ms.as_primitive::<arrow::datatypes::Float64Type>();
            for i in 0..n {
                if ms.is_null(i) {
                    errs.push((i, "is missing"));
                    b.append_null();
                } else {
                    let v = ms.value(i) * 1000.0;
                    if v.is_finite() && v.abs() < 9.0e18 {
                        b.append_value(v as i64);
                    } else {
                        errs.push((i, "is out of range"));
                        b.append_null();
                    }
                }
            }
        }
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            let t = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let t = t.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..n {
                if t.is_null(i) {
                    errs.push((i, "is missing"));
                    b.append_null();
                } else {
                    b.append_value(t.value(i));
                }
            }
        }
        other => {
            return Err(Error::ingest(format!(
                "a {other} column cannot be read as a timestamp"
            )));
        }
    }
    Ok((b.finish().with_timezone("UTC"), errs))
}

/// A boolean column from booleans, 0/1 or text (true/false, t/f, yes/no, 1/0).
fn to_bool(a: &ArrayRef) -> Result<(BooleanArray, Vec<(usize, &'static str)>)> {
    if a.data_type() == &DataType::Boolean {
        return Ok((a.as_boolean().clone(), Vec::new()));
    }
    let s = cast(a, &DataType::Utf8)?;
    let s = s.as_string::<i32>();
    let mut b = BooleanBuilder::with_capacity(s.len());
    let mut errs = Vec::new();
    for i in 0..s.len() {
        if s.is_null(i) || s.value(i).trim().is_empty() {
            b.append_null();
            continue;
        }
        match s.value(i).trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => b.append_value(true),
            "false" | "f" | "no" | "n" | "0" => b.append_value(false),
            _ => {
                errs.push((i, "is not a boolean"));
                b.append_null();
            }
        }
    }
    Ok((b.finish(), errs))
}

fn is_decimal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
    )
}

/// Text as whole numbers: an integer, or a number whose fraction is zero (`5.0`) and that
/// fits; anything else (`49.99`, `abc`) is NULL, which rejects its row.
fn text_to_i64(a: &ArrayRef) -> Result<arrow::array::Int64Array> {
    let t = cast(a, &DataType::Utf8)?;
    let t = arrow::array::AsArray::as_string::<i32>(&t);
    Ok(t.iter()
        .map(|v| {
            let v = v?.trim();
            v.parse::<i64>().ok().or_else(|| {
                let f = v.parse::<f64>().ok()?;
                (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
            })
        })
        .collect())
}
