//! The result of one statement, collected: its schema and batches. Lower layers (segment
//! statements, erasure, exports) return it; the CLI prints it, the server streams it.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The batches as a record-batch stream.
    pub fn into_stream(self) -> datafusion::execution::SendableRecordBatchStream {
        let batches = futures::stream::iter(self.batches.into_iter().map(Ok));
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(self.schema, batches),
        )
    }
}
