//! Input readers. Each turns one file into a sequence of [`SourceBatch`]es that remember the
//! 1-based row number of every row, and reports rows it cannot parse at all (a CSV line with the
//! wrong number of fields, an NDJSON line that is not an object) as [`BadRow`]s. Row numbers count
//! data rows: the CSV header is not a row.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

use super::{BadRow, Format};
use crate::error::{Error, Result};

/// Rows per batch handed downstream.
pub(crate) const BATCH_ROWS: usize = 65_536;

/// A batch read from a file with the row number of each row.
pub(crate) struct SourceBatch {
    pub(crate) batch: RecordBatch,
    /// 1-based row number per row; 0 marks a row that failed to parse (already reported in
    /// `bad`) and must be dropped.
    pub(crate) rows: Vec<u64>,
    /// Rows of this stretch of the file that could not be parsed.
    pub(crate) bad: Vec<BadRow>,
    /// Bytes of the file consumed since the previous batch (for progress).
    pub(crate) bytes: u64,
}

/// What the normaliser needs from a reader: the names of columns to keep as text.
pub(crate) type TextColumns = HashSet<String>;

/// Pick the format from `--format` or the extension.
pub(crate) fn detect_format(path: &Path, forced: Option<Format>) -> Result<Format> {
    if let Some(f) = forced {
        return Ok(f);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".csv") || name.ends_with(".tsv") {
        Ok(Format::Csv)
    } else if name.ends_with(".parquet") || name.ends_with(".pq") {
        Ok(Format::Parquet)
    } else if name.ends_with(".ndjson") || name.ends_with(".jsonl") || name.ends_with(".json") {
        Ok(Format::Ndjson)
    } else {
        Err(Error::ingest(format!(
            "cannot tell the format of {} from its name; pass --format csv|parquet|ndjson",
            path.display()
        )))
    }
}

/// The column names of a file, read cheaply (a CSV header, the keys of the first NDJSON lines,
/// a Parquet footer), to check them before anything of the load is read or written.
pub(crate) fn peek_columns(path: &Path, format: Format) -> Result<Vec<String>> {
    let open = || -> Result<Box<dyn Read>> {
        let f = File::open(path)
            .map_err(|e| Error::ingest(format!("cannot open {}: {e}", path.display())))?;
        Ok(if is_gzip(path)? {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(f)))
        } else {
            Box::new(f)
        })
    };
    let file = super::display_name(path);
    Ok(match format {
        Format::Csv => {
            let delim = if file.to_ascii_lowercase().contains(".tsv") {
                b'\t'
            } else {
                b','
            };
            let mut rdr = csv_reader(BufReader::new(open()?), delim);
            rdr.headers()
                .map_err(|e| Error::ingest(format!("{file}: cannot read the CSV header: {e}")))?
                .iter()
                .map(|h| h.trim().to_string())
                .collect()
        }
        Format::Ndjson => {
            let mut names = KeyOrder::default();
            for line in BufReader::new(open()?).lines().take(1000) {
                let Ok(line) = line else { break };
                names.add(line.as_bytes());
            }
            names.keys
        }
        Format::Parquet => {
            if is_gzip(path)? {
                return Err(gzip_parquet(&file));
            }
            let f = File::open(path)
                .map_err(|e| Error::ingest(format!("cannot open {}: {e}", path.display())))?;
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| {
                    Error::ingest(format!("{file} is not a readable Parquet file: {e}"))
                })?;
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        }
    })
}

fn gzip_parquet(file: &str) -> Error {
    Error::ingest(format!(
        "{file} is a gzip-compressed Parquet file; Parquet compresses inside the file, so decompress it (gunzip) and load the .parquet"
    ))
}

