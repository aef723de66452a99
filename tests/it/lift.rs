//! Measurement: holdout groups of materialised segments (split, stability, never activated) and
//! segment_lift / `segdb report lift` (numbers computed here from the same inputs).

use crate::common::{self, TestDb, count, rows, stderr, stdout};

/// `n` users who all viewed on 1 Nov; conversions after 10 Nov chosen by `converts(i)`.
fn campaign_db(n: usize, converts: impl Fn(usize) -> bool) -> TestDb {
    let db = TestDb::new();
    let mut before = String::from("user_id,event,ts\n");
    for i in 0..n {
        before.push_str(&format!("user-{i},view,2026-11-01T12:00:00Z\n"));
    }
    let f = db.input("before.csv", &before);
    db.ingest_cli("events", &f);
    let mut after = String::from("user_id,event,ts\n");
    for i in 0..n {
        if converts(i) {
            after.push_str(&format!("user-{i},purchase,2026-11-12T12:00:00Z\n"));
        }
        // Outside the 14 days after the snapshot: never a conversion.
        if i % 7 == 0 {
            after.push_str(&format!("user-{i},purchase,2026-11-30T12:00:00Z\n"));
            after.push_str(&format!("user-{i},purchase,2026-11-09T12:00:00Z\n"));
        }
    }
    let f = db.input("after.csv", &after);
    db.ingest_cli("events", &f);
    db
}

