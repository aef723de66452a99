//! Users, roles and bearer tokens of the Flight SQL server.
//!
//! The config file (`segdb.toml`) holds one table per user with a role and an argon2id password
//! hash (PHC string); `segdb user add` writes them. A handshake with `authorization: Basic …`
//! returns a random bearer token that expires after `server.token_ttl_secs` (default one hour).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::Output;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::statement::Role;

/// One `[users.NAME]` table of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserEntry {
    pub role: Role,
    /// argon2id PHC string (`$argon2id$v=19$m=…`).
    pub password_hash: String,
}

/// The parsed config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub users: HashMap<String, UserEntry>,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub export: ExportSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub http: crate::http::HttpConfig,
    #[serde(default)]
    pub collector: crate::collector::CollectorConfig,
    #[serde(default)]
    pub live: crate::materialize::scheduler::LiveConfig,
}

/// `[cluster]`: the secret shared by a cluster's scheduler, executors and clients
/// (`SEGDB_CLUSTER_SECRET` wins over it).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClusterSection {
    pub secret: Option<String>,
}

/// `[storage]`: how objects in a bucket are stored. Server-side encryption applies to every
/// object segdb writes and reads under an `s3://` database, and to exports to a bucket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `'AES256'` (S3-managed keys), `'aws:kms'` (KMS; `kms_key_id` names the key, else the
    /// bucket's default) or `'sse-c'` (a key of your own in `sse_c_key_file`).
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    /// A file holding the base64 of 32 bytes (SSE-C).
    pub sse_c_key_file: Option<PathBuf>,
    /// The size `OPTIMIZE` compacts files to (MB; default 128).
    pub target_file_mb: Option<u64>,
}

impl StorageSection {
    /// The object-store options (object_store's `aws_*` keys) these settings mean.
    pub fn object_store_options(&self) -> Result<HashMap<String, String>> {
        let mut o = HashMap::new();
        let Some(sse) = self.sse.as_deref() else {
            if self.kms_key_id.is_some() || self.sse_c_key_file.is_some() {
                return Err(Error::invalid(
                    "[storage] kms_key_id and sse_c_key_file need sse = 'aws:kms' or 'sse-c'",
                ));
            }
            return Ok(o);
        };
        match sse {
            "AES256" => {
                o.insert("aws_server_side_encryption".into(), "AES256".into());
            }
            "aws:kms" => {
                // object_store's name for it.
                o.insert("aws_server_side_encryption".into(), "sse:kms".into());
                if let Some(k) = &self.kms_key_id {
                    o.insert("aws_sse_kms_key_id".into(), k.clone());
                }
            }
            "sse-c" => {
                let Some(f) = &self.sse_c_key_file else {
                    return Err(Error::invalid(
                        "[storage] sse = 'sse-c' needs sse_c_key_file (a file holding the base64 of 32 bytes)",
                    ));
                };
                let text = std::fs::read_to_string(f).map_err(|e| {
                    Error::invalid(format!(
                        "cannot read [storage] sse_c_key_file {}: {e}",
                        f.display()
                    ))
                })?;
                let key = text.trim();
                let ok = base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .is_ok_and(|b| b.len() == 32);
                if !ok {
                    return Err(Error::invalid(format!(
                        "[storage] sse_c_key_file {} must hold the base64 of 32 bytes",
                        f.display()
                    )));
                }
                o.insert("aws_server_side_encryption".into(), "sse-c".into());
                o.insert("aws_sse_customer_key_base64".into(), key.to_string());
            }
            other => {
                return Err(Error::invalid(format!(
                    "[storage] sse = {other:?}: use 'AES256', 'aws:kms' or 'sse-c'"
                )));
            }
        }
        Ok(o)
    }
}

/// `[scheduler]` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerSection {
    /// Refreshes running at the same time at most.
    #[serde(default = "default_concurrency")]
    pub max_concurrent: usize,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            max_concurrent: default_concurrency(),
        }
    }
}

fn default_concurrency() -> usize {
    2
}

