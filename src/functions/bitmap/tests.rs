//! SQL-level tests of the bitmap functions: scalars, arrays, NULLs, groups, and every binary type.

use crate::functions::test_util::{col, ctx};

const T: &str = "(VALUES (1, 10), (1, 11), (1, NULL), (2, 11), (2, 12), (3, NULL)) t(g, v)";

#[tokio::test]
async fn build_or_and_aggregates_with_groups() {
    let ctx = ctx();
    let got = col(&ctx, &format!("SELECT array_to_string(rb_to_array(rb_build_agg(v)), ',') FROM {T} GROUP BY g ORDER BY g")).await;
    assert_eq!(got, vec!["10,11", "11,12", ""]);
    let got = col(
        &ctx,
        &format!("SELECT rb_cardinality(rb_build_agg(v)) FROM {T}"),
    )
    .await;
    assert_eq!(got, vec!["3"]);
    // OR / AND of per-group bitmaps.
    let per_group =
        format!("(SELECT g, rb_build_agg(v) AS b FROM {T} WHERE v IS NOT NULL GROUP BY g) s");
    assert_eq!(
        col(
            &ctx,
            &format!("SELECT array_to_string(rb_to_array(rb_or_agg(b)), ',') FROM {per_group}")
        )
        .await,
        vec!["10,11,12"]
    );
    assert_eq!(
        col(
            &ctx,
            &format!("SELECT array_to_string(rb_to_array(rb_and_agg(b)), ',') FROM {per_group}")
        )
        .await,
        vec!["11"]
    );
    // With a FILTER clause (the groups accumulator's opt_filter).
    let got = col(&ctx, &format!("SELECT rb_cardinality(rb_build_agg(v) FILTER (WHERE v > 10)) FROM {T} GROUP BY g ORDER BY g")).await;
    assert_eq!(got, vec!["1", "2", "0"]);
    let err = ctx
        .sql("SELECT rb_build_agg(-1)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("u32 range"), "{err}");
}

#[tokio::test]
async fn set_operations_cardinality_and_membership() {
    let ctx = ctx();
    let a = "(SELECT rb_build_agg(v) FROM (VALUES (1), (2), (3)) t(v))";
    let b = "(SELECT rb_build_agg(v) FROM (VALUES (3), (4)) t(v))";
    for (f, members, n) in [
        ("rb_and", "3", "1"),
        ("rb_or", "1,2,3,4", "4"),
        ("rb_andnot", "1,2", "2"),
        ("rb_xor", "1,2,4", "3"),
    ] {
        assert_eq!(
            col(
                &ctx,
                &format!("SELECT array_to_string(rb_to_array({f}({a}, {b})), ',')")
            )
            .await,
            vec![members],
            "{f}"
        );
        assert_eq!(
            col(&ctx, &format!("SELECT rb_cardinality({f}({a}, {b}))")).await,
            vec![n],
            "{f}"
        );
        assert_eq!(
            col(&ctx, &format!("SELECT {f}_cardinality({a}, {b})")).await,
            vec![n],
            "{f}"
        );
        assert_eq!(
            col(&ctx, &format!("SELECT {f}(NULL, {b}) IS NULL")).await,
            vec!["true"],
            "{f}"
        );
    }
    // The fused form replaces cardinality-of-operation in the plan.
    let batches = ctx
        .sql(&format!(
            "EXPLAIN SELECT rb_cardinality(rb_and(x, x)) FROM (SELECT {a} AS x) s"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("rb_and_cardinality"), "{text}");
    // Membership over an array of values, with NULLs and out-of-range values.
    let got = col(
        &ctx,
        &format!("SELECT rb_contains({a}, v) FROM (VALUES (1), (4), (NULL), (-5)) t(v)"),
    )
    .await;
    assert_eq!(got, vec!["true", "false", "NULL", "false"]);
    // Binary, LargeBinary and BinaryView all work.
    for t in ["Binary", "LargeBinary", "BinaryView"] {
        assert_eq!(
            col(
                &ctx,
                &format!("SELECT rb_cardinality(arrow_cast({a}, '{t}'))")
            )
            .await,
            vec!["3"],
            "{t}"
        );
        assert_eq!(
            col(
                &ctx,
                &format!("SELECT rb_cardinality(rb_or(arrow_cast({a}, '{t}'), {b}))")
            )
            .await,
            vec!["4"],
            "{t}"
        );
    }
    let err = ctx
        .sql("SELECT rb_cardinality(X'0102')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a portable Roaring bitmap"),
        "{err}"
    );
}
