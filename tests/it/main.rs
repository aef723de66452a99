//! The one integration-test binary: end-to-end behaviour through the library and the CLI.

mod cli;
mod cluster;
mod collector;
mod common;
mod console;
mod crash;
mod erasure;
mod examples;
mod exports;
mod flight;
mod frontdoor;
mod hardening;
mod identity;
mod ingest;
mod interests;
mod lift;
mod live;
mod lookalike;
mod materialize;
mod newuser;
mod privacy;
mod s3;
mod segments;
mod server;
mod slt;
