//! The functions the planner puts in place of evaluated calls: a membership probe over a bitmap
//! (for `in_segment` and `has_consent`) and a lookup of canonical pseudonyms (`identity_of`).
//! They hold their data, so they exist only inside one statement's physical plan.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, StringBuilder};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use crate::segment::IdentityMap;

/// Is each user (a stored pseudonym or a `uid`) in `members`? NULL users give NULL.
#[derive(Debug)]
pub struct MemberProbe {
    name: String,
    signature: Signature,
    members: Arc<RoaringBitmap>,
    ids: Arc<IdentityMap>,
    /// Map through the canonical profile first (stitched identities).
    canonical: Option<Arc<Vec<u32>>>,
}

impl PartialEq for MemberProbe {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.members, &o.members) && self.name == o.name
    }
}
impl Eq for MemberProbe {}
impl std::hash::Hash for MemberProbe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl MemberProbe {
    pub fn udf(
        name: String,
        members: Arc<RoaringBitmap>,
        ids: Arc<IdentityMap>,
        canonical: Option<Arc<Vec<u32>>>,
    ) -> ScalarUDF {
        ScalarUDF::from(MemberProbe {
            name,
            signature: Signature::any(1, Volatility::Immutable),
            members,
            ids,
            canonical,
        })
    }

    fn probe(&self, users: &ArrayRef) -> Result<ArrayRef> {
        let mut out = BooleanBuilder::with_capacity(users.len());
        each_user(users, &self.ids, self.canonical.as_deref(), |u| {
            out.append_option(u.map(|u| u.is_some_and(|u| self.members.contains(u))))
        })?;
        Ok(Arc::new(out.finish()))
    }
}

/// Visit each user of `users` (stored pseudonyms, or `uid` ordinals of any integer type): `None`
/// for a NULL, `Some(None)` for an id no known user has, `Some(Some(uid))` otherwise — the
/// canonical ordinal when `canonical` maps ordinals to profiles.
fn each_user(
    users: &ArrayRef,
    ids: &IdentityMap,
    canonical: Option<&Vec<u32>>,
    mut f: impl FnMut(Option<Option<u32>>),
) -> Result<()> {
    let canon = |u: u32| {
        canonical
            .and_then(|c| c.get(u as usize).copied())
            .unwrap_or(u)
    };
    if matches!(
        users.data_type(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    ) {
        let s = arrow::compute::cast(users, &DataType::Utf8)?;
        let s = s.as_string::<i32>();
        for i in 0..s.len() {
            f(s.is_valid(i)
                .then(|| ids.by_pseudonym.get(s.value(i)).map(|u| canon(*u))));
        }
    } else {
        let u = arrow::compute::cast(users, &DataType::Int64)?;
        let u = u.as_primitive::<Int64Type>();
        for i in 0..u.len() {
            f(u.is_valid(i)
                .then(|| u32::try_from(u.value(i)).ok().map(canon)));
        }
    }
    Ok(())
}

impl ScalarUDFImpl for MemberProbe {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        crate::functions::map_unary(&args.args[0], |a| self.probe(a))
    }
}

/// The canonical pseudonym of each user (a stored pseudonym or a `uid`).
#[derive(Debug)]
pub struct CanonicalLookup {
    signature: Signature,
    ids: Arc<IdentityMap>,
    canonical: Option<Arc<Vec<u32>>>,
    universe: Arc<RoaringBitmap>,
}

impl PartialEq for CanonicalLookup {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.ids, &o.ids)
    }
}
impl Eq for CanonicalLookup {}
impl std::hash::Hash for CanonicalLookup {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "identity_of".hash(state);
    }
}

impl CanonicalLookup {
    pub fn udf(
        ids: Arc<IdentityMap>,
        canonical: Option<Arc<Vec<u32>>>,
        universe: Arc<RoaringBitmap>,
    ) -> ScalarUDF {
        ScalarUDF::from(CanonicalLookup {
            signature: Signature::any(1, Volatility::Immutable),
            ids,
            canonical,
            universe,
        })
    }

    fn lookup(&self, users: &ArrayRef) -> Result<ArrayRef> {
        let mut out = StringBuilder::with_capacity(users.len(), users.len() * 25);
        let canon = |u: u32| -> Option<&str> {
            if !self.universe.contains(u) {
                return None;
            }
            let c = match &self.canonical {
                Some(c) => c.get(u as usize).copied().unwrap_or(u),
                None => u,
            };
            self.ids.pseudonym(c)
        };
        if matches!(
            users.data_type(),
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            let s = arrow::compute::cast(users, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            for i in 0..s.len() {
                let v = s
                    .is_valid(i)
                    .then(|| self.ids.by_pseudonym.get(s.value(i)).copied())
                    .flatten()
                    .and_then(canon);
                out.append_option(v);
            }
        } else {
            let u = arrow::compute::cast(users, &DataType::Int64)?;
            let u = u.as_primitive::<Int64Type>();
            for i in 0..u.len() {
                let v = u
                    .is_valid(i)
                    .then(|| u32::try_from(u.value(i)).ok())
                    .flatten()
                    .and_then(canon);
                out.append_option(v);
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for CanonicalLookup {
    fn name(&self) -> &str {
        "identity_of"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        crate::functions::map_unary(&args.args[0], |a| self.lookup(a))
    }
}

/// Each user's score (a stored pseudonym or a `uid`) from a map; users without one give NULL.
#[derive(Debug)]
pub struct ScoreProbe {
    name: String,
    signature: Signature,
    scores: Arc<std::collections::HashMap<u32, f64>>,
    ids: Arc<IdentityMap>,
    canonical: Option<Arc<Vec<u32>>>,
}

impl PartialEq for ScoreProbe {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.scores, &o.scores) && self.name == o.name
    }
}
impl Eq for ScoreProbe {}
impl std::hash::Hash for ScoreProbe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScoreProbe {
    pub fn udf(
        name: String,
        scores: Arc<std::collections::HashMap<u32, f64>>,
        ids: Arc<IdentityMap>,
        canonical: Option<Arc<Vec<u32>>>,
    ) -> ScalarUDF {
        ScalarUDF::from(ScoreProbe {
            name,
            signature: Signature::any(1, Volatility::Immutable),
            scores,
            ids,
            canonical,
        })
    }

    fn probe(&self, users: &ArrayRef) -> Result<ArrayRef> {
        let mut out = arrow::array::Float64Builder::with_capacity(users.len());
        each_user(users, &self.ids, self.canonical.as_deref(), |u| {
            out.append_option(u.flatten().and_then(|u| self.scores.get(&u).copied()))
        })?;
        Ok(Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for ScoreProbe {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        crate::functions::map_unary(&args.args[0], |a| self.probe(a))
    }
}