fn groups(e: &[String]) -> std::collections::HashSet<String> {
    e.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holdout_split_is_binomial_stable_and_never_activated() {
    let db = campaign_db(4000, |_| false);
    let e = db.engine().await;
    for pct in [5u64, 10, 50] {
        e.sql(&format!(
            "CREATE MATERIALIZED SEGMENT s{pct} HOLDOUT {pct} PERCENT AS DID 'view' BETWEEN '2026-11-01' AND '2026-11-02'"
        ))
        .await
        .unwrap();
        let held = count(
            &e,
            &format!("SELECT count(*) FROM segment_holdout('s{pct}')"),
        )
        .await as f64;
        let target = count(&e, &format!("SELECT segment_size('s{pct}')")).await as f64;
        assert_eq!(held + target, 4000.0);
        let (mean, sd) = (
            4000.0 * pct as f64 / 100.0,
            (4000.0 * pct as f64 / 100.0 * (1.0 - pct as f64 / 100.0)).sqrt(),
        );
        assert!(
            (held - mean).abs() <= 4.0 * sd,
            "{pct}%: {held} held out, expected {mean} ± {sd}"
        );
        // history and changes carry the groups
        let h = rows(
            &e,
            &format!("SELECT version, size, holdout FROM segment_history('s{pct}')"),
        )
        .await;
        assert_eq!(h, [format!("1|{}|{}", target as u64, held as u64)]);
        let c = rows(&e, &format!("SELECT grp, count(*) FROM segment_changes('s{pct}', 0, 1) GROUP BY grp ORDER BY grp")).await;
        assert_eq!(
            c,
            [
                format!("holdout|{}", held as u64),
                format!("target|{}", target as u64)
            ]
        );
    }
    // Different segment names split differently (the name is part of the keyed hash).
    let h5 = groups(&rows(&e, "SELECT user_id FROM segment_holdout('s50')").await);
    e.sql("CREATE MATERIALIZED SEGMENT t50 HOLDOUT 50 PERCENT AS DID 'view' BETWEEN '2026-11-01' AND '2026-11-02'")
        .await
        .unwrap();
    let t5 = groups(&rows(&e, "SELECT user_id FROM segment_holdout('t50')").await);
    assert_ne!(h5, t5);

    // Stable across refreshes with new members, and across a restart (a new process).
    let held_before = groups(&rows(&e, "SELECT user_id FROM segment_holdout('s10')").await);
    drop(e);
    let mut more = String::from("user_id,event,ts\n");
    for i in 4000..5000 {
        more.push_str(&format!("user-{i},view,2026-11-01T13:00:00Z\n"));
    }
    let f = db.input("more.csv", &more);
    db.ingest_cli("events", &f);
    let o = db.cli(&["sql", "-c", "REFRESH SEGMENT s10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = db.engine().await;
    let held_after = groups(&rows(&e, "SELECT user_id FROM segment_holdout('s10')").await);
    assert!(held_before.is_subset(&held_after), "a member changed group");
    assert!(
        held_after.len() > held_before.len(),
        "no new member was held out"
    );
    let all = count(
        &e,
        "SELECT segment_size('s10') + (SELECT count(*) FROM segment_holdout('s10'))",
    )
    .await;
    assert_eq!(all, 5000);

    // Never activated: an export is exactly the target group.
    let out = db.dir.path().join("out");
    drop(e);
    let mut consent = String::from("user_id,purpose,granted,recorded_at\n");
    for i in 0..5000 {
        consent.push_str(&format!("user-{i},ads,true,2026-10-01T00:00:00Z\n"));
    }
    let f = db.input("consent.csv", &consent);
    db.ingest_cli("consent", &f);
    let e = db.engine().await;
    let r = rows(
        &e,
        &format!(
            "EXPORT SEGMENT s10 TO '{}' FOR PURPOSE 'ads'",
            out.display()
        ),
    )
    .await;
    assert!(!r.is_empty());
    let exported = groups(&parquet_user_ids(&out.join("s10-v2/part-00000.parquet")));
    assert_eq!(
        exported.len() as i64,
        count(&e, "SELECT segment_size('s10')").await
    );
    assert!(
        exported.is_disjoint(&held_after),
        "a held-out member was exported"
    );
    // in_segment and segments.* mean the target group too.
    let probe = rows(
        &e,
        "SELECT count(*) FROM segment_holdout('s10') h WHERE in_segment('s10', h.user_id)",
    )
    .await;
    assert_eq!(probe, ["0"]);
    let via_table = count(&e, "SELECT count(*) FROM segments.s10").await;
    assert_eq!(via_table as usize, exported.len());
}

/// Independent of segdb's code: the DESIGN.md §11 formulas.
fn expected(nt: f64, ct: f64, nh: f64, ch: f64, pct: f64) -> [f64; 6] {
    let (rt, rh) = (ct / nt, ch / nh);
    let se = (rt * (1.0 - rt) / nt + rh * (1.0 - rh) / nh).sqrt();
    let z95 = 1.959963984540054;
    let p = (ct + ch) / (nt + nh);
    let z = (rt - rh) / (p * (1.0 - p) * (1.0 / nt + 1.0 / nh)).sqrt();
    // Two-sided normal tail via the complementary error function's relation to the normal CDF,
    // computed here by numeric integration of the density (Simpson, fine grid).
    let tail = |x: f64| -> f64 {
        let (a, b, n) = (x.abs(), x.abs() + 40.0, 400_000);
        let h = (b - a) / n as f64;
        let f = |t: f64| (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = f(a) + f(b);
        for i in 1..n {
            s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        2.0 * s * h / 3.0
    };
    let n = nt + nh;
    let eh = n * pct / 100.0;
    let chi2 = (nh - eh).powi(2) / eh + (nt - (n - eh)).powi(2) / (n - eh);
    [
        (rt - rh) / rh,
        rt - rh - z95 * se,
        rt - rh + z95 * se,
        tail(z),
        tail(chi2.sqrt()),
        rt,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lift_numbers_follow_the_formulas_and_detect_a_planted_effect() {
    // Users whose number is even convert more in the target group: the effect is planted after
    // the groups are known, from segdb's own holdout list.
    let db = campaign_db(3000, |_| false);
    let e = db.engine().await;
    e.sql("CREATE MATERIALIZED SEGMENT camp HOLDOUT 20 PERCENT AS DID 'view' BETWEEN '2026-11-01' AND '2026-11-02'")
        .await
        .unwrap();
    e.sql("REFRESH SEGMENT camp AS OF '2026-11-10T06:00:00Z'")
        .await
        .unwrap();
    let held = groups(&rows(&e, "SELECT user_id FROM segment_holdout('camp')").await);
    drop(e);
    // Target converts 1 in 4, holdout 1 in 10 ('buy'); both 1 in 8 ('signup': no effect).
    let mut conv = String::from("user_id,event,ts\n");
    let (mut th, mut hh) = (0u64, 0u64);
    for i in 0..3000 {
        let id = format!("user-{i}");
        let in_holdout = held.contains(&common::expected_pseudonym(&id));
        let buys = if in_holdout { i % 10 == 0 } else { i % 4 == 0 };
        if buys {
            conv.push_str(&format!("{id},buy,2026-11-15T10:00:00Z\n"));
            if in_holdout { hh += 1 } else { th += 1 }
        }
        if i % 8 == 0 {
            conv.push_str(&format!("{id},signup,2026-11-11T10:00:00Z\n"));
        }
        // Too late for 14 days after 10 Nov 06:00.
        if i % 3 == 0 {
            conv.push_str(&format!("{id},buy,2026-11-24T07:00:00Z\n"));
        }
    }
    let f = db.input("conv.csv", &conv);
    db.ingest_cli("events", &f);
    let e = db.engine().await;
    let nh = held.len() as f64;
    let nt = 3000.0 - nh;
    let got = rows(&e, "SELECT grp, users, converters, rate, lift, ci_low, ci_high, p_value, srm_p FROM segment_lift('camp', 'buy')").await;
    assert_eq!(got.len(), 2);
    let t: Vec<&str> = got[0].split('|').collect();
    let h: Vec<&str> = got[1].split('|').collect();
    assert_eq!((t[0], h[0]), ("target", "holdout"));
    assert_eq!(t[1].parse::<f64>().unwrap(), nt);
    assert_eq!(h[1].parse::<f64>().unwrap(), nh);
    assert_eq!(t[2].parse::<u64>().unwrap(), th);
    assert_eq!(h[2].parse::<u64>().unwrap(), hh);
    let want = expected(nt, th as f64, nh, hh as f64, 20.0);
    let num = |s: &str| s.parse::<f64>().unwrap();
    assert!((num(t[3]) - want[5]).abs() < 1e-12);
    for (k, col) in [4, 5, 6, 7, 8].into_iter().enumerate() {
        let w = want[k];
        let g = num(t[col]);
        assert!(
            (g - w).abs() <= 1e-9 + 1e-9 * w.abs(),
            "column {col}: got {g}, want {w}"
        );
    }
    // The holdout row carries only its own counts.
    assert_eq!(&h[4..], &["∅", "∅", "∅", "∅", "∅"]);
    assert!(
        num(t[5]) > 0.0,
        "the planted effect is not detected: {got:?}"
    );
    // No effect on signups: the interval covers 0.
    let s = rows(
        &e,
        "SELECT ci_low, ci_high FROM segment_lift('camp', 'signup') WHERE grp = 'target'",
    )
    .await;
    let (lo, hi) = s[0].split_once('|').unwrap();
    assert!(
        num(lo) < 0.0 && num(hi) > 0.0,
        "a null effect is detected: {s:?}"
    );
    // days_after: one day after 10 Nov 06:00 catches no 'buy'; version 1 was refreshed at its
    // creation (now), after every conversion: nobody converted after it.
    let v1 = rows(
        &e,
        "SELECT converters FROM segment_lift('camp', 'buy', 14, 1)",
    )
    .await;
    assert_eq!(v1, ["0", "0"]);
    let d1 = rows(
        &e,
        "SELECT converters FROM segment_lift('camp', 'buy', 1) ORDER BY grp DESC",
    )
    .await;
    assert_eq!(d1, ["0", "0"]);
    let err = e
        .sql("SELECT * FROM segment_lift('camp', 'buy', 14, 9)")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no version 9"), "{err}");
    let err = e
        .sql("SELECT * FROM segment_lift('camp', 'by')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did you mean 'buy'"), "{err}");

    // FORGET reaches the groups at once.
    let member = (0..3000)
        .map(|i| format!("user-{i}"))
        .find(|id| !held.contains(&common::expected_pseudonym(id)) && id.ends_with('0'))
        .unwrap();
    e.sql(&format!("FORGET USER '{member}'")).await.unwrap();
    let users = rows(
        &e,
        "SELECT users FROM segment_lift('camp', 'buy') WHERE grp = 'target'",
    )
    .await;
    assert_eq!(users, [format!("{}", nt as u64 - 1)]);

    // The report: the same table, and an SVG with both curves.
    let svg = db.dir.path().join("lift.svg");
    let o = db.cli(&[
        "report",
        "lift",
        "camp",
        "buy",
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("target") && stdout(&o).contains("holdout"),
        "{}",
        stdout(&o)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<polyline").count(), 2);
    // A segment without a holdout has no lift.
    e.sql("CREATE SEGMENT plain AS DID 'view'").await.unwrap();
    let err = e
        .sql("SELECT * FROM segment_lift('plain', 'buy')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HOLDOUT"), "{err}");
}

/// Holdout split bounds, stability, history and changes with `grp`, exports without the holdout,
/// lift numbers against Python's own erfc, planted and null effects, consent and FORGET and the
/// report's SVG, against DuckDB on the same input files (tests/differential/lift.py).
#[test]
fn holdouts_and_lift_match_an_independent_oracle() {
    common::run_differential("lift", 2);
}

/// The `user_id` values of an exported Parquet file, read directly (segdb does not open files by
/// path from SQL).
fn parquet_user_ids(path: &std::path::Path) -> Vec<String> {
    use arrow::array::AsArray;
    let f = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let u = b
            .column_by_name("user_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        out.extend((0..b.num_rows()).map(|i| u.value(i).to_string()));
    }
    out
}
