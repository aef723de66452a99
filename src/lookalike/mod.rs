//! Look-alike audiences (DESIGN §17): `LOOKALIKE OF seed [WITHIN …] (SIZE n | TOP p PERCENT |
//! MIN SCORE s) [EXCLUDING SEED]`. A model learns what sets the seed's members apart from the
//! other eligible users over the binary [`features`], then every eligible user is scored.
//!
//! - **Training set**: the seed's consenting members (the look-alike's purposes), 20 % of them
//!   held out; against a sample of the other eligible users (five per seed member, at least
//!   5,000, at most 100,000; 20 % of it held out too). Both draws are deterministic, seeded by
//!   the segment's name and the versions of every table the statement read.
//! - **Model**: L2-regularised logistic regression ([`model`], λ = 0.001 on the mean log-loss),
//!   cached by (name, definition, versions): a statement at another `as_of` over the same
//!   versions reuses the weights and scores the features at its own `as_of`.
//! - **Audience**: the eligible users (minus the seed with `EXCLUDING SEED`) ranked by score, ties
//!   by ordinal: the top `n`, the top `p` percent, or those scoring at least `s`. Seed members
//!   are ranked like everyone else and count toward `n`.
//! - **Report**: AUC of the held-out seed members against the held-out sample;
//!   `recall_at_size`, the share of held-out seed members who score at least the audience's
//!   lowest score (those inside it, were they eligible — with `EXCLUDING SEED` they never are).

pub mod features;
pub mod functions;
pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use roaring::RoaringBitmap;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::segment::ast::{Lookalike, LookalikeSize};
use crate::segment::{EvalCtx, Segments};
use crate::storage::Table;

/// The L2 penalty on the mean log-loss.
pub const LAMBDA: f64 = 1e-3;
/// Fewest seed members left for training after the hold-out.
pub const MIN_TRAIN: usize = 10;

/// A trained model and how it did.
#[derive(Debug, Clone)]
pub struct Model {
    /// Feature names and weights, in the order trained.
    pub names: Vec<String>,
    pub weights: Vec<f64>,
    pub bias: f64,
    pub auc: Option<f64>,
    pub recall_at_size: Option<f64>,
    /// Consenting seed members used (trained on and held out).
    pub seed_size: u64,
    /// Other eligible users sampled (trained on and held out).
    pub sample_size: u64,
    pub trained_at: i64,
    pub iterations: usize,
    pub took_ms: u64,
    held_out: RoaringBitmap,
}

/// Models by segment name, each with the key it was trained for.
#[derive(Default)]
pub struct Cache {
    models: HashMap<String, (Key, Arc<Model>)>,
}

/// (definition, versions of every table a statement reads).
type Key = (String, Vec<u64>);

fn key_of(ctx: &EvalCtx, definition: &str) -> Key {
    (
        definition.to_string(),
        Table::READ.iter().map(|t| ctx.snap.version(*t)).collect(),
    )
}

/// What one evaluation of a look-alike did.
pub struct Outcome {
    pub audience: RoaringBitmap,
    pub model: Arc<Model>,
    pub trained: bool,
    pub eligible: u64,
}

impl Segments {
    fn lookalikes(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.lookalikes.lock().expect("not poisoned")
    }

    /// The model last trained for segment `name` over the statement's versions, if any.
    pub fn cached_model(&self, ctx: &EvalCtx, name: &str, definition: &str) -> Option<Arc<Model>> {
        let key = key_of(ctx, definition);
        self.lookalikes()
            .models
            .get(name)
            .filter(|(k, _)| *k == key)
            .map(|(_, m)| m.clone())
    }
}

