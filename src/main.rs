//! The `segdb` binary: parse the command line, set up logging, run, map errors to an exit code.

use clap::Parser;

fn main() {
    let cli = segdb::config::Cli::parse();
    // The server logs one line per request by default; everything else only warnings.
    let serving = matches!(cli.command, segdb::config::Command::Serve(_));
    if serving && cli.global.log == "error,segdb=warn" {
        segdb::logging::init("error,segdb=info");
    } else {
        segdb::logging::init(&cli.global.log);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(segdb::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "Error: {}",
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            match e {
                segdb::Error::Invalid(_) => 2,
                _ => 1,
            }
        }
    };
    std::process::exit(code);
}
