//! Predictions (DESIGN §17): the per-user features that recommendations and look-alike models
//! read ([`features`]).

pub mod features;