/// Is the file gzip-compressed (by its magic bytes)?
fn is_gzip(path: &Path) -> Result<bool> {
    let mut f = File::open(path)
        .map_err(|e| Error::ingest(format!("cannot open {}: {e}", path.display())))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// Open `path` (gzip-compressed CSV and NDJSON are decompressed as they are read) and call
/// `sink` with each batch in order.
pub(crate) fn read_file(
    path: &Path,
    format: Format,
    text: &TextColumns,
    sink: &mut dyn FnMut(SourceBatch) -> Result<()>,
) -> Result<()> {
    let gz = is_gzip(path)?;
    let open = || -> Result<Box<dyn Read>> {
        let f = File::open(path)
            .map_err(|e| Error::ingest(format!("cannot open {}: {e}", path.display())))?;
        Ok(if gz {
            Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
                f,
            )))
        } else {
            Box::new(f)
        })
    };
    let file_name = super::display_name(path);
    if gz && format == Format::Parquet {
        return Err(gzip_parquet(&file_name));
    }
    match format {
        Format::Csv => {
            let delim = if file_name.to_ascii_lowercase().ends_with(".tsv") {
                b'\t'
            } else {
                b','
            };
            let schema = infer_csv(open()?, delim, text, &file_name)?;
            read_csv(open()?, delim, schema, &file_name, sink)
        }
        Format::Ndjson => {
            let schema = infer_ndjson(open()?, text, &file_name)?;
            read_ndjson(open()?, schema, &file_name, sink)
        }
        Format::Parquet => read_parquet(
            File::open(path)
                .map_err(|e| Error::ingest(format!("cannot open {}: {e}", path.display())))?,
            &file_name,
            sink,
        ),
    }
}

fn csv_reader<R: Read>(r: R, delim: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(true)
        .has_headers(true)
        .from_reader(r)
}

#[derive(Clone, Copy)]
struct Kinds {
    int: bool,
    float: bool,
    boolean: bool,
    seen: bool,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" => Some(true),
        "false" | "f" => Some(false),
        _ => None,
    }
}

fn infer_csv(f: impl Read, delim: u8, text: &TextColumns, file: &str) -> Result<SchemaRef> {
    let mut rdr = csv_reader(BufReader::with_capacity(1 << 20, f), delim);
    let headers = rdr
        .headers()
        .map_err(|e| Error::ingest(format!("{file}: cannot read the CSV header: {e}")))?
        .clone();
    let names: Vec<String> = headers.iter().map(|h| h.trim().to_string()).collect();
    check_names(&names, file)?;
    let mut kinds = vec![
        Kinds {
            int: true,
            float: true,
            boolean: true,
            seen: false
        };
        names.len()
    ];
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                if rec.len() != names.len() {
                    continue;
                }
                for (k, v) in kinds.iter_mut().zip(rec.iter()) {
                    if v.is_empty() {
                        continue;
                    }
                    k.seen = true;
                    if k.int && v.parse::<i64>().is_err() {
                        k.int = false;
                    }
                    if k.float && !k.int && v.parse::<f64>().is_err() {
                        k.float = false;
                    }
                    if k.boolean && parse_bool(v).is_none() {
                        k.boolean = false;
                    }
                }
            }
            Err(_) => continue,
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(kinds)
        .map(|(n, k)| {
            let t = if text.contains(&n.to_ascii_lowercase()) || !k.seen {
                DataType::Utf8
            } else if k.int {
                DataType::Int64
            } else if k.float {
                DataType::Float64
            } else if k.boolean {
                DataType::Boolean
            } else {
                DataType::Utf8
            };
            Field::new(n, t, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

fn check_names(names: &[String], file: &str) -> Result<()> {
    let mut seen = HashSet::new();
    for n in names {
        if n.is_empty() {
            return Err(Error::ingest(format!("{file}: a column has an empty name")));
        }
        if !seen.insert(n.as_str()) {
            return Err(Error::ingest(format!("{file}: column {n:?} appears twice")));
        }
    }
    Ok(())
}

enum ColBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl ColBuilder {
    fn new(t: &DataType) -> Self {
        match t {
            DataType::Int64 => ColBuilder::Int(Int64Builder::with_capacity(BATCH_ROWS)),
            DataType::Float64 => ColBuilder::Float(Float64Builder::with_capacity(BATCH_ROWS)),
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
            _ => ColBuilder::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16)),
        }
    }
    /// Append one value; `false` when it does not parse as the column's type.
    fn push(&mut self, v: &str) -> bool {
        if v.is_empty() {
            match self {
                ColBuilder::Text(b) => b.append_null(),
                ColBuilder::Int(b) => b.append_null(),
                ColBuilder::Float(b) => b.append_null(),
                ColBuilder::Bool(b) => b.append_null(),
            }
            return true;
        }
        match self {
            ColBuilder::Text(b) => b.append_value(v),
            ColBuilder::Int(b) => match v.parse() {
                Ok(x) => b.append_value(x),
                Err(_) => return false,
            },
            ColBuilder::Float(b) => match v.parse() {
                Ok(x) => b.append_value(x),
                Err(_) => return false,
            },
            ColBuilder::Bool(b) => match parse_bool(v) {
                Some(x) => b.append_value(x),
                None => return false,
            },
        }
        true
    }
    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Text(b) => Arc::new(b.finish()),
            ColBuilder::Int(b) => Arc::new(b.finish()),
            ColBuilder::Float(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
        }
    }
}

