use super::*;

fn leaf(e: &Expr) -> &Leaf {
    match e {
        Expr::Leaf(l) => l,
        other => panic!("not a leaf: {other:?}"),
    }
}

#[test]
fn precedence_not_and_or() {
    let e = parse_expr("NOT DID 'a' AND DID 'b' OR ALL USERS").unwrap();
    let Expr::Or(l, r) = e else { panic!() };
    assert_eq!(*r, Expr::Leaf(Leaf::AllUsers));
    let Expr::And(a, b) = *l else { panic!() };
    assert!(matches!(*a, Expr::Not(_)));
    assert!(matches!(*b, Expr::Leaf(Leaf::Did { .. })));
}

#[test]
fn profile_predicates_keep_their_own_and_or() {
    let e = parse_expr("PROFILE country = 'DE' AND age_band IN ('18-24', '25-34') OR plan = 'x' AND DID 'purchase'").unwrap();
    let Expr::And(l, _) = e else { panic!("{e:?}") };
    let Leaf::Profile(sql) = leaf(&l) else {
        panic!()
    };
    assert_eq!(
        sql.text,
        "country = 'DE' AND age_band IN ('18-24', '25-34') OR plan = 'x'"
    );
    // Parenthesised segment expressions vs parenthesised SQL.
    let e = parse_expr("(PROFILE (a = 1 OR b = 2)) AND (NOT (DID 'x'))").unwrap();
    let Expr::And(l, r) = e else { panic!() };
    assert_eq!(
        leaf(&l),
        &Leaf::Profile(Sql {
            text: "(a = 1 OR b = 2)".into(),
            pos: Pos {
                line: 1,
                column: 10
            }
        })
    );
    assert!(matches!(*r, Expr::Not(_)));
}

#[test]
fn did_with_where_frequency_and_windows() {
    let e = parse_expr("DID 'purchase' WHERE price > 10 AND category = 'shoes' AT LEAST 3 TIMES IN THE LAST 30 DAYS").unwrap();
    let Leaf::Did {
        what, freq, window, ..
    } = leaf(&e)
    else {
        panic!()
    };
    assert_eq!(what.event, EventRef::Named("purchase".into()));
    assert_eq!(
        what.filter.as_ref().unwrap().text,
        "price > 10 AND category = 'shoes'"
    );
    assert_eq!(*freq, Some(Freq::AtLeast(3)));
    assert_eq!(*window, Some(Window::Last(30, Unit::Day)));

    let e = parse_expr("DID ANY EVENT BETWEEN 2 AND 5 TIMES SINCE '2026-01-01'").unwrap();
    let Leaf::Did {
        what, freq, window, ..
    } = leaf(&e)
    else {
        panic!()
    };
    assert_eq!(what.event, EventRef::Any);
    assert_eq!(*freq, Some(Freq::Between(2, 5)));
    assert_eq!(
        *window,
        Some(Window::Since(crate::time::Ts::At(1_767_225_600_000_000)))
    );

    // A SQL BETWEEN inside WHERE stays SQL; a string BETWEEN at the end is the window.
    let e = parse_expr(
        "DID 'v' WHERE price BETWEEN 1 AND 5 BETWEEN '2026-01-01' AND '2026-01-08T00:00:00Z'",
    )
    .unwrap();
    let Leaf::Did { what, window, .. } = leaf(&e) else {
        panic!()
    };
    assert_eq!(what.filter.as_ref().unwrap().text, "price BETWEEN 1 AND 5");
    assert_eq!(
        *window,
        Some(Window::Between(
            crate::time::Ts::At(1_767_225_600_000_000),
            crate::time::Ts::At(1_767_830_400_000_000)
        ))
    );

    let e = parse_expr("DID 'x' EXACTLY 0 TIMES IN THE LAST 2 WEEKS AND DID 'y' AT MOST 1 TIMES")
        .unwrap();
    let Expr::And(a, b) = e else { panic!() };
    assert!(matches!(
        leaf(&a),
        Leaf::Did {
            freq: Some(Freq::Exactly(0)),
            window: Some(Window::Last(2, Unit::Week)),
            ..
        }
    ));
    assert!(matches!(
        leaf(&b),
        Leaf::Did {
            freq: Some(Freq::AtMost(1)),
            window: None,
            ..
        }
    ));
}

