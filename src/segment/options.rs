//! segdb's session settings, as a DataFusion config extension: `SET segdb.as_of = '…'`,
//! `SHOW segdb.as_of`, and the same for `segdb.use_index`, `segdb.materialized` and
//! `segdb.identity`. They live in the DataFusion session like every other setting, so they last
//! for a Flight SQL session, are copied into every statement, and are read by segment evaluation
//! from the statement's config.

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::{DataFusionError, Result};

/// How materialised segments are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// From their latest snapshot (the default).
    Snapshot,
    /// By evaluating their definition.
    Live,
}

/// Which identities segments are evaluated over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// Stitched once any identity link exists (the default).
    Auto,
    /// One profile per connected component of linked ids.
    Stitched,
    /// Every id on its own.
    Raw,
}

/// `segdb.*` settings.
#[derive(Debug, Clone)]
pub struct SegdbOptions {
    /// Reference time of segment windows (epoch µs); `None`: the statement's start.
    /// Absolute, or relative to each statement's start (`'today'`, `'-7 days'`).
    pub as_of: Option<crate::time::Ts>,
    /// Answer DID leaves from the event index when it can.
    pub use_index: bool,
    pub materialized: Materialized,
    pub identity: IdentityMode,
    /// How long one statement may plan and run (`None`: no limit; only admins may lift or
    /// raise it, `statement::setting`).
    pub statement_timeout: Option<std::time::Duration>,
}

/// `segdb.statement_timeout` of a new session.
pub const DEFAULT_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// A `segdb.statement_timeout` value: `'0'` for no limit, a whole number of milliseconds (as
/// PostgreSQL's statement_timeout), or a duration such as `'30 seconds'` or `'5 minutes'`.
pub fn parse_timeout(v: &str) -> Result<Option<std::time::Duration>, String> {
    let v = v.trim().trim_matches('\'').trim();
    if matches!(v.to_ascii_lowercase().as_str(), "default") {
        return Ok(Some(DEFAULT_STATEMENT_TIMEOUT));
    }
    let d = match v.parse::<u64>() {
        Ok(ms) => std::time::Duration::from_millis(ms),
        Err(_) => humantime::parse_duration(v).map_err(|_| {
            format!("'{v}' is not a duration such as '30 seconds', '5 minutes' or a number of milliseconds ('0': no limit)")
        })?,
    };
    Ok(if d.is_zero() { None } else { Some(d) })
}

fn timeout_text(t: Option<std::time::Duration>) -> String {
    match t {
        None => "0".to_string(),
        Some(d) => humantime::format_duration(d).to_string(),
    }
}

impl Default for SegdbOptions {
    fn default() -> Self {
        SegdbOptions {
            as_of: None,
            use_index: true,
            materialized: Materialized::Snapshot,
            identity: IdentityMode::Auto,
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
        }
    }
}

impl ConfigExtension for SegdbOptions {
    const PREFIX: &'static str = "segdb";
}

fn bad(key: &str, msg: String) -> DataFusionError {
    DataFusionError::Configuration(format!("segdb.{key}: {msg}"))
}

/// The value of a setting as `SHOW` prints it.
fn as_of_text(v: Option<crate::time::Ts>) -> String {
    match v {
        None => "now".to_string(),
        Some(t) => t.text(),
    }
}