fn read_csv(
    f: impl Read,
    delim: u8,
    schema: SchemaRef,
    file: &str,
    sink: &mut dyn FnMut(SourceBatch) -> Result<()>,
) -> Result<()> {
    let mut rdr = csv_reader(BufReader::with_capacity(1 << 20, f), delim);
    rdr.headers()
        .map_err(|e| Error::ingest(format!("{file}: {e}")))?;
    let ncol = schema.fields().len();
    let mut builders: Vec<ColBuilder> = schema
        .fields()
        .iter()
        .map(|f| ColBuilder::new(f.data_type()))
        .collect();
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    let mut bad = Vec::new();
    let mut rec = csv::StringRecord::new();
    let mut row: u64 = 0;
    let mut last_pos = 0u64;
    let flush = |builders: &mut Vec<ColBuilder>,
                 rows: &mut Vec<u64>,
                 bad: &mut Vec<BadRow>,
                 pos: u64,
                 last: &mut u64,
                 sink: &mut dyn FnMut(SourceBatch) -> Result<()>|
     -> Result<()> {
        let cols: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        let batch = RecordBatch::try_new(schema.clone(), cols)?;
        let bytes = pos - *last;
        *last = pos;
        sink(SourceBatch {
            batch,
            rows: std::mem::take(rows),
            bad: std::mem::take(bad),
            bytes,
        })
    };
    loop {
        let more = rdr.read_record(&mut rec);
        match more {
            Ok(false) => break,
            Ok(true) => {
                row += 1;
                if rec.len() != ncol {
                    // A quote never closed takes every following line into its field, up to
                    // the end of the file: say so, and which lines it swallowed.
                    let first = rec.position().map_or(0, |p| p.line());
                    let last = rdr.position().line().saturating_sub(1);
                    let why = if last > first && rec.iter().any(|f| f.contains('\n')) {
                        format!(
                            "has an unclosed quote (\"): it runs from line {first} to line {last} of the file, so lines {} to {last} were read as part of this row and none of them was loaded",
                            first + 1
                        )
                    } else {
                        format!("has {} fields, the header has {ncol}", rec.len())
                    };
                    bad.push(BadRow::new(file, row, why));
                    continue;
                }
                // A quote left open in the last column swallows the following lines into that
                // field with the right field count. A multi-line value is legal CSV, but one
                // whose later lines have the shape of rows (as many delimiters as the header)
                // is a quote left open: reject it and name the lines, never load it as text.
                // With two columns a single delimiter is too common in prose to tell: two such
                // lines are needed there.
                let row_shaped = rec.get(ncol - 1).map_or(0, |tail| {
                    tail.split('\n')
                        .skip(1)
                        .filter(|l| l.bytes().filter(|b| *b == delim).count() + 1 >= ncol)
                        .count()
                });
                if ncol >= 2 && row_shaped >= if ncol == 2 { 2 } else { 1 } {
                    let first = rec.position().map_or(0, |p| p.line());
                    let last = rdr.position().line().saturating_sub(1);
                    bad.push(BadRow::new(
                        file,
                        row,
                        format!(
                            "has an unclosed quote (\") in its last column: it runs from line {first} to line {last} of the file, so lines {} to {last} were read as part of this row and none of them was loaded",
                            first + 1
                        ),
                    ));
                    continue;
                }
                // Parse into the builders; a value that does not fit poisons the row.
                let mut ok_cols = 0;
                for (b, v) in builders.iter_mut().zip(rec.iter()) {
                    if !b.push(v) {
                        break;
                    }
                    ok_cols += 1;
                }
                if ok_cols < ncol {
                    // Arrow builders cannot take a value back: pad the rest of the row with
                    // nulls, report it, and mark it (row number 0) so the normaliser drops it.
                    let name = schema.field(ok_cols).name();
                    for b in builders.iter_mut().skip(ok_cols) {
                        b.push("");
                    }
                    bad.push(BadRow::new(
                        file,
                        row,
                        format!(
                            "column {name:?} does not hold a {}",
                            type_word(schema.field(ok_cols).data_type())
                        ),
                    ));
                    rows.push(0); // marker: filtered out below
                } else {
                    rows.push(row);
                }
                if rows.len() == BATCH_ROWS {
                    let pos = rdr.position().byte();
                    flush(&mut builders, &mut rows, &mut bad, pos, &mut last_pos, sink)?;
                }
            }
            Err(e) => {
                row += 1;
                let why = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_string(),
                    _ => "cannot be parsed as CSV".to_string(),
                };
                bad.push(BadRow::new(file, row, why));
            }
        }
    }
    let pos = rdr.position().byte();
    if !rows.is_empty() || !bad.is_empty() {
        flush(&mut builders, &mut rows, &mut bad, pos, &mut last_pos, sink)?;
    }
    Ok(())
}

