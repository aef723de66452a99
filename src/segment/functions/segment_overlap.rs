//! `segment_overlap('a', 'b', …)` → table: one row per pair of the named segments (in argument
//! order): `a`, `b`, `size_a`, `size_b`, `both`, `jaccard` (both / size of the union; 0 when both
//! are empty). Counts come from fused bitmap cardinalities.

use std::sync::Arc;

use arrow::array::{Float64Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::string_arg;
use crate::segment::Segments;

#[derive(Debug)]
pub struct SegmentOverlap {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentOverlap {
        segments: segments.clone(),
    })
}

impl TableFunctionImpl for SegmentOverlap {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "segment_overlap";
        let names = args
            .exprs()
            .iter()
            .map(|e| string_arg(f, "segment name", e))
            .collect::<Result<Vec<_>>>()?;
        if names.len() < 2 {
            return plan_err!("{f} needs at least two segment names");
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, false),
            Field::new("b", DataType::Utf8, false),
            Field::new("size_a", DataType::UInt64, false),
            Field::new("size_b", DataType::UInt64, false),
            Field::new("both", DataType::UInt64, false),
            Field::new("jaccard", DataType::Float64, false),
        ]));
        let out_schema = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let names = names.clone();
                let schema = out_schema.clone();
                Box::pin(async move {
                    let mut bms = Vec::new();
                    for n in &names {
                        bms.push(segments.members(&ctx, n).await?);
                    }
                    let (mut a, mut b, mut sa, mut sb, mut both, mut j) = (
                        StringBuilder::new(),
                        StringBuilder::new(),
                        UInt64Builder::new(),
                        UInt64Builder::new(),
                        UInt64Builder::new(),
                        Float64Builder::new(),
                    );
                    for x in 0..names.len() {
                        for y in x + 1..names.len() {
                            let inter = bms[x].intersection_len(&bms[y]);
                            let union = bms[x].union_len(&bms[y]);
                            a.append_value(&names[x]);
                            b.append_value(&names[y]);
                            sa.append_value(bms[x].len());
                            sb.append_value(bms[y].len());
                            both.append_value(inter);
                            j.append_value(if union == 0 {
                                0.0
                            } else {
                                inter as f64 / union as f64
                            });
                        }
                    }
                    Ok(vec![RecordBatch::try_new(
                        schema,
                        vec![
                            Arc::new(a.finish()),
                            Arc::new(b.finish()),
                            Arc::new(sa.finish()),
                            Arc::new(sb.finish()),
                            Arc::new(both.finish()),
                            Arc::new(j.finish()),
                        ],
                    )?])
                })
            }),
        }))
    }
}
