//! Running refreshes on their schedules. A materialised segment is *due* when its latest fire
//! time at or before now (`segment::schedule`) is later than every refresh attempt of its current
//! generation: after downtime that is one catch-up refresh at the latest missed slot, not one per
//! missed slot; a failed attempt is retried at the next slot. A due refresh evaluates with `as_of`
//! = its fire time. `segdb serve` runs the loop ([`run`]): never two refreshes of one segment at
//! once, at most `max_concurrent` at a time, each on its own task; `segdb refresh --due` runs the
//! due ones once ([`run_once`]).

use std::collections::HashSet;
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
        if matches!(r, Refresh::Manual) {
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
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let sem = Arc::new(tokio::sync::Semaphore::new(max_concurrent.max(1)));
    tracing::info!(max_concurrent, "scheduler started");
    loop {
        if *stop.borrow() {
            break;
        }
        let mut wait = Duration::from_secs(1);
        match contexts().await {
            Ok(ctx) => {
                let now = ctx.now();
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
