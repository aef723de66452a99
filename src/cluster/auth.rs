//! The cluster secret (DESIGN §12): every gRPC call between client, scheduler and executors —
//! job submission and status, executors polling for work, shuffle fetches, result fetches —
//! carries a token derived from a secret shared by the cluster's processes
//! (`SEGDB_CLUSTER_SECRET` or `[cluster] secret`); a server answers a call without it
//! `UNAUTHENTICATED`. Without it, anyone who can reach the ports could submit plans that run
//! segdb's keyed functions with the cluster's keys (an oracle matching candidate e-mails to
//! stored users) or read other jobs' shuffle files.
//!
//! Ballista's clients take no interceptor on every hop, but each of them is built from an
//! endpoint that segdb may adjust (`override_create_grpc_client_endpoint`), and an endpoint
//! can set the `user-agent` header of every request it sends. The token travels there:
//! `segdb-cluster/<base64url of HMAC-SHA256(secret, "segdb-cluster/v1")>` (the secret itself
//! never does). Servers check it in an interceptor, in constant time. The token is sent in
//! clear over Ballista's plaintext gRPC: on an untrusted network, keep the cluster's ports on a
//! private one (see the README).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The environment variable holding the secret.
pub const SECRET_VAR: &str = "SEGDB_CLUSTER_SECRET";

const LABEL: &[u8] = b"segdb-cluster/v1";
const PREFIX: &str = "segdb-cluster/";
/// A secret shorter than this is refused (it could be guessed).
const MIN_LEN: usize = 16;

/// A cluster's shared secret, held as the token it authorises.
#[derive(Clone)]
pub struct ClusterSecret {
    key: Arc<[u8]>,
    token: Arc<str>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(LABEL);
    m
}

impl ClusterSecret {
    /// A secret from its text (at least 16 characters).
    pub fn new(secret: &str) -> Result<ClusterSecret> {
        let secret = secret.trim();
        if secret.len() < MIN_LEN {
            return Err(Error::invalid(format!(
                "the cluster secret must be at least {MIN_LEN} characters (e.g. `openssl rand -base64 32`)"
            )));
        }
        let tag = mac(secret.as_bytes()).finalize().into_bytes();
        Ok(ClusterSecret {
            key: Arc::from(secret.as_bytes()),
            token: Arc::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(tag))),
        })
    }

    /// The secret `SEGDB_CLUSTER_SECRET` names, else `configured` (`[cluster] secret`).
    pub fn from_env_or(configured: Option<&str>) -> Result<Option<ClusterSecret>> {
        match std::env::var(SECRET_VAR).ok().filter(|s| !s.is_empty()) {
            Some(s) => Ok(Some(Self::new(&s)?)),
            None => configured.map(Self::new).transpose(),
        }
    }

    /// Like [`from_env_or`](Self::from_env_or), but a node must have one.
    pub fn required(configured: Option<&str>) -> Result<ClusterSecret> {
        Self::from_env_or(configured)?.ok_or_else(|| {
            Error::invalid(format!(
                "a cluster needs a shared secret: set {SECRET_VAR} (or [cluster] secret in the config file) to the same value for the scheduler, every executor and every client"
            ))
        })
    }

    /// Whether a request's `user-agent` carries this secret's token.
    fn admits(&self, user_agent: &str) -> bool {
        user_agent
            .split_whitespace()
            .filter_map(|t| t.strip_prefix(PREFIX))
            .filter_map(|t| URL_SAFE_NO_PAD.decode(t).ok())
            .any(|tag| mac(&self.key).verify_slice(&tag).is_ok())
    }

    /// An endpoint adjustment that makes every request carry the token.
    pub fn endpoint_override(&self) -> ballista_core::extension::EndpointOverrideFn {
        let token = self.token.clone();
        Arc::new(move |ep: tonic::transport::Endpoint| {
            let ep = ep.user_agent(token.to_string())?;
            Ok(ep)
        })
    }

    /// A server-side check: calls without the token are `UNAUTHENTICATED`.
    pub fn interceptor(&self) -> Check {
        Check(self.clone())
    }
}

/// The interceptor every cluster server runs before each call.
#[derive(Clone)]
pub struct Check(ClusterSecret);

impl tonic::service::Interceptor for Check {
    fn call(
        &mut self,
        req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        let ua = req
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if self.0.admits(ua) {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(format!(
                "this segdb cluster needs its secret ({SECRET_VAR}) on every call"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn call(check: &mut Check, ua: Option<&str>) -> Option<tonic::Code> {
        let mut r = tonic::Request::new(());
        if let Some(ua) = ua {
            r.metadata_mut().insert("user-agent", ua.parse().unwrap());
        }
        check.call(r).err().map(|s| s.code())
    }

    #[test]
    fn only_the_right_token_passes_and_the_secret_never_travels() {
        let s = ClusterSecret::new("correct horse battery staple").unwrap();
        let mut check = s.interceptor();
        let ua = format!("{} tonic/0.14.9", s.token);
        assert_eq!(call(&mut check, Some(&ua)), None);
        assert!(!s.token.contains("horse"));
        assert_eq!(call(&mut check, None), Some(tonic::Code::Unauthenticated));
        assert_eq!(
            call(&mut check, Some("tonic/0.14.9")),
            Some(tonic::Code::Unauthenticated)
        );
        let other = ClusterSecret::new("another secret of enough length").unwrap();
        let ua = format!("{} tonic/0.14.9", other.token);
        assert_eq!(
            call(&mut check, Some(&ua)),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut check, Some("segdb-cluster/AAAA tonic/0.14.9")),
            Some(tonic::Code::Unauthenticated)
        );
        assert!(ClusterSecret::new("short").is_err());
    }
}
