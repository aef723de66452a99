//! The bitmap aggregates share one machine: a per-group `Option<RoaringBitmap>` (None = no input
//! yet), one nullable Binary state field in the portable format, an `Accumulator` and a
//! `GroupsAccumulator`, and an honest `size()` (the bitmaps' serialised sizes). The kinds differ
//! in what a row contributes: a u32 (`rb_build_agg`) or a bitmap OR-ed or AND-ed in.

use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::binary::as_binary;
use crate::bitmap::codec::{from_bytes, to_bytes};

/// What one aggregate does with its input.
pub trait AggKind: Send + Sync + 'static {
    const NAME: &'static str;
    /// Fold one input array into the per-group bitmaps.
    fn update(
        groups: &mut [Option<RoaringBitmap>],
        values: &ArrayRef,
        group_of: impl Fn(usize) -> Option<usize>,
    ) -> Result<()>;
    /// Combine a partial state into a group.
    fn merge(into: &mut Option<RoaringBitmap>, other: RoaringBitmap);
}

pub(crate) fn merge_or(into: &mut Option<RoaringBitmap>, other: RoaringBitmap) {
    match into {
        Some(b) => *b |= other,
        None => *into = Some(other),
    }
}

pub(crate) fn merge_and(into: &mut Option<RoaringBitmap>, other: RoaringBitmap) {
    match into {
        Some(b) => *b &= other,
        None => *into = Some(other),
    }
}

/// `rb_build_agg` input: integers 0..=u32::MAX.
pub(crate) fn update_build(
    groups: &mut [Option<RoaringBitmap>],
    values: &ArrayRef,
    group_of: impl Fn(usize) -> Option<usize>,
) -> Result<()> {
    let ints = arrow::compute::cast(values, &DataType::Int64)?;
    let ints = ints.as_primitive::<Int64Type>();
    for i in 0..ints.len() {
        let Some(g) = group_of(i) else { continue };
        if ints.is_null(i) {
            continue;
        }
        let v = ints.value(i);
        let Ok(v) = u32::try_from(v) else {
            return exec_err!("rb_build_agg: {v} is outside the u32 range of user ordinals");
        };
        groups[g].get_or_insert_with(RoaringBitmap::new).insert(v);
    }
    Ok(())
}

/// Bitmap inputs folded with `merge`.
pub(crate) fn update_bitmaps(
    name: &str,
    groups: &mut [Option<RoaringBitmap>],
    values: &ArrayRef,
    group_of: impl Fn(usize) -> Option<usize>,
    merge: fn(&mut Option<RoaringBitmap>, RoaringBitmap),
) -> Result<()> {
    let bins = as_binary(values)?;
    for i in 0..bins.len() {
        let Some(g) = group_of(i) else { continue };
        if bins.is_null(i) {
            continue;
        }
        let Some(bm) = from_bytes(bins.value(i)) else {
            return exec_err!("{name}: row {i} is not a portable Roaring bitmap");
        };
        merge(&mut groups[g], bm);
    }
    Ok(())
}

fn to_scalar(b: &Option<RoaringBitmap>) -> ScalarValue {
    ScalarValue::Binary(Some(to_bytes(b.as_ref().unwrap_or(&RoaringBitmap::new()))))
}

fn size_of(groups: &[Option<RoaringBitmap>]) -> usize {
    std::mem::size_of_val(groups)
        + groups
            .iter()
            .flatten()
            .map(|b| b.serialized_size())
            .sum::<usize>()
}

/// The UDAF for an [`AggKind`].
pub struct RbAgg<K> {
    signature: Signature,
    _k: PhantomData<K>,
}

impl<K: AggKind> RbAgg<K> {
    pub fn new() -> Self {
        RbAgg {
            signature: Signature::any(1, Volatility::Immutable),
            _k: PhantomData,
        }
    }
}

