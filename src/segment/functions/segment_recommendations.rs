//! `segment_recommendations('name' [, n])` → table (DESIGN §17): the facts that set a segment's
//! members apart, by lift. One row per feature: `feature` (`event:<name>:30d`,
//! `event:<name>:90d`, `profile:<column>=<value>`), `in_segment` (members with it), `overall`
//! (users with it), `jaccard` (in_segment / the union of both), `lift` (the share of members
//! with it / the share of all users with it); the top `n` (default 10) by lift, then
//! in_segment, then name, of the features at least 30 members have. Features are each event
//! type done in the last 30 and the last 90 days before `as_of`, and each value of a profile
//! column with at most 50 distinct values (hashed match keys left out); the events and the
//! profile columns the segment's own definition reads are left out. Counts are bitmap
//! cardinalities over the statement's snapshot (forgotten users are in none).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use roaring::RoaringBitmap;

use super::lazy::LazyTable;
use super::{int_arg, string_arg};
use crate::segment::Segments;
use crate::segment::ast::{EventRef, Leaf};

/// Members a feature needs to be shown.
const MIN_MEMBERS: u64 = 30;
/// A profile column with more distinct values is not a feature.
const MAX_VALUES: i64 = 50;
const DAY_US: i64 = 86_400_000_000;

#[derive(Debug)]
pub struct SegmentRecommendations {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentRecommendations {
        segments: segments.clone(),
    })
}

/// What a definition reads: event names, and the text of its PROFILE predicates.
fn reads(definition: &str) -> (HashSet<String>, Vec<String>) {
    let (mut events, mut profile) = (HashSet::new(), Vec::new());
    let Ok(e) = crate::segment::parser::parse_expr(definition) else {
        return (events, profile);
    };
    let mut leaves = Vec::new();
    crate::segment::eval::walk_leaves(&e, &mut leaves);
    for l in leaves {
        match l {
            Leaf::Did { what, .. } => {
                if let EventRef::Named(n) = &what.event {
                    events.insert(n.clone());
                }
            }
            Leaf::Sequence { first, then, .. } => {
                for s in [first, then] {
                    if let EventRef::Named(n) = &s.event {
                        events.insert(n.clone());
                    }
                }
            }
            Leaf::Profile(sql) => profile.push(sql.text.to_ascii_lowercase()),
            _ => {}
        }
    }
    (events, profile)
}

