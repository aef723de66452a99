//! Reading single Delta commits (`_delta_log/<version>.json`): which files a commit added or
//! removed and the `segdb.*` metadata segdb put in its commit info. Derived state uses it to
//! catch up with the commits since the version it reflects.

use object_store::ObjectStoreExt;

use super::{DataFile, Database, Table};
use crate::error::Result;

/// One commit of a table.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// `segdb.op` of the commit info (`ingest`, `forget`, `retention`, …), if segdb wrote it.
    pub op: Option<String>,
    /// Every commit-info entry (`segdb.*` keys included).
    pub info: serde_json::Map<String, serde_json::Value>,
    pub added: Vec<DataFile>,
    pub removed: usize,
    /// Whether the commit changed the table's metadata (schema).
    pub metadata: bool,
}

/// Read commit `version` of `t`; `None` when its log entry is gone (cleaned up after a
/// checkpoint) or never existed.
pub async fn commit(db: &Database, t: Table, version: u64) -> Result<Option<Commit>> {
    let path =
        object_store::path::Path::from(format!("{}/_delta_log/{version:020}.json", t.path()));
    let bytes = match db.store().get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| db.unreachable(e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(db.unreachable(e)),
    };
    let mut c = Commit::default();
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(info) = v.get("commitInfo").and_then(|i| i.as_object()) {
            c.op = info
                .get("segdb.op")
                .and_then(|o| o.as_str())
                .map(str::to_string);
            c.info = info.clone();
        } else if let Some(add) = v.get("add") {
            let path = add.get("path").and_then(|p| p.as_str()).unwrap_or_default();
            c.added.push(DataFile {
                path: percent_decode(path),
                size: add.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
            });
        } else if v.get("remove").is_some() {
            c.removed += 1;
        } else if v.get("metaData").is_some() {
            c.metadata = true;
        }
    }
    Ok(Some(c))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(h) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
