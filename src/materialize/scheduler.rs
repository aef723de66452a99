//! Running refreshes on their schedules. A materialised segment is *due* when its latest fire
//! time at or before now (`segment::schedule`) is later than every refresh attempt of its current
//! generation: after downtime that is one catch-up refresh at the latest missed slot, not one per
//! missed slot; a failed attempt is retried at the next slot. A due refresh evaluates with `as_of`
//! = its fire time. `segdb serve` runs the loop ([`run`]): never two refreshes of one segment at
//! once, at most `max_concurrent` at a time, each on its own task; `segdb refresh --due` runs the
//! due ones once ([`run_once`]).
//!
//! Live segments (`REFRESH LIVE`, DESIGN §15) are due when the versions of the tables they read
//! differ from those their last evaluation in this process saw, or when `[live] tick` has passed
//! since it; the loop looks at most every `[live] min_interval`. A live refresh evaluates at now
//! and records a version only when something changed; a failing definition is attempted again
//! only once a tick has passed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Outcome, Trigger, refresh};
use crate::error::Result;
use crate::segment::ast::Refresh;
use crate::segment::schedule;
use crate::segment::{EvalCtx, Segments};

/// Makes the evaluation context of one refresh (a fresh snapshot each time).
pub type Contexts = Arc<dyn Fn() -> BoxFuture<'static, Result<EvalCtx>> + Send + Sync>;

/// `[live]` of the config file: how live segments follow their tables.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// A live segment refreshes at most this often (default '1 second').
    pub min_interval: Option<String>,
    /// And at least this often, so that windows sliding with the clock let users exit (default
    /// '1 minute').
    pub tick: Option<String>,
    /// A full bitmap every this many versions (default 100).
    pub full_every: Option<u64>,
}

/// `[live]`, checked.
#[derive(Debug, Clone, Copy)]
pub struct LiveSettings {
    pub min_interval: Duration,
    pub tick: Duration,
    pub full_every: u64,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            min_interval: Duration::from_secs(1),
            tick: Duration::from_secs(60),
            full_every: 100,
        }
    }
}

impl LiveConfig {
    pub fn settings(&self) -> Result<LiveSettings> {
        let d = LiveSettings::default();
        let dur = |key: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            v.as_deref().map_or(Ok(default), |s| {
                crate::time::config_duration("live", key, s, Duration::from_millis(10))
            })
        };
        let s = LiveSettings {
            min_interval: dur("min_interval", &self.min_interval, d.min_interval)?,
            tick: dur("tick", &self.tick, d.tick)?,
            full_every: self.full_every.unwrap_or(d.full_every),
        };
        if s.full_every == 0 {
            return Err(crate::Error::invalid(
                "[live] full_every must be at least 1 (1 stores every version in full)",
            ));
        }
        if s.tick < s.min_interval {
            return Err(crate::Error::invalid(
                "[live] tick must be at least min_interval",
            ));
        }
        Ok(s)
    }
}

/// What this process last saw of a live segment.
struct Seen {
    generation: String,
    sources: String,
    at: std::time::Instant,
    failed: bool,
}

/// The versions of the tables a live refresh depends on: every table a definition can read.
fn live_sources(ctx: &EvalCtx, reads_segments: bool) -> String {
    let mut s = String::new();
    for t in [
        crate::storage::Table::Events,
        crate::storage::Table::Profiles,
        crate::storage::Table::Consent,
        crate::storage::Table::Identity,
        crate::storage::Table::Segments,
        crate::storage::Table::Suppression,
        crate::storage::Table::Links,
        crate::storage::Table::Traits,
    ] {
        s.push_str(&format!("{:?},", ctx.snap.version(t)));
    }
    if reads_segments {
        s.push_str(&format!(
            "{:?}",
            ctx.snap.version(crate::storage::Table::Snapshots)
        ));
    }
    s
}

/// The live segments due now.
async fn live_due(
    segments: &Segments,
    ctx: &EvalCtx,
    seen: &HashMap<String, Seen>,
    tick: Duration,
) -> Result<Vec<(String, String, String)>> {
    let catalog = segments.catalog(ctx).await?;
    let mut out = Vec::new();
    for def in catalog.segments.values() {
        if !def.materialized || def.refresh != Some(Refresh::Live) {
            continue;
        }
        let reads = crate::segment::eval::dependencies(def);
        let sources = live_sources(ctx, !reads.is_empty());
        let due = match seen.get(&def.name) {
            None => true,
            Some(s) if s.generation != def.generation => true,
            Some(s) if s.at.elapsed() >= tick => true,
            Some(s) if s.failed => false,
            Some(s) => s.sources != sources,
        };
        if due {
            out.push((def.name.clone(), def.generation.clone(), sources));
        }
    }
    Ok(out)
}

/// A refresh that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub segment: String,
    /// The fire time: the refresh's `as_of`.
    pub as_of: i64,
}

