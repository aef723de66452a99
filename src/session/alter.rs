//! `ALTER TABLE t ALTER COLUMN c SET DATA TYPE DOUBLE|DECIMAL(p,s)|VARCHAR` (admin): widen a
//! property column of `events` or `profiles` so that later loads fit it (DESIGN §4). Every value
//! is checked first: one that would not come back the same from the new type (an integer above
//! 2^53 as DOUBLE, 1.005 as DECIMAL(10,2)) refuses the statement and nothing changes. Then the
//! table is rewritten, new schema and all, in one commit at exactly the version that was read
//! (a concurrent load makes it start over, at most three times). The commit is marked
//! `segdb.op = alter_column`: no row, user, event or time changes, so the event index carries
//! over as after OPTIMIZE. Older versions keep their type for time travel.

use std::sync::Arc;

use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::DataType;
use datafusion::prelude::{SessionContext, cast, col};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::segment::ast::WideType;
use crate::storage::commit::{is_conflict, op};
use crate::storage::{Database, Table};

/// What a widening did.
#[derive(Debug, Clone)]
pub struct Altered {
    pub table: Table,
    pub column: String,
    pub from: DataType,
    pub to: DataType,
    /// Rows rewritten (0 when the column already had the type).
    pub rows: u64,
    /// The table's version after it.
    pub version: u64,
}

/// The arrow type of `to`.
pub fn arrow_type(to: WideType) -> DataType {
    match to {
        WideType::Double => DataType::Float64,
        WideType::Decimal(p, s) => DataType::Decimal128(p, s),
        WideType::Varchar => DataType::Utf8,
    }
}

fn numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..))
}

/// Can a column of type `from` be widened to `to` at all (before its values are checked)?
fn widens(from: &DataType, to: &DataType) -> bool {
    match to {
        DataType::Utf8 => !from.is_nested(),
        DataType::Float64 | DataType::Decimal128(..) => numeric(from),
        _ => false,
    }
}

