//! The look-alike functions (DESIGN §17): `lookalike_report('name')` → one row (`auc`,
//! `recall_at_size`, `seed_size`, `sample_size`, `features`, `trained_at`);
//! `lookalike_features('name' [, n])` → the top `n` (default 50) `feature`, `weight` by
//! |weight| (ties by name); `lookalike_score('name', user_id)` (planned: see
//! `session::planner`) → Float64 in [0, 1]. Each reads the model of the statement's table
//! versions, training it first when none is cached.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::{int_arg, string_arg};
use crate::segment::Segments;

#[derive(Debug)]
pub struct Report {
    segments: Arc<Segments>,
}

#[derive(Debug)]
pub struct Features {
    segments: Arc<Segments>,
}

pub fn report_udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(Report {
        segments: segments.clone(),
    })
}

pub fn features_udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(Features {
        segments: segments.clone(),
    })
}

impl TableFunctionImpl for Report {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "lookalike_report";
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!("{f}('segment') takes the name of a look-alike segment");
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("auc", DataType::Float64, true),
            Field::new("recall_at_size", DataType::Float64, true),
            Field::new("seed_size", DataType::UInt64, false),
            Field::new("sample_size", DataType::UInt64, false),
            Field::new("features", DataType::UInt64, false),
            Field::new("trained_at", crate::storage::ts_type(), false),
        ]));
        let out = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let (name, schema) = (name.clone(), out.clone());
                Box::pin(async move {
                    let m = segments.lookalike_model(&ctx, &name).await?;
                    Ok(vec![RecordBatch::try_new(
                        schema,
                        vec![
                            Arc::new(Float64Array::from(vec![m.auc])) as ArrayRef,
                            Arc::new(Float64Array::from(vec![m.recall_at_size])),
                            Arc::new(UInt64Array::from(vec![m.seed_size])),
                            Arc::new(UInt64Array::from(vec![m.sample_size])),
                            Arc::new(UInt64Array::from(vec![m.names.len() as u64])),
                            Arc::new(
                                TimestampMicrosecondArray::from(vec![m.trained_at])
                                    .with_timezone("UTC"),
                            ),
                        ],
                    )?])
                })
            }),
        }))
    }
}

impl TableFunctionImpl for Features {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "lookalike_features";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "{f}('segment' [, n]) takes the name of a look-alike segment and optionally how many features"
            );
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let n = match exprs.get(1) {
            Some(e) => int_arg(f, "n", e)?,
            None => 50,
        };
        if !(1..=100_000).contains(&n) {
            return plan_err!("{f}: n must be between 1 and 100000");
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("feature", DataType::Utf8, false),
            Field::new("weight", DataType::Float64, false),
        ]));
        let out = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let (name, schema) = (name.clone(), out.clone());
                Box::pin(async move {
                    let m = segments.lookalike_model(&ctx, &name).await?;
                    let mut v: Vec<(&String, f64)> =
                        m.names.iter().zip(m.weights.iter().copied()).collect();
                    v.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(b.0)));
                    v.truncate(n as usize);
                    Ok(vec![RecordBatch::try_new(
                        schema,
                        vec![
                            Arc::new(StringArray::from_iter_values(v.iter().map(|x| x.0)))
                                as ArrayRef,
                            Arc::new(Float64Array::from_iter_values(v.iter().map(|x| x.1))),
                        ],
                    )?])
                })
            }),
        }))
    }
}