impl<K: AggKind> Default for RbAgg<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> std::fmt::Debug for RbAgg<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RbAgg")
    }
}
impl<K: AggKind> PartialEq for RbAgg<K> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<K: AggKind> Eq for RbAgg<K> {}
impl<K: AggKind> std::hash::Hash for RbAgg<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        K::NAME.hash(state);
    }
}

impl<K: AggKind> AggregateUDFImpl for RbAgg<K> {
    fn name(&self) -> &str {
        K::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn is_nullable(&self) -> bool {
        false
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Acc::<K> {
            bm: vec![None],
            _k: PhantomData,
        }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[bitmap]", args.name),
            DataType::Binary,
            true,
        ))])
    }
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(GroupsAcc::<K> {
            groups: Vec::new(),
            _k: PhantomData,
        }))
    }
}

struct Acc<K> {
    bm: Vec<Option<RoaringBitmap>>,
    _k: PhantomData<K>,
}

impl<K> std::fmt::Debug for Acc<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RbAgg accumulator")
    }
}

impl<K: AggKind> Accumulator for Acc<K> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        K::update(&mut self.bm, &values[0], |_| Some(0))
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(to_scalar(&self.bm[0]))
    }
    fn size(&self) -> usize {
        std::mem::size_of_val(self) + size_of(&self.bm)
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(self.bm[0].as_ref().map(to_bytes))])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let bins = as_binary(&states[0])?;
        for i in 0..bins.len() {
            if bins.is_valid(i) {
                let Some(bm) = from_bytes(bins.value(i)) else {
                    return exec_err!("{}: damaged partial state", K::NAME);
                };
                K::merge(&mut self.bm[0], bm);
            }
        }
        Ok(())
    }
}

struct GroupsAcc<K> {
    groups: Vec<Option<RoaringBitmap>>,
    _k: PhantomData<K>,
}

fn filtered(
    group_indices: &[usize],
    opt_filter: Option<&BooleanArray>,
) -> impl Fn(usize) -> Option<usize> {
    move |i| match opt_filter {
        Some(f) if !(f.is_valid(i) && f.value(i)) => None,
        _ => Some(group_indices[i]),
    }
}

impl<K: AggKind> GroupsAccumulator for GroupsAcc<K> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups, None);
        K::update(
            &mut self.groups,
            &values[0],
            filtered(group_indices, opt_filter),
        )
    }
    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.groups);
        let mut b = BinaryBuilder::new();
        for g in &taken {
            b.append_value(to_bytes(g.as_ref().unwrap_or(&RoaringBitmap::new())));
        }
        Ok(Arc::new(b.finish()))
    }
    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = emit_to.take_needed(&mut self.groups);
        let mut b = BinaryBuilder::new();
        for g in &taken {
            match g {
                Some(bm) => b.append_value(to_bytes(bm)),
                None => b.append_null(),
            }
        }
        Ok(vec![Arc::new(b.finish())])
    }
    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize(total_num_groups, None);
        let bins = as_binary(&values[0])?;
        for (i, &g) in group_indices.iter().enumerate() {
            if bins.is_valid(i) {
                let Some(bm) = from_bytes(bins.value(i)) else {
                    return exec_err!("{}: damaged partial state", K::NAME);
                };
                K::merge(&mut self.groups[g], bm);
            }
        }
        Ok(())
    }
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Every row is its own group.
        let n = values[0].len();
        let mut groups: Vec<Option<RoaringBitmap>> = vec![None; n];
        let rows: Vec<usize> = (0..n).collect();
        K::update(&mut groups, &values[0], filtered(&rows, opt_filter))?;
        let mut b = BinaryBuilder::new();
        for g in &groups {
            match g {
                Some(bm) => b.append_value(to_bytes(bm)),
                None => b.append_null(),
            }
        }
        Ok(vec![Arc::new(b.finish())])
    }
    fn size(&self) -> usize {
        size_of(&self.groups)
    }
}
