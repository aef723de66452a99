//! `usp_opted_out(us_privacy)` → Boolean: true when a valid US Privacy string records an opt-out
//! of sale (`1?Y?`). Fails closed as DESIGN.md §6 states: NULL or malformed input gives false.
//! (The consent policy treats a malformed string as no consent for `sale`.)

use super::text_fn::{DecisionRule, TextDecision};
use crate::privacy::usp;

/// The rule of `usp_opted_out`.
#[derive(Debug)]
pub struct UspOptedOut;

impl DecisionRule for UspOptedOut {
    const NAME: &'static str = "usp_opted_out";
    fn decide(s: &str) -> bool {
        usp::opted_out(s)
    }
}

/// The UDF.
pub fn udf() -> TextDecision<UspOptedOut> {
    TextDecision::new()
}
