//! Compiling and evaluating a segment into a bitmap of user ordinals.
//!
//! Each leaf becomes a bitmap: `DID` with a plain (day-aligned) window and no `WHERE` comes from
//! the event index (summed bit-sliced day counts, then the frequency test); every other leaf runs
//! a DataFusion query that returns `uid`s. The boolean structure is bitmap algebra against the
//! universe (every known, non-erased user): AND chains start from the smallest operand and
//! subtract negated operands, `NOT x` is `universe − x`, identical leaves are computed once.
//! `FOR PURPOSE` intersects with the consent of every listed purpose.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;

use super::ast::*;
use super::catalog::SegmentDef;
use super::consent::purpose_query;
use super::sqlgen::{event_cond, ts_text, window_cond};
use crate::error::{Error, Result};
use crate::index::bsi::Bsi;
use crate::index::store::{DAY_US, EventIndex};

/// Everything an evaluation reads.
pub struct Evaluator<'a> {
    pub ctx: &'a SessionContext,
    pub universe: &'a RoaringBitmap,
    pub index: Option<&'a EventIndex>,
    pub defs: &'a HashMap<String, SegmentDef>,
    pub as_of: i64,
    memo: HashMap<String, RoaringBitmap>,
    stack: Vec<String>,
    /// EXPLAIN lines, when explaining.
    pub explain: Option<Vec<String>>,
    depth: usize,
    /// The segment service, for cached PROFILE leaves.
    pub service: Option<&'a super::Segments>,
}

/// Run a query whose first column is `uid` and collect it as a bitmap.
pub async fn uid_bitmap(ctx: &SessionContext, sql: &str) -> Result<RoaringBitmap> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut bm = RoaringBitmap::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &DataType::Int64)?;
        let c = c.as_primitive::<Int64Type>();
        for i in 0..c.len() {
            if c.is_valid(i) {
                if let Ok(u) = u32::try_from(c.value(i)) {
                    bm.insert(u);
                }
            }
        }
    }
    Ok(bm)
}

/// Per-user counts from a `uid, count` query, as a BSI.
async fn count_bsi(ctx: &SessionContext, sql: &str) -> Result<Bsi> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut counts = Vec::new();
    for b in batches {
        let u = arrow::compute::cast(b.column(0), &DataType::Int64)?;
        let u = u.as_primitive::<Int64Type>();
        let c = arrow::compute::cast(b.column(1), &DataType::Int64)?;
        let c = c.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if u.is_valid(i) {
                counts.push((u.value(i) as u32, c.value(i) as u64));
            }
        }
    }
    Ok(Bsi::from_counts(counts))
}

fn apply_freq(bsi: &Bsi, freq: Option<Freq>, universe: &RoaringBitmap) -> RoaringBitmap {
    match freq.unwrap_or(Freq::AtLeast(1)) {
        Freq::AtLeast(0) => universe.clone(),
        Freq::AtLeast(n) => bsi.at_least(n),
        Freq::AtMost(n) => universe - &bsi.greater_than(n),
        Freq::Exactly(0) => universe - &bsi.present(),
        Freq::Exactly(n) => bsi.equals(n),
        Freq::Between(a, b) => {
            let low = if a == 0 {
                universe.clone()
            } else {
                bsi.at_least(a)
            };
            &low - &bsi.greater_than(b)
        }
    }
}

fn freq_text(f: &Freq) -> String {
    match f {
        Freq::AtLeast(n) => format!("AT LEAST {n} TIMES"),
        Freq::AtMost(n) => format!("AT MOST {n} TIMES"),
        Freq::Exactly(n) => format!("EXACTLY {n} TIMES"),
        Freq::Between(a, b) => format!("BETWEEN {a} AND {b} TIMES"),
    }
}

fn window_text(w: &Window) -> String {
    match w {
        Window::Last(n, u) => format!("IN THE LAST {n} {}", u.word()),
        Window::Since(t) => format!("SINCE '{}'", ts_text(*t)),
        Window::Between(a, b) => format!("BETWEEN '{}' AND '{}'", ts_text(*a), ts_text(*b)),
    }
}

fn spec_text(s: &EventSpec) -> String {
    match &s.filter {
        Some(f) => format!("{} WHERE {}", s.event, f.text),
        None => s.event.to_string(),
    }
}

