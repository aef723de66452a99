//! `gpp_sale_opted_out(gpp)` → Boolean: true when any US section of a GPP string (usnat, the state
//! sections, or an embedded US Privacy string) records a sale opt-out. NULL or malformed: false.

use super::text_fn::{DecisionRule, TextDecision};
use crate::privacy::gpp;

/// The rule of `gpp_sale_opted_out`.
#[derive(Debug)]
pub struct GppSaleOptedOut;

impl DecisionRule for GppSaleOptedOut {
    const NAME: &'static str = "gpp_sale_opted_out";
    fn decide(s: &str) -> bool {
        gpp::sale_opted_out(s)
    }
}

/// The UDF.
pub fn udf() -> TextDecision<GppSaleOptedOut> {
    TextDecision::new()
}
