//! `tcf_purpose_consent(tc_string, n)` → Boolean: purpose consent bit n (1–24) of the core segment. Fails closed: NULL or malformed input gives false.

use super::tcf_decision::{Decision, TcfDecision};
#[allow(unused_imports)]
use super::tcf_lists::{in_u8, in_u16};
use crate::privacy::tcf::TcString;

/// The rule of `tcf_purpose_consent`.
#[derive(Debug)]
pub struct PurposeConsent;

impl Decision for PurposeConsent {
    const NAME: &'static str = "tcf_purpose_consent";
    fn decide(tc: &TcString, n: i64) -> bool {
        in_u8(&tc.core.purposes_consent, n)
    }
}

/// The UDF.
pub fn udf() -> TcfDecision<PurposeConsent> {
    TcfDecision::new()
}