#[test]
fn sequences_segments_and_queries() {
    let e = parse_expr(
        "DID 'add_to_cart' WHERE price > 5 THEN 'purchase' WITHIN 2 HOURS IN THE LAST 7 DAYS",
    )
    .unwrap();
    let Leaf::Sequence {
        first,
        then,
        within,
        window,
        ..
    } = leaf(&e)
    else {
        panic!()
    };
    assert_eq!(first.filter.as_ref().unwrap().text, "price > 5");
    assert_eq!(then.event, EventRef::Named("purchase".into()));
    assert_eq!(*within, Some((2, Unit::Hour)));
    assert_eq!(*window, Some(Window::Last(7, Unit::Day)));
    let e = parse_expr("DID 'a' WHERE CASE WHEN x THEN 1 ELSE 0 END = 1 THEN 'b'").unwrap();
    let Leaf::Sequence { first, .. } = leaf(&e) else {
        panic!("{e:?}")
    };
    assert_eq!(
        first.filter.as_ref().unwrap().text,
        "CASE WHEN x THEN 1 ELSE 0 END = 1"
    );

    let e = parse_expr("IN SEGMENT vip OR USERS IN (SELECT user_id FROM profiles WHERE plan = 'x' AND a IN (1, 2))").unwrap();
    let Expr::Or(a, b) = e else { panic!() };
    assert!(matches!(leaf(&a), Leaf::InSegment(n, _) if n == "vip"));
    let Leaf::UsersIn(q) = leaf(&b) else { panic!() };
    assert_eq!(
        q.text,
        "SELECT user_id FROM profiles WHERE plan = 'x' AND a IN (1, 2)"
    );
}

#[test]
fn statements() {
    let s = parse_statement(
        "create or replace segment Cart_Abandoners for purpose 'tcf:1', 'marketing' comment 'carted, no buy'\n  as DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS;",
    )
    .unwrap();
    let Statement::CreateSegment(CreateSegment {
        name,
        or_replace,
        purposes,
        comment,
        definition,
        ..
    }) = s
    else {
        panic!()
    };
    assert_eq!(name, "cart_abandoners");
    assert!(or_replace);
    assert_eq!(purposes, vec!["tcf:1", "marketing"]);
    assert_eq!(comment.as_deref(), Some("carted, no buy"));
    assert_eq!(
        definition,
        "DID 'add_to_cart' IN THE LAST 7 DAYS AND NOT DID 'purchase' IN THE LAST 7 DAYS"
    );
    assert_eq!(
        parse_statement("DROP SEGMENT IF EXISTS x").unwrap(),
        Statement::DropSegment {
            name: "x".into(),
            if_exists: true
        }
    );
    assert_eq!(
        parse_statement("show segments;").unwrap(),
        Statement::ShowSegments
    );
    assert_eq!(
        parse_statement("EXPLAIN SEGMENT a").unwrap(),
        Statement::ExplainSegment("a".into())
    );
    assert!(starts_statement(
        "  create materialized segment x as all users"
    ));
    assert!(!starts_statement("SELECT segment_size('x')"));
    assert!(!starts_statement("CREATE TABLE t AS SELECT 1"));
    assert!(!starts_statement("ALTER TABLE t ADD COLUMN x INT"));
    assert!(starts_statement("ALTER TABLE events SET RETENTION 3 DAYS"));
}

#[test]
fn materialized_segments_and_schedules() {
    let s = parse_statement(
        "CREATE MATERIALIZED SEGMENT m FOR PURPOSE 'tcf:1' REFRESH CRON '0 6 * * 1' TIMEZONE 'Europe/Berlin' HOLDOUT 10 PERCENT KEEP 5 VERSIONS AS ALL USERS",
    )
    .unwrap();
    let Statement::CreateSegment(c) = s else {
        panic!()
    };
    assert!(c.materialized);
    assert_eq!(c.holdout_percent, Some(10));
    assert_eq!(c.keep_versions, Some(5));
    assert_eq!(
        c.refresh,
        Some(Refresh::Cron {
            expr: "0 6 * * 1".into(),
            tz: Some("Europe/Berlin".into())
        })
    );
    let s =
        parse_statement("CREATE MATERIALIZED SEGMENT m REFRESH EVERY '15 minutes' AS ALL USERS")
            .unwrap();
    let Statement::CreateSegment(c) = s else {
        panic!()
    };
    assert_eq!(
        c.refresh,
        Some(Refresh::Every("15 minutes".into(), 900_000_000))
    );
    for (bad, why) in [
        (
            "CREATE SEGMENT m REFRESH MANUAL AS ALL USERS",
            "materialised",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH EVERY '500 ms' AS ALL USERS",
            "under a second",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH EVERY '1 month' AS ALL USERS",
            "months",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH CRON '* * *' AS ALL USERS",
            "five",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH CRON '0 6 * * *' TIMEZONE 'Nowhere/Town' AS ALL USERS",
            "time zone",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m HOLDOUT 0 PERCENT AS ALL USERS",
            "1 to 99",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m HOLDOUT 100 PERCENT AS ALL USERS",
            "1 to 99",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m KEEP 0 VERSIONS AS ALL USERS",
            "at least 1",
        ),
        ("ALTER SEGMENT m SET HOLDOUT 5 PERCENT", "CREATE OR REPLACE"),
    ] {
        let e = parse_statement(bad).unwrap_err();
        assert!(e.message.contains(why), "{bad}: {e}");
    }
    assert_eq!(
        parse_statement("REFRESH SEGMENT m AS OF '2026-01-01T00:00:00Z'").unwrap(),
        Statement::RefreshSegment {
            name: "m".into(),
            as_of: crate::time::parse_micros("2026-01-01T00:00:00Z")
        }
    );
    assert_eq!(
        parse_statement("ALTER SEGMENT m SET KEEP 3 VERSIONS").unwrap(),
        Statement::AlterSegment {
            name: "m".into(),
            change: AlterSegment::Keep(3)
        }
    );
}

