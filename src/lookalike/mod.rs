//! Look-alike audiences (DESIGN §17), the model side: training, scoring and picking the
//! audience over feature bitmaps (`segment::lookalike` evaluates the seed, the eligible users
//! and the features of a statement's snapshot and keeps the cache on the segment service). `LOOKALIKE OF seed [WITHIN …] (SIZE n | TOP p PERCENT |
//! MIN SCORE s) [EXCLUDING SEED]`. A model learns what sets the seed's members apart from the
//! other eligible users over the binary [`features`], then every eligible user is scored.
//!
//! - **Training set**: the seed's consenting members (the look-alike's purposes), 20 % of them
//!   held out; against a sample of the other eligible users (five per seed member, at least
//!   5,000, at most 100,000; 20 % of it held out too). Both draws are deterministic, seeded by
//!   the segment's name and the model key (what training read).
//! - **Model**: L2-regularised logistic regression ([`model`], λ = 0.001 on the mean log-loss),
//!   cached by (name, definition, the other segments' definitions, the versions of the tables
//!   trained on): a statement at another `as_of` over the same data reuses the weights and
//!   scores the features at its own `as_of`.
//! - **Audience**: the eligible users (minus the seed with `EXCLUDING SEED`) ranked by score, ties
//!   by ordinal: the top `n`, the top `p` percent, or those scoring at least `s`. Seed members
//!   are ranked like everyone else and count toward `n`.
//! - **Report**: AUC of the held-out seed members against the held-out sample;
//!   `recall_at_size`, the share of held-out seed members inside the audience (0 with
//!   `EXCLUDING SEED`, which leaves them out). Features need at least 30 users.

pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use roaring::RoaringBitmap;
use sha2::Digest;

use crate::error::{Error, Result};

/// The L2 penalty on the mean log-loss.
pub const LAMBDA: f64 = 1e-3;
/// Fewest seed members left for training after the hold-out.
pub const MIN_TRAIN: usize = 10;
/// Fewest users a feature needs to be one.
pub const MIN_USERS: u64 = 30;

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

/// (definition, versions of what training read; see `segment::lookalike::key_of`).
pub type Key = (String, Vec<u64>);

impl Cache {
    /// The model of `name` trained for `key`, if any.
    pub fn get(&self, name: &str, key: &Key) -> Option<Arc<Model>> {
        self.models
            .get(name)
            .filter(|(k, _)| k == key)
            .map(|(_, m)| m.clone())
    }
}

/// How many users a look-alike takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// The top `n`.
    Size(u64),
    /// The top `p` percent of the candidates.
    TopPercent(f64),
    /// Everyone scoring at least `s`.
    MinScore(f64),
}

/// What one evaluation of a look-alike did.
pub struct Outcome {
    pub audience: RoaringBitmap,
    pub model: Arc<Model>,
    pub trained: bool,
    pub eligible: u64,
}

/// Per-user scores (probabilities) of every user in `who`.
pub fn scores(
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

    // A fact fewer than MIN_USERS known users share is not a feature: it would say little, and
    // `lookalike_features` would show a value held by a handful of people.
    let kept: Vec<(&String, &RoaringBitmap)> = features
        .iter()
        .filter(|(_, b)| b.len() >= MIN_USERS)
        .collect();
    let names: Vec<String> = kept.iter().map(|(n, _)| (*n).clone()).collect();
    let bitmaps: Vec<&RoaringBitmap> = kept.iter().map(|(_, b)| *b).collect();
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
    /// The look-alike segment's name (it seeds the samples with the key's versions).
    pub name: &'a str,
    pub take: Take,
    pub excluding_seed: bool,
    /// The seed's consenting members among the known users.
    pub seed: &'a RoaringBitmap,
    /// The universe (or WITHIN's members) holding the look-alike's purposes.
    pub eligible: &'a RoaringBitmap,
    /// From [`features::collect`], without what the seed's definition reads.
    pub features: &'a BTreeMap<String, RoaringBitmap>,
}

