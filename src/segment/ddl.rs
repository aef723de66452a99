//! Segment statements: CREATE / DROP / ALTER SEGMENT, SHOW SEGMENTS, DESCRIBE and EXPLAIN
//! SEGMENT. Definitions are checked before anything is stored — purposes, event names, embedded
//! SQL (compiled once), cycles — and refused when they name an individual user: a definition is
//! stored verbatim and would keep an id at rest that no FORGET removes.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sqlparser::tokenizer::{Token, Tokenizer};

use super::ast::{AlterSegment, CreateSegment, EventRef, Expr, Leaf, Refresh};
use super::catalog::{self, Catalog, DEFAULT_KEEP, DEFAULT_KEEP_LIVE, SegmentDef};
use super::eval::{Evaluator, suggest, walk_leaves};
use super::{EvalCtx, Segments, consent, sqlgen};
use crate::error::{Error, Result};
use crate::index::EventIndex;
use crate::result::QueryResult;

pub(crate) fn result(schema: SchemaRef, cols: Vec<ArrayRef>) -> Result<QueryResult> {
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    Ok(QueryResult {
        schema,
        batches: vec![batch],
    })
}

pub(crate) fn empty() -> QueryResult {
    QueryResult {
        schema: Arc::new(Schema::empty()),
        batches: vec![],
    }
}

fn ts_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

/// The embedded SQL of an expression's leaves.
fn embedded_sql(e: &Expr) -> Vec<&str> {
    let mut leaves = Vec::new();
    walk_leaves(e, &mut leaves);
    let mut out = Vec::new();
    for l in leaves {
        match l {
            Leaf::Profile(s) | Leaf::UsersIn(s) | Leaf::Trait(s) => out.push(s.text.as_str()),
            Leaf::Did { what, .. } => out.extend(what.filter.as_ref().map(|f| f.text.as_str())),
            Leaf::Sequence { first, then, .. } => {
                out.extend(first.filter.as_ref().map(|f| f.text.as_str()));
                out.extend(then.filter.as_ref().map(|f| f.text.as_str()));
            }
            Leaf::InSegment(..) | Leaf::AllUsers | Leaf::Interested { .. } | Leaf::Lookalike(_) => {
            }
        }
    }
    out
}

/// Every `INTERESTED IN` names a category of the taxonomy.
fn check_categories(e: &Expr) -> Result<()> {
    let mut leaves = Vec::new();
    walk_leaves(e, &mut leaves);
    for l in leaves {
        if let Leaf::Interested { category, pos, .. } = l {
            crate::interests::resolve(category)
                .map_err(|e| Error::NotFound(format!("INTERESTED IN at {pos}: {e}")))?;
        }
    }
    Ok(())
}

/// Refuse individual ids in text that will be stored: a pseudonym literal, or `pseudonymize`,
/// `hash_email` or `hash_phone` of a literal. Returns the reason.
pub fn individual_id(sql: &str) -> Option<&'static str> {
    let dialect = sqlparser::dialect::GenericDialect {};
    let toks: Vec<Token> = Tokenizer::new(&dialect, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::SingleQuotedString(s) if crate::privacy::pseudonym::is_pseudonym(s) => {
                return Some("a pseudonym literal");
            }
            Token::Word(w)
                if ["pseudonymize", "hash_email", "hash_phone"]
                    .iter()
                    .any(|f| w.value.eq_ignore_ascii_case(f))
                    && toks.get(i + 1) == Some(&Token::LParen)
                    && matches!(toks.get(i + 2), Some(Token::SingleQuotedString(_))) =>
            {
                return Some("an id computed from a literal");
            }
            _ => {}
        }
    }
    None
}

fn refuse_individuals(e: &Expr) -> Result<()> {
    for sql in embedded_sql(e) {
        if let Some(what) = individual_id(sql) {
            return Err(Error::invalid(format!(
                "a segment definition may not name an individual user ({what}): definitions are stored verbatim and would keep that id after a FORGET. To target a list of users, load it as a table or a profile attribute and use USERS IN (SELECT user_id FROM …) or PROFILE <attribute>"
            )));
        }
    }
    Ok(())
}