/// Widen `column` of `table` to `to`; `who` goes to the audit log.
pub async fn alter_column_type(
    db: &Database,
    table: &str,
    column: &str,
    to: WideType,
    who: &str,
) -> Result<Altered> {
    let t = match table.to_ascii_lowercase().as_str() {
        "events" => Table::Events,
        "profiles" => Table::Profiles,
        other => {
            return Err(Error::invalid(format!(
                "SET DATA TYPE applies to columns of events and profiles, not {other}"
            )));
        }
    };
    // The columns segdb fills or requires (the collector's included) keep the engine's types.
    if crate::collector::map::RESERVED.contains(&column.to_ascii_lowercase().as_str()) {
        return Err(Error::invalid(format!(
            "{column} is a column segdb fills or requires; its type cannot change"
        )));
    }
    let target = arrow_type(to);
    for _ in 0..3 {
        let pinned = db.latest(t).await?;
        let schema = pinned.snapshot()?.snapshot().arrow_schema();
        let Ok(field) = schema.field_with_name(column) else {
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            return Err(Error::NotFound(format!(
                "{} has no column {column:?}{}",
                t.name(),
                crate::segment::eval::suggest(column, names.iter())
            )));
        };
        let from = field.data_type().clone();
        let version = pinned.version().unwrap_or(0) as u64;
        if from == target {
            return Ok(Altered {
                table: t,
                column: column.to_string(),
                from,
                to: target,
                rows: 0,
                version,
            });
        }
        if !widens(&from, &target) {
            return Err(Error::invalid(format!(
                "{}.{column} is {from}; SET DATA TYPE only widens: numbers to DOUBLE or DECIMAL(p, s), anything to VARCHAR",
                t.name()
            )));
        }
        // delta-rs's own session (its planner writes the files), reading strings as Utf8.
        let ctx: SessionContext =
            deltalake::delta_datafusion::DeltaSessionContext::new_with_session_overrides(
                &[(
                    "datafusion.execution.parquet.schema_force_view_types".to_string(),
                    "false".to_string(),
                )]
                .into_iter()
                .collect(),
            )?
            .into_inner();
        crate::storage::provider::register_store(db, ctx.runtime_env().as_ref());
        let files = crate::storage::files_of(&pinned, t)?;
        if files.is_empty() {
            // An empty table: the new type is a schema change alone.
            return Err(Error::invalid(format!(
                "{} holds no rows yet: the first load decides its columns' types",
                t.name()
            )));
        }
        let source = Arc::new(PinnedFiles {
            db: db.clone(),
            table: t,
            files,
            schema: schema.clone(),
        });
        let read = || async { ctx.read_table(source.clone()) };

        // 1. Every value must come back the same from the new type.
        let mut values = read()
            .await?
            .select(vec![col(datafusion::common::Column::from_name(column))])?
            .execute_stream()
            .await?;
        let (mut rows, mut lossy, mut example) = (0u64, 0u64, None);
        while let Some(b) = values.next().await {
            let a = b?.column(0).clone();
            rows += a.len() as u64;
            let out = cast_with_options(&a, &target, &CastOptions::default())?;
            let back = cast_with_options(&out, &from, &CastOptions::default())?;
            let same = arrow::compute::kernels::cmp::not_distinct(&a, &back)?;
            for i in 0..a.len() {
                if a.is_valid(i) && (out.is_null(i) || !same.value(i)) {
                    lossy += 1;
                    if example.is_none() {
                        example = arrow::util::display::array_value_to_string(&a, i).ok();
                    }
                }
            }
        }
        if lossy > 0 {
            return Err(Error::invalid(format!(
                "{lossy} of {rows} values of {}.{column} would change as {to} (e.g. {}); nothing was changed. A wider type keeps them (e.g. DOUBLE, a larger DECIMAL scale, or VARCHAR)",
                t.name(),
                example.unwrap_or_default()
            )));
        }

        // 2. Rewrite the table, the column cast, in one commit at exactly the next version.
        let exprs: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| {
                let c = col(datafusion::common::Column::from_name(f.name()));
                if f.name() == column {
                    cast(c, target.clone()).alias(f.name())
                } else {
                    c
                }
            })
            .collect();
        let plan = read().await?.select(exprs)?.logical_plan().clone();
        let state: Arc<dyn datafusion::catalog::Session> = Arc::new(ctx.state());
        let r = WriteBuilder::new(
            pinned.log_store(),
            Some(pinned.snapshot()?.snapshot().clone()),
        )
        .with_input_plan(plan)
        .with_session_state(state)
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_commit_properties(
            CommitProperties::default()
                .with_max_retries(0)
                .with_metadata(op("alter_column")),
        )
        .await;
        match r {
            Ok(done) => {
                let version = done.version().unwrap_or(0) as u64;
                crate::erasure::audit_action(
                    db,
                    &format!(
                        "ALTER TABLE {} ALTER COLUMN {column} SET DATA TYPE {to}",
                        t.name()
                    ),
                    who,
                )
                .await?;
                tracing::info!(table = t.name(), column, to = %to, rows, version, "widened a column");
                return Ok(Altered {
                    table: t,
                    column: column.to_string(),
                    from,
                    to: target,
                    rows,
                    version,
                });
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(format!(
        "{} kept changing while it was being rewritten (loads or the collector committed meanwhile); nothing was changed: run the statement again when loads pause",
        t.name()
    )))
}

/// The files of one pinned version, every row (no suppression: the rewrite keeps what it read).
#[derive(Debug)]
struct PinnedFiles {
    db: Database,
    table: Table,
    files: Vec<crate::storage::DataFile>,
    schema: arrow::datatypes::SchemaRef,
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for PinnedFiles {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }
    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        crate::storage::provider::scan_files(
            state,
            &crate::storage::provider::store_url(&self.db),
            self.table,
            &self.files,
            &self.schema,
            projection.cloned(),
            limit,
        )
        .await
    }
}
