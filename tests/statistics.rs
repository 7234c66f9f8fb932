//! Search is planned with the rows a batch just stored (issue 15): a batch
//! that makes most of a scope, on a fresh database or as a new scope of a
//! large table, leaves statistics in which the planner sees that scope's
//! size, and a full-text index without pending entries, before
//! `store_memories` answers; a small batch leaves both to autovacuum.

mod common;

use common::*;
use serde_json::json;

/// Memories `from..from + n` of `user` in one `store_memories` call.
async fn store_batch(client: &Client, user: &str, from: usize, n: usize) {
    let memories: Vec<_> = (from..from + n)
        .map(|i| {
            json!({"content": format!("{user} said thing number {i} about topic {}", i % 23),
                   "user_id": user, "kind": "experience"})
        })
        .collect();
    let out = ok(client, "store_memories", json!({"memories": memories})).await;
    assert_eq!(out["created"], n, "{out}");
}

/// How many memories of `user` (companion "default") the planner expects a
/// search's scope filter to match, read from EXPLAIN as the search
/// statements filter.
async fn estimated_scope(db: &TestDb, user: &str) -> f64 {
    let sql = db.sql().await;
    let ids = sql
        .query_one(
            "SELECT c.id AS companion, u.id AS user FROM companions c, users u \
             WHERE c.name = 'default' AND u.external_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    let (companion, user): (uuid::Uuid, uuid::Uuid) = (ids.get("companion"), ids.get("user"));
    let plan: serde_json::Value = sql
        .query_one(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM memories m \
             WHERE m.companion_id = $1 AND m.user_id = $2 AND m.archived_at IS NULL",
            &[&companion, &user],
        )
        .await
        .unwrap()
        .get(0);
    plan[0]["Plan"]["Plan Rows"].as_f64().unwrap()
}

/// Pages merged by cleaning the pending list of the GIN index `index`:
/// what a search would have scanned whole.
async fn pending_pages(db: &TestDb, index: &str) -> i64 {
    db.sql()
        .await
        .query_one(
            "SELECT gin_clean_pending_list($1::text::regclass)",
            &[&index],
        )
        .await
        .unwrap()
        .get(0)
}

/// How many times memories was analyzed explicitly (autovacuum's own
/// analyses are counted apart).
async fn explicit_analyses(db: &TestDb) -> i64 {
    db.sql()
        .await
        .query_one(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'memories'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_first_batch_on_a_fresh_database_is_planned_with_its_rows() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    store_batch(&client, "ana", 0, 300).await;
    // Without statistics the planner takes the scope for one row (0.5% of
    // 0.5% of the table) and scans it once per search candidate.
    let estimate = estimated_scope(&db, "ana").await;
    assert!(
        estimate >= 150.0,
        "the planner expects {estimate} of 300 rows"
    );
    // And the full-text index holds them itself, not in the pending list
    // every search would scan whole: merging it now finds nothing to do.
    assert_eq!(pending_pages(&db, "memories_tsv").await, 0);
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_new_scope_in_a_large_table_is_planned_with_its_rows() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    for batch in 0..4 {
        store_batch(&client, "crowd", batch * 500, 500).await;
    }
    // Settled statistics of a table with one scope: "crowd" is every row.
    db.sql()
        .await
        .batch_execute("ANALYZE memories")
        .await
        .unwrap();
    store_batch(&client, "newcomer", 0, 300).await;
    let estimate = estimated_scope(&db, "newcomer").await;
    assert!(
        estimate >= 150.0,
        "the planner expects {estimate} of 300 rows"
    );
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_small_batch_leaves_the_statistics_to_autovacuum() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    store_batch(&client, "ana", 0, 300).await;
    let after_first = explicit_analyses(&db).await;
    assert_eq!(after_first, 1, "the first batch of a scope refreshes them");
    // 150 more rows in a scope of 300, and 50 in a new one: neither makes
    // most of a scope of 200 rows or more.
    store_batch(&client, "ana", 300, 150).await;
    store_batch(&client, "bea", 0, 50).await;
    assert_eq!(explicit_analyses(&db).await, after_first);
    // Nor do their index entries wait for autovacuum in a pending list
    // (migration 0011): searched right away, they are in the index.
    ok(
        &client,
        "store_memory",
        json!({"content": "Bea tagged this", "user_id": "bea", "tags": ["garden"]}),
    )
    .await;
    for index in ["memories_tsv", "memories_tags"] {
        assert_eq!(pending_pages(&db, index).await, 0, "{index}");
    }
    client.cancel().await.ok();
}
