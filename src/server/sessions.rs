//! One DataFusion session per bearer token: `SET`s (DataFusion's and segdb's), SQL-level
//! prepared statements, views, schemas and functions last for the token's lifetime and are seen
//! by no other caller. A session goes with its token; beyond `MAX_SESSIONS` the least recently
//! used sessions are dropped first (their callers get a fresh session on their next call).
//! Without auth (`--insecure-no-auth`) every caller shares one session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::auth::{Authenticator, Caller};
use crate::error::Result;
use crate::session::{Session, Shared};

/// Sessions kept at most (idle ones beyond it are dropped, least recently used first).
pub const MAX_SESSIONS: usize = 1024;

/// The live sessions.
pub struct Sessions {
    shared: Arc<Shared>,
    auth: Arc<Authenticator>,
    map: Mutex<HashMap<String, (Arc<Session>, Instant)>>,
}

impl Sessions {
    pub fn new(shared: Arc<Shared>, auth: Arc<Authenticator>) -> Sessions {
        Sessions {
            shared,
            auth,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The session of `caller` (created on first use).
    pub fn of(&self, caller: &Caller) -> Result<Arc<Session>> {
        let mut map = self.map.lock().expect("not poisoned");
        let now = Instant::now();
        if let Some((s, used)) = map.get_mut(&caller.session) {
            *used = now;
            return Ok(s.clone());
        }
        // Sessions of expired tokens go with them.
        map.retain(|token, _| self.auth.is_live(token));
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .filter(|(_, (s, _))| Arc::strong_count(s) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
        let s = Arc::new(Session::new(self.shared.clone(), &caller.user)?);
        map.insert(caller.session.clone(), (s.clone(), now));
        Ok(s)
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.map.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