#[test]
fn exports_traits_forget_and_maintenance() {
    let s = parse_statement(
        "EXPORT SEGMENT m TO 's3://b/p' FORMAT csv PRESET meta COLUMNS (pseudonymize(user_id, 'px') AS partner_id, CAST(age AS int) AS age) CHANGES FROM VERSION 2 TO VERSION 3 FOR PURPOSE 'ads' MAX ROWS PER FILE 1000",
    )
    .unwrap();
    let Statement::Export(e) = s else { panic!() };
    assert_eq!(e.url, "s3://b/p");
    assert_eq!(e.format, Some(ExportFormat::Csv));
    assert_eq!(e.preset, Some(Preset::Meta));
    assert_eq!(e.columns.len(), 2);
    assert_eq!(e.columns[0].0.text, "pseudonymize(user_id, 'px')");
    assert_eq!(e.columns[1].1, "age");
    assert_eq!(e.changes, Some((2, Some(3))));
    assert_eq!(e.purposes, vec!["ads"]);
    assert_eq!(e.max_rows_per_file, Some(1000));
    assert!(parse_statement("CREATE EXPORT x FOR SEGMENT m TO '/tmp/x'").is_err());
    assert!(matches!(
        parse_statement("CREATE EXPORT x FOR SEGMENT m TO '/tmp/x' PRESET google ON REFRESH")
            .unwrap(),
        Statement::CreateExport { .. }
    ));
    let Statement::CreateTrait(t) = parse_statement(
        "CREATE TRAIT ltv AS SUM(price) OF EVENT 'purchase' WHERE price > 0 IN THE LAST 90 DAYS",
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        t.agg,
        TraitAgg::Sum(Sql {
            text: "price".into(),
            pos: Pos {
                line: 1,
                column: 25
            }
        })
    );
    assert_eq!(t.filter.unwrap().text, "price > 0");
    assert_eq!(t.window, Some(Window::Last(90, Unit::Day)));
    assert!(matches!(
        parse_statement("CREATE TRAIT n AS COUNT DISTINCT(category) OF EVENT 'view'").unwrap(),
        Statement::CreateTrait(CreateTrait {
            agg: TraitAgg::CountDistinct(_),
            ..
        })
    ));
    assert_eq!(
        parse_statement("FORGET USER 'a@b.c'").unwrap(),
        Statement::Forget(ForgetTarget::User("a@b.c".into()))
    );
    assert!(matches!(
        parse_statement("FORGET USERS IN (SELECT user_id FROM t)").unwrap(),
        Statement::Forget(ForgetTarget::Users(_))
    ));
    assert_eq!(
        parse_statement(
            "ALTER TABLE profiles SET PII (email AS EMAIL, phone AS PHONE 'DE', name AS DROP)"
        )
        .unwrap(),
        Statement::SetPii {
            table: "profiles".into(),
            rules: vec![
                ("email".into(), crate::storage::settings::PiiRule::Email),
                (
                    "phone".into(),
                    crate::storage::settings::PiiRule::Phone(Some("DE".into()))
                ),
                ("name".into(), crate::storage::settings::PiiRule::Drop),
            ]
        }
    );
    assert_eq!(
        parse_statement("ALTER TABLE events RESET RETENTION").unwrap(),
        Statement::SetRetention {
            table: "events".into(),
            days: None
        }
    );
}

#[test]
fn errors_point_at_line_and_column() {
    let e = parse_expr("DID 'a'\n  AND DID 'b' AT LEAST x TIMES").unwrap_err();
    assert_eq!(
        e.pos,
        Pos {
            line: 2,
            column: 24
        }
    );
    assert!(e.message.contains("expected a count"), "{e}");
    let e = parse_expr("DID 'a' IN THE LAST 3 FORTNIGHTS").unwrap_err();
    assert!(
        e.message.contains("MINUTES, HOURS, DAYS, WEEKS or MONTHS")
            && e.message.contains("FORTNIGHTS"),
        "{e}"
    );
    let e = parse_expr("PROFILE").unwrap_err();
    assert!(e.message.contains("predicate"), "{e}");
    let e = parse_expr("DID 'a' SINCE 'the day before'").unwrap_err();
    assert!(
        e.message.contains("ISO-8601") && e.message.contains("'-7 days'"),
        "{e}"
    );
    let e = parse_expr("(DID 'a'").unwrap_err();
    assert!(e.message.contains("')'"), "{e}");
}
