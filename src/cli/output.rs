//! Printing query results as a table, CSV (header line then rows) or JSON (one array of objects
//! per statement, nulls kept).

use std::io::Write;

use arrow::array::RecordBatch;

use crate::config::OutputFormat;
use crate::error::Result;
use crate::result::QueryResult;

/// Write `result` to `out` in `format`. Statements without result columns print nothing.
pub fn print(out: &mut dyn Write, result: &QueryResult, format: OutputFormat) -> Result<()> {
    if result.schema.fields().is_empty() {
        return Ok(());
    }
    let batches: Vec<RecordBatch> = if result.batches.is_empty() {
        vec![RecordBatch::new_empty(result.schema.clone())]
    } else {
        result.batches.clone()
    };
    match format {
        OutputFormat::Table => {
            let t = arrow::util::pretty::pretty_format_batches_with_schema(
                result.schema.clone(),
                &batches,
            )?;
            writeln!(out, "{t}")?;
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in &batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            if result.num_rows() == 0 {
                writeln!(out, "[]")?;
            } else {
                let mut w = arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow::json::writer::JsonArray>(&mut *out);
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
