//! Segment functions usable in any SQL: `segment_size`, `segment_bitmap`, `in_segment` (scalars)
//! and `segment_members`, `segment_overlap` (table functions).
//!
//! Evaluating a segment is asynchronous work (queries, index reads) that a scalar function cannot
//! do mid-row, so the engine evaluates every segment a statement names *before* planning it (the
//! names, and `as_of` when given, must be literals) and leaves the bitmaps here; the functions read
//! them. Consent (`FOR PURPOSE`) and erasure are part of that evaluation, so no function can see a
//! member the segment's rules exclude.

pub mod has_consent;
pub mod in_segment;
pub mod segment_bitmap;
pub mod segment_members;
pub mod segment_overlap;
pub mod segment_size;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;
use roaring::RoaringBitmap;

/// uid ⇄ pseudonym, for functions that take or return `user_id`.
#[derive(Debug, Default)]
pub struct IdentityMap {
    pub by_uid: Vec<Option<Arc<str>>>,
    pub by_pseudonym: HashMap<Arc<str>, u32>,
}

/// Segment bitmaps evaluated for the statement being run.
#[derive(Debug, Default)]
pub struct Prefetched {
    bitmaps: RwLock<HashMap<(String, Option<i64>), Arc<RoaringBitmap>>>,
    identity: RwLock<Option<Arc<IdentityMap>>>,
}

/// Names of the functions whose segment arguments are evaluated before planning.
pub const FUNCTIONS: [&str; 5] = [
    "segment_size",
    "segment_bitmap",
    "in_segment",
    "segment_members",
    "segment_overlap",
];

impl Prefetched {
    pub fn clear(&self) {
        self.bitmaps.write().expect("not poisoned").clear();
    }
    pub fn put(&self, name: &str, as_of: Option<i64>, bm: RoaringBitmap) {
        self.bitmaps
            .write()
            .expect("not poisoned")
            .insert((name.to_string(), as_of), Arc::new(bm));
    }
    pub fn has(&self, name: &str, as_of: Option<i64>) -> bool {
        self.bitmaps
            .read()
            .expect("not poisoned")
            .contains_key(&(name.to_string(), as_of))
    }
    pub fn set_identity(&self, map: Arc<IdentityMap>) {
        *self.identity.write().expect("not poisoned") = Some(map);
    }
    pub fn identity(&self) -> Result<Arc<IdentityMap>> {
        match self.identity.read().expect("not poisoned").clone() {
            Some(m) => Ok(m),
            None => {
                exec_err!("segment functions: the identity map was not loaded for this statement")
            }
        }
    }
    pub fn get(&self, f: &str, name: &str, as_of: Option<i64>) -> Result<Arc<RoaringBitmap>> {
        match self
            .bitmaps
            .read()
            .expect("not poisoned")
            .get(&(name.to_string(), as_of))
        {
            Some(b) => Ok(b.clone()),
            None => plan_err!(
                "{f}: segment '{name}' was not evaluated; segment functions take the segment name{} as literals",
                if as_of.is_some() { " and as_of" } else { "" }
            ),
        }
    }
}

/// Per row: is this user (a stored pseudonym, or a `uid`) in `bm`? NULL users give `null_as`
/// (None keeps NULL).
pub(crate) fn membership(
    cache: &Prefetched,
    users: &arrow::array::ArrayRef,
    bm: &RoaringBitmap,
    null_as: Option<bool>,
) -> Result<arrow::array::BooleanArray> {
    use arrow::array::{Array, AsArray, BooleanBuilder};
    use arrow::datatypes::{DataType, Int64Type};
    let rows = users.len();
    let mut out = BooleanBuilder::with_capacity(rows);
    let mut push = |valid: bool, member: bool| match (valid, null_as) {
        (true, _) => out.append_value(member),
        (false, Some(v)) => out.append_value(v),
        (false, None) => out.append_null(),
    };
    if matches!(
        users.data_type(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    ) {
        let ids = cache.identity()?;
        let s = arrow::compute::cast(users, &DataType::Utf8)?;
        let s = s.as_string::<i32>();
        for i in 0..rows {
            push(
                s.is_valid(i),
                s.is_valid(i)
                    && ids
                        .by_pseudonym
                        .get(s.value(i))
                        .is_some_and(|u| bm.contains(*u)),
            );
        }
    } else {
        let u = arrow::compute::cast(users, &DataType::Int64)?;
        let u = u.as_primitive::<Int64Type>();
        for i in 0..rows {
            push(
                u.is_valid(i),
                u.is_valid(i) && u32::try_from(u.value(i)).is_ok_and(|v| bm.contains(v)),
            );
        }
    }
    Ok(out.finish())
}

/// A literal segment name argument.
pub(crate) fn literal_name(f: &str, v: &ColumnarValue) -> Result<String> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Ok(s.clone()),
        _ => exec_err!("{f}: the segment name must be a string literal"),
    }
}

/// An `as_of` argument: an ISO-8601 string or a timestamp, as epoch microseconds.
pub(crate) fn as_of_value(f: &str, v: &ScalarValue) -> Result<Option<i64>> {
    match v {
        ScalarValue::Null => Ok(None),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => match crate::ingest::parse_micros(s) {
            Some(t) => Ok(Some(t)),
            None => exec_err!("{f}: as_of '{s}' is not an ISO-8601 timestamp"),
        },
        other => {
            let t = other.cast_to(&arrow::datatypes::DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                None,
            ))?;
            match t {
                ScalarValue::TimestampMicrosecond(Some(v), _) => Ok(Some(v)),
                _ => exec_err!("{f}: as_of must be a timestamp or an ISO-8601 string"),
            }
        }
    }
}

/// The `as_of` of a scalar call's optional argument.
pub(crate) fn as_of_arg(f: &str, v: Option<&ColumnarValue>) -> Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(ColumnarValue::Scalar(s)) => as_of_value(f, s),
        Some(_) => exec_err!("{f}: as_of must be a literal"),
    }
}
