//! The shared vectors (`../shared/vectors/tcf_*.json`) against the decoder and the encoder.

use serde_json::Value;

use super::decode::decode;
use super::{CoreSegment, encode_core};

fn vectors(name: &str) -> serde_json::Map<String, Value> {
    let path = format!("{}/../shared/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    match v {
        Value::Null => Vec::new(),
        v => v
            .as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect(),
    }
}

fn to_u64<T: Copy + Into<u64>>(v: &[T]) -> Vec<u64> {
    v.iter().map(|&x| x.into()).collect()
}

fn secs(v: &Value) -> u64 {
    let t =
        chrono::NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f").unwrap();
    t.and_utc().timestamp() as u64
}

#[test]
fn every_valid_vector_decodes_to_its_fields() {
    let all = vectors("tcf_valid.json");
    assert_eq!(all.len(), 32);
    for (name, v) in &all {
        let d = &v["decoded"];
        let tc = decode(v["string"].as_str().unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = &tc.core;
        let ctx = |f: &str| format!("{name}: {f}");
        assert_eq!(
            u64::from(c.version),
            d["version"].as_u64().unwrap(),
            "{}",
            ctx("version")
        );
        assert_eq!(
            u64::from(c.cmp_id),
            d["cmp_id"].as_u64().unwrap(),
            "{}",
            ctx("cmp_id")
        );
        assert_eq!(
            u64::from(c.cmp_version),
            d["cmp_version"].as_u64().unwrap(),
            "{}",
            ctx("cmp_version")
        );
        assert_eq!(
            u64::from(c.consent_screen),
            d["consent_screen"].as_u64().unwrap(),
            "{}",
            ctx("consent_screen")
        );
        assert_eq!(
            std::str::from_utf8(&c.consent_language).unwrap(),
            d["consent_language"].as_str().unwrap(),
            "{}",
            ctx("lang")
        );
        assert_eq!(
            u64::from(c.vendor_list_version),
            d["vendor_list_version"].as_u64().unwrap(),
            "{}",
            ctx("vlv")
        );
        assert_eq!(
            u64::from(c.tcf_policy_version),
            d["tcf_policy_version"].as_u64().unwrap(),
            "{}",
            ctx("policy")
        );
        assert_eq!(
            c.is_service_specific,
            d["is_service_specific"].as_bool().unwrap(),
            "{}",
            ctx("service_specific")
        );
        assert_eq!(
            c.use_non_standard_texts,
            d["use_non_standard_texts"].as_bool().unwrap(),
            "{}",
            ctx("non_standard")
        );
        assert_eq!(
            to_u64(&c.special_feature_optins),
            ids(&d["special_feature_optins"]),
            "{}",
            ctx("special features")
        );
        assert_eq!(
            to_u64(&c.purposes_consent),
            ids(&d["purposes_consent"]),
            "{}",
            ctx("purposes_consent")
        );
        assert_eq!(
            to_u64(&c.purposes_li),
            ids(&d["purposes_li"]),
            "{}",
            ctx("purposes_li")
        );
        assert_eq!(
            c.purpose_one_treatment,
            d["purpose_one_treatment"].as_bool().unwrap(),
            "{}",
            ctx("p1t")
        );
        assert_eq!(
            std::str::from_utf8(&c.publisher_cc).unwrap(),
            d["publisher_cc"].as_str().unwrap(),
            "{}",
            ctx("cc")
        );
        assert_eq!(c.created / 10, secs(&d["created"]), "{}", ctx("created"));
        assert_eq!(
            c.last_updated / 10,
            secs(&d["last_updated"]),
            "{}",
            ctx("last_updated")
        );
        assert_eq!(
            to_u64(&c.vendor_consent),
            ids(&d["vendor_consent"]),
            "{}",
            ctx("vendor_consent")
        );
        assert_eq!(
            to_u64(&c.vendor_li),
            ids(&d["vendor_li"]),
            "{}",
            ctx("vendor_li")
        );
        let pr: Vec<(u64, u64, Vec<u64>)> = c
            .pub_restrictions
            .iter()
            .map(|r| {
                (
                    u64::from(r.purpose),
                    u64::from(r.restriction_type),
                    to_u64(&r.vendors),
                )
            })
            .collect();
        let want: Vec<(u64, u64, Vec<u64>)> = d["pub_restrictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap(), ids(&r[2])))
            .collect();
        assert_eq!(pr, want, "{}", ctx("pub_restrictions"));
        assert_eq!(
            to_u64(&tc.disclosed_vendors),
            ids(&d["disclosed_vendors"]),
            "{}",
            ctx("disclosed")
        );
        if let Some(a) = d.get("allowed_vendors") {
            assert_eq!(to_u64(&tc.allowed_vendors), ids(a), "{}", ctx("allowed"));
        }
        match (&tc.publisher_tc, &d["publisher_tc"]) {
            (None, Value::Null) => {}
            (Some(p), want) if !want.is_null() => {
                assert_eq!(
                    to_u64(&p.pub_purposes_consent),
                    ids(&want["pub_purposes_consent"]),
                    "{}",
                    ctx("pub consent")
                );
                assert_eq!(
                    to_u64(&p.pub_purposes_li),
                    ids(&want["pub_purposes_li"]),
                    "{}",
                    ctx("pub li")
                );
                assert_eq!(
                    to_u64(&p.custom_consent),
                    ids(&want["custom_consent"]),
                    "{}",
                    ctx("custom consent")
                );
                assert_eq!(
                    to_u64(&p.custom_li),
                    ids(&want["custom_li"]),
                    "{}",
                    ctx("custom li")
                );
            }
            (got, want) => panic!("{name}: publisher_tc {got:?} vs {want}"),
        }
    }
}

#[test]
fn every_invalid_vector_is_rejected() {
    let all = vectors("tcf_invalid.json");
    let mut n = 0;
    for (name, v) in &all {
        let Some(s) = v.as_str() else { continue };
        if name.starts_with('_') {
            continue;
        }
        n += 1;
        let err = decode(s)
            .err()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(
            !err.to_string().contains(&s[..8]),
            "{name}: the error quotes the input"
        );
    }
    assert!(n >= 13, "expected the 13+ invalid vectors, read {n}");
}

/// Re-encoding a decoded vector reproduces its core segment bit for bit, except the vendor
/// sections of CMPs that chose a longer encoding or a MaxVendorId above the last listed vendor
/// (the encoder always writes the shortest form).
#[test]
fn encoder_round_trips_through_the_decoder() {
    for (name, v) in &vectors("tcf_valid.json") {
        let tc = decode(v["string"].as_str().unwrap()).unwrap();
        let again = decode(&encode_core(&tc.core)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again.core, tc.core, "{name}");
    }
    // And arbitrary segments survive a round trip.
    let c = CoreSegment {
        version: 2,
        created: 17_000_000_000,
        last_updated: 17_000_000_123,
        cmp_id: 300,
        cmp_version: 2,
        consent_screen: 1,
        consent_language: *b"DE",
        vendor_list_version: 120,
        tcf_policy_version: 4,
        is_service_specific: true,
        use_non_standard_texts: false,
        special_feature_optins: vec![1, 2],
        purposes_consent: (1..=11).collect(),
        purposes_li: vec![2, 7, 8, 9, 10, 11],
        purpose_one_treatment: false,
        publisher_cc: *b"DE",
        vendor_consent: (1..=60).chain([755, 793]).collect(),
        vendor_li: vec![755],
        pub_restrictions: vec![super::PubRestriction {
            purpose: 2,
            restriction_type: 1,
            vendors: vec![3, 4, 5, 90],
        }],
    };
    assert_eq!(decode(&encode_core(&c)).unwrap().core, c);
}

/// A quick property test in the suite (the cargo-fuzz target in fuzz/ runs the same checks
/// longer): random strings, mutated valid strings and random core segments never panic, and
/// whatever decodes round-trips through the encoder.
#[test]
fn property_random_and_mutated_inputs() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7cf);
    let valid: Vec<String> = vectors("tcf_valid.json")
        .values()
        .map(|v| v["string"].as_str().unwrap().to_string())
        .collect();
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    let mut decoded = 0;
    for i in 0..20_000 {
        let s: String = if i % 2 == 0 {
            let n = rng.random_range(0..120);
            (0..n)
                .map(|_| B64[rng.random_range(0..B64.len())] as char)
                .collect()
        } else {
            let mut b = valid[rng.random_range(0..valid.len())].clone().into_bytes();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..3) {
                    0 if !b.is_empty() => {
                        let k = rng.random_range(0..b.len());
                        b[k] = B64[rng.random_range(0..B64.len())];
                    }
                    1 if !b.is_empty() => {
                        let k = rng.random_range(0..b.len());
                        b.truncate(k);
                    }
                    _ => b.push(B64[rng.random_range(0..B64.len())]),
                }
            }
            String::from_utf8(b).unwrap()
        };
        if let Ok(tc) = decode(&s) {
            decoded += 1;
            let again = decode(&encode_core(&tc.core)).unwrap();
            assert_eq!(again.core, tc.core, "{s}");
        }
    }
    assert!(
        decoded > 100,
        "mutations should still decode sometimes ({decoded})"
    );
}
