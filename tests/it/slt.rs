//! A sqllogictest runner for `tests/sql/*.slt` (a fresh engine per file, on the generated demo
//! dataset). Supported records: `statement ok`, `statement error <substring>`, and
//! `query <types> [rowsort]` followed by SQL, `----` and the expected rows (cells separated by a
//! space, NULL as `NULL`). `SEGDB_SLT_COMPLETE=1` rewrites the expectations from actual results.

use crate::common::*;

enum Record {
    Statement {
        sql: String,
        error: Option<String>,
        line: usize,
    },
    Query {
        header: String,
        sql: String,
        expected: Vec<String>,
        rowsort: bool,
        line: usize,
    },
}

fn parse(text: &str) -> Vec<Record> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.is_empty() || l.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut sql = Vec::new();
        i += 1;
        if let Some(rest) = l.strip_prefix("statement") {
            let rest = rest.trim();
            let error = rest.strip_prefix("error").map(|e| e.trim().to_string());
            while i < lines.len() && !lines[i].trim().is_empty() {
                sql.push(lines[i]);
                i += 1;
            }
            out.push(Record::Statement {
                sql: sql.join("\n"),
                error,
                line: start,
            });
        } else if l.starts_with("query") {
            while i < lines.len() && lines[i].trim() != "----" {
                sql.push(lines[i]);
                i += 1;
            }
            i += 1;
            let mut expected = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() {
                expected.push(lines[i].trim_end().to_string());
                i += 1;
            }
            out.push(Record::Query {
                header: l.to_string(),
                sql: sql.join("\n"),
                expected,
                rowsort: l.contains("rowsort"),
                line: start,
            });
        } else {
            panic!("line {start}: unknown record {l:?}");
        }
    }
    out
}

fn render(r: &segdb::QueryResult) -> Vec<String> {
    crate::common::render_rows(
        r,
        |c| match c {
            None => "NULL".to_string(),
            Some("") => "(empty)".to_string(),
            Some(v) => v.replace(' ', "_"),
        },
        " ",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let complete = std::env::var("SEGDB_SLT_COMPLETE").is_ok();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let (db, _, _) = loaded(2000, 30, 42, 20.0).await;
        let e = db.engine().await;
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let mut rewritten: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        if !rewritten.is_empty() {
            rewritten.push('\n');
        }
        for rec in parse(&text) {
            match rec {
                Record::Statement { sql, error, line } => {
                    let r = e.sql(&sql).await;
                    match (&error, r) {
                        (None, Err(err)) => panic!("{name}:{line}: statement failed: {err}\n{sql}"),
                        (Some(want), Ok(_)) => {
                            panic!("{name}:{line}: expected an error containing {want:?}\n{sql}")
                        }
                        (Some(want), Err(err)) => assert!(
                            err.to_string().contains(want.as_str()),
                            "{name}:{line}: error {err} does not contain {want:?}"
                        ),
                        (None, Ok(_)) => {}
                    }
                    rewritten.push_str(&format!(
                        "statement {}\n{sql}\n\n",
                        error.map_or("ok".to_string(), |e| format!("error {e}"))
                    ));
                }
                Record::Query {
                    header,
                    sql,
                    expected,
                    rowsort,
                    line,
                } => {
                    let r = e
                        .sql(&sql)
                        .await
                        .unwrap_or_else(|err| panic!("{name}:{line}: query failed: {err}\n{sql}"));
                    let mut got = render(&r);
                    if rowsort {
                        got.sort();
                    }
                    if !complete {
                        assert_eq!(got, expected, "{name}:{line}: {sql}");
                    }
                    rewritten.push_str(&format!("{header}\n{sql}\n----\n{}\n\n", got.join("\n")));
                }
            }
        }
        if complete {
            std::fs::write(&file, rewritten.trim_end().to_string() + "\n").unwrap();
        }
    }
}