/// Evaluate a look-alike: train (or reuse the cached model), score, pick the audience.
pub fn evaluate(cache: &std::sync::Mutex<Cache>, key: Key, i: Inputs<'_>) -> Result<Outcome> {
    let Inputs {
        name,
        take,
        excluding_seed,
        seed,
        eligible,
        features,
    } = i;
    let cached = cache.lock().expect("not poisoned").get(name, &key);
    let others = eligible - seed;
    let (mut model, trained) = match cached {
        Some(m) => ((*m).clone(), false),
        None => (train(name, &key, seed, &others, features)?, true),
    };
    let candidates = if excluding_seed {
        others
    } else {
        eligible.clone()
    };
    let s = scores(&model, features, &(&candidates | &model.held_out));
    let mut ranked: Vec<(u32, f64)> = candidates.iter().map(|u| (u, s[&u])).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let take = match take {
        Take::Size(n) => (n as usize).min(ranked.len()),
        Take::TopPercent(p) => {
            // p·n/100 rounded up; the tiny shave keeps an exact product (7 % of 100) from
            // rounding up past itself through float error (0.07 · 100 = 7.000000000000001).
            let x = p * ranked.len() as f64 / 100.0;
            ((x * (1.0 - 1e-12)).ceil() as usize).min(ranked.len())
        }
        Take::MinScore(m) => ranked.partition_point(|x| x.1 >= m),
    };
    let audience: RoaringBitmap = ranked[..take].iter().map(|x| x.0).collect();
    if trained && !model.held_out.is_empty() {
        model.recall_at_size =
            Some(model.held_out.intersection_len(&audience) as f64 / model.held_out.len() as f64);
    }
    let model = Arc::new(model);
    if trained {
        cache
            .lock()
            .expect("not poisoned")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 users; the 20 seed members and 20 others share a fact, 60 have another.
    fn world() -> (
        RoaringBitmap,
        RoaringBitmap,
        BTreeMap<String, RoaringBitmap>,
    ) {
        let eligible: RoaringBitmap = (0..100).collect();
        let seed: RoaringBitmap = (0..20).collect();
        let mut f = BTreeMap::new();
        f.insert("a".to_string(), (0..40).collect::<RoaringBitmap>());
        f.insert("b".to_string(), (40..100).collect::<RoaringBitmap>());
        (eligible, seed, f)
    }

    fn run(take: Take, excluding_seed: bool) -> Outcome {
        let (eligible, seed, features) = world();
        let cache = std::sync::Mutex::new(Cache::default());
        evaluate(
            &cache,
            ("t".into(), vec![1]),
            Inputs {
                name: "t",
                take,
                excluding_seed,
                seed: &seed,
                eligible: &eligible,
                features: &features,
            },
        )
        .unwrap()
    }

    #[test]
    fn audience_sizes_follow_the_clause() {
        // 7 % of 100 is 7, not 8 (0.07 * 100 is 7.000000000000001 in floats).
        assert_eq!(run(Take::TopPercent(7.0), false).audience.len(), 7);
        // 7 % of the 80 outside the seed: 5.6, rounded up.
        let o = run(Take::TopPercent(7.0), true);
        assert_eq!(o.audience.len(), 6);
        assert!(o.audience.iter().all(|u| u >= 20));
        // The fact the seed shares ranks its holders first: SIZE 40 is exactly them.
        let o = run(Take::Size(40), false);
        assert_eq!(o.audience, (0..40).collect::<RoaringBitmap>());
        // Held-out seed members inside the audience; none with EXCLUDING SEED.
        assert_eq!(o.model.recall_at_size, Some(1.0));
        assert_eq!(run(Take::Size(40), true).model.recall_at_size, Some(0.0));
        let all = run(Take::MinScore(0.0), false);
        assert_eq!(all.audience.len(), 100);
        assert_eq!(run(Take::MinScore(1.0), false).audience.len(), 0);
    }
}
