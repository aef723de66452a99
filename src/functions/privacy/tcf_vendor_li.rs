//! `tcf_vendor_li(tc_string, n)` → Boolean: vendor n's legitimate-interest bit. Fails closed: NULL or malformed input gives false.

use super::tcf_decision::{Decision, TcfDecision};
#[allow(unused_imports)]
use super::tcf_lists::{in_u8, in_u16};
use crate::privacy::tcf::TcString;

/// The rule of `tcf_vendor_li`.
#[derive(Debug)]
pub struct VendorLi;

impl Decision for VendorLi {
    const NAME: &'static str = "tcf_vendor_li";
    fn decide(tc: &TcString, n: i64) -> bool {
        in_u16(&tc.core.vendor_li, n)
    }
}

/// The UDF.
pub fn udf() -> TcfDecision<VendorLi> {
    TcfDecision::new()
}