/// Unknown event names are errors (with the closest known name) once events exist.
fn check_events(e: &Expr, index: &EventIndex) -> Result<()> {
    let known = index.event_names();
    if known.is_empty() {
        return Ok(());
    }
    let mut leaves = Vec::new();
    walk_leaves(e, &mut leaves);
    for l in leaves {
        let (specs, pos) = match l {
            Leaf::Did { what, pos, .. } => (vec![what], *pos),
            Leaf::Sequence {
                first, then, pos, ..
            } => (vec![first, then], *pos),
            _ => continue,
        };
        for s in specs {
            if let EventRef::Named(n) = &s.event
                && !known.iter().any(|k| k == n)
            {
                return Err(Error::invalid(format!(
                    "DID at {pos}: no event named '{n}' has been ingested{}",
                    suggest(n, known.iter())
                )));
            }
        }
    }
    Ok(())
}

fn size_result(name: &str, size: u64) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("segment", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
    ]));
    result(
        schema,
        vec![
            Arc::new(StringArray::from(vec![name.to_string()])),
            Arc::new(UInt64Array::from(vec![size])),
        ],
    )
}

impl Segments {
    /// `CREATE [OR REPLACE] [MATERIALIZED] SEGMENT`. Returns the stored definition and the
    /// live size it was checked with (`None` when it already existed and IF NOT EXISTS kept it).
    pub async fn create(
        &self,
        ctx: &EvalCtx,
        c: &CreateSegment,
    ) -> Result<(SegmentDef, Option<u64>)> {
        let catalog = self.catalog(ctx).await?;
        if let Some(existing) = catalog.get(&c.name)
            && existing.name == c.name
            && c.if_not_exists
        {
            return Ok((existing.clone(), None));
        }
        if catalog.get(&c.name).is_some_and(|d| d.name == c.name) && !c.or_replace {
            return Err(Error::invalid(format!(
                "segment '{}' already exists; use CREATE OR REPLACE SEGMENT or DROP SEGMENT first",
                c.name
            )));
        }
        for p in &c.purposes {
            consent::purpose_query(p, ctx.as_of).map_err(Error::invalid)?;
        }
        for p in unseen_purposes(ctx, &c.purposes).await? {
            // Valid, but nobody can hold it yet: say so rather than size 0 in silence.
            tracing::warn!(
                "segment '{}': no consent record names purpose '{p}' yet, so nobody holds it and the segment is empty until one does (purposes are case-sensitive; explicit ones come from the consent table's purpose column)",
                c.name
            );
        }
        refuse_individuals(&c.expr)?;
        let universe = self.universe(ctx).await?;
        let index = self.index(ctx).await?;
        check_events(&c.expr, &index)?;
        check_categories(&c.expr)?;
        if c.holdout_percent.is_some() && c.purposes.is_empty() {
            // Fine: a holdout does not need a purpose; noted for clarity.
        }
        let def = SegmentDef {
            name: c.name.clone(),
            definition: c.definition.clone(),
            purposes: Ok(c.purposes.clone()),
            comment: c.comment.clone(),
            materialized: c.materialized,
            refresh: if c.materialized {
                Some(c.refresh.clone().unwrap_or(Refresh::Manual))
            } else {
                None
            },
            created_at: ctx.now(),
            keep_versions: c
                .keep_versions
                .unwrap_or(if c.refresh == Some(Refresh::Live) {
                    DEFAULT_KEEP_LIVE
                } else {
                    DEFAULT_KEEP
                }),
            holdout_percent: c.holdout_percent,
            generation: uuid::Uuid::new_v4().to_string(),
        };
        // Compile once against the catalog as it will be: checks every embedded predicate and
        // query, and refuses cycles through IN SEGMENT.
        let mut next = Catalog {
            segments: catalog.segments.clone(),
        };
        next.segments.insert(def.name.clone(), def.clone());
        let size = {
            let live = ctx.clone();
            let mut opts_live = live.clone();
            opts_live.opts.materialized = super::options::Materialized::Live;
            let use_index = ctx.opts.use_index.then_some(&*index);
            let canon = self.canonical(ctx).await?;
            let mut ev = Evaluator::new(opts_live, self, &next, &universe, use_index, canon);
            if !matches!(&c.expr, Expr::Leaf(Leaf::Lookalike(_))) {
                // (A look-alike is evaluated as the segment it is: it trains in its context.)
                ev.eval(&c.expr, false).await?;
            }
            ev.segment(&def.name).await?.target().len()
        };
        let stored = def.clone();
        let (or_replace, if_not_exists) = (c.or_replace, c.if_not_exists);
        let kept = catalog::update(self.db(), move |defs| {
            if let Some(existing) = defs.get(&stored.name) {
                if if_not_exists {
                    return Ok(Some(existing.clone()));
                }
                if !or_replace {
                    return Err(Error::invalid(format!(
                        "segment '{}' already exists; use CREATE OR REPLACE SEGMENT or DROP SEGMENT first",
                        stored.name
                    )));
                }
            }
            defs.insert(stored.name.clone(), stored.clone());
            Ok(None)
        })
        .await?;
        Ok(match kept {
            Some(existing) => (existing, None),
            None => (def, Some(size)),
        })
    }

