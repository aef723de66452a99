//! `segdb scheduler` and `segdb executor`.

use std::io::Write;
use std::sync::Arc;

use crate::config::{ExecutorArgs, GlobalOpts, SchedulerArgs};
use crate::error::Result;
use crate::privacy::Keyring;
use crate::storage::{Database, Location};

/// The database of `--data`, opened with this node's `--keyring` (its fingerprint must match the
/// database's marker). Nodes never create a database.
async fn open(
    global: &GlobalOpts,
    file: &crate::server::auth::ServerConfig,
) -> Result<(Database, Arc<Keyring>)> {
    crate::storage::register_handlers();
    let keyring = Keyring::open(&global.keyring)?;
    let location =
        Location::parse(&global.data)?.with_options(global.engine_config_of(file)?.storage);
    let db = Database::open_existing(location, &keyring).await?;
    Ok((db, Arc::new(keyring)))
}

pub async fn scheduler(global: &GlobalOpts, args: SchedulerArgs) -> Result<i32> {
    let file = global.file()?;
    let secret = file.cluster_secret()?;
    let (db, keyring) = open(global, &file).await?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "segdb scheduler: listening on df://{addr}");
    let _ = out.flush();
    crate::cluster::node::run_scheduler(db, keyring, listener, args.cleanup_after, secret).await?;
    Ok(0)
}

pub async fn executor(global: &GlobalOpts, args: ExecutorArgs) -> Result<i32> {
    let file = global.file()?;
    let (db, keyring) = open(global, &file).await?;
    let (scheduler_host, scheduler_port) = crate::cluster::host_port(&args.scheduler)?;
    // Ballista advertises the port it was given: port 0 is resolved here to a free port, so
    // that the scheduler is told the port the executor actually listens on.
    let port = match args.port {
        0 => free_port(&args.bind_host)?,
        p => p,
    };
    let grpc_port = match args.grpc_port {
        Some(0) => free_port(&args.bind_host)?,
        Some(p) => p,
        None if args.port == 0 => free_port(&args.bind_host)?,
        None => port.checked_add(1).ok_or_else(|| {
            crate::Error::Usage("--port 65535 leaves no room for --grpc-port (give it)".into())
        })?,
    };
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("segdb-executor-{port}")));
    let memory_pool_size = args
        .memory_pool_size
        .as_deref()
        .map(crate::cluster::parse_bytes)
        .transpose()?;
    let vcores = args.vcores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let o = crate::cluster::node::ExecutorOptions {
        scheduler_host,
        scheduler_port,
        bind_host: args.bind_host,
        port,
        grpc_port,
        vcores,
        work_dir,
        memory_pool_size,
        secret: file.cluster_secret()?,
    };
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "segdb executor: flight on {}:{} ({} tasks, work dir {}), scheduler {}:{}",
        o.bind_host,
        o.port,
        o.vcores,
        o.work_dir.display(),
        o.scheduler_host,
        o.scheduler_port
    );
    let _ = out.flush();
    crate::cluster::node::run_executor(db, keyring, o).await?;
    Ok(0)
}

/// A port free on `host` now (the listener is closed again; the executor binds it right after).
fn free_port(host: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((host, 0))?;
    Ok(l.local_addr()?.port())
}
