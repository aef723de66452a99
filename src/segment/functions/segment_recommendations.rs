//! `segment_recommendations('name' [, n])` → table (DESIGN §17): the facts that set a segment's
//! members apart, by lift. One row per feature of [`crate::segment::features`] (events in 30
//! and 90 days, interest categories, profile values; minus what the definition reads):
//! `feature`, `in_segment` (members with it), `overall` (users with it), `jaccard` (in_segment /
//! the union of both), `lift` (the share of members with it / the share of all users with it);
//! the top `n` (default 10) by lift, then in_segment, then name, of the features at least 30
//! members have. Counts are bitmap cardinalities over the statement's snapshot (forgotten users
//! are in none).

use std::sync::Arc;

use arrow::array::{Float64Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::{int_arg, string_arg};
use crate::segment::Segments;

/// Members a feature needs to be shown.
const MIN_MEMBERS: u64 = 30;

#[derive(Debug)]
pub struct SegmentRecommendations {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentRecommendations {
        segments: segments.clone(),
    })
}

impl TableFunctionImpl for SegmentRecommendations {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "segment_recommendations";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "{f}('segment' [, n]) takes a segment name and optionally how many rows"
            );
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let n = match exprs.get(1) {
            Some(e) => int_arg(f, "n", e)?,
            None => 10,
        };
        if !(1..=10_000).contains(&n) {
            return plan_err!("{f}: n must be between 1 and 10000");
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("feature", DataType::Utf8, false),
            Field::new("in_segment", DataType::UInt64, false),
            Field::new("overall", DataType::UInt64, false),
            Field::new("jaccard", DataType::Float64, false),
            Field::new("lift", DataType::Float64, false),
        ]));
        let out_schema = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let name = name.clone();
                let schema = out_schema.clone();
                Box::pin(async move {
                    let catalog = segments.catalog(&ctx).await?;
                    let def = catalog.require(&name)?.clone();
                    let members = segments.members(&ctx, &name).await?;
                    let universe = segments.universe(&ctx).await?;
                    let reads = crate::segment::features::reads(&def.definition);
                    let features =
                        crate::segment::features::collect(&segments, &ctx, &reads).await?;
                    // Score: only known users count (the universe), members among them.
                    let all = universe.len();
                    let size = members.len();
                    let mut rows: Vec<(String, u64, u64, f64, f64)> = features
                        .into_iter()
                        .filter_map(|(feature, mut users)| {
                            users &= &*universe;
                            let inside = users.intersection_len(&members);
                            if inside < MIN_MEMBERS {
                                return None;
                            }
                            let overall = users.len();
                            let union = users.union_len(&members);
                            let jaccard = inside as f64 / union as f64;
                            let lift =
                                (inside as f64 / size as f64) / (overall as f64 / all as f64);
                            Some((feature, inside, overall, jaccard, lift))
                        })
                        .collect();
                    rows.sort_by(|a, b| {
                        b.4.total_cmp(&a.4)
                            .then(b.1.cmp(&a.1))
                            .then_with(|| a.0.cmp(&b.0))
                    });
                    rows.truncate(n as usize);
                    let (mut fe, mut ins, mut ov, mut ja, mut li) = (
                        StringBuilder::new(),
                        UInt64Builder::new(),
                        UInt64Builder::new(),
                        Float64Builder::new(),
                        Float64Builder::new(),
                    );
                    for (f, i, o, j, l) in rows {
                        fe.append_value(f);
                        ins.append_value(i);
                        ov.append_value(o);
                        ja.append_value(j);
                        li.append_value(l);
                    }
                    Ok(vec![RecordBatch::try_new(
                        schema,
                        vec![
                            Arc::new(fe.finish()),
                            Arc::new(ins.finish()),
                            Arc::new(ov.finish()),
                            Arc::new(ja.finish()),
                            Arc::new(li.finish()),
                        ],
                    )?])
                })
            }),
        }))
    }
}
