//! `segdb._segdb`: the native half of the Python package. It opens an engine in-process, runs
//! statements on a Tokio runtime of its own (with the GIL released), and hands results to
//! Python through the Arrow C stream interface (`__arrow_c_stream__`), so pyarrow, pandas and
//! polars take the columns without a copy through Python objects. The DB-API layer, the
//! exception classes and the conveniences (`.df()`, `.pl()`, `_repr_html_`) are Python, in
//! `segdb/__init__.py`; errors are raised as the class of their kind (DESIGN §19).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::RecordBatchIterator;
use datafusion::common::ScalarValue;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyCapsule, PyDict, PyFloat, PyInt, PyString};

/// An open database.
struct Open {
    engine: segdb::Engine,
    runtime: tokio::runtime::Runtime,
}

/// `segdb._segdb.Database(url, keyring, create)`.
#[pyclass(module = "segdb._segdb", frozen)]
struct Database {
    open: Mutex<Option<Arc<Open>>>,
}

/// The Python exception of an error's kind: `segdb.<Class>(message)`.
fn raise(py: Python<'_>, e: segdb::Error) -> PyErr {
    use segdb::error::ErrorKind as K;
    let class = match e.kind() {
        K::Invalid | K::NotFound | K::Denied => "ProgrammingError",
        K::Timeout | K::Conflict | K::Unavailable => "OperationalError",
        K::Internal => "InternalError",
    };
    error(py, class, e.to_string().trim().to_string())
}

fn error(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py
        .import("segdb")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((message.clone(),)))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}

impl Database {
    fn get(&self, py: Python<'_>) -> PyResult<Arc<Open>> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| error(py, "ProgrammingError", "the database is closed".into()))
    }
}

/// A Python value bound to a `?` placeholder.
fn scalar(v: &Bound<'_, PyAny>) -> PyResult<ScalarValue> {
    if v.is_none() {
        return Ok(ScalarValue::Null);
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(ScalarValue::Boolean(Some(v.extract()?)));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(ScalarValue::Int64(Some(v.extract().map_err(|_| {
            pyo3::exceptions::PyOverflowError::new_err("an integer parameter must fit in 64 bits")
        })?)));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(ScalarValue::Float64(Some(v.extract()?)));
    }
    if v.is_instance_of::<PyString>() {
        return Ok(ScalarValue::Utf8(Some(v.extract()?)));
    }
    if v.is_instance_of::<PyBytes>() {
        return Ok(ScalarValue::Binary(Some(v.extract()?)));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "a parameter of type {} cannot be bound (None, bool, int, float, str, bytes, date, datetime, Decimal)",
        v.get_type().name()?
    )))
}

#[pymethods]
impl Database {
    #[new]
    #[pyo3(signature = (url, keyring, create))]
    fn new(py: Python<'_>, url: String, keyring: PathBuf, create: bool) -> PyResult<Database> {
        // The binary's stack (reserved, not touched): nested evaluations (a look-alike of a
        // segment of segments) and DataFusion's planner recurse deeply.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_stack_size(64 << 20)
            .thread_name("segdb")
            .build()
            .map_err(|e| error(py, "OperationalError", format!("cannot start: {e}")))?;
        let config = segdb::Config {
            data: url,
            keyring,
            create,
            ..Default::default()
        };
        let opened = py.detach(|| {
            runtime.block_on(async { segdb::Engine::open(&config).await?.with_caller("python") })
        });
        let engine = opened.map_err(|e| raise(py, e))?;
        Ok(Database {
            open: Mutex::new(Some(Arc::new(Open { engine, runtime }))),
        })
    }

    /// Run `sql` (one statement or several, `;`-separated: the last one's result), with
    /// `params` bound to `?` placeholders (one statement then).
    #[pyo3(signature = (sql, params=None))]
    fn sql(
        &self,
        py: Python<'_>,
        sql: String,
        params: Option<Vec<Bound<'_, PyAny>>>,
    ) -> PyResult<QueryResult> {
        let open = self.get(py)?;
        let values = params
            .unwrap_or_default()
            .iter()
            .map(scalar)
            .collect::<PyResult<Vec<_>>>()?;
        // The handle is dropped inside, without the GIL: if close() ran meanwhile, this is the
        // last one and dropping it stops the runtime's threads.
        let r = py.detach(move || {
            let r = open
                .runtime
                .block_on(async { open.engine.sql_with_params(&sql, values).await });
            drop(open);
            r
        });
        let r = r.map_err(|e| raise(py, e))?;
        // Plain Arrow types (no views or dictionaries): what every consumer reads.
        let schema = segdb::server::wire::wire_schema(&r.schema);
        let batches = r
            .batches
            .into_iter()
            .map(|b| segdb::server::wire::to_wire(b, &schema))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(py, "InternalError", e.to_string()))?;
        Ok(QueryResult { schema, batches })
    }

    /// Load files into `events`, `profiles`, `consent` or `links` (as `segdb ingest`); returns
    /// what was loaded and the rejected rows.
    #[pyo3(signature = (kind, files, merge=false, strict=false))]
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        files: Vec<PathBuf>,
        merge: bool,
        strict: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let open = self.get(py)?;
        let kind = match kind {
            "events" => segdb::ingest::Kind::Events,
            "profiles" => segdb::ingest::Kind::Profiles,
            "consent" => segdb::ingest::Kind::Consent,
            "links" => segdb::ingest::Kind::Links,
            other => {
                return Err(error(
                    py,
                    "ProgrammingError",
                    format!(
                        "cannot load {other:?}: the kinds are events, profiles, consent and links"
                    ),
                ));
            }
        };
        let opts = segdb::ingest::IngestOptions {
            merge,
            strict,
            ..Default::default()
        };
        let r = py
            .detach(move || {
                let r = open
                    .runtime
                    .block_on(async { open.engine.ingest(kind, &files, &opts).await });
                drop(open);
                r
            })
            .map_err(|e| raise(py, e))?;
        let out = PyDict::new(py);
        out.set_item("table", kind.name())?;
        out.set_item("files", r.files)?;
        out.set_item("rows_loaded", r.rows_loaded)?;
        out.set_item("new_users", r.new_users)?;
        out.set_item("version", r.version)?;
        let rejected: Vec<(String, u64, String)> = r
            .rejected
            .iter()
            .map(|b| (b.file.clone(), b.row, b.reason.clone()))
            .collect();
        out.set_item("rejected", rejected)?;
        Ok(out)
    }

    /// Close the database (statements afterwards raise `ProgrammingError`).
    fn close(&self, py: Python<'_>) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(open) = open {
            // Dropping the runtime waits for its threads: without the GIL.
            py.detach(move || drop(open));
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

/// The result of one statement: Arrow batches with their schema.
#[pyclass(module = "segdb._segdb", frozen)]
struct QueryResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

#[pymethods]
impl QueryResult {
    /// The Arrow PyCapsule stream protocol: `pyarrow.table(result)`, `polars.from_arrow`, …
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // A requested schema is a hint; consumers cast what they get.
        let _ = requested_schema;
        let reader = RecordBatchIterator::new(
            self.batches.clone().into_iter().map(Ok),
            self.schema.clone(),
        );
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Each column's Arrow type, as text (for DB-API `description`).
    #[getter]
    fn column_types(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect()
    }
}

#[pymodule]
fn _segdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Database>()?;
    m.add_class::<QueryResult>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