pub(crate) fn type_word(t: &DataType) -> &'static str {
    match t {
        DataType::Int64 | DataType::Int32 => "whole number",
        DataType::Float64 | DataType::Float32 => "number",
        DataType::Boolean => "boolean",
        DataType::Timestamp(..) => "timestamp",
        DataType::Date32 => "date",
        _ => "value of the column's type",
    }
}

fn json_lines<R: Read>(r: R) -> impl Iterator<Item = std::io::Result<(Vec<u8>, u64)>> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(n) => Some(Ok((buf, n as u64))),
            Err(e) => Some(Err(e)),
        }
    })
}

fn parse_json_object(line: &[u8]) -> std::result::Result<Option<serde_json::Value>, &'static str> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice::<serde_json::Value>(trimmed) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err("is not a JSON object"),
        Err(_) => Err("is not valid JSON"),
    }
}

/// Object keys in order of first appearance across lines. JSON objects read into
/// `serde_json::Value` lose their key order (its map is sorted), and a table's columns must
/// come in the file's order (DESIGN §4).
#[derive(Default)]
struct KeyOrder {
    keys: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl KeyOrder {
    fn add(&mut self, line: &[u8]) {
        struct Keys(Vec<String>);
        impl<'de> serde::Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut m: A,
                    ) -> std::result::Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some(k) = m.next_key::<String>()? {
                            m.next_value::<serde::de::IgnoredAny>()?;
                            keys.push(k);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(V)
            }
        }
        if let Ok(Keys(keys)) = serde_json::from_slice::<Keys>(line.trim_ascii()) {
            for k in keys {
                if !self.seen.contains(&k) {
                    self.seen.insert(k.clone());
                    self.keys.push(k);
                }
            }
        }
    }

    /// `schema`'s fields in key order (fields not seen as keys last, as they were).
    fn order(&self, schema: &Schema) -> Vec<FieldRef> {
        let mut out: Vec<FieldRef> = self
            .keys
            .iter()
            .filter_map(|k| schema.field_with_name(k).ok().map(|f| Arc::new(f.clone())))
            .collect();
        out.extend(
            schema
                .fields()
                .iter()
                .filter(|f| !self.seen.contains(f.name()))
                .cloned(),
        );
        out
    }
}

