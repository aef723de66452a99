use super::*;

fn kind(sql: &str) -> Kind {
    parse_one(sql, "generic", 50)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .kind
}

#[test]
fn kinds_come_from_the_parse() {
    use Kind::*;
    let cases: Vec<(&str, Kind)> = vec![
        ("select 1", Query),
        ("  -- note\n  WITH a AS (SELECT 1) SELECT * FROM a", Query),
        ("/* x */ show tables", Query),
        ("SHOW SEGMENTS", Query),
        ("DESCRIBE SEGMENT s", Query),
        ("EXPLAIN SEGMENT s", Query),
        ("EXPLAIN SELECT 1", Query),
        ("EXPLAIN ANALYZE SELECT 1", Query),
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Write),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'", Write),
        ("SET segdb.as_of = '2026-01-01'", Setting),
        ("SET datafusion.execution.batch_size = 100", Setting),
        ("RESET datafusion.execution.batch_size", Setting),
        ("create segment s AS DID 'view'", SegmentDdl),
        ("CREATE OR REPLACE SEGMENT s AS DID 'view'", SegmentDdl),
        (
            "CREATE MATERIALIZED SEGMENT s REFRESH MANUAL AS DID 'view'",
            SegmentDdl,
        ),
        ("REFRESH SEGMENT s", SegmentDdl),
        ("ALTER SEGMENT s SET KEEP 5 VERSIONS", SegmentDdl),
        ("DROP SEGMENT s", SegmentDdl),
        ("CREATE TRAIT t AS COUNT OF EVENT 'buy'", SegmentDdl),
        ("EXPORT SEGMENT s TO '/tmp/x'", Export),
        (
            "CREATE EXPORT e FOR SEGMENT s TO '/tmp/x' ON REFRESH",
            Export,
        ),
        ("FORGET USER 'x'", Erasure),
        ("FORGET USERS IN (SELECT user_id FROM profiles)", Erasure),
        ("VACUUM", Maintenance),
        ("ALTER TABLE events SET RETENTION 30 DAYS", Maintenance),
        ("ALTER TABLE profiles SET PII (email AS EMAIL)", Maintenance),
        (
            "ALTER TABLE events ALTER COLUMN price SET DATA TYPE DOUBLE",
            Maintenance,
        ),
        (
            "alter table profiles alter age type decimal(5, 1)",
            Maintenance,
        ),
        ("CREATE VIEW v AS SELECT 1", Ddl),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/x'",
            Ddl,
        ),
        ("CREATE SCHEMA s", Ddl),
        ("DROP VIEW v", Ddl),
        ("CREATE TABLE t (a INT)", Ddl),
        ("CREATE TABLE t AS SELECT 1", Write),
        ("SELECT * INTO t FROM events", Write),
        ("SELECT 1 UNION ALL SELECT * INTO t FROM events", Write),
        ("INSERT INTO t VALUES (1)", Write),
        ("DELETE FROM t", Write),
        ("COPY events TO '/tmp/x.parquet'", Write),
        ("PREPARE p AS SELECT 1", Prepare(Box::new(Query))),
        (
            "PREPARE p AS INSERT INTO t VALUES (1)",
            Prepare(Box::new(Write)),
        ),
        ("EXECUTE p", Execute("p".into())),
        ("DEALLOCATE p", Setting),
    ];
    for (sql, want) in cases {
        assert_eq!(kind(sql), want, "{sql}");
    }
}

#[test]
fn roles_allow_by_kind() {
    use Kind::*;
    let r = Role::Reader;
    assert!(r.allows(&Query) && r.allows(&Setting) && r.allows(&Prepare(Box::new(Query))));
    for k in [
        SegmentDdl,
        Export,
        Erasure,
        Maintenance,
        Ddl,
        Write,
        Prepare(Box::new(Write)),
    ] {
        assert!(!r.allows(&k), "reader may not {k:?}");
    }
    let a = Role::Analyst;
    assert!(a.allows(&SegmentDdl) && a.allows(&Export));
    for k in [Erasure, Maintenance, Ddl, Write, Prepare(Box::new(Ddl))] {
        assert!(!a.allows(&k), "analyst may not {k:?}");
    }
    for k in [Erasure, Maintenance, Ddl, Write] {
        assert!(Role::Admin.allows(&k));
    }
}

#[test]
fn splits_outside_quotes_and_comments() {
    let s = split("SELECT ';' AS a; -- c; d\nSELECT 2;\n; /* ; */ ");
    assert_eq!(s, vec!["SELECT ';' AS a", "-- c; d\nSELECT 2"]);
    assert!(split("  -- only a comment\n").is_empty());
}
