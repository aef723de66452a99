//! SQL-level tests of the privacy functions over scalars, arrays and NULLs, using the shared
//! vectors where they apply.

use crate::functions::test_util::{col, ctx};

fn vectors() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/tcf_valid.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn tcf_decisions_match_the_vectors_for_every_purpose_and_vendor() {
    let ctx = ctx();
    for (name, v) in vectors() {
        let s = v["string"].as_str().unwrap();
        let d = &v["decoded"];
        let want = |key: &str, n: u64| {
            d[key]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x.as_u64() == Some(n))
        };
        // Purposes 1..24 as an array column in one query.
        let got = col(
            &ctx,
            &format!(
                "SELECT tcf_purpose_consent('{s}', n) FROM generate_series(1, 24) t(n) ORDER BY n"
            ),
        )
        .await;
        let expect: Vec<String> = (1..=24)
            .map(|n| want("purposes_consent", n).to_string())
            .collect();
        assert_eq!(got, expect, "{name}: purposes_consent");
        let got = col(
            &ctx,
            &format!("SELECT tcf_purpose_li('{s}', n) FROM generate_series(1, 24) t(n) ORDER BY n"),
        )
        .await;
        let expect: Vec<String> = (1..=24)
            .map(|n| want("purposes_li", n).to_string())
            .collect();
        assert_eq!(got, expect, "{name}: purposes_li");
        let got = col(
            &ctx,
            &format!(
                "SELECT tcf_special_feature('{s}', n) FROM generate_series(1, 12) t(n) ORDER BY n"
            ),
        )
        .await;
        let expect: Vec<String> = (1..=12)
            .map(|n| want("special_feature_optins", n).to_string())
            .collect();
        assert_eq!(got, expect, "{name}: special features");
        let got = col(
            &ctx,
            &format!(
                "SELECT tcf_vendor_consent('{s}', n) FROM generate_series(1, 800) t(n) ORDER BY n"
            ),
        )
        .await;
        let expect: Vec<String> = (1..=800)
            .map(|n| want("vendor_consent", n).to_string())
            .collect();
        assert_eq!(got, expect, "{name}: vendor_consent");
        let got = col(
            &ctx,
            &format!("SELECT tcf_vendor_li('{s}', n) FROM generate_series(1, 800) t(n) ORDER BY n"),
        )
        .await;
        let expect: Vec<String> = (1..=800)
            .map(|n| want("vendor_li", n).to_string())
            .collect();
        assert_eq!(got, expect, "{name}: vendor_li");
        // tcf_decode carries the same fields.
        let got = col(&ctx, &format!("SELECT tcf_decode('{s}')['cmp_id']")).await;
        assert_eq!(got, vec![d["cmp_id"].to_string()], "{name}: decode cmp_id");
        let got = col(
            &ctx,
            &format!("SELECT array_to_string(tcf_decode('{s}')['vendor_consent'], ',')"),
        )
        .await;
        let expect = d["vendor_consent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(got, vec![expect], "{name}: decode vendor_consent");
        // Valid for use today only under TCF v2.2 (policy version 4+).
        let err = col(&ctx, &format!("SELECT tcf_error('{s}')")).await;
        if d["tcf_policy_version"].as_u64().unwrap() >= 4 {
            assert_eq!(err, vec!["NULL"], "{name}");
        } else {
            assert!(err[0].contains("policy version"), "{name}: {err:?}");
        }
    }
}

#[tokio::test]
async fn malformed_and_null_inputs_fail_closed_without_echo() {
    let ctx = ctx();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/tcf_invalid.json"
    ))
    .unwrap();
    let invalid: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    for (name, v) in invalid.iter().filter(|(k, _)| !k.starts_with('_')) {
        let s = v.as_str().unwrap();
        for f in [
            "tcf_purpose_consent",
            "tcf_purpose_li",
            "tcf_vendor_consent",
            "tcf_vendor_li",
            "tcf_special_feature",
        ] {
            let got = col(
                &ctx,
                &format!("SELECT {f}('{s}', n) FROM generate_series(1, 30) t(n)"),
            )
            .await;
            assert!(
                got.iter().all(|x| x == "false"),
                "{name}: {f} accepted a malformed string"
            );
        }
        let err = col(&ctx, &format!("SELECT tcf_error('{s}')")).await;
        assert_ne!(err[0], "NULL", "{name}");
        assert!(
            !err[0].contains(&s[..10]),
            "{name}: the reason echoes the input"
        );
        assert_eq!(
            col(&ctx, &format!("SELECT tcf_decode('{s}') IS NULL")).await,
            vec!["true"]
        );
    }
    for f in ["tcf_purpose_consent", "tcf_vendor_consent"] {
        assert_eq!(
            col(
                &ctx,
                &format!("SELECT {f}(NULL, 1), {f}('garbage!', 1), {f}('', 1)")
            )
            .await,
            vec!["false"]
        );
        assert_eq!(
            col(&ctx, &format!("SELECT {f}('garbage!', 1)")).await,
            vec!["false"]
        );
    }
    assert_eq!(
        col(&ctx, "SELECT tcf_error(NULL)").await,
        vec!["missing TC string"]
    );
    assert_eq!(col(&ctx, "SELECT usp_opted_out(NULL)").await, vec!["false"]);
    assert_eq!(
        col(&ctx, "SELECT gpp_sale_opted_out('x~y')").await,
        vec!["false"]
    );
    assert_eq!(
        col(&ctx, "SELECT gpp_section_ids('nonsense')").await,
        vec!["NULL"]
    );
}

#[tokio::test]
async fn hashing_usp_and_gpp() {
    let ctx = ctx();
    assert_eq!(
        col(&ctx, "SELECT hash_email('  User.Name+NYC@Example.com ')").await,
        vec!["f109a2a632fbcea5fc82049f50beed3d8621bf9034399f437fb622222acccdac"]
    );
    assert_eq!(
        col(&ctx, "SELECT hash_phone(p, c) FROM (VALUES ('+1 (800) 555-0100', NULL), ('0049 30 901820', NULL), ('030 901820', 'DE'), ('030 901820', NULL)) t(p, c)").await,
        vec![
            "92cfdc5fbcd4a20fbe5d3857af6c1aba31762105bba7f21a17155e920653046c",
            "c03f76216358b07b09a300613908002987efc1ae9a2ef2a85d57d5a971bf821a",
            "c03f76216358b07b09a300613908002987efc1ae9a2ef2a85d57d5a971bf821a",
            "NULL"
        ]
    );
    assert_eq!(col(&ctx, "SELECT hash_email(NULL)").await, vec!["NULL"]);
    assert_eq!(
        col(&ctx, "SELECT usp_opted_out(s) FROM (VALUES ('1YYN'), ('1YNN'), ('1---'), ('bad'), (NULL)) t(s)").await,
        vec!["true", "false", "false", "false", "false"]
    );
    assert_eq!(col(&ctx, "SELECT array_to_string(gpp_section_ids('DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN'), ',')").await, vec!["2,6"]);
    assert_eq!(
        col(
            &ctx,
            "SELECT gpp_sale_opted_out('DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YYN')"
        )
        .await,
        vec!["true"]
    );
}