/// `[export]`: where analysts may export to (URL prefixes, which also let webhooks reach
/// private addresses), and how webhook and segment exports deliver.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExportSection {
    #[serde(default)]
    pub allowed_urls: Vec<String>,
    /// Changes per webhook batch (default 500).
    pub webhook_batch: Option<usize>,
    /// How long a receiver has to answer (default '15 seconds').
    pub webhook_timeout: Option<String>,
    /// How long a failing receiver is retried before the export is `failed` (default '24 hours').
    pub webhook_retry_for: Option<String>,
}

impl ExportSection {
    /// The delivery settings, checked.
    pub fn delivery(&self) -> Result<crate::materialize::deliver::Settings> {
        let d = crate::materialize::deliver::Settings::default();
        let dur = |key: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            v.as_deref().map_or(Ok(default), |s| {
                crate::time::config_duration("export", key, s, Duration::from_millis(1))
            })
        };
        let batch = self.webhook_batch.unwrap_or(d.batch);
        if batch == 0 || batch > 100_000 {
            return Err(Error::invalid(
                "[export] webhook_batch must be between 1 and 100000",
            ));
        }
        Ok(crate::materialize::deliver::Settings {
            batch,
            timeout: dur("webhook_timeout", &self.webhook_timeout, d.timeout)?,
            retry_for: dur("webhook_retry_for", &self.webhook_retry_for, d.retry_for)?,
            allowed: self.allowed_urls.clone(),
        })
    }
}

/// `[identity]` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentitySection {
    /// Ids a stitched profile may hold at most; links beyond it are refused and counted.
    #[serde(default = "default_max_ids")]
    pub max_ids_per_profile: usize,
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            max_ids_per_profile: default_max_ids(),
        }
    }
}

fn default_max_ids() -> usize {
    50
}

/// `[server]` settings.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSection {
    /// Lifetime of a bearer token.
    #[serde(default = "default_ttl")]
    pub token_ttl_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            token_ttl_secs: default_ttl(),
        }
    }
}

fn default_ttl() -> u64 {
    3600
}

impl ServerConfig {
    /// Give `shared` this file's `[collector]` settings (the key grace of `ROTATE KEY`) and
    /// `[storage] target_file_mb` (`OPTIMIZE`): every command that runs statements applies them.
    pub fn apply_to(&self, shared: &crate::session::Shared) -> Result<crate::collector::Settings> {
        let settings = self.collector.settings()?;
        *shared.collector_settings.write().expect("not poisoned") = settings.clone();
        crate::materialize::set_full_every(self.live.settings()?.full_every);
        if let Some(mb) = self.storage.target_file_mb {
            shared
                .target_file_mb
                .store(mb, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(settings)
    }

    /// The cluster's secret: `SEGDB_CLUSTER_SECRET`, else `[cluster] secret`; a cluster needs one.
    pub fn cluster_secret(&self) -> Result<crate::cluster::auth::ClusterSecret> {
        crate::cluster::auth::ClusterSecret::required(self.cluster.secret.as_deref())
    }

    /// Read the config file; a missing file is an empty config (no users).
    pub fn load(path: &Path) -> Result<ServerConfig> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(Error::invalid(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        toml::from_str(&text)
            .map_err(|e| Error::invalid(format!("{} is not a valid config: {e}", path.display())))
    }
}

/// Hash a password for the config file (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::invalid(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::invalid(format!("cannot hash the password: {e}")))
}

/// Add or replace user `name` in the config file at `path` (created with mode 0600), keeping
/// everything else in it.
pub fn add_user(path: &Path, name: &str, role: Role, password: &str) -> Result<()> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(Error::invalid(
            "a user name must be non-empty, without ':' or spaces",
        ));
    }
    if password.is_empty() {
        return Err(Error::invalid("the password is empty"));
    }
    let mut doc: toml::Table = match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t).map_err(|e| {
            Error::invalid(format!("{} is not a valid config: {e}", path.display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e.into()),
    };
    let users = doc
        .entry("users")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(users) = users else {
        return Err(Error::invalid(format!(
            "{}: `users` must be a table",
            path.display()
        )));
    };
    let entry = UserEntry {
        role,
        password_hash: hash_password(password)?,
    };
    users.insert(
        name.to_string(),
        toml::Value::try_from(entry).map_err(|e| Error::invalid(e.to_string()))?,
    );
    let text = toml::to_string(&doc).map_err(|e| Error::invalid(e.to_string()))?;
    write_private(path, &text)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// User name and session of callers without credentials (only with `--insecure-no-auth`).
const ANONYMOUS: &str = "anonymous";

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    /// The bearer token (or "anonymous" without auth): the key of the caller's session settings.
    pub session: String,
}

/// Why a call is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Missing,
    BadCredentials,
    Expired,
    UnknownToken,
    /// Too many failed logins for this user name from this address; retry after the delay.
    Throttled(Duration),
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Denied::Missing => {
                "no credentials: authenticate with a handshake (authorization: Basic …) and send the bearer token"
            }
            Denied::BadCredentials => "wrong user name or password",
            Denied::Expired => "the bearer token has expired; authenticate again",
            Denied::UnknownToken => "unknown bearer token; authenticate again",
            Denied::Throttled(d) => {
                return write!(
                    f,
                    "too many failed logins for this user name from this address; try again in {} s",
                    d.as_secs().max(1)
                );
            }
        })
    }
}