/// A canonical text of a leaf (positions left out), used to share identical leaves.
pub fn leaf_text(l: &Leaf) -> String {
    match l {
        Leaf::Profile(s) => format!("PROFILE {}", s.text),
        Leaf::Did {
            what, freq, window, ..
        } => {
            let mut t = format!("DID {}", spec_text(what));
            if let Some(f) = freq {
                t.push(' ');
                t.push_str(&freq_text(f));
            }
            if let Some(w) = window {
                t.push(' ');
                t.push_str(&window_text(w));
            }
            t
        }
        Leaf::Sequence {
            first,
            then,
            within,
            window,
            ..
        } => {
            let mut t = format!("DID {} THEN {}", spec_text(first), spec_text(then));
            if let Some((n, u)) = within {
                t.push_str(&format!(" WITHIN {n} {}", u.word()));
            }
            if let Some(w) = window {
                t.push(' ');
                t.push_str(&window_text(w));
            }
            t
        }
        Leaf::InSegment(n, _) => format!("IN SEGMENT {n}"),
        Leaf::UsersIn(q) => format!("USERS IN ({})", q.text),
        Leaf::AllUsers => "ALL USERS".into(),
    }
}

/// A DataFusion error inside a leaf, reported at the leaf's position with a hint.
fn leaf_error(e: impl std::fmt::Display, pos: Pos, what: &str) -> Error {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("").trim();
    Error::invalid(format!("{what} at {pos}: {first}"))
}

impl<'a> Evaluator<'a> {
    pub fn new(
        ctx: &'a SessionContext,
        universe: &'a RoaringBitmap,
        index: Option<&'a EventIndex>,
        defs: &'a HashMap<String, SegmentDef>,
        as_of: i64,
    ) -> Self {
        Evaluator {
            ctx,
            universe,
            index,
            defs,
            as_of,
            memo: HashMap::new(),
            stack: Vec::new(),
            explain: None,
            depth: 0,
            service: None,
        }
    }

    fn note(&mut self, line: String) {
        if let Some(lines) = self.explain.as_mut() {
            lines.push(format!("{}{line}", "  ".repeat(self.depth)));
        }
    }

    /// Evaluate a stored segment, consent filter included.
    pub async fn segment(&mut self, name: &str) -> Result<RoaringBitmap> {
        let def = self
            .defs
            .get(name)
            .ok_or_else(|| Error::invalid(format!("segment '{name}' does not exist")))?
            .clone();
        if self.stack.iter().any(|s| s == name) {
            return Err(Error::invalid(format!(
                "segment '{name}' refers to itself through IN SEGMENT ({} → {name})",
                self.stack.join(" → ")
            )));
        }
        self.stack.push(name.to_string());
        let expr = super::parser::parse_expr(&def.definition)
            .map_err(|e| Error::invalid(format!("segment '{name}': {e}")))?;
        let mut bm = Box::pin(self.eval(&expr)).await?;
        for p in &def.purposes {
            let consent = match self.service {
                Some(s) => s.purpose_holders(self.ctx, p, self.as_of).await?,
                None => {
                    let q = purpose_query(p, self.as_of).map_err(Error::invalid)?;
                    Arc::new(uid_bitmap(self.ctx, &q).await?)
                }
            };
            bm &= &*consent;
            self.note(format!(
                "FOR PURPOSE '{p}'  [consent as of {}]  holders {}",
                ts_text(self.as_of),
                consent.len()
            ));
        }
        self.stack.pop();
        Ok(bm)
    }

