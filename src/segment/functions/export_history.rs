//! `export_history('name')` → one row per run of a standing export (`CREATE EXPORT … ON
//! REFRESH`), oldest first: `started_at`, `status` ('ok' | 'failed'), `path`, `files`, `rows`,
//! `bytes`, `version`, `from_version` (NULL for a full export), `skipped`, `warning`, `error`,
//! `took_ms`.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::string_arg;
use crate::segment::Segments;
use crate::storage::{Table, snapshot_column};

#[derive(Debug)]
pub struct ExportHistory {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(ExportHistory {
        segments: segments.clone(),
    })
}

fn schema() -> SchemaRef {
    let u = |n: &str| Field::new(n, DataType::UInt64, true);
    Arc::new(Schema::new(vec![
        Field::new(
            "started_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("status", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, true),
        u("files"),
        u("rows"),
        u("bytes"),
        Field::new("version", DataType::Int64, true),
        Field::new("from_version", DataType::Int64, true),
        u("skipped"),
        Field::new("warning", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        u("took_ms"),
    ]))
}

impl TableFunctionImpl for ExportHistory {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "export_history";
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!("{f}('name') takes one argument: the name of a standing export");
        }
        let name = string_arg(f, "export name", &exprs[0])?;
        let out = schema();
        Ok(Arc::new(LazyTable {
            schema: out.clone(),
            segments: self.segments.clone(),
            produce: Arc::new(move |_segments, ctx| {
                let name = name.clone();
                let schema = out.clone();
                Box::pin(async move {
                    let exports = ctx.snap.read(Table::Exports).await?;
                    let known = exports.iter().any(|b| {
                        snapshot_column(b, "name", &DataType::Utf8).is_ok_and(|c| {
                            let c = c.as_string::<i32>();
                            (0..c.len()).any(|i| c.is_valid(i) && c.value(i) == name)
                        })
                    });
                    let mut out = Vec::new();
                    for b in ctx.snap.read(Table::ExportRuns).await? {
                        let e = snapshot_column(&b, "export", &DataType::Utf8)?;
                        let e = e.as_string::<i32>();
                        let mask: arrow::array::BooleanArray = (0..b.num_rows())
                            .map(|i| Some(e.is_valid(i) && e.value(i) == name))
                            .collect();
                        let b = arrow::compute::filter_record_batch(&b, &mask)?;
                        if b.num_rows() == 0 {
                            continue;
                        }
                        let cols = schema
                            .fields()
                            .iter()
                            .map(|f| snapshot_column(&b, f.name(), f.data_type()))
                            .collect::<crate::Result<Vec<_>>>()?;
                        let relaxed = Arc::new(Schema::new(
                            schema
                                .fields()
                                .iter()
                                .map(|f| f.as_ref().clone().with_nullable(true))
                                .collect::<Vec<_>>(),
                        ));
                        let b = RecordBatch::try_new(relaxed, cols)?;
                        out.push(RecordBatch::try_new(schema.clone(), b.columns().to_vec())?);
                    }
                    if !known && out.is_empty() {
                        return Err(crate::Error::NotFound(format!(
                            "export '{name}' does not exist (SHOW EXPORTS lists them)"
                        )));
                    }
                    let mut out = arrow::compute::concat_batches(&schema, &out)?;
                    // Oldest first.
                    let order = arrow::compute::sort_to_indices(out.column(0), None, None)?;
                    let cols = out
                        .columns()
                        .iter()
                        .map(|c| arrow::compute::take(c, &order, None))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    out = RecordBatch::try_new(schema, cols)?;
                    Ok(vec![out])
                })
            }),
        }))
    }
}
