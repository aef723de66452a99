//! The example scripts of sql/examples (the ones `segdb demo` runs) work on generated data, and
//! every example segment selects a proper, non-empty part of the users.

use segdb::cli::demo::EXAMPLES;
use segdb::statement::split as split_statements;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_and_every_segment_is_meaningful() {
    // As `segdb demo` does: the 30 days before today, for examples written relative to today.
    let (db, _, users) = loaded_ending(3000, 30, 42, 20.0, chrono::Utc::now().date_naive()).await;
    let e = db.engine().await;
    segdb::cli::demo::map_products(&e, db.dir.path())
        .await
        .unwrap();
    let mut segments = 0;
    for (name, script) in EXAMPLES {
        for stmt in split_statements(script) {
            let r = e
                .sql(&stmt)
                .await
                .unwrap_or_else(|err| panic!("{name}: {stmt}\n{err}"));
            let head = stmt
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join(" ");
            let head = head.trim_start().to_ascii_uppercase();
            if head.starts_with("CREATE") {
                segments += 1;
                let size: u64 = rows_of(&r)[0].split('|').nth(1).unwrap().parse().unwrap();
                assert!(
                    size > 0 && size < users,
                    "{name}: {stmt}\nselects {size} of {users} users"
                );
            } else if !head.starts_with("SET") {
                assert!(r.num_rows() > 0, "{name}: {stmt}\nreturned no rows");
            }
        }
    }
    assert!(segments >= 12, "only {segments} example segments");
}

fn rows_of(r: &segdb::QueryResult) -> Vec<String> {
    crate::common::render_rows(r, |c| c.unwrap_or_default().to_string(), "|")
}

/// The SQL of the README's "Examples" section, run in order on what `segdb demo` loads (export
/// targets moved into a scratch directory): every statement succeeds, every segment selects a
/// proper, non-empty part of the users, every query answers rows, every count in them is above
/// zero, and the activation export writes hashed keys for its members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_examples_give_non_empty_answers_on_the_demo_database() {
    let db = TestDb::new();
    let e = db.engine().await;
    let users = 3000;
    segdb::cli::demo::load(&e, users, false).await.unwrap();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Examples\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut sql = String::new();
    for block in section.split("```sql\n").skip(1) {
        sql.push_str(block.split("```").next().unwrap());
    }
    let out = db.dir.path().join("exports");
    let sql = sql
        .replace("s3://activation/", &format!("{}/", out.display()))
        .replace("'/exports/", &format!("'{}/", out.display()));
    let mut statements = 0;
    for stmt in split_statements(&sql) {
        statements += 1;
        let r = e
            .sql(&stmt)
            .await
            .unwrap_or_else(|err| panic!("{stmt}\n{err}"));
        let head = stmt.trim_start().to_ascii_uppercase();
        let rows = rows_of(&r);
        println!("{stmt}\n  -> {rows:?}");
        if head.starts_with("SET") || head.starts_with("ALTER") || head.starts_with("CREATE EXPORT")
        {
            continue;
        }
        assert!(!rows.is_empty(), "{stmt}\nreturned no rows");
        if head.starts_with("CREATE") && !head.starts_with("CREATE TRAIT") {
            let size: u64 = rows[0].split('|').nth(1).unwrap().parse().unwrap();
            assert!(
                size > 0 && size < users,
                "{stmt}\nselects {size} of {users} users"
            );
        }
        if head.starts_with("SELECT SEGMENT_SIZE") {
            for v in rows[0].split('|') {
                let n: u64 = v.parse().unwrap();
                assert!(n > 0 && n < users, "{stmt}\n{v}");
            }
        }
        if head.starts_with("EXPORT") {
            // path | files | rows | bytes | version | … | skipped (members without a key) | …
            let f: Vec<&str> = rows[0].split('|').collect();
            let written: u64 = f[2].parse().unwrap();
            assert!(written > 0, "{stmt}\n{rows:?}");
            assert_eq!(f[6], "0", "members without a match key: {rows:?}");
        }
    }
    assert!(statements >= 15, "only {statements} README statements");
    // The activation export wrote the meta preset's hashed keys for members.
    let meta: Vec<_> = walk(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("-meta") && p.is_file())
        .collect();
    assert!(!meta.is_empty(), "no meta export under {}", out.display());
    // Hashed keys only: no address of the demo's users is in any exported byte.
    for p in &meta {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"@example.com"),
            "{}",
            p.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let p = entry.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}