    /// Evaluate an expression.
    pub async fn eval(&mut self, e: &Expr) -> Result<RoaringBitmap> {
        match e {
            Expr::Leaf(l) => self.leaf(l).await,
            Expr::Not(x) => {
                self.note("NOT".into());
                self.depth += 1;
                let inner = Box::pin(self.eval(x)).await?;
                self.depth -= 1;
                Ok(self.universe - &inner)
            }
            Expr::Or(..) => {
                let mut parts = Vec::new();
                flatten_or(e, &mut parts);
                self.note(format!("OR ({} operands)", parts.len()));
                self.depth += 1;
                let mut out = RoaringBitmap::new();
                for p in parts {
                    out |= Box::pin(self.eval(p)).await?;
                }
                self.depth -= 1;
                Ok(out)
            }
            Expr::And(..) => {
                let mut parts = Vec::new();
                flatten_and(e, &mut parts);
                self.note(format!(
                    "AND ({} operands; smallest first, negations subtracted)",
                    parts.len()
                ));
                self.depth += 1;
                let mut pos = Vec::new();
                let mut neg = Vec::new();
                for p in parts {
                    match p {
                        Expr::Not(x) => {
                            self.note("NOT (subtracted)".into());
                            self.depth += 1;
                            neg.push(Box::pin(self.eval(x)).await?);
                            self.depth -= 1;
                        }
                        other => pos.push(Box::pin(self.eval(other)).await?),
                    }
                }
                self.depth -= 1;
                pos.sort_by_key(|b| b.len());
                let mut it = pos.into_iter();
                let mut acc = it.next().unwrap_or_else(|| self.universe.clone());
                for b in it {
                    if acc.is_empty() {
                        break;
                    }
                    acc &= b;
                }
                for n in neg {
                    acc -= n;
                }
                Ok(acc)
            }
        }
    }

    fn window_bounds(&self, w: Option<&Window>) -> (Option<i64>, i64) {
        match w {
            None => (None, self.as_of),
            Some(Window::Last(n, u)) => (
                Some(
                    self.as_of
                        .saturating_sub((*n as i64).saturating_mul(u.micros())),
                ),
                self.as_of,
            ),
            Some(Window::Since(t)) => (Some(*t), self.as_of),
            Some(Window::Between(a, b)) => (Some(*a), *b),
        }
    }

