//! Compiling and evaluating a segment into a bitmap of user ordinals.
//!
//! Each leaf becomes a bitmap: `DID` with a plain (day-aligned) window and no `WHERE` comes from
//! the event index (summed bit-sliced day counts, then the frequency test); every other leaf runs
//! embedded SQL (planned as an expression: no DDL, DML or statements) that returns `uid`s. The
//! boolean structure is bitmap algebra against the universe (every known, non-erased user): AND
//! chains start from the smallest operand and subtract negated operands, `NOT x` is
//! `universe − x`, identical leaves are computed once.
//!
//! `IN SEGMENT s` gives s's members with s's purposes applied; under a negation (`NOT IN
//! SEGMENT s`, at any depth) it gives s's members *before* its purposes, so a negation never
//! selects the users who withheld consent.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use roaring::RoaringBitmap;

use super::Segments;
use super::ast::*;
use super::catalog::{Catalog, SegmentDef};
use super::context::EvalCtx;
use super::sqlgen::{event_cond, ts_text, window_cond};
use super::stitch::{Canon, Relations};
use crate::bitmap::bsi::Bsi;
use crate::error::{Error, Result};
use crate::index::{DAY_US, EventIndex};

/// A segment's members at one time.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// Members before the purposes are applied.
    pub pre: RoaringBitmap,
    /// Members holding every purpose (what the segment means).
    pub post: RoaringBitmap,
    /// Of `post`, the holdout group of a segment with `HOLDOUT n PERCENT` (empty otherwise).
    pub holdout: RoaringBitmap,
    /// The snapshot version read, for a materialised segment read from its snapshot.
    pub version: Option<u64>,
}

impl Membership {
    /// What is activated: the members outside the holdout.
    pub fn target(&self) -> RoaringBitmap {
        &self.post - &self.holdout
    }
}

/// Run a query whose first column is `uid` and collect it as a bitmap.
pub async fn uid_bitmap(ctx: &EvalCtx, sql: &str) -> Result<RoaringBitmap> {
    let batches = ctx.query(sql).await?;
    let mut bm = RoaringBitmap::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &DataType::Int64)?;
        let c = c.as_primitive::<Int64Type>();
        for i in 0..c.len() {
            if c.is_valid(i)
                && let Ok(u) = u32::try_from(c.value(i))
            {
                bm.insert(u);
            }
        }
    }
    Ok(bm)
}

