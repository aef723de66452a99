//! `segdb generate`: write the synthetic dataset (see `datasets/README.md`).

use crate::config::GenerateArgs;
use crate::datagen::{GenConfig, generate};
use crate::error::Result;

pub fn run(args: GenerateArgs) -> Result<i32> {
    let cfg = GenConfig::from_args(&args)?;
    let started = std::time::Instant::now();
    let stats = generate(&cfg)?;
    println!(
        "wrote {} users, {} events, {} consent records to {} in {:.1} s ({} MB)",
        stats.users,
        stats.events,
        stats.consent,
        cfg.out.display(),
        started.elapsed().as_secs_f64(),
        stats.bytes / 1_000_000
    );
    Ok(0)
}
