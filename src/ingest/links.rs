//! Loading identity links: `segdb ingest links FILE` (`user_id`, `linked_id`, optional `id_type`;
//! both ids raw, both pseudonymised at the door; new ids get ordinals), and the
//! `user_id` ↔ `anonymous_id` pairs of an events load. A placeholder id never links; a link that
//! would make a profile hold more than `max_ids_per_profile` ids is refused and counted. Links
//! are appended to `_segdb/links` at exactly the next version, re-checked against the cap when
//! another load committed links first.

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use std::sync::Arc;

use super::identity::Identity;
use super::read::SourceBatch;
use super::{BadRow, IngestReport, Kind};
use crate::error::{Error, Result};
use crate::links::{Components, is_junk, pairs};
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::commit::{self, Committed};
use crate::storage::{Database, Table, base_schema};

/// One link to store.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub a: u32,
    pub b: u32,
    pub id_type: Option<String>,
}

/// Append `links`, refusing those over the cap against the latest stored links. Returns
/// (accepted, refused, links-table version committed).
pub(crate) async fn commit(
    db: &Database,
    links: &[Link],
    max: usize,
    now: i64,
) -> Result<(u64, u64, Option<u64>)> {
    if links.is_empty() {
        return Ok((0, 0, None));
    }
    for _ in 0..50 {
        let table = db.latest(Table::Links).await?;
        let stored = pairs(&crate::storage::read_pinned(db, Table::Links, &table).await?)?;
        let mut c = Components::default();
        for (a, b) in &stored {
            c.link(*a, *b, usize::MAX);
        }
        let (mut keep, mut refused) = (Vec::new(), 0u64);
        for l in links {
            if c.find(l.a) == c.find(l.b) {
                continue; // already the same profile: nothing to store
            }
            if c.link(l.a, l.b, max) {
                keep.push(l);
            } else {
                refused += 1;
            }
        }
        if keep.is_empty() {
            return Ok((0, refused, None));
        }
        let batch = RecordBatch::try_new(
            base_schema(Table::Links),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    keep.iter().map(|l| i64::from(l.a)),
                )) as ArrayRef,
                Arc::new(Int64Array::from_iter_values(
                    keep.iter().map(|l| i64::from(l.b)),
                )),
                Arc::new(StringArray::from(
                    keep.iter().map(|l| l.id_type.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![now; keep.len()]).with_timezone("UTC"),
                ),
            ],
        )?;
        if let Committed::Version(v) =
            commit::append_exact(&table, vec![batch], commit::op("links")).await?
        {
            return Ok((keep.len() as u64, refused, Some(v)));
        }
    }
    Err(Error::ingest(
        "other loads kept committing links at the same time; run this load again",
    ))
}

/// Collects the links of a links load from its batches.
pub(crate) struct LinkReader {
    pseudo: Pseudonymizer,
    forgotten: std::collections::HashSet<String>,
    forget_hasher: Pseudonymizer,
    pub links: Vec<Link>,
}

impl LinkReader {
    pub(crate) fn new(
        pseudo: Pseudonymizer,
        forgotten: std::collections::HashSet<String>,
        forget_hasher: Pseudonymizer,
    ) -> Self {
        LinkReader {
            pseudo,
            forgotten,
            forget_hasher,
            links: Vec::new(),
        }
    }

    pub(crate) fn check_columns(schema: &arrow::datatypes::Schema, file: &str) -> Result<()> {
        for c in ["user_id", "linked_id"] {
            if schema.column_with_name(c).is_none() {
                return Err(Error::ingest(format!(
                    "{file} has no {c:?} column; links need user_id and linked_id (and optionally id_type)"
                )));
            }
        }
        Ok(())
    }

    /// Read one batch; bad rows go to `bad`. Returns how many links it held.
    pub(crate) fn add(
        &mut self,
        sb: SourceBatch,
        identity: &mut Identity,
        bad: &mut Vec<BadRow>,
        file: &str,
    ) -> Result<u64> {
        bad.extend(sb.bad);
        let b = &sb.batch;
        let text = |c: &str| -> Result<Option<StringArray>> {
            Ok(match b.column_by_name(c) {
                Some(a) => Some(
                    arrow::compute::cast(a, &DataType::Utf8)?
                        .as_string::<i32>()
                        .clone(),
                ),
                None => None,
            })
        };
        let (a, l, t) = (
            text("user_id")?.expect("checked"),
            text("linked_id")?.expect("checked"),
            text("id_type")?,
        );
        let mut n = 0;
        for i in 0..b.num_rows() {
            if sb.rows[i] == 0 {
                continue;
            }
            let row = sb.rows[i];
            let (ra, rl) = (
                a.is_valid(i).then(|| a.value(i)).unwrap_or(""),
                l.is_valid(i).then(|| l.value(i)).unwrap_or(""),
            );
            if is_junk(ra) || is_junk(rl) {
                bad.push(BadRow::new(
                    file,
                    row,
                    "user_id or linked_id is missing or a placeholder (null, undefined, anonymous, 0, -1, …); placeholders never link".into(),
                ));
                continue;
            }
            let (pa, pl) = (
                self.pseudo.pseudonymize(ra.trim()),
                self.pseudo.pseudonymize(rl.trim()),
            );
            if self
                .forgotten
                .contains(&self.forget_hasher.pseudonymize(&pa))
                || self
                    .forgotten
                    .contains(&self.forget_hasher.pseudonymize(&pl))
            {
                bad.push(BadRow::new(
                    file,
                    row,
                    "links a forgotten user (FORGET USER); not loaded".into(),
                ));
                continue;
            }
            let (ua, ul) = (identity.ordinal(&pa)? as u32, identity.ordinal(&pl)? as u32);
            if ua != ul {
                self.links.push(Link {
                    a: ua,
                    b: ul,
                    id_type: t
                        .as_ref()
                        .and_then(|t| t.is_valid(i).then(|| t.value(i).to_string())),
                });
            }
            n += 1;
        }
        Ok(n)
    }
}

/// The report of a links load.
pub(crate) fn report(
    files: usize,
    rows: u64,
    rejected: Vec<BadRow>,
    new_users: usize,
    refused: u64,
    version: Option<u64>,
    took_ms: u128,
) -> IngestReport {
    IngestReport {
        kind: Kind::Links,
        files,
        rows_loaded: rows,
        rejected,
        new_users,
        version,
        took_ms,
        refused_links: refused,
    }
}
