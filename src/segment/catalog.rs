//! Segment definitions, persisted in the Delta table `_segdb/segments`. The table is small: every
//! change rewrites it whole in one commit at exactly the version after the one it read, so two
//! processes changing segments at once never lose each other's change — the loser re-reads the
//! catalog and applies its change again (or fails with the reason, e.g. "already exists").

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Int64Type};

use super::ast::Refresh;
use crate::error::{Error, Result};
use crate::storage::commit::{self, Committed};
use crate::storage::{Database, Snapshot, Table, base_schema};

/// History kept by default (`KEEP n VERSIONS`).
pub const DEFAULT_KEEP: u64 = 100;
/// Versions a live segment keeps unless `KEEP n VERSIONS` says otherwise (DESIGN §15).
pub const DEFAULT_KEEP_LIVE: u64 = 100_000;

/// One stored segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDef {
    pub name: String,
    /// The segment expression as written after AS.
    pub definition: String,
    /// The purposes, or `Err` when the stored value is damaged: such a segment refuses to
    /// answer (consent must never fail open).
    pub purposes: std::result::Result<Vec<String>, String>,
    pub comment: Option<String>,
    pub materialized: bool,
    /// The refresh clause (`None`: a plain segment, or a materialised one stored by wave 1).
    pub refresh: Option<Refresh>,
    pub created_at: i64,
    pub keep_versions: u64,
    pub holdout_percent: Option<u8>,
    /// Changes with every CREATE OR REPLACE: snapshots of an older generation are history of a
    /// definition that no longer exists.
    pub generation: String,
}

impl SegmentDef {
    /// The purposes as SHOW/DESCRIBE print them (`'a', 'b'`), `None` without any.
    pub fn purposes_text(&self) -> Option<String> {
        match &self.purposes {
            Ok(p) if p.is_empty() => None,
            Ok(p) => Some(
                p.iter()
                    .map(|p| format!("'{p}'"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(_) => Some("<damaged>".into()),
        }
    }

    /// The purposes, refusing a damaged value.
    pub fn purposes(&self) -> Result<&[String]> {
        self.purposes.as_deref().map_err(|_| {
            Error::invalid(format!(
                "segment '{}' has a damaged purposes value in the catalog; it answers nothing until it is recreated (CREATE OR REPLACE SEGMENT …)",
                self.name
            ))
        })
    }
}

/// Parse a stored refresh clause (`EVERY '…'`, `CRON '…' [TIMEZONE '…']`, `MANUAL`).
pub fn parse_refresh(s: &str) -> Option<Refresh> {
    let text = format!("CREATE MATERIALIZED SEGMENT x REFRESH {s} AS ALL USERS");
    match super::parser::parse_statement(&text).ok()? {
        super::ast::Statement::CreateSegment(c) => c.refresh,
        _ => None,
    }
}

/// The catalog of one snapshot.
#[derive(Debug, Default)]
pub struct Catalog {
    pub segments: BTreeMap<String, SegmentDef>,
}

impl Catalog {
    /// The definition of `name`, or the error every statement gives for an unknown segment
    /// (with a suggestion when a known name is close).
    pub fn require(&self, name: &str) -> Result<&SegmentDef> {
        self.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "segment '{name}' does not exist{}",
                super::eval::suggest(name, self.segments.keys())
            ))
        })
    }

    /// Find a segment by name (exact, then case-insensitive).
    pub fn get(&self, name: &str) -> Option<&SegmentDef> {
        self.segments.get(name).or_else(|| {
            self.segments
                .values()
                .find(|d| d.name.eq_ignore_ascii_case(name))
        })
    }
}

/// Read the definitions of a snapshot.
pub async fn load(snap: &Snapshot) -> Result<Catalog> {
    let batches = snap.read(Table::Segments).await?;
    Ok(Catalog {
        segments: from_batches(&batches)?,
    })
}