impl Segments {
    /// The model of look-alike segment `name` for the statement's table versions, trained
    /// first (by evaluating its definition) when none is cached.
    pub async fn lookalike_model(&self, ctx: &EvalCtx, name: &str) -> Result<Arc<Model>> {
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?.clone();
        spec_of(name, &def.definition)?;
        if let Some(m) = self.cached_model(ctx, name, &def.definition) {
            return Ok(m);
        }
        self.live(ctx, name).await?;
        self.cached_model(ctx, name, &def.definition)
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
        let seed_def = catalog.require(&spec.seed)?.clone();
        let mut who = (*self.universe(ctx).await?).clone();
        for p in def.purposes()? {
            who &= &*self.consent_holders(ctx, p, ctx.as_of).await?;
        }
        let reads = features::reads(&seed_def.definition);
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
        Ok(crate::segment::ast::Expr::Leaf(crate::segment::ast::Leaf::Lookalike(l))) => Ok(*l),
        _ => Err(Error::invalid(format!(
            "segment '{name}' is not a look-alike (CREATE SEGMENT {name} AS LOOKALIKE OF seed …)"
        ))),
    }
}

/// Per-user scores: the dense logit of every user in `who`.
fn scores(
    model: &Model,
    features: &BTreeMap<String, RoaringBitmap>,
    who: &RoaringBitmap,
) -> HashMap<u32, f64> {
    let mut z: HashMap<u32, f64> = who.iter().map(|u| (u, model.bias)).collect();
    for (name, w) in model.names.iter().zip(&model.weights) {
        if let Some(b) = features.get(name) {
            for u in b & who {
                *z.get_mut(&u).expect("in who") += w;
            }
        }
    }
    z.into_iter()
        .map(|(u, v)| (u, 1.0 / (1.0 + (-v).exp())))
        .collect()
}

/// The feature rows of `users` (in that order): the ids of the features each has.
fn rows_of(users: &[u32], features: &[&RoaringBitmap]) -> Vec<Vec<u32>> {
    let pos: HashMap<u32, usize> = users.iter().enumerate().map(|(i, u)| (*u, i)).collect();
    let set: RoaringBitmap = users.iter().copied().collect();
    let mut rows = vec![Vec::new(); users.len()];
    for (f, b) in features.iter().enumerate() {
        for u in *b & &set {
            rows[pos[&u]].push(f as u32);
        }
    }
    rows
}

fn train(
    name: &str,
    key: &Key,
    seed: &RoaringBitmap,
    others: &RoaringBitmap,
    features: &BTreeMap<String, RoaringBitmap>,
) -> Result<Model> {
    let started = std::time::Instant::now();
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    for v in &key.1 {
        h.update(v.to_le_bytes());
    }
    let digest = h.finalize();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from_le_bytes(
        digest[..8].try_into().expect("8 bytes"),
    ));
    let mut pos: Vec<u32> = seed.iter().collect();
    pos.shuffle(&mut rng);
    let held = pos.len() / 5;
    if pos.len() - held < MIN_TRAIN {
        return Err(Error::invalid(format!(
            "the look-alike's seed has {} consenting member(s); it needs at least {} to learn from (20 % are held out)",
            pos.len(),
            MIN_TRAIN * 5 / 4
        )));
    }
    let (held_pos, train_pos) = pos.split_at(held);
    let want = (pos.len() * 5)
        .clamp(5_000, 100_000)
        .min(others.len() as usize);
    let mut neg: Vec<u32> = others.iter().collect();
    // A partial shuffle: the first `want` are a uniform sample.
    for i in 0..want {
        let j = rand::Rng::random_range(&mut rng, i..neg.len());
        neg.swap(i, j);
    }
    neg.truncate(want);
    if neg.is_empty() {
        return Err(Error::invalid(
            "no eligible users outside the seed: there is nobody to compare the seed with",
        ));
    }
    let held_n = neg.len() / 5;
    let (held_neg, train_neg) = neg.split_at(held_n);

    let names: Vec<String> = features.keys().cloned().collect();
    let bitmaps: Vec<&RoaringBitmap> = features.values().collect();
    let users: Vec<u32> = train_pos.iter().chain(train_neg).copied().collect();
    let y: Vec<bool> = (0..users.len()).map(|i| i < train_pos.len()).collect();
    let rows = rows_of(&users, &bitmaps);
    let fit = model::fit(&rows, &y, names.len(), LAMBDA);

    let score = |us: &[u32]| -> Vec<f64> {
        rows_of(us, &bitmaps)
            .iter()
            .map(|r| model::predict(&fit, r))
            .collect()
    };
    let auc = model::auc(&score(held_pos), &score(held_neg));
    Ok(Model {
        names,
        weights: fit.weights,
        bias: fit.bias,
        auc,
        recall_at_size: None,
        seed_size: pos.len() as u64,
        sample_size: neg.len() as u64,
        trained_at: chrono::Utc::now().timestamp_micros(),
        iterations: fit.iterations,
        took_ms: started.elapsed().as_millis() as u64,
        held_out: held_pos.iter().copied().collect(),
    })
}

