//! Subcommands, one file each. Each returns an exit code; `main` only maps errors to stderr.

pub mod demo;
pub mod generate;
pub mod ingest;
pub mod output;
pub mod sql;

use crate::config::{Cli, Command};
use crate::error::Result;

/// Run the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Sql(args) => sql::run(&cli.global, args).await,
        Command::Ingest(args) => ingest::run(&cli.global, args).await,
        Command::Generate(args) => generate::run(args),
        Command::Demo(args) => demo::run(&cli.global, args).await,
        Command::Index(crate::config::IndexCommand::Rebuild) => {
            let engine = crate::engine::Engine::open(&cli.global.engine_config()).await?;
            let started = std::time::Instant::now();
            let (keys, bytes) = engine.rebuild_index().await?;
            println!("rebuilt the event index: {keys} (event, day) entries, {} KB, in {:.2} s", bytes / 1000, started.elapsed().as_secs_f64());
            Ok(0)
        }
    }
}
