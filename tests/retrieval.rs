//! Retrieval quality with the real all-MiniLM-L6-v2 model: memories are
//! found by what they mean, not only by the words they share.

mod common;

use common::*;
use serde_json::json;

const MEMORIES: [&str; 8] = [
    "I adopted a beagle named Max last spring",
    "My sister lives in Porto and teaches chemistry",
    "I am allergic to peanuts",
    "I prefer answers in bullet points",
    "The quarterly tax filing is due on the 15th",
    "I started learning the cello in January",
    "My favourite cuisine is Ethiopian food",
    "I work as a backend engineer at a logistics company",
];

async fn top(client: &Client, query: &str, mode: &str) -> String {
    let found = ok(
        client,
        "search_memories",
        json!({"query": query, "user_id": "sam", "mode": mode, "limit": 3}),
    )
    .await;
    found["results"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn questions_find_memories_by_meaning_with_the_local_model() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Local)).await;
    let memories: Vec<_> = MEMORIES
        .iter()
        .map(|m| json!({"content": m, "user_id": "sam"}))
        .collect();
    let stored = ok(&client, "store_memories", json!({"memories": memories})).await;
    assert!(
        stored["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["embedded"] == true),
        "{stored}"
    );
    // Queries share at most one word with their answer, and some share one with a wrong one.
    let cases = [
        ("what pet does the user have?", MEMORIES[0]),
        ("which foods could cause an allergic reaction?", MEMORIES[2]),
        ("what instrument is being practised?", MEMORIES[5]),
        ("what is their job?", MEMORIES[7]),
        ("formatting style for replies", MEMORIES[3]),
    ];
    for (query, expected) in cases {
        assert_eq!(
            top(&client, query, "semantic").await,
            expected,
            "semantic: {query}"
        );
        assert_eq!(
            top(&client, query, "hybrid").await,
            expected,
            "hybrid: {query}"
        );
    }
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_query_naming_a_time_prefers_memories_from_then() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Local)).await;
    // Three near-identical memories that differ only in when they happened.
    let memories = json!({"memories": [
        {"content": "We went hiking in the hills with the kids", "user_id": "ana", "occurred_at": "2023-03-11T10:00:00Z"},
        {"content": "We went hiking in the mountains with the kids", "user_id": "ana", "occurred_at": "2023-07-02T10:00:00Z"},
        {"content": "We went hiking by the lake with the kids", "user_id": "ana", "occurred_at": "2024-10-20T10:00:00Z"},
    ]});
    ok(&client, "store_memories", memories).await;
    for (query, expected_day) in [
        ("where did we go hiking in July 2023?", "2023-07-02"),
        ("the hike on March 11, 2023", "2023-03-11"),
        ("hiking trip in October", "2024-10-20"),
    ] {
        let found = ok(
            &client,
            "search_memories",
            json!({"query": query, "user_id": "ana", "limit": 3}),
        )
        .await;
        let first = found["results"][0]["occurred_at"]
            .as_str()
            .unwrap_or_default();
        assert!(first.starts_with(expected_day), "{query}: {found}");
        assert!(
            !found["time_windows"].as_array().unwrap().is_empty(),
            "{query}: the time it names is reported"
        );
    }
    // A query naming no time reads none.
    let plain = ok(
        &client,
        "search_memories",
        json!({"query": "hiking with the kids", "user_id": "ana"}),
    )
    .await;
    assert_eq!(plain["time_windows"], json!([]), "{plain}");
    client.cancel().await.ok();
}

/// A user with a handful of memories beside one with thousands: the vector
/// list is planned for each search, so the small scope is read exactly
/// rather than through the index scan that suits the large one (a bounded
/// scan of the whole table's index finds few of the small user's rows).
#[tokio::test]
async fn a_small_scope_beside_a_large_one_finds_all_its_memories() {
    let db = fresh_db().await;
    // A tight bound on index scans makes a misplanned search visibly miss.
    db.sql()
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET hnsw.max_scan_tuples = 50",
            db.name
        ))
        .await
        .unwrap();
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    // One connection: every search shares its cached statements and plans.
    cmd.env("MNEMO_POOL_SIZE", "1");
    let client = stdio_client(cmd).await;
    for batch in 0..8 {
        let memories: Vec<_> = (0..500)
            .map(|i| json!({"content": format!("crowd note {batch}-{i} about topic {}", i % 37), "user_id": "crowd"}))
            .collect();
        ok(&client, "store_memories", json!({"memories": memories})).await;
    }
    let solo: Vec<_> = (0..5)
        .map(|i| json!({"content": format!("solo memory number {i}"), "user_id": "solo"}))
        .collect();
    ok(&client, "store_memories", json!({"memories": solo})).await;
    db.sql()
        .await
        .batch_execute("ANALYZE memories")
        .await
        .unwrap();
    let search = |user: &'static str, query: &'static str| {
        let client = &client;
        async move {
            let found = ok(
                client,
                "search_memories",
                json!({"query": query, "user_id": user, "mode": "semantic", "limit": 10}),
            )
            .await;
            found["results"].as_array().unwrap().len()
        }
    };
    // Enough searches of the large scope for PostgreSQL to consider a
    // cached generic plan.
    for _ in 0..8 {
        assert_eq!(search("crowd", "a note about a topic").await, 10);
    }
    for _ in 0..3 {
        assert_eq!(
            search("solo", "a note about a topic").await,
            5,
            "every solo memory found, though the crowd's are nearer"
        );
    }
    client.cancel().await.ok();
}

/// A conversation's turns stored in order: a keyword search matching one
/// turn also brings the turns up to two before and after it (LoCoMo's
/// answer often sits a turn or two from the one sharing the question's
/// words), below the match, but not turns further away nor those of
/// another session.
#[tokio::test]
async fn a_matching_turn_brings_the_turns_up_to_two_away_in_its_session() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let turns = [
        "we went hiking on Saturday",
        "the trail was muddy after the rain",
        "I found a fossil near the creek",
        "that sounds amazing",
        "we took photos of it",
        "then we drove home",
        "dinner was late",
    ];
    let at = |day: &str| format!("2024-05-{day}T10:00:00Z");
    let mut memories: Vec<_> = turns
        .iter()
        .map(|t| json!({"content": t, "user_id": "sam", "kind": "experience", "occurred_at": at("01")}))
        .collect();
    // The next session, weeks later.
    memories.push(json!({"content": "we painted the fence", "user_id": "sam", "kind": "experience", "occurred_at": at("29")}));
    ok(&client, "store_memories", json!({"memories": memories})).await;
    let found = ok(
        &client,
        "search_memories",
        json!({"query": "fossil", "user_id": "sam", "mode": "keyword", "limit": 10}),
    )
    .await;
    let contents: Vec<String> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["content"].as_str().unwrap().to_string())
        .collect();
    let contents: Vec<&'static str> = contents
        .iter()
        .map(|c| *turns.iter().find(|t| *t == c).expect("a stored turn"))
        .collect();
    assert_eq!(
        contents.len(),
        5,
        "the match and two turns each side: {found}"
    );
    assert_eq!(contents[0], turns[2], "{found}");
    let set = |s: &[&'static str]| s.iter().copied().collect::<std::collections::HashSet<_>>();
    assert_eq!(
        set(&contents[1..]),
        set(&[turns[0], turns[1], turns[3], turns[4]]),
        "{found}"
    );
    client.cancel().await.ok();
}
