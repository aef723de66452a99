//! Subcommands, one file each. Each returns an exit code; `main` only maps errors to stderr.

pub mod cluster;
pub mod demo;
pub mod generate;
pub mod ingest;
pub mod output;
pub mod refresh;
pub mod report;
pub mod serve;
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
        Command::Init => {
            let mut config = cli.global.engine_config()?;
            let location =
                crate::storage::Location::parse(&config.data)?.with_options(config.storage.clone());
            crate::storage::register_handlers();
            if crate::storage::Database::exists(&location).await? {
                println!("{location} is already a segdb database; nothing to do");
                return Ok(0);
            }
            config.create = true;
            crate::engine::Engine::open(&config).await?;
            println!(
                "created an empty segdb database at {location} (keyring {})",
                config.keyring.display()
            );
            Ok(0)
        }
        Command::Index(crate::config::IndexCommand::Rebuild) => {
            let engine = crate::engine::Engine::open(&cli.global.engine_config()?)
                .await?
                .with_caller("cli")?;
            let started = std::time::Instant::now();
            let (keys, bytes) = engine.rebuild_index().await?;
            println!(
                "rebuilt the event index: {keys} (event, day) entries, {} KB, in {:.2} s",
                bytes / 1000,
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        Command::Vacuum => {
            let engine = crate::engine::Engine::open(&cli.global.engine_config()?)
                .await?
                .with_caller("cli")?;
            print_table(&engine.sql("VACUUM").await?)
        }
        Command::Optimize { table } => {
            let file = cli.global.file()?;
            let engine = crate::engine::Engine::open(&cli.global.engine_config_of(&file)?)
                .await?
                .with_caller("cli")?;
            file.apply_to(engine.shared())?;
            if let Some(t) = &table {
                // The name is checked here, so it is never spliced into SQL unchecked.
                crate::storage::optimize::tables_named(Some(t))?;
            }
            let sql = match &table {
                Some(t) => format!("OPTIMIZE {t}"),
                None => "OPTIMIZE".to_string(),
            };
            print_table(&engine.sql(&sql).await?)
        }
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Scheduler(args) => cluster::scheduler(&cli.global, args).await,
        Command::Executor(args) => cluster::executor(&cli.global, args).await,
        Command::Refresh(args) => refresh::run(&cli.global, args).await,
        Command::Report(crate::config::ReportCommand::Lift(args)) => {
            report::lift(&cli.global, args).await
        }
        Command::User(crate::config::UserCommand::Add { name, role }) => {
            serve::add_user(&name, &role, &cli.global.config)
        }
        Command::Keys(crate::config::KeysCommand::Rotate { domain }) => {
            if domain == crate::privacy::keyring::USER_DOMAIN {
                return Err(crate::Error::invalid(
                    "the user key cannot be rotated: every stored pseudonym is made with it (rotate partner domains instead)",
                ));
            }
            let mut ring = crate::privacy::Keyring::open(&cli.global.keyring)?;
            ring.rotate(&domain)?;
            println!(
                "rotated the key of domain {domain:?} in {}",
                cli.global.keyring.display()
            );
            Ok(0)
        }
        Command::Keys(crate::config::KeysCommand::Seal) => {
            let mut ring = crate::privacy::Keyring::open(&cli.global.keyring)?;
            ring.seal()?;
            println!(
                "sealed {}; every command now needs the same {} or {} to open it",
                cli.global.keyring.display(),
                crate::privacy::seal::PASSPHRASE_VAR,
                crate::privacy::seal::KEK_VAR
            );
            Ok(0)
        }
        Command::Keys(crate::config::KeysCommand::Unseal) => {
            let mut ring = crate::privacy::Keyring::open(&cli.global.keyring)?;
            if !ring.is_sealed() {
                return Err(crate::Error::invalid(format!(
                    "{} is not sealed",
                    cli.global.keyring.display()
                )));
            }
            ring.unseal()?;
            println!("unsealed {}", cli.global.keyring.display());
            Ok(0)
        }
        Command::Keys(crate::config::KeysCommand::Fingerprint) => {
            let ring = crate::privacy::Keyring::open(&cli.global.keyring)?;
            println!(
                "{}",
                crate::privacy::pseudonym::Pseudonymizer::fingerprint(&ring)
            );
            Ok(0)
        }
    }
}

/// Print a maintenance command's result as a table; exit code 0.
fn print_table(r: &crate::result::QueryResult) -> Result<i32> {
    crate::cli::output::print(
        &mut std::io::stdout(),
        r,
        crate::config::OutputFormat::Table,
    )?;
    Ok(0)
}