impl ExtensionOptions for SegdbOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let v = value.trim().trim_matches('\'');
        let lower = v.to_ascii_lowercase();
        match key.to_ascii_lowercase().as_str() {
            "as_of" => {
                self.as_of = if matches!(lower.as_str(), "" | "now" | "default") {
                    None
                } else {
                    Some(crate::time::Ts::parse(v).ok_or_else(|| {
                        bad(
                            "as_of",
                            format!("'{v}' is not an ISO-8601 timestamp such as '2026-01-31T00:00:00Z', a relative one ('today', 'yesterday', '-7 days', '-3 months') or 'now'"),
                        )
                    })?)
                };
            }
            "use_index" => {
                self.use_index = match lower.as_str() {
                    "true" | "on" | "1" => true,
                    "false" | "off" | "0" => false,
                    _ => return Err(bad("use_index", "must be true or false".into())),
                }
            }
            "materialized" => {
                self.materialized = match lower.as_str() {
                    "snapshot" | "default" => Materialized::Snapshot,
                    "live" => Materialized::Live,
                    _ => return Err(bad("materialized", "must be 'snapshot' or 'live'".into())),
                }
            }
            "identity" => {
                self.identity = match lower.as_str() {
                    "auto" | "default" => IdentityMode::Auto,
                    "stitched" => IdentityMode::Stitched,
                    "raw" => IdentityMode::Raw,
                    _ => {
                        return Err(bad(
                            "identity",
                            "must be 'auto', 'stitched' or 'raw'".into(),
                        ));
                    }
                }
            }
            "statement_timeout" => {
                self.statement_timeout =
                    parse_timeout(v).map_err(|m| bad("statement_timeout", m))?;
            }
            other => {
                return Err(DataFusionError::Configuration(format!(
                    "unknown setting segdb.{other}; segdb has segdb.as_of, segdb.use_index, segdb.materialized, segdb.identity and segdb.statement_timeout"
                )));
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        vec![
            ConfigEntry {
                key: "segdb.as_of".into(),
                value: Some(as_of_text(self.as_of)),
                description: "Reference time of segment windows ('now': each statement's start)",
            },
            ConfigEntry {
                key: "segdb.use_index".into(),
                value: Some(self.use_index.to_string()),
                description: "Answer DID leaves from the per-(event, day) index when possible",
            },
            ConfigEntry {
                key: "segdb.materialized".into(),
                value: Some(
                    match self.materialized {
                        Materialized::Snapshot => "snapshot",
                        Materialized::Live => "live",
                    }
                    .into(),
                ),
                description: "Read materialised segments from their snapshots or evaluate them live",
            },
            ConfigEntry {
                key: "segdb.identity".into(),
                value: Some(
                    match self.identity {
                        IdentityMode::Auto => "auto",
                        IdentityMode::Stitched => "stitched",
                        IdentityMode::Raw => "raw",
                    }
                    .into(),
                ),
                description: "Evaluate over stitched profiles ('auto': once links exist) or raw ids",
            },
            ConfigEntry {
                key: "segdb.statement_timeout".into(),
                value: Some(timeout_text(self.statement_timeout)),
                description: "How long one statement may plan and run ('0': no limit; only admins may raise it)",
            },
        ]
    }
}

/// The segdb settings of a session's config (defaults when the extension is missing).
pub fn of(config: &datafusion::common::config::ConfigOptions) -> SegdbOptions {
    config
        .extensions
        .get::<SegdbOptions>()
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_junk() {
        let mut o = SegdbOptions::default();
        o.set("as_of", "'2026-01-31T00:00:00Z'").unwrap();
        assert_eq!(
            o.as_of,
            crate::time::parse_micros("2026-01-31T00:00:00Z").map(crate::time::Ts::At)
        );
        assert_eq!(
            o.entries()[0].value.as_deref(),
            Some("2026-01-31T00:00:00Z")
        );
        o.set("as_of", "now").unwrap();
        assert_eq!(o.as_of, None);
        o.set("as_of", "yesterday").unwrap();
        assert_eq!(o.as_of, Some(crate::time::Ts::Yesterday));
        assert!(o.set("as_of", "the day before").is_err());
        o.set("use_index", "off").unwrap();
        assert!(!o.use_index);
        o.set("materialized", "live").unwrap();
        assert_eq!(o.materialized, Materialized::Live);
        o.set("identity", "raw").unwrap();
        assert_eq!(o.identity, IdentityMode::Raw);
        assert!(o.set("identity", "fuzzy").is_err());
        assert!(o.set("colour", "red").is_err());
    }
}