/// Users and live tokens.
pub struct Authenticator {
    users: HashMap<String, UserEntry>,
    ttl: Duration,
    /// `--insecure-no-auth`: everyone is an admin.
    open: bool,
    tokens: Mutex<HashMap<String, (String, Role, Instant)>>,
    verifier: Verifier,
    failures: Mutex<Failures>,
}

/// Failed logins per (user name as sent, client address): after [`FREE_FAILURES`] in a row,
/// each further attempt within a growing delay (1 s, doubling, at most [`MAX_DELAY`]) is refused
/// without checking the password. Unknown and known user names are counted alike, so the
/// refusal says nothing about which exist; other user names from the same address, and the
/// same user name from other addresses, are not slowed. A success clears the count; an entry
/// is forgotten [`FORGET_AFTER`] after its last failure.
#[derive(Default)]
struct Failures {
    by_key: HashMap<(String, String), (u32, Instant)>,
}

pub const FREE_FAILURES: u32 = 10;
pub const MAX_DELAY: Duration = Duration::from_secs(60);
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The most (user, address) pairs remembered; past it the oldest are dropped.
const MAX_TRACKED: usize = 100_000;

impl Failures {
    fn delay(n: u32) -> Duration {
        let extra = n.saturating_sub(FREE_FAILURES).min(16);
        Duration::from_secs(1u64 << extra).min(MAX_DELAY)
    }

    /// The time left before `key` may try again (`None`: now).
    fn wait(&mut self, key: &(String, String), now: Instant) -> Option<Duration> {
        let &(n, last) = self.by_key.get(key)?;
        if now.duration_since(last) > FORGET_AFTER {
            self.by_key.remove(key);
            return None;
        }
        if n < FREE_FAILURES {
            return None;
        }
        let until = last + Self::delay(n);
        (until > now).then(|| until - now)
    }

    fn failed(&mut self, key: (String, String), now: Instant) {
        if self.by_key.len() >= MAX_TRACKED {
            self.by_key
                .retain(|_, (_, last)| now.duration_since(*last) <= FORGET_AFTER);
            if self.by_key.len() >= MAX_TRACKED {
                let oldest = self
                    .by_key
                    .iter()
                    .min_by_key(|(_, (_, l))| *l)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.by_key.remove(&k);
                }
            }
        }
        let e = self.by_key.entry(key).or_insert((0, now));
        *e = (e.0 + 1, now);
    }
}

