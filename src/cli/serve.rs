//! `segdb serve` and `segdb user add`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use crate::config::{GlobalOpts, ServeArgs};
use crate::error::{Error, Result};
use crate::server::auth::{Role, add_user as write_user};

pub async fn run(global: &GlobalOpts, args: ServeArgs) -> Result<i32> {
    let file = global.file()?;
    let mut engine = crate::engine::Engine::open(&global.engine_config_of(&file)?).await?;
    if let Some(c) = &args.cluster {
        engine = engine.with_cluster_secret(c, file.cluster_secret()?)?;
    }
    let http =
        match (args.http, &file.http.listen) {
            (Some(a), _) => Some(a),
            (None, Some(s)) => Some(s.parse().map_err(|e| {
                Error::invalid(format!("[http] listen = {s:?} is not host:port: {e}"))
            })?),
            (None, None) => None,
        };
    let opts = crate::server::ServeOptions {
        addr: args.flight,
        http,
        config: global.config.clone(),
        insecure_no_auth: args.insecure_no_auth,
        tls: args.tls_cert.zip(args.tls_key),
    };
    let tls = opts.tls.is_some();
    crate::server::serve(engine, &opts, |addr, http| {
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "segdb serve: Flight SQL on {}://{addr}",
            if tls { "grpc+tls" } else { "grpc" }
        );
        if let Some(h) = http {
            let _ = writeln!(
                out,
                "segdb serve: HTTP on {}://{h}",
                if tls { "https" } else { "http" }
            );
        }
        let _ = out.flush();
    })
    .await?;
    Ok(0)
}

/// `segdb user add NAME --role ROLE [--config FILE]`: the password comes from stdin.
pub fn add_user(name: &str, role: &str, config: &Path) -> Result<i32> {
    let role = Role::parse(role)?;
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        eprint!("password for {name}: ");
        let _ = std::io::stderr().flush();
        // Do not echo the password while it is typed.
        let _ = std::process::Command::new("stty").arg("-echo").status();
        let mut line = String::new();
        let r = stdin.lock().read_line(&mut line);
        let _ = std::process::Command::new("stty").arg("echo").status();
        eprintln!();
        r?;
        line
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line
    };
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Error::invalid("no password given on stdin"));
    }
    write_user(config, name, role, password)?;
    println!(
        "user {name} ({}) written to {}",
        role.name(),
        config.display()
    );
    Ok(0)
}