/// What one look-alike evaluation reads.
pub struct Inputs<'a> {
    /// The look-alike segment's name and stored definition.
    pub name: &'a str,
    pub definition: &'a str,
    pub spec: &'a Lookalike,
    /// The seed's consenting members among the known users.
    pub seed: &'a RoaringBitmap,
    /// The universe (or WITHIN's members) holding the look-alike's purposes.
    pub eligible: &'a RoaringBitmap,
    /// From [`features::collect`], without what the seed's definition reads.
    pub features: &'a BTreeMap<String, RoaringBitmap>,
}

/// Evaluate a look-alike: train (or reuse the cached model), score, pick the audience.
pub fn evaluate(segments: &Segments, ctx: &EvalCtx, i: Inputs<'_>) -> Result<Outcome> {
    let Inputs {
        name,
        definition,
        spec,
        seed,
        eligible,
        features,
    } = i;
    let key = key_of(ctx, definition);
    let cached = segments.cached_model(ctx, name, definition);
    let others = eligible - seed;
    let (mut model, trained) = match cached {
        Some(m) => ((*m).clone(), false),
        None => (train(name, &key, seed, &others, features)?, true),
    };
    let candidates = if spec.excluding_seed {
        others
    } else {
        eligible.clone()
    };
    let s = scores(&model, features, &(&candidates | &model.held_out));
    let mut ranked: Vec<(u32, f64)> = candidates.iter().map(|u| (u, s[&u])).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let take = match &spec.size {
        LookalikeSize::Size(n) => (*n as usize).min(ranked.len()),
        LookalikeSize::TopPercent(p) => {
            let p: f64 = p.parse().unwrap_or(0.0);
            ((p / 100.0 * ranked.len() as f64).ceil() as usize).min(ranked.len())
        }
        LookalikeSize::MinScore(m) => {
            let m: f64 = m.parse().unwrap_or(1.0);
            ranked.partition_point(|x| x.1 >= m)
        }
    };
    let audience: RoaringBitmap = ranked[..take].iter().map(|x| x.0).collect();
    if trained {
        let cut = ranked[..take].last().map(|x| x.1);
        model.recall_at_size = match cut {
            _ if model.held_out.is_empty() => None,
            None => Some(0.0),
            Some(cut) => Some(
                model.held_out.iter().filter(|u| s[u] >= cut).count() as f64
                    / model.held_out.len() as f64,
            ),
        };
    }
    let model = Arc::new(model);
    if trained {
        segments
            .lookalikes()
            .models
            .insert(name.to_string(), (key, model.clone()));
        tracing::info!(
            segment = name,
            seed = model.seed_size,
            sample = model.sample_size,
            features = model.names.len(),
            iterations = model.iterations,
            took_ms = model.took_ms,
            "look-alike trained"
        );
    }
    Ok(Outcome {
        audience,
        model,
        trained,
        eligible: candidates.len(),
    })
}