fn infer_ndjson(f: impl Read, text: &TextColumns, file: &str) -> Result<SchemaRef> {
    let mut order = KeyOrder::default();
    let values = json_lines(f).filter_map(|l| match l {
        Ok((line, _)) => {
            order.add(&line);
            parse_json_object(&line).ok().flatten().map(Ok)
        }
        Err(e) => Some(Err(arrow::error::ArrowError::ExternalError(Box::new(e)))),
    });
    let inferred = arrow::json::reader::infer_json_schema_from_iterator(values)
        .map_err(|e| Error::ingest(format!("{file}: cannot infer a schema: {e}")))?;
    let fields: Vec<Field> = order
        .order(&inferred)
        .iter()
        .map(|f| {
            let t = if text.contains(&f.name().to_ascii_lowercase())
                || f.data_type() == &DataType::Null
            {
                DataType::Utf8
            } else {
                f.data_type().clone()
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

fn read_ndjson(
    f: impl Read,
    schema: SchemaRef,
    file: &str,
    sink: &mut dyn FnMut(SourceBatch) -> Result<()>,
) -> Result<()> {
    let mut values = Vec::with_capacity(BATCH_ROWS);
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    let mut bad = Vec::new();
    let mut bytes = 0u64;
    let mut row = 0u64;
    let decode = |values: &mut Vec<serde_json::Value>,
                  rows: &mut Vec<u64>,
                  bad: &mut Vec<BadRow>|
     -> Result<(RecordBatch, Vec<u64>)> {
        let mk = || {
            arrow::json::ReaderBuilder::new(schema.clone())
                .with_coerce_primitive(true)
                .with_batch_size(BATCH_ROWS)
                .build_decoder()
        };
        let mut dec = mk()?;
        if dec.serialize(values).is_ok() {
            if let Ok(Some(b)) = dec.flush() {
                values.clear();
                return Ok((b, std::mem::take(rows)));
            }
        }
        // Some value does not fit the inferred schema: decode row by row to find it.
        let mut good_rows = Vec::new();
        let mut parts = Vec::new();
        for (v, r) in values.drain(..).zip(rows.drain(..)) {
            let mut d = mk()?;
            match d
                .serialize(std::slice::from_ref(&v))
                .and_then(|_| d.flush())
            {
                Ok(Some(b)) => {
                    parts.push(b);
                    good_rows.push(r);
                }
                _ => bad.push(BadRow::new(
                    file,
                    r,
                    "has a value that does not fit its column's type".into(),
                )),
            }
        }
        let b = arrow::compute::concat_batches(&schema, &parts)?;
        Ok((b, good_rows))
    };
    for line in json_lines(f) {
        let (line, n) = line.map_err(|e| Error::ingest(format!("{file}: read error: {e}")))?;
        bytes += n;
        row += 1;
        match parse_json_object(&line) {
            Ok(None) => row -= 1, // blank lines are not rows
            Ok(Some(v)) => {
                values.push(v);
                rows.push(row);
            }
            Err(why) => bad.push(BadRow::new(file, row, why.into())),
        }
        if values.len() == BATCH_ROWS {
            let (batch, rs) = decode(&mut values, &mut rows, &mut bad)?;
            sink(SourceBatch {
                batch,
                rows: rs,
                bad: std::mem::take(&mut bad),
                bytes: std::mem::take(&mut bytes),
            })?;
        }
    }
    if !values.is_empty() || !bad.is_empty() {
        let (batch, rs) = if values.is_empty() {
            (RecordBatch::new_empty(schema.clone()), Vec::new())
        } else {
            decode(&mut values, &mut rows, &mut bad)?
        };
        sink(SourceBatch {
            batch,
            rows: rs,
            bad,
            bytes,
        })?;
    }
    Ok(())
}

fn read_parquet(
    f: File,
    file: &str,
    sink: &mut dyn FnMut(SourceBatch) -> Result<()>,
) -> Result<()> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let builder = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| Error::ingest(format!("{file} is not a readable Parquet file: {e}")))?;
    let total_rows = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| Error::ingest(format!("{file}: {e}")))?;
    let mut row = 0u64;
    for b in reader {
        let batch = b.map_err(|e| Error::ingest(format!("{file}: cannot read: {e}")))?;
        let n = batch.num_rows() as u64;
        let rows: Vec<u64> = (row + 1..=row + n).collect();
        row += n;
        let bytes = size * n / total_rows;
        sink(SourceBatch {
            batch,
            rows,
            bad: Vec::new(),
            bytes,
        })?;
    }
    Ok(())
}
