//! `segdb report lift SEGMENT EVENT --out FILE`: the lift table of a segment with a holdout,
//! printed, and a chart of both groups' cumulative conversion written as SVG.

use std::sync::Arc;

use crate::config::{GlobalOpts, LiftArgs, OutputFormat};
use crate::engine::Engine;
use crate::error::{Error, Result};

pub async fn lift(global: &GlobalOpts, args: LiftArgs) -> Result<i32> {
    let engine = Engine::open(&global.engine_config()?)
        .await?
        .with_caller("cli")?;
    let session = Arc::new(engine.new_session("cli")?);
    let segments = engine.shared().segments.clone();
    let ctx = session.eval_context().await?;
    let l = segments
        .lift(
            &ctx,
            &args.segment,
            &args.event,
            Some(args.days),
            args.version,
        )
        .await?;
    let curves = crate::segment::lift::daily_curves(&segments, &ctx, &l).await?;
    let svg = crate::segment::lift::svg(&l, &curves);
    std::fs::write(&args.out, svg)
        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", args.out.display())))?;
    let batch = crate::segment::lift::lift_batch(&l)?;
    let r = crate::result::QueryResult {
        schema: batch.schema(),
        batches: vec![batch],
    };
    crate::cli::output::print(&mut std::io::stdout(), &r, OutputFormat::Table)?;
    println!(
        "version {} of '{}' (as of {}), '{}' within {} days; chart written to {}",
        l.version,
        l.segment,
        crate::time::format_micros(l.as_of),
        l.event,
        l.days_after,
        args.out.display()
    );
    Ok(0)
}