/// Per-user counts from a `uid, count` query, as a BSI.
async fn count_bsi(ctx: &EvalCtx, sql: &str) -> Result<Bsi> {
    let batches = ctx.query(sql).await?;
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
    counts.sort_unstable();
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

pub(crate) fn window_text(w: &Window) -> String {
    match w {
        Window::Last(n, u) => format!("IN THE LAST {n} {}", u.word()),
        Window::Since(t) => format!("SINCE '{}'", t.text()),
        Window::Between(a, b) => format!("BETWEEN '{}' AND '{}'", a.text(), b.text()),
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
        Leaf::Trait(s) => format!("TRAIT {}", s.text),
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
        Leaf::Lookalike(l) => {
            let mut t = format!("LOOKALIKE OF {}", l.seed);
            if let Some(w) = &l.within {
                t.push_str(&format!(" WITHIN {}", expr_text(w)));
            }
            t.push(' ');
            t.push_str(&match &l.size {
                LookalikeSize::Size(n) => format!("SIZE {n}"),
                LookalikeSize::TopPercent(p) => format!("TOP {p} PERCENT"),
                LookalikeSize::MinScore(s) => format!("MIN SCORE {s}"),
            });
            if l.excluding_seed {
                t.push_str(" EXCLUDING SEED");
            }
            t
        }
        Leaf::Interested {
            category,
            min_score,
            window,
            ..
        } => {
            let mut t = format!("INTERESTED IN '{}'", category.replace('\'', "''"));
            if let Some(m) = min_score {
                t.push_str(&format!(" MIN SCORE {m}"));
            }
            if let Some(w) = window {
                t.push(' ');
                t.push_str(&window_text(w));
            }
            t
        }
    }
}

/// An expression as text, every operand of AND/OR/NOT parenthesised.
pub fn expr_text(e: &Expr) -> String {
    match e {
        Expr::Leaf(l) => leaf_text(l),
        Expr::Not(x) => format!("NOT ({})", expr_text(x)),
        Expr::And(a, b) => format!("({}) AND ({})", expr_text(a), expr_text(b)),
        Expr::Or(a, b) => format!("({}) OR ({})", expr_text(a), expr_text(b)),
    }
}

/// A DataFusion error inside a leaf, reported at the leaf's position.
fn leaf_error(e: impl std::fmt::Display, pos: Pos, what: &str) -> Error {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("").trim();
    Error::invalid(format!("{what} at {pos}: {first}"))
}

/// An error planning the SQL segdb wrapped around the user's embedded SQL (`wrapper` holds
/// each of `parts` somewhere): a position DataFusion reports ("Line: L, Column: C" of the
/// wrapper) becomes the position in the user's own statement, or is dropped when it falls in
/// text the user never wrote.
fn embedded_error(
    e: impl std::fmt::Display,
    pos: Pos,
    what: &str,
    wrapper: &str,
    parts: &[&Sql],
) -> Error {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("").trim();
    let mapped = map_positions(first, wrapper, parts);
    Error::invalid(format!("{what} at {pos}: {mapped}"))
}

/// Rewrite every "Line: L, Column: C" of `msg` (a position in `wrapper`) as described at
/// [`embedded_error`].
fn map_positions(msg: &str, wrapper: &str, parts: &[&Sql]) -> String {
    const L: &str = "Line: ";
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find(L) {
        let after = &rest[i + L.len()..];
        let digits = |s: &str| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        };
        let line = digits(after);
        let tail = &after[line.len()..];
        let Some(tail) = tail.strip_prefix(", Column: ") else {
            out.push_str(&rest[..i + L.len()]);
            rest = after;
            continue;
        };
        let col = digits(tail);
        let (Ok(l), Ok(c)) = (line.parse::<usize>(), col.parse::<usize>()) else {
            out.push_str(&rest[..i + L.len()]);
            rest = after;
            continue;
        };
        // Where the reported position is, as a byte offset of the wrapper.
        let at = wrapper
            .split_inclusive('\n')
            .take(l.saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + wrapper
                .lines()
                .nth(l.saturating_sub(1))
                .and_then(|ln| ln.char_indices().nth(c.saturating_sub(1)).map(|(b, _)| b))
                .unwrap_or(0);
        let user = parts.iter().find_map(|p| {
            let start = wrapper.find(p.text.as_str())?;
            let rel = at.checked_sub(start).filter(|r| *r <= p.text.len())?;
            let before = &p.text[..rel];
            let tl = before.matches('\n').count();
            let tc = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            Some(if tl == 0 {
                Pos {
                    line: p.pos.line,
                    column: p.pos.column + tc as u64 - 1,
                }
            } else {
                Pos {
                    line: p.pos.line + tl as u64,
                    column: tc as u64,
                }
            })
        });
        let mut head = rest[..i].trim_end();
        if user.is_none() {
            head = head.trim_end_matches(" at").trim_end();
        }
        out.push_str(head);
        if let Some(u) = user {
            out.push(' ');
            out.push_str(&u.to_string());
        }
        rest = &tail[col.len()..];
    }
    out.push_str(rest);
    out
}

/// The length of `WITHIN n unit` in microseconds (the parser refuses months, the one unit
/// without a fixed length).
fn within_micros(&(n, u): &(u64, Unit)) -> i64 {
    (n as i64).saturating_mul(u.micros().unwrap_or(i64::MAX))
}

/// Window bounds `[lo, hi)` of a leaf at `as_of`.
pub fn window_bounds(w: Option<&Window>, as_of: i64) -> (Option<i64>, i64) {
    match w {
        None => (None, as_of),
        Some(Window::Last(n, u)) => (Some(crate::time::back(as_of, *n, u.span())), as_of),
        Some(Window::Since(t)) => (Some(t.resolve(as_of)), as_of),
        Some(Window::Between(a, b)) => (Some(a.resolve(as_of)), b.resolve(as_of)),
    }
}

/// Everything one evaluation reads.
pub struct Evaluator<'a> {
    pub ctx: EvalCtx,
    pub service: &'a Segments,
    pub catalog: &'a Catalog,
    pub universe: &'a RoaringBitmap,
    pub index: Option<&'a EventIndex>,
    memo: HashMap<String, RoaringBitmap>,
    segments: HashMap<String, Membership>,
    /// EXPLAIN lines, when explaining.
    pub explain: Option<Vec<String>>,
    depth: usize,
    /// Use cached PROFILE bitmaps (EXPLAIN turns it off to show the scan).
    pub cached_profiles: bool,
    /// The canonical map when evaluating over stitched profiles.
    canon: Option<Arc<Canon>>,
    rel: Relations,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        ctx: EvalCtx,
        service: &'a Segments,
        catalog: &'a Catalog,
        universe: &'a RoaringBitmap,
        index: Option<&'a EventIndex>,
        canon: Option<Arc<Canon>>,
    ) -> Self {
        Evaluator {
            rel: Relations {
                stitched: canon.is_some(),
            },
            canon,
            ctx,
            service,
            catalog,
            universe,
            index,
            memo: HashMap::new(),
            segments: HashMap::new(),
            explain: None,
            depth: 0,
            cached_profiles: true,
        }
    }

    fn note(&mut self, line: String) {
        if let Some(lines) = self.explain.as_mut() {
            lines.push(format!("{}{line}", "  ".repeat(self.depth)));
        }
    }

    /// A stored segment's membership at the evaluation's `as_of` (consent and erasure applied;
    /// a materialised segment from its snapshot unless `segdb.materialized = 'live'`).
    pub async fn segment(&mut self, name: &str) -> Result<Membership> {
        self.segment_read(name, true).await
    }

    /// A segment's membership evaluated from its definition, even when it is materialised (its
    /// dependencies still read their snapshots): what a refresh stores.
    pub async fn live(&mut self, name: &str) -> Result<Membership> {
        self.segment_read(name, false).await
    }

    async fn segment_read(&mut self, name: &str, snapshots: bool) -> Result<Membership> {
        if snapshots && let Some(m) = self.segments.get(name) {
            return Ok(m.clone());
        }
        let def = self.catalog.require(name)?.clone();
        let ctx = self.ctx.nested(&def.name)?;
        let purposes = def.purposes()?.to_vec();
        let stored = if snapshots {
            self.service.read_snapshot(&ctx, &def).await?
        } else {
            None
        };
        let m = match stored {
            Some(snap) => {
                self.note(format!(
                    "materialised: snapshot version {} (as of {}), current consent and erasure applied",
                    snap.version,
                    ts_text(snap.as_of)
                ));
                let pre = &snap.members & self.universe;
                let mut post = pre.clone();
                for p in &purposes {
                    let holders = self.service.consent_holders(&ctx, p, ctx.now()).await?;
                    post &= &*holders;
                }
                let holdout = &snap.holdout & &post;
                Membership {
                    pre,
                    post,
                    holdout,
                    version: Some(snap.version),
                }
            }
            None => {
                let expr = super::parser::parse_expr(&def.definition)
                    .map_err(|e| Error::invalid(format!("segment '{name}': {e}")))?;
                // Evaluate the definition in the nested context (cycles through SQL are refused).
                let saved = std::mem::replace(&mut self.ctx, ctx.clone());
                let pre = Box::pin(self.eval(&expr, false)).await;
                self.ctx = saved;
                let pre = pre?;
                let mut post = pre.clone();
                for p in &purposes {
                    let holders = self
                        .service
                        .consent_holders(&ctx, p, self.ctx.as_of)
                        .await?;
                    post &= &*holders;
                    self.note(format!(
                        "FOR PURPOSE '{p}'  [consent as of {}]  holders {}",
                        ts_text(self.ctx.as_of),
                        holders.len()
                    ));
                }
                let holdout = match def.holdout_percent {
                    Some(pct) => self.service.holdout_of(&ctx, &def, &post, pct).await?,
                    None => RoaringBitmap::new(),
                };
                Membership {
                    pre,
                    post,
                    holdout,
                    version: None,
                }
            }
        };
        if snapshots {
            self.segments.insert(name.to_string(), m.clone());
        }
        Ok(m)
    }

    /// Evaluate an expression; `negated` says whether it sits under an odd number of NOTs.
    pub async fn eval(&mut self, e: &Expr, negated: bool) -> Result<RoaringBitmap> {
        match e {
            Expr::Leaf(l) => self.leaf(l, negated).await,
            Expr::Not(x) => {
                self.note("NOT".into());
                self.depth += 1;
                let inner = Box::pin(self.eval(x, !negated)).await?;
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
                    out |= Box::pin(self.eval(p, negated)).await?;
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
                            neg.push(Box::pin(self.eval(x, !negated)).await?);
                            self.depth -= 1;
                        }
                        other => pos.push(Box::pin(self.eval(other, negated)).await?),
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

    async fn leaf(&mut self, l: &Leaf, negated: bool) -> Result<RoaringBitmap> {
        let mut key = leaf_text(l);
        if matches!(l, Leaf::InSegment(..)) && negated {
            key.push_str(" (before purposes)");
        }
        if let Leaf::Lookalike(_) = l {
            // Two look-alikes with one text differ by their purposes and models.
            key.push_str(&format!(
                " (segment {})",
                self.ctx.stack.last().map_or("", String::as_str)
            ));
        }
        if let Some(b) = self.memo.get(&key) {
            let b = b.clone();
            self.note(format!("{key}  [shared: computed once]  size {}", b.len()));
            return Ok(b);
        }
        let mut header_at = None;
        let (bm, path) = match l {
            Leaf::AllUsers => (self.universe.clone(), "universe".to_string()),
            Leaf::Profile(sql) => {
                let versions = self
                    .service
                    .profile_versions(&self.ctx, self.canon.as_deref());
                let cached = if self.cached_profiles {
                    self.service.cached_profile(&sql.text, versions)
                } else {
                    None
                };
                match cached {
                    Some(bm) => (
                        bm & self.universe,
                        "profile bitmap cached for this profiles version".to_string(),
                    ),
                    None => {
                        let q = format!(
                            "SELECT uid FROM {} WHERE ({})",
                            self.rel.profiles(),
                            sql.text
                        );
                        let bm = uid_bitmap(&self.ctx, &q).await.map_err(|e| {
                            embedded_error(e, sql.pos, "PROFILE predicate", &q, &[sql])
                        })?;
                        self.service.store_profile(&sql.text, versions, bm.clone());
                        (bm & self.universe, "scan profiles".to_string())
                    }
                }
            }
            Leaf::Trait(sql) => {
                let bm = self
                    .service
                    .trait_leaf(&self.ctx, &sql.text)
                    .await
                    .map_err(|e| leaf_error(e, sql.pos, "TRAIT predicate"))?;
                (bm & self.universe, "computed traits".to_string())
            }
            Leaf::Did {
                what,
                freq,
                window,
                pos,
            } => {
                let (lo, hi) = window_bounds(window.as_ref(), self.ctx.as_of);
                let from_index = match self.index {
                    Some(idx) if what.filter.is_none() => {
                        self.index_counts(idx, &what.event, lo, hi).await?
                    }
                    _ => None,
                };
                let (bsi, path) = match from_index {
                    Some((counts, path)) => match &self.canon {
                        Some(c) => (c.bsi(&counts), format!("{path}, summed per profile")),
                        None => (counts, path),
                    },
                    None => {
                        let q = format!(
                            "SELECT uid, count(*) FROM {} WHERE ({}) AND {} GROUP BY uid",
                            self.rel.events(),
                            event_cond(what),
                            window_cond(lo, hi)
                        );
                        let why = if what.filter.is_some() {
                            "WHERE"
                        } else if self.index.is_none() {
                            "index off"
                        } else {
                            "day timelines over the memory budget"
                        };
                        (
                            count_bsi(&self.ctx, &q).await.map_err(|e| {
                                let parts: Vec<&Sql> = what.filter.iter().collect();
                                embedded_error(e, *pos, "DID leaf", &q, &parts)
                            })?,
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
                let (lo, hi) = window_bounds(window.as_ref(), self.ctx.as_of);
                if let Some(idx) = self.index
                    && first.filter.is_none()
                    && then.filter.is_none()
                    && let Some(bm) = self
                        .sequence_from_timelines(
                            idx,
                            first,
                            then,
                            within.as_ref().map(within_micros),
                            lo,
                            hi,
                        )
                        .await?
                {
                    let bm = bm & self.universe;
                    let key = leaf_text(l);
                    self.note(format!(
                        "{key}  [index: day timelines of both events]  size {}",
                        bm.len()
                    ));
                    self.memo.insert(key, bm.clone());
                    return Ok(bm);
                }
                let w = window_cond(lo, hi);
                let ev = self.rel.events();
                let q = match within {
                    None => format!(
                        "SELECT uid FROM (SELECT uid, min(ts) FILTER (WHERE {a}) AS fa, max(ts) FILTER (WHERE {b}) AS lb \
                         FROM {ev} WHERE {w} AND (({a}) OR ({b})) GROUP BY uid) s WHERE fa < lb",
                        a = event_cond(first),
                        b = event_cond(then)
                    ),
                    Some(w_in) => format!(
                        "SELECT DISTINCT x.uid FROM (SELECT uid, ts FROM {ev} WHERE ({a}) AND {w}) x \
                         JOIN (SELECT uid, ts FROM {ev} WHERE ({b}) AND {w}) y \
                         ON x.uid = y.uid AND x.ts < y.ts AND y.ts <= x.ts + arrow_cast({d}, 'Duration(Microsecond)')",
                        a = event_cond(first),
                        b = event_cond(then),
                        d = within_micros(w_in)
                    ),
                };
                let bm = uid_bitmap(&self.ctx, &q).await.map_err(|e| {
                    let parts: Vec<&Sql> = first.filter.iter().chain(then.filter.iter()).collect();
                    embedded_error(e, *pos, "sequence leaf", &q, &parts)
                })?;
                (bm & self.universe, "scan events (sequence)".to_string())
            }
            Leaf::InSegment(name, pos) => {
                if self.catalog.get(name).is_none() {
                    return Err(Error::NotFound(format!(
                        "IN SEGMENT at {pos}: segment '{name}' does not exist{}",
                        suggest(name, self.catalog.segments.keys())
                    )));
                }
                // This leaf's own line goes above the lines of the segment it reads.
                header_at = self.explain.as_ref().map(Vec::len);
                self.depth += 1;
                let m = Box::pin(self.segment(name)).await?;
                self.depth -= 1;
                if negated {
                    // Excluding a segment excludes all of its members, consenting or not.
                    (
                        &(&m.pre | &m.holdout) & self.universe,
                        format!("segment {name}, before its purposes"),
                    )
                } else {
                    (&m.target() & self.universe, format!("segment {name}"))
                }
            }
            Leaf::Interested {
                category,
                min_score,
                window,
                pos,
            } => {
                let cat = crate::interests::resolve(category)
                    .map_err(|e| Error::NotFound(format!("INTERESTED IN at {pos}: {e}")))?;
                let window = window.unwrap_or(Window::Last(
                    crate::interests::DEFAULT_DAYS as u64,
                    super::ast::Unit::Day,
                ));
                let (lo, hi) = window_bounds(Some(&window), self.ctx.as_of);
                let lo = lo.unwrap_or(i64::MIN);
                let idx = self.service.interest_index(&self.ctx).await?;
                let t = crate::taxonomy::taxonomy();
                let days = crate::index::timeline::split(Some(lo), hi)
                    .whole
                    .map_or(0, |(a, b)| b - a);
                let parts = crate::index::timeline::split(Some(lo), hi).partial.len();
                let (bm, how) = match min_score {
                    None => {
                        let p = idx.present(cat, lo, hi);
                        let p = match &self.canon {
                            Some(c) => c.image(&p),
                            None => p,
                        };
                        (p, "any mapped event")
                    }
                    Some(m) if m.parse::<f64>().unwrap_or(0.0) <= 0.0 => {
                        // Every user's score is at least 0.
                        (self.universe.clone(), "every user scores at least 0")
                    }
                    Some(m) => {
                        let min: f64 = m.parse().unwrap_or(0.0);
                        let mut bm = RoaringBitmap::new();
                        let of = self.canon.clone().map(|c| move |u: u32| c.of(u));
                        let of = of.as_ref().map(|f| f as &dyn Fn(u32) -> u32);
                        for ((u, _), s) in crate::interests::scores(
                            &idx,
                            Some(cat),
                            None,
                            lo,
                            hi,
                            self.ctx.as_of,
                            of,
                        ) {
                            if s >= min {
                                bm.insert(u);
                            }
                        }
                        (bm, "decayed scores")
                    }
                };
                (
                    bm & self.universe,
                    format!(
                        "interest index: {} ({}), {days} whole days + {parts} partial day(s), {how}, half-life {}",
                        t.categories[cat as usize].id,
                        t.categories[cat as usize].path,
                        crate::interests::duration_text(idx.half_life_us)
                    ),
                )
            }
            Leaf::Lookalike(l) => {
                header_at = self.explain.as_ref().map(Vec::len);
                Box::pin(self.lookalike_leaf(l)).await?
            }
            Leaf::UsersIn(q) => {
                let df = self
                    .ctx
                    .plan(&q.text)
                    .await
                    .map_err(|e| leaf_error(e, q.pos, "USERS IN query"))?;
                if !df.schema().has_column_with_unqualified_name("user_id") {
                    return Err(Error::invalid(format!(
                        "USERS IN query at {}: it must return a user_id column",
                        q.pos
                    )));
                }
                let ids = self.service.identity(&self.ctx).await?;
                let batches = df.select_columns(&["user_id"])?.collect().await?;
                let mut bm = RoaringBitmap::new();
                for b in batches {
                    let s = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
                    let s = s.as_string::<i32>();
                    for i in 0..s.len() {
                        if s.is_valid(i)
                            && let Some(u) = ids.by_pseudonym.get(s.value(i))
                        {
                            bm.insert(self.canon.as_ref().map_or(*u, |c| c.of(*u)));
                        }
                    }
                }
                (
                    bm & self.universe,
                    "query mapped through identity".to_string(),
                )
            }
        };
        let line = format!("{key}  [{path}]  size {}", bm.len());
        match (header_at, self.explain.as_mut()) {
            (Some(at), Some(lines)) => {
                lines.insert(at, format!("{}{line}", "  ".repeat(self.depth)))
            }
            _ => self.note(line),
        }
        self.memo.insert(key, bm.clone());
        Ok(bm)
    }
}

impl Evaluator<'_> {
    /// A look-alike (DESIGN §17): the seed's and WITHIN's members, then training or the cached
    /// model, then the audience (see [`crate::lookalike`]). Apart from [`Evaluator::leaf`], so
    /// that every other leaf's future stays small.
    async fn lookalike_leaf(&mut self, l: &Lookalike) -> Result<(RoaringBitmap, String)> {
        let key = leaf_text(&Leaf::Lookalike(Box::new(l.clone())));
        let Some(name) = self.ctx.stack.last().cloned() else {
            return Err(Error::invalid(
                "a look-alike is a segment of its own: CREATE SEGMENT name AS LOOKALIKE OF seed …",
            ));
        };
        if self.catalog.get(&l.seed).is_none() {
            return Err(Error::NotFound(format!(
                "LOOKALIKE OF at {}: segment '{}' does not exist{}",
                l.pos,
                l.seed,
                suggest(&l.seed, self.catalog.segments.keys())
            )));
        }
        self.depth += 1;
        // The seed's members with its purposes, its holdout included (held out of activation,
        // still members).
        let seed = Box::pin(self.segment(&l.seed)).await?.post & self.universe;
        let mut eligible = match &l.within {
            Some(w) => Box::pin(self.eval(w, false)).await? & self.universe,
            None => self.universe.clone(),
        };
        self.depth -= 1;
        // Only users holding the look-alike's purposes are trained on or scored.
        let purposes = self
            .catalog
            .get(&name)
            .map(|d| d.purposes().map(<[String]>::to_vec))
            .transpose()?
            .unwrap_or_default();
        let mut seed = seed;
        for p in &purposes {
            let holders = self
                .service
                .consent_holders(&self.ctx, p, self.ctx.as_of)
                .await?;
            eligible &= &*holders;
            seed &= &*holders;
        }
        let reads = super::features::reads_of(self.catalog, &l.seed);
        let mut features = super::features::collect(self.service, &self.ctx, &reads).await?;
        if let Some(c) = &self.canon {
            for b in features.values_mut() {
                *b = c.image(b);
            }
        }
        let definition = self
            .catalog
            .get(&name)
            .map_or_else(|| key.clone(), |d| d.definition.clone());
        let out = crate::lookalike::evaluate(
            &self.service.lookalikes,
            super::lookalike::key_of(
                &self.ctx,
                self.catalog,
                &name,
                &definition,
                crate::storage::settings::Settings::read(self.service.db())
                    .await?
                    .half_life_us(),
            ),
            crate::lookalike::Inputs {
                name: &name,
                take: super::lookalike::take_of(&l.size),
                excluding_seed: l.excluding_seed,
                seed: &seed,
                eligible: &eligible,
                features: &features,
            },
        )?;
        let m = &out.model;
        let path = format!(
            "look-alike model {}: {} seed members (20 % held out) against {} sampled users, {} features, AUC {}; scored {} eligible users",
            if out.trained {
                "trained now"
            } else {
                "cached for these table versions"
            },
            m.seed_size,
            m.sample_size,
            m.names.len(),
            m.auc.map_or("n/a".to_string(), |a| format!("{a:.3}")),
            out.eligible
        );
        Ok((out.audience & self.universe, path))
    }

    /// Per-user counts of `event` in `[lo, hi)` from the index: whole days from the per-day
    /// counts, the partial days at either edge from the day timelines. `None` when the
    /// timelines would not fit their memory budget.
    async fn index_counts(
        &self,
        idx: &EventIndex,
        event: &EventRef,
        lo: Option<i64>,
        hi: i64,
    ) -> Result<Option<(Bsi, String)>> {
        use crate::index::timeline::{counts_in, split};
        let sp = split(lo, hi);
        let ev = match event {
            EventRef::Named(n) => Some(n.as_str()),
            EventRef::Any => None,
        };
        let mut counts = match sp.whole {
            Some((a, b)) => idx.counts(ev, a, b),
            None => Bsi::default(),
        };
        let whole = match sp.whole {
            Some((i32::MIN, _)) => "all whole days".to_string(),
            Some((a, b)) => format!("{} whole days", b - a),
            None => "no whole day".to_string(),
        };
        if sp.partial.is_empty() {
            return Ok(Some((
                counts,
                format!("index: {whole} of bit-sliced counts"),
            )));
        }
        let names: Vec<String> = match ev {
            Some(n) => vec![n.to_string()],
            None => idx.event_names(),
        };
        let keys: Vec<(String, i32)> = sp
            .partial
            .iter()
            .flat_map(|(a, _)| {
                let day = a.div_euclid(DAY_US) as i32;
                names.iter().map(move |n| (n.clone(), day))
            })
            .collect();
        let Some(tl) = self.service.timelines(&self.ctx, &keys, idx).await? else {
            return Ok(None);
        };
        for (a, b) in &sp.partial {
            let day = a.div_euclid(DAY_US) as i32;
            let parts: Vec<&crate::index::timeline::Timeline> = names
                .iter()
                .filter_map(|n| tl.get(&(n.clone(), day)).map(|t| t.as_ref()))
                .collect();
            counts.add(&counts_in(&parts, *a, *b));
        }
        Ok(Some((
            counts,
            format!(
                "index: {whole} of bit-sliced counts + {} partial day(s) from day timelines",
                sp.partial.len()
            ),
        )))
    }

    /// `DID a THEN b [WITHIN d]` over `[lo, hi)` from the day timelines of both events: users
    /// with both events in the window first (from the per-day counts), then their occurrences
    /// grouped per profile and checked in time order. `None` when that would not fit the
    /// timeline budget, or the window is unbounded.
    async fn sequence_from_timelines(
        &self,
        idx: &EventIndex,
        first: &EventSpec,
        then: &EventSpec,
        within: Option<i64>,
        lo: Option<i64>,
        hi: i64,
    ) -> Result<Option<RoaringBitmap>> {
        use crate::index::timeline::days_of;
        let Some(lo) = lo else { return Ok(None) };
        if lo >= hi {
            return Ok(Some(RoaringBitmap::new()));
        }
        let days = days_of(lo, hi);
        if days.len() > 400 {
            return Ok(None);
        }
        let names = |e: &EventRef| -> Vec<String> {
            match e {
                EventRef::Named(n) => vec![n.clone()],
                EventRef::Any => idx.event_names(),
            }
        };
        let (na, nb) = (names(&first.event), names(&then.event));
        // Users who did both somewhere in the touched days (a superset of the answer).
        let present = |ns: &[String]| {
            let mut b = RoaringBitmap::new();
            for n in ns {
                b |= idx.counts(Some(n), days.start, days.end).present();
            }
            b
        };
        let mut cand = present(&na);
        cand &= present(&nb);
        if let Some(c) = &self.canon {
            // Stitched: a profile may have `a` under one id and `b` under another.
            let both = &c.image(&present(&na)) & &c.image(&present(&nb));
            cand = c.expand(&both);
        }
        if cand.is_empty() {
            return Ok(Some(RoaringBitmap::new()));
        }
        let mut keys: Vec<(String, i32)> = Vec::new();
        for n in na.iter().chain(nb.iter()) {
            for d in days.clone() {
                keys.push((n.clone(), d));
            }
        }
        keys.sort();
        keys.dedup();
        let Some(tl) = self.service.timelines(&self.ctx, &keys, idx).await? else {
            return Ok(None);
        };
        let canon = self.canon.clone();
        let collect = |ns: &[String]| -> Vec<(u32, i64)> {
            let mut out = Vec::new();
            for d in days.clone() {
                // Day by day, each day in time order: per user the result stays time-ordered
                // for one event; several events (ANY EVENT) or stitched ids are re-sorted.
                for n in ns {
                    if let Some(t) = tl.get(&(n.clone(), d)) {
                        for i in t.range(lo, hi) {
                            let u = t.uid[i];
                            if cand.contains(u) {
                                let u = canon.as_ref().map_or(u, |c| c.of(u));
                                out.push((u, t.ts[i]));
                            }
                        }
                    }
                }
            }
            out
        };
        let (a, b) = (collect(&na), collect(&nb));
        let ordered = self.canon.is_none() && na.len() == 1 && nb.len() == 1;
        Ok(Some(crate::index::timeline::sequences(
            &a, &b, within, ordered,
        )))
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

/// Every leaf of an expression (a look-alike's, then those of its WITHIN).
pub fn walk_leaves<'e>(e: &'e Expr, out: &mut Vec<&'e Leaf>) {
    match e {
        Expr::Leaf(l @ Leaf::Lookalike(x)) => {
            out.push(l);
            if let Some(w) = &x.within {
                walk_leaves(w, out);
            }
        }
        Expr::Leaf(l) => out.push(l),
        Expr::Not(x) => walk_leaves(x, out),
        Expr::And(a, b) | Expr::Or(a, b) => {
            walk_leaves(a, out);
            walk_leaves(b, out);
        }
    }
}

/// The segments a definition names with IN SEGMENT.
pub fn dependencies(def: &SegmentDef) -> Vec<String> {
    let Ok(e) = super::parser::parse_expr(&def.definition) else {
        return Vec::new();
    };
    let mut leaves = Vec::new();
    walk_leaves(&e, &mut leaves);
    leaves
        .into_iter()
        .filter_map(|l| match l {
            Leaf::InSegment(n, _) => Some(n.clone()),
            Leaf::Lookalike(l) => Some(l.seed.clone()),
            _ => None,
        })
        .collect()
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

/// The pseudonym ⇄ ordinal map of one identity version.
#[derive(Debug, Default)]
pub struct IdentityMap {
    pub by_uid: Vec<Option<Arc<str>>>,
    pub by_pseudonym: HashMap<Arc<str>, u32>,
}

impl IdentityMap {
    pub fn from_rows(rows: Vec<(u32, Option<String>)>) -> IdentityMap {
        let mut m = IdentityMap::default();
        for (uid, p) in rows {
            let Some(p) = p else { continue };
            let uid = uid as usize;
            if m.by_uid.len() <= uid {
                m.by_uid.resize(uid + 1, None);
            }
            let s: Arc<str> = p.into();
            m.by_uid[uid] = Some(s.clone());
            m.by_pseudonym.insert(s, uid as u32);
        }
        m
    }

    /// The pseudonym of an ordinal.
    pub fn pseudonym(&self, uid: u32) -> Option<&str> {
        self.by_uid.get(uid as usize).and_then(|p| p.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_in_wrapper_sql_become_positions_in_the_users_text() {
        // The user wrote `CREATE SEGMENT s AS PROFILE country = = 'DE'`: the predicate starts at
        // line 1, column 29; its second `=` is at column 39 of the user's text.
        let sql = Sql {
            text: "country = = 'DE'".into(),
            pos: Pos {
                line: 1,
                column: 29,
            },
        };
        let wrapper = format!("SELECT uid FROM profiles WHERE ({})", sql.text);
        let col = wrapper.find("= =").unwrap() + 3; // the second '=' (1-based)
        let msg = format!(
            "sql parser error: Expected: an expression, found: = at Line: 1, Column: {col}"
        );
        let mapped = map_positions(&msg, &wrapper, &[&sql]);
        assert_eq!(
            mapped,
            "sql parser error: Expected: an expression, found: = at line 1, column 39"
        );
        // A position in text the user never wrote is dropped, not reported.
        let msg = "sql parser error: Expected: ), found: EOF at Line: 1, Column: 3";
        assert_eq!(
            map_positions(msg, &wrapper, &[&sql]),
            "sql parser error: Expected: ), found: EOF"
        );
        // A predicate over several lines.
        let sql = Sql {
            text: "a = 1\n  AND b = = 2".into(),
            pos: Pos {
                line: 2,
                column: 10,
            },
        };
        let wrapper = format!("SELECT uid FROM p WHERE ({})", sql.text);
        let msg = "found: = at Line: 2, Column: 11";
        assert_eq!(
            map_positions(msg, &wrapper, &[&sql]),
            "found: = at line 3, column 11"
        );
    }
}
