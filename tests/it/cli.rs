//! The `segdb sql` command line: formats, timing, statements, errors, the piped shell.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

fn cli_db() -> TestDb {
    let db = TestDb::new();
    let f = db.input(
        "e.csv",
        "user_id,event,ts,price\na,view,2026-01-01T00:00:00Z,1.5\nb,buy,2026-01-02T12:00:00Z,\n",
    );
    let o = db.cli(&["ingest", "events", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("loaded 2 rows into events from 1 file(s), 2 new users"),
        "{}",
        stdout(&o)
    );
    db
}

#[test]
fn csv_json_and_table_output() {
    let db = cli_db();
    let sql = "SELECT uid, event, price FROM events ORDER BY uid";
    let o = db.cli(&["sql", "--format", "csv", "-c", sql]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "uid,event,price\n0,view,1.5\n1,buy,\n");

    let o = db.cli(&["sql", "--format", "json", "-c", sql]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"uid": 0, "event": "view", "price": 1.5}, {"uid": 1, "event": "buy", "price": null}])
    );

    let o = db.cli(&["sql", "-c", sql]);
    let t = stdout(&o);
    assert!(t.contains("| uid | event | price |"), "{t}");
    assert!(t.contains("| 1   | buy   |       |"), "{t}");

    // Empty results still show their columns.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT uid FROM events WHERE false",
    ]);
    assert_eq!(stdout(&o), "uid\n");
    let o = db.cli(&[
        "sql",
        "--format",
        "json",
        "-c",
        "SELECT uid FROM events WHERE false",
    ]);
    assert_eq!(stdout(&o).trim(), "[]");
}

#[test]
fn several_statements_files_timing_and_show_tables() {
    let db = cli_db();
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "--timing",
        "-c",
        "SELECT 1 AS a; SELECT 'x;y' AS b;",
    ]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "a\n1\nb\nx;y\n");
    let err = stderr(&o);
    let timings: Vec<&str> = err.lines().filter(|l| l.starts_with("Time: ")).collect();
    assert_eq!(timings.len(), 2, "{}", stderr(&o));
    for t in timings {
        let ms: f64 = t
            .trim_start_matches("Time: ")
            .trim_end_matches(" ms")
            .parse()
            .unwrap();
        assert!(ms >= 0.0);
    }
    let f = db.input("q.sql", "-- count\nSELECT count(*) AS n\nFROM events;\n");
    let o = db.cli(&["sql", "--format", "csv", "-f", f.to_str().unwrap()]);
    assert_eq!(stdout(&o), "n\n2\n");

    let o = db.cli(&["sql", "--format", "csv", "-c", "SHOW TABLES"]);
    let out = stdout(&o);
    for t in ["events", "profiles", "consent", "identity"] {
        assert!(
            out.contains(&format!("segdb,public,{t},BASE TABLE")),
            "{out}"
        );
    }
}

#[test]
fn errors_exit_non_zero_with_one_line() {
    let db = cli_db();
    let o = db.cli(&["sql", "-c", "SELECT nope FROM events"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("Error: ") && err.contains("nope"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // Statements after a failing one do not run.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT 1 AS a; SELECT nope; SELECT 2 AS b",
    ]);
    assert_eq!(stdout(&o), "a\n1\n");
    // Unknown flags are usage errors.
    let o = db.cli(&["sql", "--format", "xml", "-c", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn piped_stdin_runs_multi_line_statements() {
    let db = cli_db();
    let o = piped(
        &db,
        "SELECT count(*)\n  AS n\nFROM events\n;\nSELECT 'done' AS s;\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "n\n2\ns\ndone\n");
}

/// The shell's meta-commands (as in psql and DuckDB) work in piped input too, in order with the
/// statements around them; an unknown one is an error, not a continuation line.
#[test]
fn shell_meta_commands_help_list_and_describe() {
    let db = cli_db();
    let run = |input: &str| piped(&db, input);
    let o = run("SELECT 1 AS first;\n\\?\n\\d\n\\d events\n.tables\n\\timing\nSELECT 2 AS last;\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let first = out.find("first").unwrap();
    let help = out.find("Meta-commands").expect("help text");
    let tables = out.find("public,events").expect("table list");
    let column = out.find("event,Utf8").expect("columns of events");
    let last = out.find("last").unwrap();
    assert!(
        first < help && help < tables && tables < column && column < last,
        "{out}"
    );
    assert!(out.contains("Timing is on."), "{out}");
    assert!(stderr(&o).contains("Time:"), "timing after \\timing");
    let o = run("\\nonsense\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown meta-command"),
        "{}",
        stderr(&o)
    );
    let o = run("help\nSELECT 3 AS x;\n\\q\nSELECT 4 AS never;\n");
    assert!(o.status.success());
    assert!(!stdout(&o).contains("never"));
}

#[test]
fn generate_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_segdb"))
            .args([
                "generate", "--users", "50", "--days", "5", "--format", "csv", "--seed", "3",
                "--out",
            ])
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run("a");
    run("b");
    for f in ["profiles.csv", "events-00000.csv", "consent.csv"] {
        let a = std::fs::read(dir.path().join("a").join(f)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(f)).unwrap();
        assert!(!a.is_empty());
        assert_eq!(a, b, "{f} differs between two runs with one seed");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_segdb"))
        .args([
            "generate", "--users", "50", "--days", "5", "--format", "csv", "--seed", "4", "--out",
        ])
        .arg(dir.path().join("c"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_ne!(
        std::fs::read(dir.path().join("a/events-00000.csv")).unwrap(),
        std::fs::read(dir.path().join("c/events-00000.csv")).unwrap()
    );
}

/// `segdb sql --format csv` with `input` piped to its stdin.
fn piped(db: &TestDb, input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segdb"))
        .args(["sql", "--format", "csv"])
        .env("SEGDB_DATA", &db.data)
        .env("SEGDB_KEYRING", &db.keyring)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