    async fn leaf(&mut self, l: &Leaf) -> Result<RoaringBitmap> {
        let key = leaf_text(l);
        if let Some(b) = self.memo.get(&key) {
            let b = b.clone();
            self.note(format!("{key}  [shared: computed once]  size {}", b.len()));
            return Ok(b);
        }
        let (bm, path) = match l {
            Leaf::AllUsers => (self.universe.clone(), "universe".to_string()),
            Leaf::Profile(sql) => {
                let versions = match self.service {
                    Some(s) => Some(s.profile_versions().await?),
                    None => None,
                };
                let cached = match (self.service, versions) {
                    (Some(s), Some(v)) => s.cached_profile(&sql.text, v).await,
                    _ => None,
                };
                match cached {
                    Some(bm) => (
                        bm & self.universe,
                        "profile bitmap cached for this profiles version".to_string(),
                    ),
                    None => {
                        let q = format!("SELECT uid FROM profiles WHERE ({})", sql.text);
                        let bm = uid_bitmap(self.ctx, &q)
                            .await
                            .map_err(|e| leaf_error(e, sql.pos, "PROFILE predicate"))?;
                        if let (Some(s), Some(v)) = (self.service, versions) {
                            s.store_profile(&sql.text, v, bm.clone()).await;
                        }
                        (bm & self.universe, "scan profiles".to_string())
                    }
                }
            }
            Leaf::Did {
                what,
                freq,
                window,
                pos,
            } => {
                let (lo, hi) = self.window_bounds(window.as_ref());
                let aligned =
                    lo.is_none_or(|lo| lo.rem_euclid(DAY_US) == 0) && hi.rem_euclid(DAY_US) == 0;
                let (bsi, path) = match self.index {
                    Some(idx) if what.filter.is_none() && aligned => {
                        let from = lo.map_or(i32::MIN, |lo| lo.div_euclid(DAY_US) as i32);
                        let to = hi.div_euclid(DAY_US) as i32;
                        let ev = match &what.event {
                            EventRef::Named(n) => Some(n.as_str()),
                            EventRef::Any => None,
                        };
                        let days = if lo.is_some() {
                            format!("{} days", (to as i64 - from as i64).max(0))
                        } else {
                            "all days".into()
                        };
                        (
                            idx.counts(ev, from, to),
                            format!("index: {days} of bit-sliced counts"),
                        )
                    }
                    _ => {
                        let q = format!(
                            "SELECT uid, count(*) FROM events WHERE ({}) AND {} GROUP BY uid",
                            event_cond(what),
                            window_cond(lo, hi)
                        );
                        let why = if what.filter.is_some() {
                            "WHERE"
                        } else if self.index.is_none() {
                            "index off"
                        } else {
                            "window not day-aligned"
                        };
                        (
                            count_bsi(self.ctx, &q)
                                .await
                                .map_err(|e| leaf_error(e, *pos, "DID leaf"))?,
                            format!("scan events ({why})"),
                        )
                    }
                };
                (apply_freq(&bsi, *freq, self.universe) & self.universe, path)
            }
            Leaf::Sequence {
                first,
                then,
                within,
                window,
                pos,
            } => {
                let (lo, hi) = self.window_bounds(window.as_ref());
                let w = window_cond(lo, hi);
                let q = match within {
                    None => format!(
                        "SELECT uid FROM (SELECT uid, min(ts) FILTER (WHERE {a}) AS fa, max(ts) FILTER (WHERE {b}) AS lb \
                         FROM events WHERE {w} AND (({a}) OR ({b})) GROUP BY uid) s WHERE fa < lb",
                        a = event_cond(first),
                        b = event_cond(then)
                    ),
                    Some((n, u)) => format!(
                        "SELECT DISTINCT x.uid FROM (SELECT uid, ts FROM events WHERE ({a}) AND {w}) x \
                         JOIN (SELECT uid, ts FROM events WHERE ({b}) AND {w}) y \
                         ON x.uid = y.uid AND x.ts < y.ts AND y.ts <= x.ts + arrow_cast({d}, 'Duration(Microsecond)')",
                        a = event_cond(first),
                        b = event_cond(then),
                        d = (*n as i64).saturating_mul(u.micros())
                    ),
                };
                let bm = uid_bitmap(self.ctx, &q)
                    .await
                    .map_err(|e| leaf_error(e, *pos, "sequence leaf"))?;
                (bm & self.universe, "scan events (sequence)".to_string())
            }
            Leaf::InSegment(name, pos) => {
                if !self.defs.contains_key(name) {
                    return Err(Error::invalid(format!(
                        "IN SEGMENT at {pos}: segment '{name}' does not exist{}",
                        suggest(name, self.defs.keys())
                    )));
                }
                self.note(format!("IN SEGMENT {name}"));
                self.depth += 1;
                let bm = Box::pin(self.segment(name)).await?;
                self.depth -= 1;
                (bm & self.universe, format!("segment {name}"))
            }
            Leaf::UsersIn(q) => {
                let df = self
                    .ctx
                    .sql(&q.text)
                    .await
                    .map_err(|e| leaf_error(e, q.pos, "USERS IN query"))?;
                let col = if df.schema().has_column_with_unqualified_name("user_id") {
                    "user_id"
                } else {
                    return Err(Error::invalid(format!(
                        "USERS IN query at {}: it must return a user_id column",
                        q.pos
                    )));
                };
                let sql = format!(
                    "SELECT i.uid FROM ({}) q JOIN identity i ON q.{col} = i.user_id",
                    q.text
                );
                (
                    uid_bitmap(self.ctx, &sql).await? & self.universe,
                    "query joined to identity".to_string(),
                )
            }
        };
        self.note(format!("{key}  [{path}]  size {}", bm.len()));
        self.memo.insert(key, bm.clone());
        Ok(bm)
    }
}

fn flatten_and<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::And(a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        other => out.push(other),
    }
}

fn flatten_or<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Or(a, b) => {
            flatten_or(a, out);
            flatten_or(b, out);
        }
        other => out.push(other),
    }
}

/// ", did you mean 'x'?" for the closest known name, if any is close.
pub fn suggest<'s>(name: &str, known: impl Iterator<Item = &'s String>) -> String {
    let best = known.map(|k| (strsim_distance(name, k), k)).min();
    match best {
        Some((d, k)) if d <= (name.len().max(3) / 2) => format!("; did you mean '{k}'?"),
        _ => String::new(),
    }
}

fn strsim_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (
        a.to_lowercase().chars().collect(),
        b.to_lowercase().chars().collect(),
    );
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Every identity row: (uid, pseudonym or None when forgotten).
pub async fn identity_rows(ctx: &SessionContext) -> Result<Vec<(u32, Option<String>)>> {
    let batches = ctx
        .sql("SELECT uid, user_id FROM identity")
        .await?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in batches {
        let u = arrow::compute::cast(b.column(0), &DataType::Int64)?;
        let u = u.as_primitive::<Int64Type>();
        let p = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
        let p = p.as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((
                u.value(i) as u32,
                p.is_valid(i).then(|| p.value(i).to_string()),
            ));
        }
    }
    Ok(out)
}
