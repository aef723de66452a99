//! The base tables and their schemas. Columns every table starts with are fixed here; events and
//! profiles grow a column for each new property or attribute an ingest brings.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;

use crate::error::Result;

/// A table segdb owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Events,
    Profiles,
    Consent,
    Identity,
    /// `_segdb/segments`: segment definitions.
    Segments,
    /// `_segdb/event_index`: per-(event, day) bit-sliced counts.
    EventIndex,
    /// `_segdb/suppression`: forgotten users (ordinal + keyed hash of the pseudonym).
    Suppression,
    /// `_segdb/audit`: one row per FORGET, without identifiers in clear.
    Audit,
}

impl Table {
    /// The tables every database has from creation.
    pub const BASE: [Table; 4] = [
        Table::Events,
        Table::Profiles,
        Table::Consent,
        Table::Identity,
    ];
    /// The engine's own tables under `_segdb/`.
    pub const ENGINE: [Table; 4] = [
        Table::Segments,
        Table::EventIndex,
        Table::Suppression,
        Table::Audit,
    ];

    /// Its SQL name (and directory under the root).
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Profiles => "profiles",
            Table::Consent => "consent",
            Table::Identity => "identity",
            Table::Segments => "segments",
            Table::EventIndex => "event_index",
            Table::Suppression => "suppression",
            Table::Audit => "audit",
        }
    }

    /// Directory relative to the database root.
    pub fn path(self) -> &'static str {
        match self {
            Table::Segments => "_segdb/segments",
            Table::EventIndex => "_segdb/event_index",
            Table::Suppression => "_segdb/suppression",
            Table::Audit => "_segdb/audit",
            other => other.name(),
        }
    }

    /// Look a table up by SQL name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::BASE.into_iter().find(|t| t.name() == name)
    }
}

/// Microsecond UTC timestamps: what Delta's `timestamp` type maps to.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The columns a table is created with.
pub fn base_schema(table: Table) -> SchemaRef {
    let pseudo = Field::new("user_id", DataType::Utf8, true);
    let uid = Field::new("uid", DataType::Int64, true);
    let fields = match table {
        Table::Events => vec![
            pseudo,
            uid,
            Field::new("event", DataType::Utf8, true),
            Field::new("ts", ts_type(), true),
        ],
        Table::Profiles => vec![pseudo, uid, Field::new("updated_at", ts_type(), true)],
        Table::Consent => vec![
            pseudo,
            uid,
            Field::new("tc_string", DataType::Utf8, true),
            Field::new("us_privacy", DataType::Utf8, true),
            Field::new("gpp", DataType::Utf8, true),
            Field::new("purpose", DataType::Utf8, true),
            Field::new("granted", DataType::Boolean, true),
            Field::new("expires_at", ts_type(), true),
            Field::new("recorded_at", ts_type(), true),
        ],
        Table::Identity => vec![pseudo, uid, Field::new("first_seen", ts_type(), true)],
        Table::Segments => vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("definition", DataType::Utf8, true),
            Field::new("purposes", DataType::Utf8, true),
            Field::new("comment", DataType::Utf8, true),
            Field::new("materialized", DataType::Boolean, true),
            Field::new("refresh", DataType::Utf8, true),
            Field::new("created_at", ts_type(), true),
        ],
        Table::EventIndex => vec![
            Field::new("event", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
            Field::new("slice", DataType::Int32, true),
            Field::new("bitmap", DataType::Binary, true),
            Field::new("events_version", DataType::Int64, true),
        ],
        Table::Suppression => vec![
            Field::new("uid", DataType::Int64, true),
            Field::new("key_hash", DataType::Utf8, true),
            Field::new("forgotten_at", ts_type(), true),
        ],
        Table::Audit => vec![
            Field::new("at", ts_type(), true),
            Field::new("action", DataType::Utf8, true),
            Field::new("users", DataType::Int64, true),
            Field::new("key_hashes", DataType::Utf8, true),
        ],
    };
    Arc::new(Schema::new(fields))
}

pub(super) async fn create(t: DeltaTable, table: Table) -> Result<()> {
    let schema: StructType = base_schema(table).as_ref().try_into_kernel()?;
    t.create()
        .with_table_name(table.name())
        .with_columns(schema.fields().cloned())
        .with_save_mode(SaveMode::Ignore)
        .await?;
    Ok(())
}
