//! `tcf_error(tc_string)` → Utf8: NULL when the string decodes and is valid for use under TCF
//! v2.2 (policy version 4 or later), else the reason. The reason never quotes the input. NULL in
//! gives 'missing TC string'.

use super::text_fn::{MapRule, TextMap};
use crate::privacy::tcf::decode;

/// Oldest TCF policy version accepted as valid today (TCF v2.2).
pub const MIN_POLICY_VERSION: u8 = 4;

/// Why a TC string cannot be relied on, or `None`.
pub fn reason(s: &str) -> Option<String> {
    match decode(s) {
        Err(e) => Some(e.to_string()),
        Ok(tc) if tc.core.tcf_policy_version < MIN_POLICY_VERSION => Some(format!(
            "TCF policy version {} is outdated: TCF v2.2 requires policy version {MIN_POLICY_VERSION} or later",
            tc.core.tcf_policy_version
        )),
        Ok(_) => None,
    }
}

/// The rule of `tcf_error`.
#[derive(Debug)]
pub struct TcfError;

impl MapRule for TcfError {
    const NAME: &'static str = "tcf_error";
    fn map(s: &str) -> Option<String> {
        reason(s)
    }
    fn on_null() -> Option<String> {
        Some("missing TC string".into())
    }
}

/// The UDF.
pub fn udf() -> TextMap<TcfError> {
    TextMap::new()
}
