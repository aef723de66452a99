//! `segdb refresh [--due | NAME…]`: refresh materialised segments once, print one line per
//! refresh, exit 1 if any failed ("skipped" — another process committed that version first — is
//! not a failure).

use std::sync::Arc;

use crate::config::{GlobalOpts, RefreshArgs};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::materialize::{Outcome, Status, Trigger};

pub async fn run(global: &GlobalOpts, args: RefreshArgs) -> Result<i32> {
    if !args.due && args.names.is_empty() {
        return Err(Error::Usage(
            "name the segments to refresh, or pass --due to refresh those whose schedule is due"
                .into(),
        ));
    }
    let config = global.file()?;
    let engine = Engine::open(&global.engine_config_of(&config)?)
        .await?
        .with_caller("cli")?;
    let session = Arc::new(engine.new_session("cli")?);
    let segments = engine.shared().segments.clone();
    let outcomes: Vec<Outcome> = if args.due {
        crate::materialize::scheduler::run_once(
            &segments,
            &session.contexts(),
            config.scheduler.max_concurrent,
        )
        .await?
    } else {
        let mut v = Vec::new();
        for n in &args.names {
            let ctx = session.eval_context().await?;
            v.push(crate::materialize::refresh(&segments, &ctx, n, None, Trigger::Manual).await?);
        }
        v
    };
    let mut failed = 0;
    if outcomes.is_empty() {
        println!("nothing is due");
    }
    for o in &outcomes {
        let version = o.version.map_or("-".to_string(), |v| v.to_string());
        match &o.status {
            Status::Failed(why) => {
                failed += 1;
                println!("{}: failed after {} ms: {why}", o.segment, o.took_ms);
            }
            s => println!(
                "{}: {} version {version}, {} members (+{} -{}), {} ms",
                o.segment,
                if *s == Status::Ok { "ok" } else { "skipped" },
                o.size,
                o.entered,
                o.exited,
                o.took_ms
            ),
        }
        // The refresh committed, but an activation that followed it failed: the command fails.
        for (export, why) in &o.export_failures {
            failed += 1;
            println!("{}: export {export} failed: {why}", o.segment);
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
