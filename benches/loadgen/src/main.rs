//! Load generator for the profile API: `--connections` keep-alive HTTP/1.1 clients, each asking
//! `GET /v1/profiles/{id}/segments` for ids taken round-robin from `--ids` (one raw id per line)
//! for `--seconds`; prints one JSON line: requests, requests/s, latency percentiles in µs
//! (measured at the client, so they include the client's own time and the loopback), and the
//! answers by status.
//!
//! usage: segdb-loadgen --addr 127.0.0.1:8080 --ids ids.txt [--token T] [--connections 32]
//!        [--seconds 20]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Percent-encode an id for a path segment.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request on an open connection; returns the status.
async fn get(r: &mut BufReader<TcpStream>, head: &[u8]) -> std::io::Result<u16> {
    r.get_mut().write_all(head).await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await?;
    Ok(status)
}

#[tokio::main]
async fn main() {
    let addr = arg("--addr").expect("--addr host:port");
    let ids: Vec<String> = std::fs::read_to_string(arg("--ids").expect("--ids"))
        .expect("the ids file")
        .lines()
        .filter(|l| !l.is_empty())
        .map(encode)
        .collect();
    let auth = arg("--token")
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let connections: usize = arg("--connections").map_or(32, |v| v.parse().unwrap());
    let seconds: u64 = arg("--seconds").map_or(20, |v| v.parse().unwrap());
    let heads: Arc<Vec<Vec<u8>>> = Arc::new(
        ids.iter()
            .map(|id| {
                format!("GET /v1/profiles/{id}/segments HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n")
                    .into_bytes()
            })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (heads, addr) = (heads.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(&addr).await.expect("connect");
            s.set_nodelay(true).unwrap();
            let mut r = BufReader::new(s);
            let mut lat = Vec::new();
            let mut status: BTreeMap<u16, u64> = BTreeMap::new();
            let mut i = c * 7919;
            while Instant::now() < deadline {
                let head = &heads[i % heads.len()];
                i += 1;
                let t0 = Instant::now();
                let s = match get(&mut r, head).await {
                    Ok(s) => s,
                    Err(_) => {
                        *status.entry(0).or_default() += 1;
                        break;
                    }
                };
                lat.push(t0.elapsed().as_micros() as u64);
                *status.entry(s).or_default() += 1;
            }
            (lat, status)
        }));
    }
    let mut lat = Vec::new();
    let mut status: BTreeMap<u16, u64> = BTreeMap::new();
    for t in tasks {
        let (l, s) = t.await.unwrap();
        lat.extend(l);
        for (k, v) in s {
            *status.entry(k).or_default() += v;
        }
    }
    let took = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let status: Vec<String> = status.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    println!(
        "{{\"requests\": {}, \"per_second\": {:.1}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"status\": {{{}}}}}",
        lat.len(),
        lat.len() as f64 / took,
        p(0.50),
        p(0.99),
        p(0.999),
        status.join(", ")
    );
}
