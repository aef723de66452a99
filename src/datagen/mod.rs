//! The dataset generator: a realistic e-commerce clickstream. Profiles (skewed countries,
//! devices, signup dates, age bands, plans), sessions of events that follow funnel conversion
//! rates with a long-tailed activity distribution, and consent records (real TCF v2.2 TC strings
//! encoded by `privacy::tcf`, US Privacy strings, explicit purpose rows) with a realistic share of
//! refusals. Deterministic for a seed, sizes and end date. Raw ids look like e-mail addresses on
//! reserved example domains.

mod model;
mod sink;

use std::path::PathBuf;

use chrono::NaiveDate;

use crate::config::{GenFormat, GenerateArgs};
use crate::error::{Error, Result};

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub users: u64,
    pub days: u32,
    pub out: PathBuf,
    pub seed: u64,
    pub format: GenFormat,
    /// Exclusive end of the activity window (UTC midnight).
    pub end: NaiveDate,
    pub events_per_user: f64,
    /// Profiles also get `email` and `phone` columns (declare them PII before loading).
    pub contacts: bool,
    /// The share of users (percent) in a planted latent group; 0 plants none.
    pub latent_group: f64,
}

impl GenConfig {
    pub fn from_args(a: &GenerateArgs) -> Result<Self> {
        let end = NaiveDate::parse_from_str(&a.end, "%Y-%m-%d")
            .map_err(|_| Error::invalid(format!("--end {:?} is not a date (YYYY-MM-DD)", a.end)))?;
        if a.users == 0 || a.users > u64::from(u32::MAX) {
            return Err(Error::invalid("--users must be between 1 and 4294967295"));
        }
        if a.days == 0 {
            return Err(Error::invalid("--days must be at least 1"));
        }
        if !(0.0..=50.0).contains(&a.latent_group) {
            return Err(Error::invalid(
                "--latent-group is a percentage between 0 and 50",
            ));
        }
        if !(a.events_per_user > 0.0 && a.events_per_user < 10_000.0) {
            return Err(Error::invalid("--events-per-user must be positive"));
        }
        Ok(GenConfig {
            users: a.users,
            days: a.days,
            out: a.out.clone(),
            seed: a.seed,
            format: a.format,
            end,
            events_per_user: a.events_per_user,
            contacts: a.contacts,
            latent_group: a.latent_group,
        })
    }
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    pub users: u64,
    pub events: u64,
    pub consent: u64,
    pub bytes: u64,
    pub profile_files: Vec<PathBuf>,
    pub event_files: Vec<PathBuf>,
    pub consent_files: Vec<PathBuf>,
    /// With a latent group: the CSV listing its members' user ids.
    pub latent_file: Option<PathBuf>,
    pub latent_members: u64,
}

/// Write the dataset into `cfg.out`.
pub fn generate(cfg: &GenConfig) -> Result<GenStats> {
    std::fs::create_dir_all(&cfg.out)?;
    model::run(cfg)
}
