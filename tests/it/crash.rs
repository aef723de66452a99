//! Crash safety: a load killed between writing its data files and committing them leaves the
//! previous state readable and complete, and re-running the load gives exactly one copy.

use crate::common::*;

#[test]
fn a_crash_before_commit_leaves_the_previous_state() {
    let db = TestDb::new();
    let first = db.input(
        "first.csv",
        "user_id,event,ts\na,x,2026-01-01\nb,x,2026-01-01\n",
    );
    assert!(
        db.cli(&["ingest", "events", first.to_str().unwrap()])
            .status
            .success()
    );
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