impl Authenticator {
    pub fn new(config: &ServerConfig, open: bool) -> Authenticator {
        Authenticator {
            users: config.users.clone(),
            ttl: Duration::from_secs(config.server.token_ttl_secs.max(1)),
            open,
            tokens: Mutex::new(HashMap::new()),
            verifier: Verifier::new(),
            failures: Mutex::new(Failures::default()),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether `session` (a bearer token, or the shared session without auth) is still valid.
    pub fn is_live(&self, session: &str) -> bool {
        (self.open && session == ANONYMOUS)
            || self
                .tokens
                .lock()
                .expect("not poisoned")
                .get(session)
                .is_some_and(|(_, _, exp)| *exp > Instant::now())
    }

    /// Check `authorization: Basic …` from the client at `address` and issue a token.
    pub fn login(
        &self,
        header: Option<&str>,
        address: &str,
    ) -> std::result::Result<(String, Caller), Denied> {
        let basic = header.and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        });
        let (user, role) = match basic {
            Some(b) => {
                // Padding is optional: the Go client (ADBC) sends unpadded base64.
                let c = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b.trim().trim_end_matches('='))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(Denied::BadCredentials)?;
                let (user, password) = c.split_once(':').ok_or(Denied::BadCredentials)?;
                let key = (user.to_string(), address.to_string());
                if !self.open
                    && let Some(wait) = self
                        .failures
                        .lock()
                        .expect("not poisoned")
                        .wait(&key, Instant::now())
                {
                    return Err(Denied::Throttled(wait));
                }
                // Exactly one password check whether or not the user exists (an unknown user
                // is checked against a hash with the default parameters), so that the time
                // taken does not tell which user names exist.
                let known = self.users.get(user);
                let hash = known.map_or(DUMMY_HASH, |e| e.password_hash.as_str());
                let right = self.verifier.verify(hash, password) && known.is_some();
                match known {
                    Some(entry) if right => {
                        self.failures
                            .lock()
                            .expect("not poisoned")
                            .by_key
                            .remove(&key);
                        (user.to_string(), entry.role)
                    }
                    _ if self.open => (user.to_string(), Role::Admin),
                    _ => {
                        self.failures
                            .lock()
                            .expect("not poisoned")
                            .failed(key, Instant::now());
                        return Err(Denied::BadCredentials);
                    }
                }
            }
            None if self.open => (ANONYMOUS.to_string(), Role::Admin),
            None => return Err(Denied::Missing),
        };
        let token = new_token();
        let mut tokens = self.tokens.lock().expect("not poisoned");
        let now = Instant::now();
        tokens.retain(|_, (_, _, exp)| *exp > now);
        tokens.insert(token.clone(), (user.clone(), role, now + self.ttl));
        Ok((
            token.clone(),
            Caller {
                user,
                role,
                session: token,
            },
        ))
    }

    /// Check `authorization: Bearer …` of a call.
    pub fn check(&self, header: Option<&str>) -> std::result::Result<Caller, Denied> {
        let token = header.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        let Some(token) = token.map(str::trim) else {
            if self.open {
                return Ok(Caller {
                    user: ANONYMOUS.into(),
                    role: Role::Admin,
                    session: ANONYMOUS.into(),
                });
            }
            return Err(Denied::Missing);
        };
        let mut tokens = self.tokens.lock().expect("not poisoned");
        match tokens.get(token) {
            Some((user, role, exp)) if *exp > Instant::now() => Ok(Caller {
                user: user.clone(),
                role: *role,
                session: token.to_string(),
            }),
            Some(_) => {
                tokens.remove(token);
                Err(Denied::Expired)
            }
            None => Err(Denied::UnknownToken),
        }
    }
}

fn refused(d: Denied) -> crate::http::Refused {
    match d {
        Denied::Missing => crate::http::Refused::Missing,
        Denied::Throttled(w) => crate::http::Refused::Throttled(w),
        other => crate::http::Refused::Bad(other.to_string()),
    }
}

/// The profile API's logins and tokens are Flight SQL's.
impl crate::http::Tokens for Authenticator {
    fn login(
        &self,
        header: Option<&str>,
        address: &str,
    ) -> std::result::Result<(String, String, &'static str), crate::http::Refused> {
        Authenticator::login(self, header, address)
            .map(|(token, c)| (token, c.user, c.role.name()))
            .map_err(refused)
    }

    fn check(&self, header: Option<&str>) -> std::result::Result<(), crate::http::Refused> {
        Authenticator::check(self, header)
            .map(|_| ())
            .map_err(refused)
    }

    fn caller(&self, token: &str) -> std::result::Result<(String, Role), crate::http::Refused> {
        Authenticator::check(self, Some(&format!("Bearer {token}")))
            .map(|c| (c.user, c.role))
            .map_err(refused)
    }

    fn revoke(&self, token: &str) {
        self.tokens.lock().expect("not poisoned").remove(token);
    }

