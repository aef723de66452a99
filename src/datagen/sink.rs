//! Writing generated batches as Parquet, CSV or NDJSON, splitting large outputs into numbered
//! files so memory stays flat.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::config::GenFormat;
use crate::error::Result;

enum Writer {
    Parquet(ArrowWriter<File>),
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
}

/// A sequence of files `<stem>[-NNNNN].<ext>` holding at most `rows_per_file` rows each.
pub(super) struct Sink {
    dir: PathBuf,
    stem: &'static str,
    format: GenFormat,
    schema: SchemaRef,
    rows_per_file: u64,
    split: bool,
    current: Option<(Writer, u64)>,
    pub files: Vec<PathBuf>,
}

impl Sink {
    pub(super) fn new(
        dir: &Path,
        stem: &'static str,
        format: GenFormat,
        schema: SchemaRef,
        rows_per_file: Option<u64>,
    ) -> Self {
        Sink {
            dir: dir.to_path_buf(),
            stem,
            format,
            schema,
            rows_per_file: rows_per_file.unwrap_or(u64::MAX),
            split: rows_per_file.is_some(),
            current: None,
            files: Vec::new(),
        }
    }

    fn open(&mut self) -> Result<Writer> {
        let ext = match self.format {
            GenFormat::Parquet => "parquet",
            GenFormat::Csv => "csv",
            GenFormat::Ndjson => "ndjson",
        };
        let name = if self.split {
            format!("{}-{:05}.{ext}", self.stem, self.files.len())
        } else {
            format!("{}.{ext}", self.stem)
        };
        let path = self.dir.join(name);
        let f = File::create(&path)?;
        self.files.push(path);
        Ok(match self.format {
            GenFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(1 << 20))
                    .build();
                Writer::Parquet(ArrowWriter::try_new(f, self.schema.clone(), Some(props))?)
            }
            GenFormat::Csv => Writer::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::with_capacity(1 << 20, f)),
            ),
            GenFormat::Ndjson => Writer::Json(arrow::json::LineDelimitedWriter::new(
                BufWriter::with_capacity(1 << 20, f),
            )),
        })
    }

    pub(super) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(_, n)| *n >= self.rows_per_file)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            let w = self.open()?;
            self.current = Some((w, 0));
        }
        let (w, n) = self.current.as_mut().expect("opened");
        match w {
            Writer::Parquet(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Json(w) => w.write(batch)?,
        }
        *n += batch.num_rows() as u64;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((w, _)) = self.current.take() {
            match w {
                Writer::Parquet(w) => {
                    w.close()?;
                }
                Writer::Csv(w) => drop(w.into_inner()),
                Writer::Json(mut w) => w.finish()?,
            }
        }
        Ok(())
    }

    /// Close the open file; returns every file written.
    pub(super) fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close_current()?;
        Ok(self.files)
    }
}
