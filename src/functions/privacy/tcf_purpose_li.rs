//! `tcf_purpose_li(tc_string, n)` → Boolean: purpose legitimate-interest transparency bit n. Fails closed: NULL or malformed input gives false.

use super::tcf_decision::{Decision, TcfDecision};
#[allow(unused_imports)]
use super::tcf_lists::{in_u8, in_u16};
use crate::privacy::tcf::TcString;

/// The rule of `tcf_purpose_li`.
#[derive(Debug)]
pub struct PurposeLi;

impl Decision for PurposeLi {
    const NAME: &'static str = "tcf_purpose_li";
    fn decide(tc: &TcString, n: i64) -> bool {
        in_u8(&tc.core.purposes_li, n)
    }
}

/// The UDF.
pub fn udf() -> TcfDecision<PurposeLi> {
    TcfDecision::new()
}