    fn is_open(&self) -> bool {
        self.open
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// A valid hash of a random password, checked when the user does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2VnZGJkdW1teXNhbHQ$0Qk1l9w0tQnOa1wS4H0o4m0n7q4cQ0mZz8yJ9m2eQ9s";

/// Password checks run on a few reusable argon2 work areas. Each check needs `m` KiB (19 MiB with
/// the default parameters); allocating that per login left the allocator holding ~20 MB for
/// every login that ran concurrently with another, so a login storm grew the server by hundreds
/// of megabytes it never gave back. At most `available_parallelism` checks run at once (more
/// could not run faster on the cores there are); the others wait for a work area.
struct Verifier {
    areas: Mutex<(Vec<Vec<Block>>, usize)>,
    freed: Condvar,
    limit: usize,
}

impl Verifier {
    fn new() -> Verifier {
        Verifier {
            areas: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
            limit: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
        }
    }

    /// Whether `password` matches the argon2 PHC string `hash`.
    fn verify(&self, hash: &str, password: &str) -> bool {
        let mut area = {
            let mut g = self.areas.lock().expect("not poisoned");
            loop {
                if let Some(a) = g.0.pop() {
                    break a;
                }
                if g.1 < self.limit {
                    g.1 += 1;
                    break Vec::new();
                }
                g = self.freed.wait(g).expect("not poisoned");
            }
        };
        let ok = check(hash, password, &mut area);
        self.areas.lock().expect("not poisoned").0.push(area);
        self.freed.notify_one();
        ok
    }
}

fn check(hash: &str, password: &str, area: &mut Vec<Block>) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if area.len() < blocks {
        area.resize(blocks, Block::default());
    }
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(expected.len(), |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut area[..blocks])
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .is_ok_and(|computed| computed == expected)
}

fn new_token() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("system randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[test]
    fn add_user_then_login_and_check_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segdb.toml");
        std::fs::write(&path, "[server]\ntoken_ttl_secs = 1\n").unwrap();
        add_user(&path, "ana", Role::Analyst, "s3cret").unwrap();
        add_user(&path, "rick", Role::Reader, "pw").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"), "the password itself is stored");
        assert!(text.contains("$argon2id$"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let config = ServerConfig::load(&path).unwrap();
        assert_eq!(config.server.token_ttl_secs, 1, "other settings kept");
        let auth = Authenticator::new(&config, false);
        assert_eq!(
            auth.login(Some(&basic("ana", "wrong")), "127.0.0.1")
                .unwrap_err(),
            Denied::BadCredentials
        );
        assert_eq!(
            auth.login(Some(&basic("nobody", "s3cret")), "127.0.0.1")
                .unwrap_err(),
            Denied::BadCredentials
        );
        assert_eq!(auth.login(None, "127.0.0.1").unwrap_err(), Denied::Missing);
        let (token, caller) = auth
            .login(Some(&basic("ana", "s3cret")), "127.0.0.1")
            .unwrap();
        assert_eq!(caller.role, Role::Analyst);
        let c = auth.check(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!((c.user.as_str(), c.role), ("ana", Role::Analyst));
        assert_eq!(
            auth.check(Some("Bearer nope")).unwrap_err(),
            Denied::UnknownToken
        );
        assert_eq!(auth.check(None).unwrap_err(), Denied::Missing);
        assert!(auth.is_live(&token) && !auth.is_live("nope"));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!auth.is_live(&token));
        assert_eq!(
            auth.check(Some(&format!("Bearer {token}"))).unwrap_err(),
            Denied::Expired
        );
    }

    #[test]
    fn basic_credentials_with_or_without_padding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segdb.toml");
        add_user(&path, "admin", Role::Admin, "pw").unwrap();
        let auth = Authenticator::new(&ServerConfig::load(&path).unwrap(), false);
        let padded = basic("admin", "pw");
        assert!(padded.ends_with('='));
        assert!(auth.login(Some(&padded), "127.0.0.1").is_ok());
        assert!(
            auth.login(Some(padded.trim_end_matches('=')), "127.0.0.1")
                .is_ok()
        );
        assert_eq!(
            auth.login(Some("Basic %%%"), "127.0.0.1").unwrap_err(),
            Denied::BadCredentials
        );
    }

    #[test]
    fn password_checks_agree_with_argon2_and_reuse_their_work_areas() {
        use argon2::password_hash::PasswordVerifier;
        let v = Verifier::new();
        let salt = SaltString::encode_b64(b"segdb-test-salt!").unwrap();
        let mut hashes = vec![DUMMY_HASH.to_string()];
        for (alg, m, t, p) in [
            (Algorithm::Argon2id, 19456, 2, 1),
            (Algorithm::Argon2id, 64, 1, 4),
            (Algorithm::Argon2i, 256, 3, 2),
            (Algorithm::Argon2d, 32, 1, 1),
        ] {
            let argon = Argon2::new(alg, Version::V0x13, Params::new(m, t, p, None).unwrap());
            hashes.push(argon.hash_password(b"s3cret", &salt).unwrap().to_string());
        }
        hashes.push(
            Argon2::new(
                Algorithm::Argon2id,
                Version::V0x10,
                Params::new(64, 1, 1, None).unwrap(),
            )
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string(),
        );
        for h in &hashes {
            for pw in ["s3cret", "s3crex", "", "s3cret "] {
                let theirs = Argon2::default()
                    .verify_password(pw.as_bytes(), &PasswordHash::new(h).unwrap())
                    .is_ok();
                assert_eq!(v.verify(h, pw), theirs, "{h} {pw:?}");
                // A larger area left from an earlier check must not change the answer.
                assert_eq!(v.verify(h, pw), theirs, "{h} {pw:?} again");
            }
        }
        assert!(v.verify(&hashes[1], "s3cret"));
        assert!(!v.verify("not a hash", "s3cret"));
        assert!(
            !v.verify("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ", "s3cret"),
            "no output"
        );
        let g = v.areas.lock().unwrap();
        assert!(
            g.1 <= v.limit && !g.0.is_empty(),
            "areas are reused, at most {}",
            v.limit
        );
        assert!(
            g.0.iter().any(|a| a.len() == 19456),
            "the largest area is kept for the next check"
        );
    }

    #[test]
    fn no_auth_mode_makes_everyone_admin() {
        let auth = Authenticator::new(&ServerConfig::default(), true);
        assert_eq!(auth.check(None).unwrap().role, Role::Admin);
        assert!(auth.login(None, "127.0.0.1").is_ok());
    }

    #[test]
    fn failed_logins_back_off_per_user_and_address_only() {
        let mut f = Failures::default();
        let now = Instant::now();
        let key = |u: &str, a: &str| (u.to_string(), a.to_string());
        for _ in 0..FREE_FAILURES {
            assert_eq!(f.wait(&key("ana", "10.0.0.1"), now), None);
            f.failed(key("ana", "10.0.0.1"), now);
        }
        let wait = f.wait(&key("ana", "10.0.0.1"), now).unwrap();
        assert_eq!(wait, Duration::from_secs(1));
        // Another user from the same address, the same user from elsewhere: not slowed.
        assert_eq!(f.wait(&key("bob", "10.0.0.1"), now), None);
        assert_eq!(f.wait(&key("ana", "10.0.0.2"), now), None);
        // The delay grows with each further failure and is capped.
        for _ in 0..30 {
            f.failed(key("ana", "10.0.0.1"), now);
        }
        assert_eq!(f.wait(&key("ana", "10.0.0.1"), now), Some(MAX_DELAY));
        assert_eq!(f.wait(&key("ana", "10.0.0.1"), now + MAX_DELAY), None);
    }

    #[test]
    fn a_throttled_login_is_refused_without_a_password_check_and_a_success_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segdb.toml");
        add_user(&path, "ana", Role::Reader, "s3cret").unwrap();
        let auth = Authenticator::new(&ServerConfig::load(&path).unwrap(), false);
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                auth.login(Some(&basic("ana", "wrong")), "10.0.0.9")
                    .unwrap_err(),
                Denied::BadCredentials
            );
        }
        assert!(matches!(
            auth.login(Some(&basic("ana", "s3cret")), "10.0.0.9")
                .unwrap_err(),
            Denied::Throttled(_)
        ));
        // The right password from another address still works and clears nothing there.
        auth.login(Some(&basic("ana", "s3cret")), "10.0.0.8")
            .unwrap();
    }
}
