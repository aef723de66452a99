//! `segment_changes('name', from_version, to_version)` → `user_id`, `change` ('entered' |
//! 'exited'): who entered and who left a materialised segment between two versions of its
//! history; version 0 is the empty set. Both versions are read as of now — the current
//! suppression list and the current consent of the segment's purposes apply to both sides — so
//! a forgotten user never appears. A segment with a holdout adds `grp` ('target' | 'holdout').

use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use roaring::RoaringBitmap;

use super::lazy::LazyTable;
use super::{int_arg, string_arg};
use crate::error::Error;
use crate::segment::{EvalCtx, Segments};

#[derive(Debug)]
pub struct SegmentChanges {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentChanges {
        segments: segments.clone(),
    })
}

fn schema(grp: bool) -> SchemaRef {
    let mut f = vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("change", DataType::Utf8, false),
    ];
    if grp {
        f.push(Field::new("grp", DataType::Utf8, false));
    }
    Arc::new(Schema::new(f))
}

/// A version's members as read now: (all members, holdout) after current suppression and
/// consent. Version 0 is empty.
pub async fn version_now(
    segments: &Segments,
    ctx: &EvalCtx,
    name: &str,
    v: u64,
) -> crate::Result<(RoaringBitmap, RoaringBitmap)> {
    if v == 0 {
        return Ok(Default::default());
    }
    let catalog = segments.catalog(ctx).await?;
    let def = catalog
        .get(name)
        .ok_or_else(|| Error::NotFound(format!("segment '{name}' does not exist")))?
        .clone();
    let h = segments.history(ctx).await?;
    let Some(s) = h.version(&def.name, &def.generation, v)? else {
        let max = h.max_version(&def.name, &def.generation);
        return Err(Error::invalid(format!(
            "segment '{name}' has no version {v} in its history (versions kept: up to {max}; older ones may have gone at VACUUM)"
        )));
    };
    let s = segments.through_canon(ctx, s).await?;
    let universe = segments.universe(ctx).await?;
    let mut m = &s.members & &*universe;
    for p in def.purposes()? {
        m &= &*segments.consent_holders(ctx, p, ctx.now()).await?;
    }
    let held = &s.holdout & &m;
    Ok((m, held))
}

impl TableFunctionImpl for SegmentChanges {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "segment_changes";
        let exprs = args.exprs();
        if exprs.len() != 3 {
            return plan_err!("{f}('name', from_version, to_version) takes three arguments");
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let a = int_arg(f, "from_version", &exprs[1])?;
        let b = int_arg(f, "to_version", &exprs[2])?;
        if a < 0 || b < 0 {
            return plan_err!("{f}: versions are 0 (the empty set) or higher");
        }
        let def = self
            .segments
            .cached_def(&name)
            .map_err(|e| datafusion::common::DataFusionError::Plan(e.to_string()))?;
        let grp = def.holdout_percent.is_some();
        let schema = schema(grp);
        let out = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let name = def.name.clone();
                let schema = out.clone();
                Box::pin(async move {
                    let (am, ah) = version_now(&segments, &ctx, &name, a as u64).await?;
                    let (bm, bh) = version_now(&segments, &ctx, &name, b as u64).await?;
                    let ids = segments.identity(&ctx).await?;
                    let (mut u, mut c, mut g) = (
                        StringBuilder::new(),
                        StringBuilder::new(),
                        StringBuilder::new(),
                    );
                    for (set, change, held) in
                        [(&bm - &am, "entered", &bh), (&am - &bm, "exited", &ah)]
                    {
                        for x in set.iter() {
                            let Some(p) = ids.pseudonym(x) else { continue };
                            u.append_value(p);
                            c.append_value(change);
                            g.append_value(if held.contains(x) {
                                "holdout"
                            } else {
                                "target"
                            });
                        }
                    }
                    let mut cols: Vec<arrow::array::ArrayRef> =
                        vec![Arc::new(u.finish()), Arc::new(c.finish())];
                    if grp {
                        cols.push(Arc::new(g.finish()));
                    }
                    Ok(vec![RecordBatch::try_new(schema, cols)?])
                })
            }),
        }))
    }
}