    /// `segment_size_of('expr')`: how many users an unsaved segment expression selects at
    /// `ctx`'s `as_of` (the console's editor sizes what it holds), checked as CREATE SEGMENT
    /// checks a definition. Parse errors carry their position in `src`.
    pub async fn size_of_expr(&self, ctx: &EvalCtx, src: &str) -> Result<u64> {
        let expr = super::parser::parse_expr(src).map_err(|e| Error::invalid(e.to_string()))?;
        refuse_individuals(&expr)?;
        let catalog = self.catalog(ctx).await?;
        let universe = self.universe(ctx).await?;
        let index = self.index(ctx).await?;
        check_events(&expr, &index)?;
        let use_index = ctx.opts.use_index.then_some(&*index);
        let canon = self.canonical(ctx).await?;
        let mut ev = Evaluator::new(ctx.clone(), self, &catalog, &universe, use_index, canon);
        let mut members = ev.eval(&expr, false).await?;
        members &= &*universe;
        Ok(members.len())
    }

    /// `DROP SEGMENT`: refused while another segment names it with IN SEGMENT.
    pub async fn drop_segment(&self, name: &str, if_exists: bool) -> Result<Option<SegmentDef>> {
        let name = name.to_string();
        catalog::update(self.db(), move |defs| {
            let Some(def) = defs.get(&name).cloned() else {
                if if_exists {
                    return Ok(None);
                }
                return Err(Error::NotFound(format!(
                    "segment '{name}' does not exist{}",
                    suggest(&name, defs.keys())
                )));
            };
            for d in defs.values() {
                if d.name != name && super::eval::dependencies(d).iter().any(|n| *n == name) {
                    return Err(Error::invalid(format!(
                        "segment '{name}' is used by segment '{}' (IN SEGMENT); drop or replace that one first",
                        d.name
                    )));
                }
            }
            defs.remove(&name);
            Ok(Some(def))
        })
        .await
    }

