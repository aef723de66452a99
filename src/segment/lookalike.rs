//! Look-alikes in a statement's snapshot (DESIGN §17): the model key (the definition and the
//! versions of every table a statement reads), the cached model of a segment, and what
//! `lookalike_report`, `lookalike_features` and `lookalike_score` read. Training, scoring and
//! the audience are in [`crate::lookalike`].

use std::collections::HashMap;
use std::sync::Arc;

use super::ast::{Expr, Leaf, Lookalike, LookalikeSize};
use super::catalog::Catalog;
use super::{EvalCtx, Segments, features};
use crate::error::{Error, Result};
use crate::lookalike::{Key, Model, Take, scores};
use crate::storage::Table;

/// The tables whose rows a look-alike's training reads (the segment catalog is keyed by
/// content instead, below: creating the look-alike itself commits a catalog version, and must
/// not make its own model stale).
const TRAINED_ON: [Table; 9] = [
    Table::Events,
    Table::Profiles,
    Table::Consent,
    Table::Identity,
    Table::Suppression,
    Table::Links,
    Table::Traits,
    Table::Snapshots,
    Table::CategoryMaps,
];

/// The model key of look-alike `name`: its definition and purposes, every other segment's
/// definition and purposes (the seed and what it reads), the interests' half-life, and the
/// versions of the tables trained on.
pub(crate) fn key_of(
    ctx: &EvalCtx,
    catalog: &Catalog,
    name: &str,
    definition: &str,
    half_life_us: i64,
) -> Key {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(half_life_us.to_le_bytes());
    for (n, d) in &catalog.segments {
        if n == name {
            // Its own definition is the key's text; its purposes decide who is trained on.
            h.update(format!("{:?}", d.purposes).as_bytes());
        } else {
            h.update(n.as_bytes());
            h.update([0]);
            h.update(d.definition.as_bytes());
            h.update([0]);
            h.update(format!("{:?}", d.purposes).as_bytes());
            h.update([0]);
        }
    }
    let digest = h.finalize();
    let mut versions: Vec<u64> = TRAINED_ON.iter().map(|t| ctx.snap.version(*t)).collect();
    versions.extend(
        digest
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
    );
    (definition.to_string(), versions)
}

/// The audience clause as the model side takes it.
pub fn take_of(size: &LookalikeSize) -> Take {
    match size {
        LookalikeSize::Size(n) => Take::Size(*n),
        LookalikeSize::TopPercent(p) => Take::TopPercent(p.parse().unwrap_or(0.0)),
        LookalikeSize::MinScore(m) => Take::MinScore(m.parse().unwrap_or(1.0)),
    }
}

impl Segments {
    fn lookalikes(&self) -> std::sync::MutexGuard<'_, crate::lookalike::Cache> {
        self.lookalikes.lock().expect("not poisoned")
    }

    /// The model last trained for segment `name` over the statement's versions, if any.
    pub fn cached_model(
        &self,
        ctx: &EvalCtx,
        catalog: &Catalog,
        name: &str,
        definition: &str,
        half_life_us: i64,
    ) -> Option<Arc<Model>> {
        self.lookalikes()
            .get(name, &key_of(ctx, catalog, name, definition, half_life_us))
    }
}

impl Segments {
    /// The model of look-alike segment `name` for the statement's table versions, trained
    /// first (by evaluating its definition) when none is cached.
    pub async fn lookalike_model(&self, ctx: &EvalCtx, name: &str) -> Result<Arc<Model>> {
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        spec_of(name, &def.definition)?;
        let half_life = crate::storage::settings::Settings::read(self.db())
            .await?
            .half_life_us();
        if let Some(m) = self.cached_model(ctx, &catalog, name, &def.definition, half_life) {
            return Ok(m);
        }
        self.live(ctx, name).await?;
        self.cached_model(ctx, &catalog, name, &def.definition, half_life)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "segment '{name}' was evaluated but left no model; run the statement again"
                ))
            })
    }

    /// `lookalike_score('name', user_id)`: every consenting known user's score (the
    /// look-alike's purposes), by ordinal (canonical when segments are stitched).
    pub async fn lookalike_scores(&self, ctx: &EvalCtx, name: &str) -> Result<HashMap<u32, f64>> {
        let model = self.lookalike_model(ctx, name).await?;
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        let spec = spec_of(name, &def.definition)?;
        catalog.require(&spec.seed)?;
        let mut who = (*self.universe(ctx).await?).clone();
        for p in def.purposes()? {
            who &= &*self.consent_holders(ctx, p, ctx.as_of).await?;
        }
        let reads = features::reads_of(&catalog, &spec.seed);
        let mut feats = features::collect(self, ctx, &reads).await?;
        if let Some(c) = self.canonical(ctx).await? {
            for b in feats.values_mut() {
                *b = c.image(b);
            }
        }
        Ok(scores(&model, &feats, &who))
    }
}

/// The look-alike a definition is, or an error naming the segment.
fn spec_of(name: &str, definition: &str) -> Result<Lookalike> {
    match crate::segment::parser::parse_expr(definition) {
        Ok(Expr::Leaf(Leaf::Lookalike(l))) => Ok(*l),
        _ => Err(Error::invalid(format!(
            "segment '{name}' is not a look-alike (CREATE SEGMENT {name} AS LOOKALIKE OF seed …)"
        ))),
    }
}
