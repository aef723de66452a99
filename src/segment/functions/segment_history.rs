//! `segment_history('name')` → one row per refresh attempt of a materialised segment's current
//! generation, oldest first: `version` (NULL for a failed attempt), `as_of`, `refreshed_at`,
//! `trigger` ('create' | 'schedule' | 'manual'), `status` ('ok' | 'failed'), `size`, `entered`,
//! `exited` (against the previous ok version, as stored at refresh time), `took_ms`, `error`;
//! a segment with a holdout also has `holdout` (the holdout group's size).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::string_arg;
use crate::segment::Segments;

#[derive(Debug)]
pub struct SegmentHistory {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentHistory {
        segments: segments.clone(),
    })
}

fn ts(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

/// The history schema (with `holdout` for segments that have one).
pub fn schema(holdout: bool) -> SchemaRef {
    let mut f = vec![
        Field::new("version", DataType::Int64, true),
        ts("as_of", false),
        ts("refreshed_at", false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, true),
        Field::new("entered", DataType::UInt64, true),
        Field::new("exited", DataType::UInt64, true),
    ];
    if holdout {
        f.push(Field::new("holdout", DataType::UInt64, true));
    }
    f.push(Field::new("took_ms", DataType::UInt64, true));
    f.push(Field::new("error", DataType::Utf8, true));
    Arc::new(Schema::new(f))
}

impl TableFunctionImpl for SegmentHistory {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "segment_history";
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!("{f}('name') takes one argument");
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let def = self
            .segments
            .cached_def(&name)
            .map_err(|e| datafusion::common::DataFusionError::Plan(e.to_string()))?;
        if !def.materialized {
            return plan_err!(
                "{f}: segment '{name}' is not materialised, so it has no history (CREATE MATERIALIZED SEGMENT …)"
            );
        }
        let with_holdout = def.holdout_percent.is_some();
        let schema = schema(with_holdout);
        let out = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let name = def.name.clone();
                let schema = out.clone();
                Box::pin(async move {
                    let catalog = segments.catalog(&ctx).await?;
                    let Some(def) = catalog.get(&name).cloned() else {
                        return Err(crate::Error::NotFound(format!(
                            "segment '{name}' does not exist"
                        )));
                    };
                    let h = segments.history(&ctx).await?;
                    let rows: Vec<_> = h.of(&def.name, &def.generation).collect();
                    let u =
                        |f: &dyn Fn(&crate::segment::snapshots::Row) -> Option<u64>| -> ArrayRef {
                            Arc::new(UInt64Array::from(
                                rows.iter().map(|r| f(r)).collect::<Vec<_>>(),
                            ))
                        };
                    let mut cols: Vec<ArrayRef> = vec![
                        Arc::new(Int64Array::from(
                            rows.iter()
                                .map(|r| r.version.map(|v| v as i64))
                                .collect::<Vec<_>>(),
                        )),
                        Arc::new(
                            TimestampMicrosecondArray::from(
                                rows.iter().map(|r| r.as_of).collect::<Vec<_>>(),
                            )
                            .with_timezone("UTC"),
                        ),
                        Arc::new(
                            TimestampMicrosecondArray::from(
                                rows.iter().map(|r| r.refreshed_at).collect::<Vec<_>>(),
                            )
                            .with_timezone("UTC"),
                        ),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|r| r.trigger.as_str()),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            rows.iter().map(|r| r.status.as_str()),
                        )),
                        u(&|r| r.size),
                        u(&|r| r.entered),
                        u(&|r| r.exited),
                    ];
                    if schema.field_with_name("holdout").is_ok() {
                        cols.push(u(&|r| r.holdout));
                    }
                    cols.push(u(&|r| r.took_ms));
                    cols.push(Arc::new(StringArray::from(
                        rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
                    )));
                    Ok(vec![RecordBatch::try_new(schema, cols)?])
                })
            }),
        }))
    }
}
