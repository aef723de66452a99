//! The tables of a database and the columns each is created with. Events and profiles grow a
//! column for each new property or attribute an ingest brings; the engine's own tables under
//! `_segdb/` gain columns when a newer segdb opens an older database (see
//! [`super::Database::open`]).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;

use crate::error::Result;

/// A table segdb owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// `_segdb/audit`: one row per FORGET, zero-match forget and VACUUM, without identifiers.
    Audit,
    /// `_segdb/links`: identity links as ordinal pairs (no pseudonyms).
    Links,
    /// `_segdb/snapshots`: refresh history and member bitmaps of materialised segments.
    Snapshots,
    /// `_segdb/traits`: computed trait definitions.
    Traits,
    /// `_segdb/exports`: standing exports (`CREATE EXPORT … ON REFRESH`).
    Exports,
    /// `_segdb/export_runs`: one row per export run.
    ExportRuns,
    /// `_segdb/sources`: collector sources and the keyed hashes of their write keys.
    Sources,
    /// `_segdb/collected`: keyed hashes of the `(source, messageId)` pairs the collector
    /// acknowledged (for exactly-once across restarts).
    Collected,
    /// `_segdb/deliveries`: webhook and Segment-spec deliveries: the changes each version was cut
    /// into, the cursor after each delivered batch, and disable/fail/resume marks.
    Deliveries,
    /// `_segdb/category_maps`: category maps (DESIGN §17): one definition row per map (its event
    /// property) and one row per (value, category) loaded into it.
    CategoryMaps,
}

impl Table {
    /// The tables users query by name.
    pub const BASE: [Table; 4] = [
        Table::Events,
        Table::Profiles,
        Table::Consent,
        Table::Identity,
    ];
    /// The engine's own tables under `_segdb/`.
    pub const ENGINE: [Table; 13] = [
        Table::Segments,
        Table::EventIndex,
        Table::Suppression,
        Table::Audit,
        Table::Links,
        Table::Snapshots,
        Table::Traits,
        Table::Exports,
        Table::ExportRuns,
        Table::Sources,
        Table::Collected,
        Table::Deliveries,
        Table::CategoryMaps,
    ];
    /// Every table a statement may read, pinned together by [`super::Snapshot::pin`].
    pub const READ: [Table; 13] = [
        Table::Events,
        Table::Profiles,
        Table::Consent,
        Table::Identity,
        Table::Segments,
        Table::EventIndex,
        Table::Suppression,
        Table::Links,
        Table::Snapshots,
        Table::Traits,
        Table::Exports,
        Table::ExportRuns,
        Table::CategoryMaps,
    ];

    /// Its SQL name (and, for base tables, its directory under the root).
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
            Table::Links => "links",
            Table::Snapshots => "snapshots",
            Table::Traits => "traits",
            Table::Exports => "exports",
            Table::ExportRuns => "export_runs",
            Table::Sources => "sources",
            Table::Collected => "collected",
            Table::Deliveries => "deliveries",
            Table::CategoryMaps => "category_maps",
        }
    }

    /// Directory relative to the database root.
    pub fn path(self) -> &'static str {
        match self {
            Table::Events | Table::Profiles | Table::Consent | Table::Identity => self.name(),
            Table::Segments => "_segdb/segments",
            Table::EventIndex => "_segdb/event_index",
            Table::Suppression => "_segdb/suppression",
            Table::Audit => "_segdb/audit",
            Table::Links => "_segdb/links",
            Table::Snapshots => "_segdb/snapshots",
            Table::Traits => "_segdb/traits",
            Table::Exports => "_segdb/exports",
            Table::ExportRuns => "_segdb/export_runs",
            Table::Sources => "_segdb/sources",
            Table::Collected => "_segdb/collected",
            Table::Deliveries => "_segdb/deliveries",
            Table::CategoryMaps => "_segdb/category_maps",
        }
    }

    /// Look a base table up by SQL name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::BASE.into_iter().find(|t| t.name() == name)
    }

    /// Whether rows carry the user ordinal `uid` (so forgotten users are filtered at scan).
    pub fn has_uid(self) -> bool {
        matches!(
            self,
            Table::Events | Table::Profiles | Table::Consent | Table::Identity
        )
    }
}

