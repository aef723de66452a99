//! `segdb ingest events|profiles|consent|links|category_map FILE…`: load, then report what was loaded and which rows
//! were rejected (by file and row number, never by value).

use crate::config::{GlobalOpts, IngestArgs};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ingest::IngestOptions;

pub async fn run(global: &GlobalOpts, args: IngestArgs) -> Result<i32> {
    let Some(kind) = args.kind.data() else {
        return category_map(global, &args).await;
    };
    if args.map.is_some() {
        return Err(Error::Usage(format!(
            "--map applies to category_map loads, not {}",
            kind.name()
        )));
    }
    if args.merge && kind != crate::ingest::Kind::Profiles {
        return Err(Error::Usage(format!(
            "--merge applies to profiles loads, not {}",
            kind.name()
        )));
    }
    let config = global.file()?;
    let engine = Engine::open(&crate::engine::Config {
        create: true,
        ..global.engine_config_of(&config)?
    })
    .await?
    .with_caller("cli")?;
    let opts = IngestOptions {
        format: args.format,
        strict: args.strict,
        progress: true,
        pii: args.pii.clone(),
        max_ids_per_profile: Some(config.identity.max_ids_per_profile),
        merge: args.merge,
    };
    let report = match engine.ingest(kind, &args.files, &opts).await {
        Ok(r) => r,
        Err(e @ Error::Rejected(_)) => {
            eprintln!("Error: {e}");
            return Ok(e.exit_code());
        }
        Err(e) => return Err(e),
    };
    let secs = report.took_ms as f64 / 1000.0;
    match report.version {
        Some(v) => println!(
            "loaded {} rows into {} from {} file(s), {} new users, in {secs:.2} s (table version {v})",
            report.rows_loaded,
            report.kind.name(),
            report.files,
            report.new_users
        ),
        None => println!(
            "loaded 0 rows into {} from {} file(s); nothing committed",
            report.kind.name(),
            report.files
        ),
    }
    if report.refused_links > 0 {
        eprintln!(
            "refused {} link(s): the profile would hold more than {} ids ([identity] max_ids_per_profile)",
            report.refused_links, config.identity.max_ids_per_profile
        );
    }
    if !report.rejected.is_empty() {
        eprintln!("rejected {} rows:", report.rejected.len());
        for b in report.rejected.iter().take(args.show_rejected) {
            eprintln!("  {b}");
        }
        if report.rejected.len() > args.show_rejected {
            eprintln!(
                "  … and {} more",
                report.rejected.len() - args.show_rejected
            );
        }
    }
    Ok(0)
}

/// `segdb ingest category_map FILE --map name`: replace the map's rows with the file's
/// (`value`, `category`); a bad row refuses the whole file and changes nothing.
async fn category_map(global: &GlobalOpts, args: &IngestArgs) -> Result<i32> {
    let Some(map) = args.map.as_deref() else {
        return Err(Error::Usage(
            "a category_map load names its map: segdb ingest category_map FILE --map NAME (CREATE CATEGORY MAP NAME FROM EVENT PROPERTY col first)".into(),
        ));
    };
    if args.files.len() != 1 {
        return Err(Error::Usage(
            "a category_map load takes one file (it replaces the map's rows)".into(),
        ));
    }
    let config = global.file()?;
    let engine = Engine::open(&global.engine_config_of(&config)?)
        .await?
        .with_caller("cli")?;
    let started = std::time::Instant::now();
    let n = engine.load_category_map(map, &args.files[0]).await?;
    println!(
        "loaded {n} rows into category map {map} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}
