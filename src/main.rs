//! The `segdb` binary: parse the command line, set up logging, run, map errors to an exit code.

use clap::Parser;

fn main() {
    let cli = segdb::config::Cli::parse();
    segdb::logging::init(cli.log_filter());
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