/// Microsecond UTC timestamps: what Delta's `timestamp` type maps to.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn text(n: &str) -> Field {
    Field::new(n, DataType::Utf8, true)
}
fn int(n: &str) -> Field {
    Field::new(n, DataType::Int64, true)
}
fn ts(n: &str) -> Field {
    Field::new(n, ts_type(), true)
}
fn bin(n: &str) -> Field {
    Field::new(n, DataType::Binary, true)
}

/// The columns a table is created with (the current layout of the engine tables).
pub fn base_schema(table: Table) -> SchemaRef {
    let pseudo = Field::new("user_id", DataType::Utf8, true);
    let uid = Field::new("uid", DataType::Int64, true);
    let fields = match table {
        Table::Events => vec![pseudo, uid, text("event"), ts("ts")],
        Table::Profiles => vec![pseudo, uid, ts("updated_at")],
        Table::Consent => vec![
            pseudo,
            uid,
            text("tc_string"),
            text("us_privacy"),
            text("gpp"),
            text("purpose"),
            Field::new("granted", DataType::Boolean, true),
            ts("expires_at"),
            ts("recorded_at"),
            // When the load ran and the row's place in it: ties at one recorded_at go to the
            // later row (added by wave 2; older rows read NULL and lose ties).
            ts("ingested_at"),
            int("row_seq"),
        ],
        Table::Identity => vec![pseudo, uid, ts("first_seen")],
        Table::Segments => vec![
            text("name"),
            text("definition"),
            text("purposes"),
            text("comment"),
            Field::new("materialized", DataType::Boolean, true),
            text("refresh"),
            ts("created_at"),
            // Added by wave 2 (older catalogs are migrated at open).
            int("keep_versions"),
            int("holdout_percent"),
            text("generation"),
        ],
        Table::EventIndex => vec![
            text("event"),
            Field::new("day", DataType::Date32, true),
            Field::new("slice", DataType::Int32, true),
            bin("bitmap"),
            int("events_version"),
        ],
        Table::Suppression => vec![int("uid"), text("key_hash"), ts("forgotten_at")],
        Table::Audit => vec![
            ts("at"),
            text("action"),
            int("users"),
            text("key_hashes"),
            text("requested_by"),
        ],
        Table::Links => vec![int("a"), int("b"), text("id_type"), ts("linked_at")],
        Table::Snapshots => vec![
            text("segment"),
            text("generation"),
            int("version"),
            ts("as_of"),
            ts("refreshed_at"),
            text("trigger"),
            text("status"),
            int("size"),
            int("entered"),
            int("exited"),
            int("holdout"),
            int("took_ms"),
            text("error"),
            bin("members"),
            bin("holdout_members"),
            text("sources"),
            // The target group as activated at refresh time (consent as of the refresh): what
            // the next version's entered/exited are counted against.
            bin("target_members"),
            // Set on a version stored as its changes against `base_version` (the previous one):
            // `delta` holds them and the three bitmap columns above are NULL. NULL: a full version.
            int("base_version"),
            bin("delta"),
        ],
        Table::Traits => vec![
            text("name"),
            text("definition"),
            text("data_type"),
            ts("created_at"),
        ],
        Table::Exports => vec![
            text("name"),
            text("segment"),
            text("statement"),
            ts("created_at"),
            text("created_by"),
            // A webhook secret or Segment write key, sealed under the keyring's
            // `export-secrets` key (never in clear under the data URL).
            text("secret"),
        ],
        Table::ExportRuns => vec![
            text("export"),
            text("segment"),
            text("path"),
            ts("started_at"),
            text("status"),
            int("files"),
            int("rows"),
            int("bytes"),
            int("version"),
            int("from_version"),
            int("skipped"),
            text("warning"),
            text("error"),
            int("took_ms"),
        ],
        Table::Sources => vec![
            text("name"),
            text("key_hash"),
            text("key_prefix"),
            text("comment"),
            ts("created_at"),
            text("old_key_hash"),
            ts("old_key_until"),
        ],
        Table::Collected => vec![int("key"), ts("at")],
        Table::Deliveries => vec![
            text("export"),
            text("generation"),
            text("kind"),
            int("version"),
            int("from_version"),
            int("batch"),
            int("batches"),
            ts("as_of"),
            ts("at"),
            // The cut of a version: who entered and who exited (ordinals), sent in batches.
            bin("entered"),
            bin("exited"),
            text("error"),
        ],
        Table::CategoryMaps => vec![
            text("map"),
            text("property"),
            // NULL on a map's definition row.
            text("value"),
            text("category"),
            ts("created_at"),
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
