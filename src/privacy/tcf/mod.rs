//! IAB TCF v2.x TC strings, as plain Rust (no DataFusion types). This file holds the core-segment
//! model; `decode` is the strict decoder, `encode` turns a [`CoreSegment`] into the base64url core
//! segment a CMP would emit (the generator uses it for realistic consent strings).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{PublisherTc, TcString, TcfError, decode};
pub use encode::encode_core;

/// A publisher restriction: purpose, restriction type (0 not allowed, 1 require consent,
/// 2 require legitimate interest) and the vendors it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubRestriction {
    pub purpose: u8,
    pub restriction_type: u8,
    pub vendors: Vec<u16>,
}

/// Every field of a TCF v2 core segment. Lists hold the 1-based ids whose bit is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreSegment {
    pub version: u8,
    /// Deciseconds since the Unix epoch.
    pub created: u64,
    /// Deciseconds since the Unix epoch.
    pub last_updated: u64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub consent_screen: u8,
    /// Two uppercase ASCII letters.
    pub consent_language: [u8; 2],
    pub vendor_list_version: u16,
    pub tcf_policy_version: u8,
    pub is_service_specific: bool,
    pub use_non_standard_texts: bool,
    pub special_feature_optins: Vec<u8>,
    pub purposes_consent: Vec<u8>,
    pub purposes_li: Vec<u8>,
    pub purpose_one_treatment: bool,
    /// Two uppercase ASCII letters.
    pub publisher_cc: [u8; 2],
    pub vendor_consent: Vec<u16>,
    pub vendor_li: Vec<u16>,
    pub pub_restrictions: Vec<PubRestriction>,
}
