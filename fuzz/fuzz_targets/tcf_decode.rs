//! Any input must decode to a value or a clean error: no panic, no overflow, no endless loop;
//! and whatever decodes must re-encode to a string that decodes to the same core segment.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// segdb's decoders, compiled from their source files (they depend on nothing but `base64`).
#[allow(dead_code, unused_imports)]
#[path = "../../src/privacy"]
mod privacy {
    pub mod gpp;
    pub mod tcf;
    pub mod usp;
}

use privacy::tcf::{decode, encode_core};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tc) = decode(s) {
        let again = decode(&encode_core(&tc.core)).expect("a re-encoded core segment decodes");
        assert_eq!(again.core, tc.core);
    }
    let _ = privacy::gpp::section_ids(s);
    let _ = privacy::usp::parse(s);
});