/// The segments due at `now`, and the next fire time after `now` of any schedule.
pub async fn due(segments: &Segments, ctx: &EvalCtx, now: i64) -> Result<(Vec<Due>, Option<i64>)> {
    let catalog = segments.catalog(ctx).await?;
    let history = segments.history(ctx).await?;
    let mut out = Vec::new();
    let mut next: Option<i64> = None;
    for def in catalog.segments.values() {
        let Some(r) = def.refresh.as_ref().filter(|_| def.materialized) else {
            continue;
        };
        if matches!(r, Refresh::Manual | Refresh::Live) {
            continue;
        }
        if let Some(n) = schedule::next_fire(r, now) {
            next = Some(next.map_or(n, |x| x.min(n)));
        }
        let Some(fire) = schedule::last_fire(r, now) else {
            continue;
        };
        let last = history
            .of(&def.name, &def.generation)
            .map(|row| row.as_of)
            .max();
        if last.is_none_or(|l| l < fire) {
            out.push(Due {
                segment: def.name.clone(),
                as_of: fire,
            });
        }
    }
    Ok((out, next))
}

/// Refresh every due segment once, at most `max_concurrent` at a time.
pub async fn run_once(
    segments: &Arc<Segments>,
    contexts: &Contexts,
    max_concurrent: usize,
) -> Result<Vec<Outcome>> {
    let ctx = contexts().await?;
    let now = ctx.now();
    let (due, _) = due(segments, &ctx, now).await?;
    let sem = Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1)));
    let mut tasks = Vec::new();
    for d in due {
        let (segments, contexts, sem) = (segments.clone(), contexts.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let ctx = contexts().await?;
            refresh(
                &segments,
                &ctx,
                &d.segment,
                Some(d.as_of),
                Trigger::Schedule,
            )
            .await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| crate::Error::invalid(format!("a refresh task failed: {e}")))??,
        );
    }
    Ok(out)
}

/// The scheduler loop of `segdb serve`, until `stop` says so. Refreshes run on their own tasks;
/// a segment already refreshing is not started again.
pub async fn run(
    segments: Arc<Segments>,
    contexts: Contexts,
    max_concurrent: usize,
    live: LiveSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1)));
    tracing::info!(max_concurrent, "scheduler started");
    loop {
        if *stop.borrow() {
            break;
        }
        let mut wait = Duration::from_secs(1).min(live.min_interval);
        match contexts().await {
            Ok(ctx) => {
                let now = ctx.now();
                let due_live = {
                    let snapshot: HashMap<String, Seen> =
                        std::mem::take(&mut *seen.lock().expect("not poisoned"));
                    let r = live_due(&segments, &ctx, &snapshot, live.tick).await;
                    let mut g = seen.lock().expect("not poisoned");
                    for (k, v) in snapshot {
                        g.entry(k).or_insert(v);
                    }
                    r
                };
                match due_live {
                    Ok(list) => {
                        for (name, generation, sources) in list {
                            if !running.lock().expect("not poisoned").insert(name.clone()) {
                                continue;
                            }
                            let (segments, contexts, sem, running, seen) = (
                                segments.clone(),
                                contexts.clone(),
                                sem.clone(),
                                running.clone(),
                                seen.clone(),
                            );
                            tokio::spawn(async move {
                                let _permit = sem.acquire_owned().await.expect("semaphore open");
                                let started = std::time::Instant::now();
                                let r = async {
                                    let ctx = contexts().await?;
                                    refresh(&segments, &ctx, &name, None, Trigger::Live).await
                                }
                                .await;
                                let failed = match &r {
                                    Ok(o) => matches!(o.status, super::Status::Failed(_)),
                                    Err(e) => {
                                        tracing::warn!(segment = %name, error = %e, "live refresh could not run");
                                        true
                                    }
                                };
                                seen.lock().expect("not poisoned").insert(
                                    name.clone(),
                                    Seen {
                                        generation,
                                        sources,
                                        at: started,
                                        failed,
                                    },
                                );
                                running.lock().expect("not poisoned").remove(&name);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "scheduler could not read the live segments")
                    }
                }
                match due(&segments, &ctx, now).await {
                    Ok((due, next)) => {
                        for d in due {
                            if !running
                                .lock()
                                .expect("not poisoned")
                                .insert(d.segment.clone())
                            {
                                continue;
                            }
                            let (segments, contexts, sem, running) = (
                                segments.clone(),
                                contexts.clone(),
                                sem.clone(),
                                running.clone(),
                            );
                            tokio::spawn(async move {
                                let _permit = sem.acquire_owned().await.expect("semaphore open");
                                let r = async {
                                    let ctx = contexts().await?;
                                    refresh(
                                        &segments,
                                        &ctx,
                                        &d.segment,
                                        Some(d.as_of),
                                        Trigger::Schedule,
                                    )
                                    .await
                                }
                                .await;
                                if let Err(e) = r {
                                    tracing::warn!(segment = %d.segment, error = %e, "scheduled refresh could not run");
                                }
                                running.lock().expect("not poisoned").remove(&d.segment);
                            });
                        }
                        if let Some(n) = next {
                            let us = (n - chrono::Utc::now().timestamp_micros()).max(0) as u64;
                            wait = wait
                                .min(Duration::from_micros(us))
                                .max(Duration::from_millis(20));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "scheduler could not read the catalog"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler could not pin a snapshot"),
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    tracing::info!("scheduler stopped");
}
