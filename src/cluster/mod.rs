//! Scale-out on Apache Ballista (DESIGN §12). The client keeps segment evaluation, DDL, ingest,
//! erasure and refreshes; queries over the tables are frozen at the statement's snapshot
//! ([`tables`]) and submitted to a Ballista scheduler ([`planner`]); the scheduler and executors
//! are segdb processes with segdb's functions and the database's object store ([`node`]). Every
//! node uses the same logical codec ([`codec`]).

pub mod auth;
pub mod codec;
pub mod node;
pub mod planner;
pub mod tables;

use crate::error::{Error, Result};

/// The scheduler URL Ballista's client dials for `df://HOST:PORT` (or `HOST:PORT`).
pub fn scheduler_url(s: &str) -> Result<String> {
    let (host, port) = host_port(s)?;
    Ok(format!("http://{host}:{port}"))
}

/// `df://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT` → (host, port).
pub fn host_port(s: &str) -> Result<(String, u16)> {
    let rest = s
        .strip_prefix("df://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s)
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        Error::invalid(format!(
            "cluster address '{s}' must be df://HOST:PORT (e.g. df://127.0.0.1:50050)"
        ))
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::invalid(format!("cluster address '{s}': bad port '{port}'")))?;
    if host.is_empty() {
        return Err(Error::invalid(format!("cluster address '{s}': no host")));
    }
    Ok((host.to_string(), port))
}

/// `4294967296`, `512MiB`, `4GiB`, `2G` → bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| Error::invalid(format!("'{s}' is not a size (e.g. 4GiB)")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(Error::invalid(format!(
                "'{s}': unknown size unit '{other}' (use KiB, MiB, GiB)"
            )));
        }
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_sizes_parse() {
        assert_eq!(
            scheduler_url("df://10.0.0.1:50050").unwrap(),
            "http://10.0.0.1:50050"
        );
        assert_eq!(host_port("localhost:7").unwrap(), ("localhost".into(), 7));
        assert!(host_port("df://nohost").is_err());
        assert!(host_port("df://h:99999").is_err());
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("lots").is_err());
    }
}
