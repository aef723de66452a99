//! Crash safety: a load killed between writing its data files and committing them (or killed
//! with SIGKILL at any moment) leaves the previous state readable and complete, and re-running
//! the load gives exactly one copy.

use crate::common::*;

#[test]
fn a_crash_before_commit_leaves_the_previous_state() {
    let db = TestDb::new();
    let first = db.input(
        "first.csv",
        "user_id,event,ts\na,x,2026-01-01\nb,x,2026-01-01\n",
    );
    db.ingest_cli("events", &first);
    let files_before = all_files(&db.data.join("events")).len();

    let second = db.input(
        "second.csv",
        "user_id,event,ts,extra\nc,y,2026-01-02,1\nd,y,2026-01-02,2\na,y,2026-01-02,3\n",
    );
    let o = db.cli_env(
        &["ingest", "events", second.to_str().unwrap()],
        &[("SEGDB_FAILPOINT", "ingest-before-commit")],
    );
    assert!(
        !o.status.success(),
        "the failpoint did not fire: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("failpoint ingest-before-commit"));
    // The crashed load did write data files…
    assert!(
        all_files(&db.data.join("events")).len() > files_before,
        "no uncommitted files were left to ignore"
    );

    // …but readers see exactly the first load, and the schema did not grow.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "event,n\nx,2\n");
    let o = db.cli(&["sql", "--format", "csv", "-c", "SELECT count(*) AS n FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'extra'"]);
    assert_eq!(stdout(&o), "n\n0\n");

    // Re-running completes the load once.
    let o = db.cli(&["ingest", "events", second.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT event, count(*) AS n, sum(extra) AS s FROM events GROUP BY event ORDER BY event",
    ]);
    assert_eq!(stdout(&o), "event,n,s\nx,2,\ny,3,6\n");
    // Ordinals assigned by the crashed run (committed to identity before the crash) are reused
    // for the same users, not duplicated.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n, count(DISTINCT uid) AS d, max(uid) AS m FROM identity",
    ]);
    assert_eq!(stdout(&o), "n,d,m\n4,4,3\n");
}

/// `kill -9` at random moments of loads (events with anonymous ids that bring new users and
/// links, and links files): every load is there whole or not at all, no row refers to an unknown
/// ordinal, the index agrees with the events it reflects, and a later load is correct.
#[test]
fn loads_survive_kill_9_at_any_point() {
    use rand::{Rng, SeedableRng};
    use std::time::Duration;
    let db = TestDb::new();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    const ROWS: usize = 300;
    let csv = |db: &TestDb| -> String {
        let o = db.cli(&[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT batch, count(*) AS n FROM events GROUP BY batch ORDER BY batch; \
             SELECT count(*) AS orphans FROM events e LEFT JOIN identity i ON e.uid = i.uid WHERE i.uid IS NULL; \
             SET segdb.as_of = '2026-11-02T00:00:00Z'; \
             SELECT segment_size('busy') AS via_index; \
             SET segdb.use_index = false; \
             SELECT segment_size('busy') AS via_scan",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let seed = db.input(
        "seed.csv",
        "user_id,event,ts,batch\nseed,e,2026-11-01T00:00:00Z,-1\n",
    );
    db.ingest_cli("events", &seed);
    assert!(
        db.cli(&[
            "sql",
            "-c",
            "CREATE SEGMENT busy AS DID 'e' AT LEAST 2 TIMES"
        ])
        .status
        .success()
    );
    let mut killed = 0;
    let mut complete = std::collections::BTreeSet::new();
    for i in 0..40 {
        let (kind, text) = if i % 4 == 3 {
            let mut t = String::from("user_id,linked_id\n");
            for j in 0..ROWS {
                t.push_str(&format!("u{i}-{j},l{i}-{j}\n"));
            }
            ("links", t)
        } else {
            let mut t = String::from("user_id,anonymous_id,event,ts,batch\n");
            for j in 0..ROWS {
                let user = if j % 3 == 0 {
                    String::new()
                } else {
                    format!("u{i}-{}", j % 40)
                };
                t.push_str(&format!(
                    "{user},a{i}-{},e,2026-11-01T{:02}:00:00Z,{i}\n",
                    j % 25,
                    j % 24
                ));
            }
            ("events", t)
        };
        let f = db.input(&format!("load-{i}.csv"), &text);
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_segdb"));
        c.args(["ingest", kind, f.to_str().unwrap()])
            .env("SEGDB_DATA", &db.data)
            .env("SEGDB_KEYRING", &db.keyring)
            .env_remove("SEGDB_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        let was_killed = child.try_wait().unwrap().is_none();
        if was_killed {
            let _ = child.kill(); // SIGKILL
            killed += 1;
        }
        let status = child.wait().unwrap();
        let out = csv(&db);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("batch,n"));
        for l in lines.by_ref() {
            if l == "orphans" {
                break;
            }
            let (b, n) = l.split_once(',').unwrap();
            let (b, n): (i64, usize) = (b.parse().unwrap(), n.parse().unwrap());
            if b >= 0 {
                assert_eq!(n, ROWS, "iteration {i}: batch {b} is torn: {out}");
                complete.insert(b);
            }
        }
        assert_eq!(
            lines.next(),
            Some("0"),
            "iteration {i}: rows without identity: {out}"
        );
        let rest: Vec<&str> = lines.collect();
        assert_eq!(rest.len(), 4, "{out}");
        assert_eq!(
            rest[1], rest[3],
            "iteration {i}: index and scan disagree: {out}"
        );
        if kind == "events" && !was_killed {
            assert!(status.success(), "iteration {i}: an unkilled load failed");
            assert!(
                complete.contains(&i),
                "iteration {i}: a finished load is missing"
            );
        }
    }
    assert!(
        killed >= 8,
        "only {killed} loads were actually killed mid-way"
    );
    // A later load is correct and complete.
    let f = db.input(
        "last.csv",
        "user_id,event,ts,batch\nz,e,2026-11-01T00:00:00Z,99\nz,e,2026-11-01T01:00:00Z,99\n",
    );
    let o = db.cli(&["ingest", "events", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = csv(&db);
    assert!(out.contains("\n99,2\n"), "{out}");
}