    /// `ALTER SEGMENT name SET …` (materialised segments only).
    pub async fn alter(&self, name: &str, change: &AlterSegment) -> Result<QueryResult> {
        let name = name.to_string();
        let change = change.clone();
        catalog::update(self.db(), move |defs| {
            let Some(def) = defs.get_mut(&name) else {
                return Err(Error::NotFound(format!(
                    "segment '{name}' does not exist{}",
                    suggest(&name, std::iter::empty())
                )));
            };
            if !def.materialized {
                return Err(Error::invalid(format!(
                    "segment '{name}' is not materialised; its schedule and history do not apply (CREATE OR REPLACE MATERIALIZED SEGMENT to materialise it)"
                )));
            }
            match &change {
                AlterSegment::Refresh(r) => {
                    // A segment turning live with the default history keeps the live default.
                    if *r == Refresh::Live && def.keep_versions == DEFAULT_KEEP {
                        def.keep_versions = DEFAULT_KEEP_LIVE;
                    }
                    def.refresh = Some(r.clone())
                }
                AlterSegment::Keep(n) => def.keep_versions = *n,
            }
            Ok(())
        })
        .await?;
        Ok(empty())
    }

    /// `SHOW SEGMENTS`: name, purposes, definition, comment, materialized, refresh, version,
    /// refreshed_at, size — read from the catalog and the history, nothing evaluated.
    pub async fn show(&self, ctx: &EvalCtx) -> Result<QueryResult> {
        let catalog = self.catalog(ctx).await?;
        let history = self.history(ctx).await?;
        let defs: Vec<&SegmentDef> = catalog.segments.values().collect();
        let latest: Vec<Option<&super::snapshots::Row>> = defs
            .iter()
            .map(|d| {
                if !d.materialized {
                    return None;
                }
                history
                    .of(&d.name, &d.generation)
                    .filter(|r| r.status == "ok" && r.version.is_some())
                    .max_by_key(|r| r.version)
            })
            .collect();
        let text = |f: &dyn Fn(&SegmentDef) -> Option<String>| -> ArrayRef {
            Arc::new(defs.iter().map(|d| f(d)).collect::<StringArray>())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("purposes", DataType::Utf8, true),
            Field::new("definition", DataType::Utf8, false),
            Field::new("comment", DataType::Utf8, true),
            Field::new("materialized", DataType::Boolean, false),
            Field::new("refresh", DataType::Utf8, true),
            Field::new("version", DataType::Int64, true),
            ts_field("refreshed_at", true),
            Field::new("size", DataType::UInt64, true),
        ]));
        result(
            schema,
            vec![
                text(&|d| Some(d.name.clone())),
                text(&|d| d.purposes_text()),
                text(&|d| Some(d.definition.clone())),
                text(&|d| d.comment.clone()),
                Arc::new(
                    defs.iter()
                        .map(|d| Some(d.materialized))
                        .collect::<BooleanArray>(),
                ),
                text(&|d| d.refresh.as_ref().map(|r| r.text())),
                Arc::new(arrow::array::Int64Array::from(
                    latest
                        .iter()
                        .map(|r| r.and_then(|r| r.version.map(|v| v as i64)))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        latest
                            .iter()
                            .map(|r| r.map(|r| r.refreshed_at))
                            .collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(UInt64Array::from(
                    latest
                        .iter()
                        .map(|r| r.and_then(|r| r.size))
                        .collect::<Vec<_>>(),
                )),
            ],
        )
    }

    /// `DESCRIBE SEGMENT name`: the definition and its current size.
    pub async fn describe(&self, ctx: &EvalCtx, name: &str) -> Result<QueryResult> {
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        let m = self.membership(ctx, &def.name).await?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("purposes", DataType::Utf8, true),
            Field::new("definition", DataType::Utf8, false),
            Field::new("comment", DataType::Utf8, true),
            Field::new("materialized", DataType::Boolean, false),
            Field::new("refresh", DataType::Utf8, true),
            Field::new("holdout_percent", DataType::Int64, true),
            Field::new("keep_versions", DataType::Int64, true),
            ts_field("created_at", false),
            Field::new("version", DataType::Int64, true),
            Field::new("size", DataType::UInt64, false),
        ]));
        result(
            schema,
            vec![
                Arc::new(StringArray::from(vec![def.name.clone()])),
                Arc::new(StringArray::from(vec![def.purposes_text()])),
                Arc::new(StringArray::from(vec![def.definition.clone()])),
                Arc::new(StringArray::from(vec![def.comment.clone()])),
                Arc::new(BooleanArray::from(vec![def.materialized])),
                Arc::new(StringArray::from(vec![
                    def.refresh.as_ref().map(|r| r.text()),
                ])),
                Arc::new(arrow::array::Int64Array::from(vec![
                    def.holdout_percent.map(i64::from),
                ])),
                Arc::new(arrow::array::Int64Array::from(vec![
                    def.materialized.then_some(def.keep_versions as i64),
                ])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![def.created_at]).with_timezone("UTC"),
                ),
                Arc::new(arrow::array::Int64Array::from(vec![
                    m.version.map(|v| v as i64),
                ])),
                Arc::new(UInt64Array::from(vec![m.target().len()])),
            ],
        )
    }

    /// `EXPLAIN SEGMENT name`: one line per leaf with its access path and size.
    pub async fn explain(&self, ctx: &EvalCtx, name: &str) -> Result<QueryResult> {
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        let universe = self.universe(ctx).await?;
        let index = self.index_if_used(ctx).await?;
        let canon = self.canonical(ctx).await?;
        let stitched = canon.as_ref().map(|c| c.links_version);
        let mut ev = Evaluator::new(
            ctx.clone(),
            self,
            &catalog,
            &universe,
            index.as_deref(),
            canon,
        );
        ev.explain = Some(Vec::new());
        ev.cached_profiles = false;
        let m = ev.segment(&def.name).await?;
        let mut lines = vec![format!(
            "segment {}: {} members of {} known {}, as of {}",
            def.name,
            m.target().len(),
            universe.len(),
            if stitched.is_some() {
                "profiles (stitched identities)"
            } else {
                "users"
            },
            sqlgen::ts_text(ctx.as_of)
        )];
        if !m.holdout.is_empty() {
            lines.push(format!(
                "holdout: {} members not activated",
                m.holdout.len()
            ));
        }
        lines.extend(ev.explain.take().unwrap_or_default());
        let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
        result(schema, vec![Arc::new(StringArray::from(lines))])
    }

    /// `EXPLAIN SEGMENT name FOR USER 'id'`: why a user is in a segment or not. One row per node
    /// of the definition's tree, in tree order: `node` (indented), `holds` (whether the user
    /// satisfies it), `size` (how many do); first the segment itself (its members as
    /// activated), last each purpose. `id` is a raw id (pseudonymised here, never echoed) or a
    /// stored pseudonym; an id never seen and a forgotten one get the same "unknown user".
    pub async fn explain_for_user(
        &self,
        ctx: &EvalCtx,
        name: &str,
        id: &str,
    ) -> Result<QueryResult> {
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        let universe = self.universe(ctx).await?;
        let ids = self.identity(ctx).await?;
        let canon = self.canonical(ctx).await?;
        let pseudonym = if ids.by_pseudonym.contains_key(id) {
            id.to_string()
        } else {
            crate::privacy::pseudonym::Pseudonymizer::new(
                self.keyring(),
                crate::privacy::keyring::USER_DOMAIN,
            )
            .pseudonymize(id)
        };
        let uid = ids
            .by_pseudonym
            .get(pseudonym.as_str())
            .map(|u| canon.as_ref().map_or(*u, |c| c.of(*u)))
            .filter(|u| universe.contains(*u))
            .ok_or_else(|| Error::NotFound("unknown user".into()))?;
        let index = self.index_if_used(ctx).await?;
        let mut ev = Evaluator::new(
            ctx.clone(),
            self,
            &catalog,
            &universe,
            index.as_deref(),
            canon,
        );
        let m = ev.segment(&def.name).await?;
        let target = m.target();
        let mut rows: Vec<(String, bool, u64)> = vec![(
            format!("segment {}", def.name),
            target.contains(uid),
            target.len(),
        )];
        let expr = super::parser::parse_expr(&def.definition)
            .map_err(|e| Error::invalid(format!("segment '{name}': {e}")))?;
        explain_nodes(&mut ev, &expr, uid, &mut rows).await?;
        for p in def.purposes()? {
            let holders = self.consent_holders(ctx, p, ctx.as_of).await?;
            rows.push((
                format!("  FOR PURPOSE '{p}'"),
                holders.contains(uid),
                holders.len(),
            ));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("node", DataType::Utf8, false),
            Field::new("holds", DataType::Boolean, false),
            Field::new("size", DataType::UInt64, false),
        ]));
        result(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(BooleanArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
    }

    /// The result of CREATE SEGMENT.
    pub fn created_result(&self, name: &str, size: u64) -> Result<QueryResult> {
        size_result(name, size)
    }
}

