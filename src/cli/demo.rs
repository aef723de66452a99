//! `segdb demo`: on an empty database, generate a small dataset and ingest it; then run the
//! example queries of `sql/examples/` (compiled into the binary) and print their results.

use crate::cli::output;
use crate::config::{DemoArgs, GenFormat, GlobalOpts, OutputFormat};
use crate::datagen::{GenConfig, generate};
use crate::engine::Engine;
use crate::error::Result;
use crate::ingest::{IngestOptions, Kind};

/// The example scripts, in the order the demo runs them.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "sql/examples/01_overview.sql",
        include_str!("../../sql/examples/01_overview.sql"),
    ),
    (
        "sql/examples/02_funnel.sql",
        include_str!("../../sql/examples/02_funnel.sql"),
    ),
    (
        "sql/examples/03_lookup_by_raw_id.sql",
        include_str!("../../sql/examples/03_lookup_by_raw_id.sql"),
    ),
    (
        "sql/examples/04_segments.sql",
        include_str!("../../sql/examples/04_segments.sql"),
    ),
    (
        "sql/examples/05_segment_queries.sql",
        include_str!("../../sql/examples/05_segment_queries.sql"),
    ),
    (
        "sql/examples/06_campaign_lift.sql",
        include_str!("../../sql/examples/06_campaign_lift.sql"),
    ),
    (
        "sql/examples/07_interests_and_lookalikes.sql",
        include_str!("../../sql/examples/07_interests_and_lookalikes.sql"),
    ),
];

/// The demo's category map: the generated shop's product categories as IAB content categories.
const PRODUCT_MAP: &str = "value,category\nshoes,Style & Fashion\napparel,Style & Fashion\n\
electronics,Technology & Computing\nhome,Home & Garden\nbeauty,Style & Fashion > Beauty\n\
sports,Sports\nbooks,Books and Literature\ntoys,Hobbies & Interests\n";

pub async fn run(global: &GlobalOpts, args: DemoArgs) -> Result<i32> {
    let engine = Engine::open(&crate::engine::Config {
        create: true,
        ..global.engine_config()?
    })
    .await?
    .with_caller("cli")?;
    let events = engine.sql("SELECT count(*) AS n FROM events").await?;
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(
        events.batches[0].column(0),
    )
    .value(0);
    if n == 0 {
        println!(
            "empty database at {}: generating {} users × the 30 days before today …",
            engine.database().location(),
            args.users
        );
        load(&engine, args.users, true).await?;
    } else {
        println!(
            "database at {} already holds {n} events; running the examples on it",
            engine.database().location()
        );
    }
    for (name, script) in EXAMPLES {
        println!("\n== {name}");
        for stmt in crate::statement::split(script) {
            let title = stmt
                .lines()
                .find(|l| l.trim_start().starts_with("--"))
                .map(|l| l.trim_start_matches(['-', ' ']));
            if let Some(t) = title {
                println!("-- {t}");
            }
            let started = std::time::Instant::now();
            let result = engine.sql(&stmt).await?;
            let stdout = std::io::stdout();
            output::print(&mut stdout.lock(), &result, OutputFormat::Table)?;
            println!(
                "({} rows, {:.1} ms)",
                result.num_rows(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
    Ok(0)
}

/// What the demo loads into an empty database: `users` generated users with activity in the 30
/// days before today, their e-mail and phone declared personal (stored only as match keys), and
/// consent. The README's examples are tested on exactly this.
pub async fn load(engine: &Engine, users: u64, progress: bool) -> Result<()> {
    let dir = tempfile_dir()?;
    let cfg = GenConfig {
        users,
        days: 30,
        out: dir.clone(),
        seed: 42,
        format: GenFormat::Parquet,
        // Up to today (exclusive): the examples evaluate as of today's midnight, so every
        // one of them has data behind it whatever the day.
        end: chrono::Utc::now().date_naive(),
        events_per_user: 20.0,
        // E-mail and phone, declared personal below, so the activation examples have
        // match keys to export.
        contacts: true,
        latent_group: 0.0,
    };
    let stats = generate(&cfg)?;
    engine
        .sql("ALTER TABLE profiles SET PII (email AS EMAIL, phone AS PHONE 'DE')")
        .await?;
    println!("declared profiles.email and profiles.phone personal: stored only as hashes");
    let opts = IngestOptions {
        progress,
        ..Default::default()
    };
    for (kind, files) in [
        (Kind::Profiles, stats.profile_files),
        (Kind::Events, stats.event_files),
        (Kind::Consent, stats.consent_files),
    ] {
        let r = engine.ingest(kind, &files, &opts).await?;
        println!(
            "ingested {} rows into {} ({} ms)",
            r.rows_loaded,
            kind.name(),
            r.took_ms
        );
    }
    let n = map_products(engine, &dir).await?;
    println!("mapped the product categories to {n} IAB categories (category map products)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The demo's category map `products` on the events' `category` (the map file is written to
/// `dir`); returns how many rows it has.
pub async fn map_products(engine: &Engine, dir: &std::path::Path) -> Result<usize> {
    engine
        .sql("CREATE CATEGORY MAP products FROM EVENT PROPERTY category")
        .await?;
    let map = dir.join("products_map.csv");
    std::fs::write(&map, PRODUCT_MAP)?;
    engine.load_category_map("products", &map).await
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("segdb-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
