//! `tcf_special_feature(tc_string, n)` → Boolean: special feature n's opt-in bit. Fails closed: NULL or malformed input gives false.

use super::tcf_decision::{Decision, TcfDecision};
#[allow(unused_imports)]
use super::tcf_lists::{in_u8, in_u16};
use crate::privacy::tcf::TcString;

/// The rule of `tcf_special_feature`.
#[derive(Debug)]
pub struct SpecialFeature;

impl Decision for SpecialFeature {
    const NAME: &'static str = "tcf_special_feature";
    fn decide(tc: &TcString, n: i64) -> bool {
        in_u8(&tc.core.special_feature_optins, n)
    }
}

/// The UDF.
pub fn udf() -> TcfDecision<SpecialFeature> {
    TcfDecision::new()
}
