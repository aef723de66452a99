//! Categories (DESIGN §17): the compiled-in IAB taxonomies as the `taxonomy` table.

use crate::common::*;

/// The table lists both taxonomies with namespaced ids, parents, paths and tiers; it joins like
/// any table and can be neither replaced nor dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taxonomy_table_lists_both_iab_taxonomies() {
    let db = TestDb::new();
    let e = db.engine().await;
    assert_eq!(
        rows(
            &e,
            "SELECT taxonomy, count(*), min(tier), max(tier) FROM taxonomy GROUP BY 1 ORDER BY 1"
        )
        .await,
        ["audience|1558|1|6", "content|704|1|4"]
    );
    assert_eq!(
        rows(&e, "SELECT id, parent, name, path, tier FROM taxonomy WHERE id IN ('content:1', 'audience:3') ORDER BY id").await,
        [
            "audience:3|audience:2|18-20|Demographic > Age Range > 18-20|3",
            "content:1|∅|Automotive|Automotive|1",
        ]
    );
    // Every parent is a row of the same taxonomy, one tier up.
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM taxonomy c LEFT JOIN taxonomy p ON c.parent = p.id \
             WHERE c.parent IS NOT NULL AND (p.id IS NULL OR p.tier + 1 <> c.tier OR p.taxonomy <> c.taxonomy)"
        )
        .await,
        0
    );
    // Neither dropped nor replaced (DataFusion's own words for both refusals).
    let err = e.sql("DROP TABLE taxonomy").await.unwrap_err().to_string();
    assert!(err.contains("doesn't exist"), "{err}");
    let err = e
        .sql("CREATE TABLE taxonomy AS SELECT 1 AS x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(count(&e, "SELECT count(*) FROM taxonomy").await, 2262);
}