fn from_batches(batches: &[RecordBatch]) -> Result<BTreeMap<String, SegmentDef>> {
    use crate::storage::snapshot_column as column;
    let mut out = BTreeMap::new();
    for b in batches {
        let text = |n: &str| column(b, n, &DataType::Utf8);
        let (name, def, purposes, comment, refresh, generation) = (
            text("name")?,
            text("definition")?,
            text("purposes")?,
            text("comment")?,
            text("refresh")?,
            text("generation")?,
        );
        let (name, def, purposes, comment, refresh, generation) = (
            name.as_string::<i32>(),
            def.as_string::<i32>(),
            purposes.as_string::<i32>(),
            comment.as_string::<i32>(),
            refresh.as_string::<i32>(),
            generation.as_string::<i32>(),
        );
        let mat = column(b, "materialized", &DataType::Boolean)?;
        let mat = mat.as_boolean();
        let int = |n: &str| column(b, n, &DataType::Int64);
        let (created, keep, holdout) = (
            int("created_at")?,
            int("keep_versions")?,
            int("holdout_percent")?,
        );
        let (created, keep, holdout) = (
            created.as_primitive::<Int64Type>(),
            keep.as_primitive::<Int64Type>(),
            holdout.as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            if name.is_null(i) {
                continue;
            }
            let n = name.value(i).to_string();
            let purposes = if purposes.is_null(i) {
                Ok(Vec::new())
            } else {
                serde_json::from_str::<Vec<String>>(purposes.value(i))
                    .map_err(|_| "damaged".to_string())
            };
            let materialized = mat.is_valid(i) && mat.value(i);
            out.insert(
                n.clone(),
                SegmentDef {
                    definition: def.value(i).to_string(),
                    purposes,
                    comment: comment.is_valid(i).then(|| comment.value(i).to_string()),
                    materialized,
                    refresh: refresh
                        .is_valid(i)
                        .then(|| parse_refresh(refresh.value(i)))
                        .flatten(),
                    created_at: if created.is_valid(i) {
                        created.value(i)
                    } else {
                        0
                    },
                    keep_versions: if keep.is_valid(i) && keep.value(i) > 0 {
                        keep.value(i) as u64
                    } else {
                        DEFAULT_KEEP
                    },
                    holdout_percent: (holdout.is_valid(i) && (1..=99).contains(&holdout.value(i)))
                        .then(|| holdout.value(i) as u8),
                    generation: if generation.is_valid(i) {
                        generation.value(i).to_string()
                    } else {
                        // Stored by wave 1: one generation per name.
                        format!("wave1:{n}")
                    },
                    name: n,
                },
            );
        }
    }
    Ok(out)
}

fn to_batch(defs: &BTreeMap<String, SegmentDef>) -> Result<RecordBatch> {
    let (mut n, mut d, mut p, mut c, mut m, mut r, mut t) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        BooleanBuilder::new(),
        StringBuilder::new(),
        TimestampMicrosecondBuilder::new(),
    );
    let (mut k, mut h, mut g) = (
        Int64Builder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
    );
    for s in defs.values() {
        n.append_value(&s.name);
        d.append_value(&s.definition);
        match &s.purposes {
            Ok(ps) => p.append_value(serde_json::to_string(ps).expect("strings serialise")),
            // Keep a damaged value damaged: rewriting it as [] would drop the consent filter.
            Err(_) => p.append_value("<damaged>"),
        }
        c.append_option(s.comment.as_deref());
        m.append_value(s.materialized);
        r.append_option(s.refresh.as_ref().map(|x| x.text()));
        t.append_value(s.created_at);
        k.append_value(s.keep_versions as i64);
        h.append_option(s.holdout_percent.map(i64::from));
        g.append_value(&s.generation);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(n.finish()),
        Arc::new(d.finish()),
        Arc::new(p.finish()),
        Arc::new(c.finish()),
        Arc::new(m.finish()),
        Arc::new(r.finish()),
        Arc::new(t.finish().with_timezone("UTC")),
        Arc::new(k.finish()),
        Arc::new(h.finish()),
        Arc::new(g.finish()),
    ];
    Ok(RecordBatch::try_new(base_schema(Table::Segments), cols)?)
}

/// Change the catalog: `change` gets the latest definitions and edits them (or fails); the result
/// is committed at exactly the next version, re-reading and re-applying `change` when another
/// process committed first. Returns what `change` returned.
pub async fn update<T>(
    db: &Database,
    mut change: impl FnMut(&mut BTreeMap<String, SegmentDef>) -> Result<T>,
) -> Result<T> {
    for _ in 0..50 {
        let table = db.load(Table::Segments).await?;
        let batches = crate::storage::read_pinned(db, Table::Segments, &table).await?;
        let mut defs = from_batches(&batches)?;
        let out = change(&mut defs)?;
        let batch = to_batch(&defs)?;
        match commit::overwrite_exact(&table, vec![batch], commit::op("catalog")).await? {
            Committed::Version(_) => return Ok(out),
            Committed::Conflict => {
                tracing::debug!("segment catalog changed underneath; re-reading");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }
    Err(Error::storage(
        "the segment catalog kept changing underneath this statement; try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_clauses_round_trip() {
        for s in [
            "EVERY '15 minutes'",
            "CRON '0 6 * * 1'",
            "CRON '0 6 * * *' TIMEZONE 'Europe/Berlin'",
            "MANUAL",
        ] {
            assert_eq!(parse_refresh(s).map(|r| r.text()).as_deref(), Some(s));
        }
        assert_eq!(parse_refresh("SOMETIMES"), None);
    }
}
