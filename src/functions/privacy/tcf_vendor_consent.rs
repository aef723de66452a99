//! `tcf_vendor_consent(tc_string, n)` → Boolean: vendor n's consent bit. Fails closed: NULL or malformed input gives false.

use super::tcf_decision::{Decision, TcfDecision};
#[allow(unused_imports)]
use super::tcf_lists::{in_u8, in_u16};
use crate::privacy::tcf::TcString;

/// The rule of `tcf_vendor_consent`.
#[derive(Debug)]
pub struct VendorConsent;

impl Decision for VendorConsent {
    const NAME: &'static str = "tcf_vendor_consent";
    fn decide(tc: &TcString, n: i64) -> bool {
        in_u16(&tc.core.vendor_consent, n)
    }
}

/// The UDF.
pub fn udf() -> TcfDecision<VendorConsent> {
    TcfDecision::new()
}
