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
