//! Privacy functions: pseudonyms, hashing for activation, and consent-string decoders (TCF v2,
//! US Privacy, GPP). Each is a thin wrapper over `crate::privacy`.

pub(crate) mod common;
pub mod gpp_sale_opted_out;
pub mod gpp_section_ids;
pub mod hash_email;
pub mod hash_phone;
pub mod pseudonymize;
pub mod tcf_decision;
pub mod tcf_decode;
pub mod tcf_error;
pub(crate) mod tcf_lists;
pub mod tcf_purpose_consent;
pub mod tcf_purpose_li;
pub mod tcf_special_feature;
pub mod tcf_vendor_consent;
pub mod tcf_vendor_li;
#[cfg(test)]
mod tests;
pub mod text_fn;
pub mod usp_opted_out;