/// The purposes among `purposes` that no record of the consent table can grant: explicit names
/// that no row carries, `tcf:N` without any TC string, `sale` without any US Privacy or GPP
/// string.
pub(crate) async fn unseen_purposes(ctx: &EvalCtx, purposes: &[String]) -> Result<Vec<String>> {
    if purposes.is_empty() {
        return Ok(Vec::new());
    }
    let batches = ctx
        .query(
            "SELECT DISTINCT CASE WHEN tc_string IS NOT NULL THEN 'tcf:' \
             WHEN us_privacy IS NOT NULL OR gpp IS NOT NULL THEN 'sale' \
             ELSE purpose END AS p FROM consent",
        )
        .await?;
    let mut seen = std::collections::HashSet::new();
    for b in &batches {
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let col = arrow::array::AsArray::as_string::<i32>(&col);
        seen.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(purposes
        .iter()
        .filter(|p| {
            let key = if p.starts_with("tcf:") {
                "tcf:"
            } else {
                p.as_str()
            };
            !seen.contains(key)
        })
        .cloned()
        .collect())
}

/// The nodes of `e` in tree order for `EXPLAIN SEGMENT … FOR USER`, each with whether `uid`
/// satisfies it and its size. Walked with a work list rather than recursion: a definition may
/// be a 1,000-deep chain, and the library runs on whatever stack its caller has.
async fn explain_nodes(
    ev: &mut Evaluator<'_>,
    e: &Expr,
    uid: u32,
    rows: &mut Vec<(String, bool, u64)>,
) -> Result<()> {
    let mut work: Vec<(&Expr, usize, bool)> = vec![(e, 1, false)];
    while let Some((e, depth, negated)) = work.pop() {
        let bm = ev.eval(e, negated).await?;
        let (text, children, flip): (String, Vec<&Expr>, bool) = match e {
            Expr::Leaf(l) => (super::eval::leaf_text(l), Vec::new(), false),
            Expr::Not(x) => ("NOT".into(), vec![x.as_ref()], true),
            Expr::And(a, b) => ("AND".into(), vec![a.as_ref(), b.as_ref()], false),
            Expr::Or(a, b) => ("OR".into(), vec![a.as_ref(), b.as_ref()], false),
        };
        rows.push((
            format!("{}{text}", "  ".repeat(depth)),
            bm.contains(uid),
            bm.len(),
        ));
        // Pushed in reverse, so the first child comes out next (tree order).
        for c in children.into_iter().rev() {
            work.push((c, depth + 1, negated ^ flip));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn individual_ids_are_recognised() {
        assert!(individual_id("SELECT pseudonymize('ceo@x.com') AS user_id").is_some());
        assert!(individual_id("user_id = 'p1_AAAAAAAAAAAAAAAAAAAAAA'").is_some());
        assert!(individual_id("hash_email('a@b.c') = email_sha256").is_some());
        assert!(
            individual_id("country = 'DE' AND pseudonymize(user_id, 'x') IS NOT NULL").is_none()
        );
        assert!(individual_id("SELECT user_id FROM vip_list").is_none());
    }
}