/// Whether `column` appears as a word in any of the predicate texts.
fn mentioned(column: &str, texts: &[String]) -> bool {
    let c = column.to_ascii_lowercase();
    texts.iter().any(|t| {
        t.match_indices(&c).any(|(i, _)| {
            let word = |ch: Option<char>| ch.is_some_and(|x| x.is_ascii_alphanumeric() || x == '_');
            !word(t[..i].chars().next_back()) && !word(t[i + c.len()..].chars().next())
        })
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableFunctionImpl for SegmentRecommendations {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "segment_recommendations";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "{f}('segment' [, n]) takes a segment name and optionally how many rows"
            );
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let n = match exprs.get(1) {
            Some(e) => int_arg(f, "n", e)?,
            None => 10,
        };
        if !(1..=10_000).contains(&n) {
            return plan_err!("{f}: n must be between 1 and 10000");
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("feature", DataType::Utf8, false),
            Field::new("in_segment", DataType::UInt64, false),
            Field::new("overall", DataType::UInt64, false),
            Field::new("jaccard", DataType::Float64, false),
            Field::new("lift", DataType::Float64, false),
        ]));
        let out_schema = schema.clone();
        Ok(Arc::new(LazyTable {
            schema,
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let name = name.clone();
                let schema = out_schema.clone();
                Box::pin(async move {
                    let catalog = segments.catalog(&ctx).await?;
                    let def = catalog.require(&name)?.clone();
                    let members = segments.members(&ctx, &name).await?;
                    let universe = segments.universe(&ctx).await?;
                    let (read_events, read_profile) = reads(&def.definition);
                    let mut features: BTreeMap<String, RoaringBitmap> = BTreeMap::new();

                    // Event types in the 30 and 90 days before as_of (by each user's last one).
                    let (from, to) = (ctx.as_of - 90 * DAY_US, ctx.as_of);
                    let sql = format!(
                        "SELECT event, uid, CAST(max(ts) AS BIGINT) FROM events \
                         WHERE ts >= to_timestamp_micros({from}) AND ts < to_timestamp_micros({to}) \
                         GROUP BY event, uid"
                    );
                    for b in ctx.query(&sql).await? {
                        let ev = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
                        let ev = ev.as_string::<i32>();
                        let uid = arrow::compute::cast(b.column(1), &DataType::Int64)?;
                        let uid = uid.as_primitive::<Int64Type>();
                        let last = arrow::compute::cast(b.column(2), &DataType::Int64)?;
                        let last = last.as_primitive::<Int64Type>();
                        for i in 0..b.num_rows() {
                            if ev.is_null(i) || uid.is_null(i) || read_events.contains(ev.value(i))
                            {
                                continue;
                            }
                            let Ok(u) = u32::try_from(uid.value(i)) else {
                                continue;
                            };
                            features
                                .entry(format!("event:{}:90d", ev.value(i)))
                                .or_default()
                                .insert(u);
                            if last.value(i) >= to - 30 * DAY_US {
                                features
                                    .entry(format!("event:{}:30d", ev.value(i)))
                                    .or_default()
                                    .insert(u);
                            }
                        }
                    }

                    // Profile columns with few values.
                    let profiles = ctx.df.table("profiles").await?;
                    let columns: Vec<String> = profiles
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .filter(|c| {
                            !["user_id", "uid", "updated_at", "anonymous_id"].contains(&c.as_str())
                                && !c.ends_with("_sha256")
                                && !mentioned(c, &read_profile)
                        })
                        .collect();
                    if !columns.is_empty() {
                        let counts = ctx
                            .query(&format!(
                                "SELECT {} FROM profiles",
                                columns
                                    .iter()
                                    .map(|c| format!("count(DISTINCT {})", quoted(c)))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                            .await?;
                        for (k, c) in columns.iter().enumerate() {
                            let distinct = counts
                                .iter()
                                .find(|b| b.num_rows() > 0)
                                .map(|b| {
                                    arrow::compute::cast(b.column(k), &DataType::Int64)
                                        .map(|a| a.as_primitive::<Int64Type>().value(0))
                                        .unwrap_or(i64::MAX)
                                })
                                .unwrap_or(0);
                            if distinct == 0 || distinct > MAX_VALUES {
                                continue;
                            }
                            let sql = format!(
                                "SELECT uid, CAST({q} AS VARCHAR) FROM profiles WHERE {q} IS NOT NULL",
                                q = quoted(c)
                            );
                            for b in ctx.query(&sql).await? {
                                let uid = arrow::compute::cast(b.column(0), &DataType::Int64)?;
                                let uid = uid.as_primitive::<Int64Type>();
                                let v = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
                                let v = v.as_string::<i32>();
                                for i in 0..b.num_rows() {
                                    if uid.is_null(i) || v.is_null(i) {
                                        continue;
                                    }
                                    let Ok(u) = u32::try_from(uid.value(i)) else {
                                        continue;
                                    };
                                    features
                                        .entry(format!("profile:{c}={}", v.value(i)))
                                        .or_default()
                                        .insert(u);
                                }
                            }
                        }
                    }

                    // Score: only known users count (the universe), members among them.
                    let all = universe.len();
                    let size = members.len();
                    let mut rows: Vec<(String, u64, u64, f64, f64)> = features
                        .into_iter()
                        .filter_map(|(feature, mut users)| {
                            users &= &*universe;
                            let inside = users.intersection_len(&members);
                            if inside < MIN_MEMBERS {
                                return None;
                            }
                            let overall = users.len();
                            let union = users.union_len(&members);
                            let jaccard = inside as f64 / union as f64;
                            let lift =
                                (inside as f64 / size as f64) / (overall as f64 / all as f64);
                            Some((feature, inside, overall, jaccard, lift))
                        })
                        .collect();
                    rows.sort_by(|a, b| {
                        b.4.total_cmp(&a.4)
                            .then(b.1.cmp(&a.1))
                            .then_with(|| a.0.cmp(&b.0))
                    });
                    rows.truncate(n as usize);
                    let (mut fe, mut ins, mut ov, mut ja, mut li) = (
                        StringBuilder::new(),
                        UInt64Builder::new(),
                        UInt64Builder::new(),
                        Float64Builder::new(),
                        Float64Builder::new(),
                    );
                    for (f, i, o, j, l) in rows {
                        fe.append_value(f);
                        ins.append_value(i);
                        ov.append_value(o);
                        ja.append_value(j);
                        li.append_value(l);
                    }
                    Ok(vec![RecordBatch::try_new(
                        schema,
                        vec![
                            Arc::new(fe.finish()),
                            Arc::new(ins.finish()),
                            Arc::new(ov.finish()),
                            Arc::new(ja.finish()),
                            Arc::new(li.finish()),
                        ],
                    )?])
                })
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_definition_reads() {
        let (events, profile) = reads(
            "DID 'purchase' IN THE LAST 7 DAYS AND DID 'view' THEN 'cart' AND PROFILE country = 'DE'",
        );
        let mut e: Vec<_> = events.into_iter().collect();
        e.sort();
        assert_eq!(e, ["cart", "purchase", "view"]);
        assert!(mentioned("country", &profile));
        assert!(!mentioned("count", &profile));
        assert!(!mentioned("plan", &profile));
    }
}
