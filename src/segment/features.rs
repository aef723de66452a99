//! The per-user binary facts that recommendations and look-alikes read (DESIGN §17): each event
//! type done in the last 30 and in the last 90 days before `as_of` (`event:<name>:30d`,
//! `event:<name>:90d`), each interest category with a mapped event in the last 30 days
//! (`interest:<id>`), and each value of a profile column with at most 50 distinct values
//! (`profile:<column>=<value>`; hashed match keys left out) — minus what a segment's own
//! definition reads (its events, its profile columns, its categories with their ancestors and
//! descendants), so a model never learns the definition back. Features are bitmaps over user
//! ordinals from the statement's snapshot.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::segment::ast::{EventRef, Leaf};
use crate::segment::{EvalCtx, Segments};

/// A profile column with more distinct values is not a feature.
pub const MAX_VALUES: i64 = 50;
const DAY_US: i64 = 86_400_000_000;

/// What a definition reads.
#[derive(Debug, Default)]
pub struct Reads {
    pub events: HashSet<String>,
    /// The text of its PROFILE predicates, lower-cased.
    pub profile: Vec<String>,
    /// Taxonomy positions of its INTERESTED IN categories.
    pub categories: Vec<u32>,
}

/// What a definition reads: event names, the text of its PROFILE predicates, its categories.
pub fn reads(definition: &str) -> Reads {
    let mut r = Reads::default();
    let Ok(e) = crate::segment::parser::parse_expr(definition) else {
        return r;
    };
    let mut leaves = Vec::new();
    crate::segment::eval::walk_leaves(&e, &mut leaves);
    for l in leaves {
        match l {
            Leaf::Did { what, .. } => {
                if let EventRef::Named(n) = &what.event {
                    r.events.insert(n.clone());
                }
            }
            Leaf::Sequence { first, then, .. } => {
                for s in [first, then] {
                    if let EventRef::Named(n) = &s.event {
                        r.events.insert(n.clone());
                    }
                }
            }
            Leaf::Profile(sql) => r.profile.push(sql.text.to_ascii_lowercase()),
            Leaf::Interested { category, .. } => {
                if let Ok(c) = crate::interests::resolve(category) {
                    r.categories.push(c);
                }
            }
            _ => {}
        }
    }
    r
}

/// What segment `name` reads, through the segments it names with `IN SEGMENT` (and a
/// look-alike's seed), so that a seed defined as `IN SEGMENT crm` still hides `crm`'s list.
pub fn reads_of(catalog: &crate::segment::catalog::Catalog, name: &str) -> Reads {
    let mut out = Reads::default();
    let mut todo = vec![name.to_string()];
    let mut seen = HashSet::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let Some(def) = catalog.get(&n) else { continue };
        let r = reads(&def.definition);
        out.events.extend(r.events);
        out.profile.extend(r.profile);
        out.categories.extend(r.categories);
        todo.extend(crate::segment::eval::dependencies(def));
    }
    out
}

/// Whether `column` appears as a word in any of the predicate texts.
pub fn mentioned(column: &str, texts: &[String]) -> bool {
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

/// Whether category `c` is one of `read`, or an ancestor or descendant of one.
fn related(c: u32, read: &[u32]) -> bool {
    let t = crate::taxonomy::taxonomy();
    let chain = t.chain(c as usize);
    read.iter()
        .any(|r| chain.contains(r) || t.chain(*r as usize).contains(&c))
}

/// Every feature at the context's `as_of`, by name, without what `reads` names.
pub async fn collect(
    segments: &Segments,
    ctx: &EvalCtx,
    reads: &Reads,
) -> Result<BTreeMap<String, RoaringBitmap>> {
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
            if ev.is_null(i) || uid.is_null(i) || reads.events.contains(ev.value(i)) {
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
                && !mentioned(c, &reads.profile)
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

    // Interest categories with a mapped event in the last 30 days.
    let idx = segments.interest_index(ctx).await?;
    if !idx.days.is_empty() {
        let t = crate::taxonomy::taxonomy();
        let (lo, hi) = (ctx.as_of - 30 * DAY_US, ctx.as_of);
        let mut cats: Vec<u32> = idx
            .days
            .range((lo.div_euclid(DAY_US) as i32)..=(hi.div_euclid(DAY_US) as i32))
            .flat_map(|(_, d)| d.aggs.keys().copied())
            .collect();
        cats.sort_unstable();
        cats.dedup();
        for c in cats {
            if related(c, &reads.categories) {
                continue;
            }
            let users = idx.present(c, lo, hi);
            if !users.is_empty() {
                features.insert(format!("interest:{}", t.categories[c as usize].id), users);
            }
        }
    }
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_definition_reads() {
        let r = reads(
            "DID 'purchase' IN THE LAST 7 DAYS AND DID 'view' THEN 'cart' AND PROFILE country = 'DE' AND INTERESTED IN 'Dogs'",
        );
        let mut e: Vec<_> = r.events.into_iter().collect();
        e.sort();
        assert_eq!(e, ["cart", "purchase", "view"]);
        assert!(mentioned("country", &r.profile));
        assert!(!mentioned("count", &r.profile));
        assert!(!mentioned("plan", &r.profile));
        let t = crate::taxonomy::taxonomy();
        let pos = |id: &str| t.position(id).unwrap() as u32;
        assert_eq!(r.categories, [pos("content:425")]);
        // Dogs' parent (Pets) and Dogs itself are related; Cats (a sibling) is not.
        assert!(related(pos("content:422"), &r.categories));
        assert!(related(pos("content:425"), &r.categories));
        assert!(!related(pos("content:1"), &r.categories));
    }
}
