//! The `segdb` binary: parse the command line, set up logging, run, map errors to an exit code.

use clap::Parser;

/// Stack of every thread that parses, plans or runs a statement. Planning and dropping a syntax
/// tree recurse over it; the front door bounds a statement's depth
/// (`statement::limits`, `segment::parser::MAX_DEPTH`), and this leaves room for everything
/// under those bounds. Stacks are reserved, not touched: an idle thread costs no memory.
const STACK: usize = 64 << 20;

fn main() {
    let cli = segdb::config::Cli::parse();
    segdb::logging::init(cli.log_filter());
    // The command itself runs on a thread with the same stack as the runtime's workers (the
    // main thread's is the system's default).
    let code: std::thread::Result<()> = std::thread::Builder::new()
        .name("segdb-main".into())
        .stack_size(STACK)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(STACK)
                .build()
                .expect("tokio runtime");
            let code = match runtime.block_on(segdb::cli::run(cli)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("Error: {}", e.to_string().trim());
                    e.exit_code()
                }
            };
            // Exit here, as before: dropping the runtime would wait for blocking tasks.
            std::process::exit(code)
        })
        .expect("main thread")
        .join();
    // Only a panic on that thread gets here (its message was printed): an internal error.
    std::process::exit(if code.is_err() { 4 } else { 0 });
}
