//! What results look like on the wire. Every result is sent with a *wire schema*: view types
//! become their plain equivalents (DataFusion reads Parquet strings as views whose buffers are
//! shared across batches, and IPC would send the shared buffers with every batch), dictionaries
//! are sent as their values, and large lists as lists (arrow-flight's encoder does both to the
//! schema it sends, but not to the announced one). The FlightInfo schema and the stream's schema
//! are the same wire schema for every Arrow type, and each batch is cast to it.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{IpcMessage, SchemaAsIpc};
use datafusion::common::DataFusionError;
use futures::{Stream, TryStreamExt};
use tonic::{Response, Status};

/// A DoGet stream.
pub type DoGetStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

fn wire_field(f: &FieldRef) -> Field {
    f.as_ref().clone().with_data_type(wire_type(f.data_type()))
}

/// The type a column of `t` is sent as.
pub fn wire_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => wire_type(v),
        DataType::RunEndEncoded(_, v) => wire_type(v.data_type()),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => DataType::List(Arc::new(wire_field(f))),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(Arc::new(wire_field(f)), *n),
        DataType::Struct(fs) => {
            DataType::Struct(Fields::from(fs.iter().map(wire_field).collect::<Vec<_>>()))
        }
        DataType::Map(f, sorted) => DataType::Map(Arc::new(wire_field(f)), *sorted),
        other => other.clone(),
    }
}

/// The schema a result is sent with.
pub fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if schema
        .fields()
        .iter()
        .all(|f| wire_type(f.data_type()) == *f.data_type())
    {
        return schema.clone();
    }
    let fields: Vec<Field> = schema.fields().iter().map(wire_field).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Cast a batch to its wire schema (see [`wire_schema`]).
pub fn to_wire(
    batch: RecordBatch,
    wire: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema_ref().fields() == wire.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(wire.clone(), columns, &options)
}

/// A stream of batches as Flight data, with `schema` first.
pub fn batch_stream(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(s))
}

/// One batch as a DoGet stream.
pub fn one_batch(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    batch_stream(schema, futures::stream::iter(vec![Ok(batch)]))
}

/// A schema as IPC bytes (prepared-statement results).
pub fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(b) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(b)
}

pub use crate::statement::number_placeholders;

/// Map a segdb error to a gRPC status by its kind (DESIGN §19: invalid input INVALID_ARGUMENT,
/// not found NOT_FOUND, a role's refusal PERMISSION_DENIED, a lost commit ABORTED, storage
/// UNAVAILABLE, a bug INTERNAL). Messages keep their lines.
pub fn to_status(e: crate::Error) -> Status {
    let kind = e.kind();
    status_of(kind, e.to_string().trim().to_string())
}

/// Map a DataFusion error to a gRPC status.
pub fn df_status(e: &DataFusionError) -> Status {
    status_of(
        crate::error::datafusion_kind(e),
        crate::error::datafusion_message(e).trim().to_string(),
    )
}

/// The status of DESIGN §19's table for an error kind.
fn status_of(kind: crate::error::ErrorKind, msg: String) -> Status {
    use crate::error::ErrorKind as K;
    match kind {
        K::Invalid => Status::invalid_argument(msg),
        K::NotFound => Status::not_found(msg),
        K::Denied => Status::permission_denied(msg),
        K::Timeout => Status::deadline_exceeded(msg),
        K::Conflict => Status::aborted(msg),
        K::Unavailable => Status::unavailable(msg),
        K::Internal => Status::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT ? + 1, '?' FROM t WHERE a = ?"),
            "SELECT $1 + 1, '?' FROM t WHERE a = $2"
        );
        assert_eq!(number_placeholders("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn errors_map_to_status_codes_and_keep_lines() {
        let e = crate::Error::invalid("bad\nsecond line");
        let s = to_status(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.message(), "bad\nsecond line");
        let e = crate::Error::DataFusion(DataFusionError::Plan("no such table".into()));
        assert_eq!(to_status(e).code(), tonic::Code::InvalidArgument);
        assert_eq!(
            to_status(crate::Error::denied("no")).code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            to_status(crate::Error::storage("disk gone")).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            to_status(crate::Error::NotFound("no segment 'x'".into())).code(),
            tonic::Code::NotFound
        );
        let e = DataFusionError::Execution("Prepared statement 'q' does not exist".into());
        assert_eq!(df_status(&e).code(), tonic::Code::NotFound);
    }

    #[test]
    fn wire_types_are_plain_and_casts_work() {
        use arrow::array::{ArrayRef, DictionaryArray, LargeListArray, StringViewArray};
        use arrow::datatypes::Int32Type;
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let ll = LargeListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            None,
            Some(vec![]),
        ]);
        let sv = StringViewArray::from(vec!["x", "y", "z"]);
        let cols: Vec<ArrayRef> = vec![Arc::new(dict), Arc::new(ll), Arc::new(sv)];
        let batch = RecordBatch::try_from_iter(vec![
            ("d", cols[0].clone()),
            ("l", cols[1].clone()),
            ("s", cols[2].clone()),
        ])
        .unwrap();
        let wire = wire_schema(&batch.schema());
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert!(matches!(wire.field(1).data_type(), DataType::List(_)));
        assert_eq!(wire.field(2).data_type(), &DataType::Utf8);
        let out = to_wire(batch, &wire).unwrap();
        assert_eq!(out.schema(), wire);
    }
}
