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
            eprintln!("Error: {}", e.to_string().trim());
            e.exit_code()
        }
    };
    std::process::exit(code);
}
