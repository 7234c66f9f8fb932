//! Every memory tool through a real MCP client, over stdio and over
//! Streamable HTTP: happy paths, validation errors, dedup, expiry,
//! archive/restore, relations, optimistic concurrency and isolation
//! between companions.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The same promises, whichever transport carries them.
async fn every_tool_works(client: &Client) {
    // store + dedup
    let a = ok(
        client,
        "store_memory",
        json!({"content": "  Ana adopted a beagle named Max  ", "kind": "fact", "importance": 7,
               "confidence": 0.9, "tags": ["pets", "family"], "metadata": {"source": "chat"},
               "user_id": "ana", "occurred_at": "2024-05-08T13:56:00Z"}),
    )
    .await;
    assert_eq!(a["created"], true);
    assert_eq!(a["embedded"], true);
    let a_id = a["id"].as_str().unwrap().to_string();
    let again = ok(
        client,
        "store_memory",
        json!({"content": "Ana adopted a beagle named Max", "user_id": "ana"}),
    )
    .await;
    assert_eq!(
        again["id"],
        a_id.as_str(),
        "identical content must not be duplicated"
    );
    assert_eq!(again["created"], false);
    // Same content for another user is a separate memory.
    let other_user = ok(
        client,
        "store_memory",
        json!({"content": "Ana adopted a beagle named Max", "user_id": "bob"}),
    )
    .await;
    assert_ne!(other_user["id"], a_id.as_str());

    // batch
    let batch = ok(
        client,
        "store_memories",
        json!({"memories": [
            {"content": "Ana prefers short answers", "kind": "preference", "user_id": "ana"},
            {"content": "Always answer Ana in Spanish", "kind": "instruction", "user_id": "ana", "importance": 9},
            {"content": "Ana ran a marathon in Lisbon", "kind": "experience", "user_id": "ana",
             "occurred_at": "2023-10-15", "tags": ["sport"]},
            {"content": "Ana prefers short answers", "user_id": "ana"},
            {"content": "Ana adopted a beagle named Max", "user_id": "ana"},
            {"content": "Ana adopted a beagle named Max", "user_id": "bob"}
        ]}),
    )
    .await;
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(batch["created"], 3);
    assert_eq!(batch["existing"], 3);
    assert_eq!(
        results[0]["id"], results[3]["id"],
        "a batch deduplicates within itself"
    );
    assert_eq!(results[3]["created"], false);
    assert_eq!(
        results[4]["id"],
        a_id.as_str(),
        "a batch returns memories the user already has"
    );
    assert_eq!(results[4]["created"], false);
    assert_eq!(results[5]["id"], other_user["id"]);
    let pref_id = results[0]["id"].as_str().unwrap().to_string();
    let marathon_id = results[2]["id"].as_str().unwrap().to_string();

    // get counts accesses
    let got = ok(client, "get_memory", json!({"id": a_id})).await;
    let m = &got["memory"];
    assert_eq!(m["content"], "Ana adopted a beagle named Max");
    assert_eq!(m["kind"], "fact");
    assert_eq!(m["importance"], 7);
    assert_eq!(m["tags"], json!(["pets", "family"]));
    assert_eq!(m["metadata"], json!({"source": "chat"}));
    assert_eq!(m["user_id"], "ana");
    assert_eq!(m["access_count"], 1);
    let got = ok(client, "get_memory", json!({"id": a_id})).await;
    assert_eq!(got["memory"]["access_count"], 2);

    // search: every mode, filters, only the asked user
    for mode in ["hybrid", "semantic", "keyword"] {
        let found = ok(
            client,
            "search_memories",
            json!({"query": "beagle Max", "user_id": "ana", "mode": mode}),
        )
        .await;
        let hits = found["results"].as_array().unwrap();
        assert_eq!(hits[0]["id"], a_id.as_str(), "mode {mode}: {found}");
        assert!(hits[0]["score"].as_f64().unwrap() > 0.0);
        assert!(hits.iter().all(|h| h["user_id"] == "ana"), "{found}");
    }
    let sport = ok(
        client,
        "search_memories",
        json!({"query": "marathon", "user_id": "ana", "tags": ["sport"], "kinds": ["experience"],
               "since": "2023-01-01", "until": "2024-01-01"}),
    )
    .await;
    assert_eq!(sport["results"].as_array().unwrap().len(), 1, "{sport}");
    assert_eq!(sport["results"][0]["id"], marathon_id.as_str());
    let important = ok(
        client,
        "search_memories",
        json!({"query": "Ana", "user_id": "ana", "min_importance": 8}),
    )
    .await;
    assert!(
        important["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["importance"].as_i64().unwrap() >= 8),
        "{important}"
    );
    let tags_all = ok(
        client,
        "search_memories",
        json!({"query": "Ana", "user_id": "ana", "tags": ["pets", "sport"], "tags_match": "all"}),
    )
    .await;
    assert!(
        tags_all["results"].as_array().unwrap().is_empty(),
        "{tags_all}"
    );

    // list with cursor pagination, newest first
    let page1 = ok(
        client,
        "list_memories",
        json!({"user_id": "ana", "limit": 2}),
    )
    .await;
    let first = page1["memories"].as_array().unwrap();
    assert_eq!(first.len(), 2);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let page2 = ok(
        client,
        "list_memories",
        json!({"user_id": "ana", "limit": 2, "cursor": cursor}),
    )
    .await;
    let second = page2["memories"].as_array().unwrap();
    assert_eq!(second.len(), 2);
    assert!(
        page2["next_cursor"].is_null(),
        "4 memories fit in two pages: {page2}"
    );
    let mut seen: Vec<&str> = first
        .iter()
        .chain(second)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let created: Vec<&str> = first
        .iter()
        .chain(second)
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(created, sorted, "newest first");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "pages never repeat a memory");

    // update with optimistic concurrency
    let read = ok(client, "get_memory", json!({"id": pref_id})).await;
    let stamp = read["memory"]["updated_at"].as_str().unwrap().to_string();
    let updated = ok(
        client,
        "update_memory",
        json!({"id": pref_id, "content": "Ana prefers detailed answers", "expected_updated_at": stamp}),
    )
    .await;
    assert_eq!(updated["memory"]["content"], "Ana prefers detailed answers");
    assert_eq!(updated["memory"]["embedded"], true);
    let stale = tool_error(
        client,
        "update_memory",
        json!({"id": pref_id, "importance": 1, "expected_updated_at": stamp}),
    )
    .await;
    assert!(
        stale.contains("conflict") && stale.contains("read it again"),
        "{stale}"
    );
    let unchanged = ok(client, "get_memory", json!({"id": pref_id})).await;
    assert_eq!(
        unchanged["memory"]["importance"], 5,
        "a stale write is refused, not applied"
    );
    let found = ok(
        client,
        "search_memories",
        json!({"query": "detailed answers", "user_id": "ana", "mode": "semantic", "limit": 1}),
    )
    .await;
    assert_eq!(
        found["results"][0]["id"],
        pref_id.as_str(),
        "content change re-embeds"
    );

    // archive / restore
    let archived = ok(client, "archive_memory", json!({"id": marathon_id})).await;
    assert!(archived["memory"]["archived_at"].is_string());
    let hidden = ok(
        client,
        "search_memories",
        json!({"query": "marathon Lisbon", "user_id": "ana"}),
    )
    .await;
    assert!(
        hidden["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != marathon_id.as_str()),
        "archived memories are hidden: {hidden}"
    );
    let shown = ok(
        client,
        "search_memories",
        json!({"query": "marathon Lisbon", "user_id": "ana", "include_archived": true}),
    )
    .await;
    assert_eq!(shown["results"][0]["id"], marathon_id.as_str());
    assert_eq!(shown["results"][0]["archived"], true);
    let restored = ok(client, "restore_memory", json!({"id": marathon_id})).await;
    assert!(restored["memory"]["archived_at"].is_null());

    // relations and traversal
    let spanish_id = results[1]["id"].as_str().unwrap().to_string();
    let r1 = ok(
        client,
        "relate_memories",
        json!({"from_id": a_id, "to_id": marathon_id, "relation": "follows", "strength": 0.5}),
    )
    .await;
    assert_eq!(r1["created"], true);
    let r1b = ok(
        client,
        "relate_memories",
        json!({"from_id": a_id, "to_id": marathon_id, "relation": "follows", "strength": 0.8}),
    )
    .await;
    assert_eq!(r1b["created"], false);
    assert_eq!(r1b["id"], r1["id"]);
    ok(
        client,
        "relate_memories",
        json!({"from_id": spanish_id, "to_id": marathon_id, "relation": "references"}),
    )
    .await;
    let one = ok(client, "related_memories", json!({"id": a_id})).await;
    let one = one["results"].as_array().unwrap().clone();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["memory"]["id"], marathon_id.as_str());
    assert_eq!(one[0]["path"][0]["relation"], "follows");
    assert!((one[0]["path"][0]["strength"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    let two = ok(client, "related_memories", json!({"id": a_id, "depth": 2})).await;
    let two = two["results"].as_array().unwrap().clone();
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[1]["memory"]["id"], spanish_id.as_str());
    assert_eq!(two[1]["depth"], 2);
    assert_eq!(two[1]["path"].as_array().unwrap().len(), 2);
    assert_eq!(two[1]["path"][1]["relation"], "references");
    let filtered = ok(
        client,
        "related_memories",
        json!({"id": a_id, "depth": 3, "relations": ["causes"]}),
    )
    .await;
    assert!(filtered["results"].as_array().unwrap().is_empty());

    // stats
    let stats = ok(client, "memory_stats", json!({"user_id": "ana"})).await;
    assert_eq!(stats["total"], 4);
    assert_eq!(stats["by_kind"]["fact"], 1);
    assert_eq!(stats["by_kind"]["preference"], 1);
    assert_eq!(stats["by_kind"]["instruction"], 1);
    assert_eq!(stats["by_kind"]["experience"], 1);
    assert_eq!(stats["relations"], 2);
    let all = ok(client, "memory_stats", json!({})).await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["users"], 2);

    // delete takes relations with it
    let deleted = ok(client, "delete_memory", json!({"id": marathon_id})).await;
    assert_eq!(deleted["deleted"], true);
    let gone = tool_error(client, "get_memory", json!({"id": marathon_id})).await;
    assert!(gone.contains("not_found"), "{gone}");
    let none = ok(client, "related_memories", json!({"id": a_id, "depth": 3})).await;
    assert!(none["results"].as_array().unwrap().is_empty());
    let stats = ok(client, "memory_stats", json!({"user_id": "ana"})).await;
    assert_eq!(stats["relations"], 0);
}

#[tokio::test]
async fn every_tool_works_over_stdio() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    every_tool_works(&client).await;
    client.cancel().await.ok();
}

#[tokio::test]
async fn every_tool_works_over_http() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let client = http_client(&server.url).await;
    every_tool_works(&client).await;
    client.cancel().await.ok();
}

#[tokio::test]
async fn bad_arguments_get_clear_tool_errors_and_change_nothing() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let id = ok(&client, "store_memory", json!({"content": "baseline"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let long = "x".repeat(32_769);
    let too_many_tags: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
    let deep = (0..20).fold(json!(1), |acc, _| json!({ "a": acc }));
    let big_meta = json!({"blob": "y".repeat(17_000)});
    let batch_501: Vec<Value> = (0..501)
        .map(|i| json!({"content": format!("m{i}")}))
        .collect();
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("store_memory", json!({}), &["missing field `content`"]),
        (
            "store_memory",
            json!({"content": "   "}),
            &["content is empty", "32768"],
        ),
        (
            "store_memory",
            json!({"content": long}),
            &["32769 characters", "32768"],
        ),
        ("store_memory", json!({"content": "a\u{0}b"}), &["NUL"]),
        (
            "store_memory",
            json!({"content": "x", "kind": "rumour"}),
            &["unknown variant `rumour`", "fact"],
        ),
        (
            "store_memory",
            json!({"content": "x", "importance": 11}),
            &["importance is 11", "0", "10"],
        ),
        (
            "store_memory",
            json!({"content": "x", "importance": "high"}),
            &["invalid type"],
        ),
        (
            "store_memory",
            json!({"content": "x", "confidence": 1.5}),
            &["confidence is 1.5", "0 to 1"],
        ),
        (
            "store_memory",
            json!({"content": "x", "tags": too_many_tags}),
            &["33 tags", "32"],
        ),
        (
            "store_memory",
            json!({"content": "x", "tags": [""]}),
            &["each tag"],
        ),
        (
            "store_memory",
            json!({"content": "x", "metadata": [1, 2]}),
            &["invalid type"],
        ),
        (
            "store_memory",
            json!({"content": "x", "metadata": deep}),
            &["nested more than 16"],
        ),
        (
            "store_memory",
            json!({"content": "x", "metadata": big_meta}),
            &["bytes as JSON", "16384"],
        ),
        (
            "store_memory",
            json!({"content": "x", "occurred_at": "last tuesday"}),
            &["occurred_at", "RFC 3339"],
        ),
        (
            "store_memory",
            json!({"content": "x", "expires_at": "2001-01-01"}),
            &["in the past"],
        ),
        (
            "store_memory",
            json!({"content": "x", "ttl_hours": 0}),
            &["ttl_hours is 0"],
        ),
        (
            "store_memory",
            json!({"content": "x", "ttl_hours": 1, "expires_at": "2999-01-01"}),
            &["not both"],
        ),
        (
            "store_memory",
            json!({"content": "x", "user_id": ""}),
            &["user_id"],
        ),
        (
            "store_memory",
            json!({"content": "x", "contnet": "typo"}),
            &["unknown argument `contnet`", "content"],
        ),
        (
            "store_memories",
            json!({"memories": []}),
            &["0 entries", "500"],
        ),
        (
            "store_memories",
            json!({"memories": batch_501}),
            &["501 entries", "500"],
        ),
        (
            "store_memories",
            json!({"memories": [{"content": "ok"}, {"content": ""}]}),
            &["memories[1].content is empty"],
        ),
        (
            "search_memories",
            json!({"query": ""}),
            &["query must be 1 to 2048"],
        ),
        (
            "search_memories",
            json!({"query": "x", "limit": 0}),
            &["limit is 0", "1 to 100"],
        ),
        (
            "search_memories",
            json!({"query": "x", "limit": 101}),
            &["limit is 101"],
        ),
        (
            "search_memories",
            json!({"query": "x", "mode": "fuzzy"}),
            &["unknown variant `fuzzy`", "hybrid"],
        ),
        (
            "search_memories",
            json!({"query": "x", "since": "2024-02-01", "until": "2024-01-01"}),
            &["must be before"],
        ),
        (
            "search_memories",
            json!({"query": "x", "tags_match": "some"}),
            &["unknown variant"],
        ),
        (
            "list_memories",
            json!({"cursor": "nonsense"}),
            &["cursor", "next_cursor"],
        ),
        (
            "get_memory",
            json!({"id": "42"}),
            &["not a memory id", "UUID"],
        ),
        (
            "get_memory",
            json!({"id": "5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11"}),
            &["not_found"],
        ),
        (
            "update_memory",
            json!({"id": id, "content": ""}),
            &["content is empty"],
        ),
        (
            "update_memory",
            json!({"id": id, "clear_expiry": true, "ttl_hours": 2}),
            &["clear_expiry cannot"],
        ),
        (
            "update_memory",
            json!({"id": id, "expected_updated_at": "yesterday"}),
            &["expected_updated_at"],
        ),
        ("archive_memory", json!({}), &["missing field `id`"]),
        (
            "delete_memory",
            json!({"id": "not-a-uuid"}),
            &["not a memory id"],
        ),
        (
            "relate_memories",
            json!({"from_id": id, "to_id": id, "relation": "follows"}),
            &["same memory"],
        ),
        (
            "relate_memories",
            json!({"from_id": id, "to_id": "5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11", "relation": "follows"}),
            &["not_found", "5f0c6a4e"],
        ),
        (
            "relate_memories",
            json!({"from_id": id, "to_id": id, "relation": "likes"}),
            &["unknown variant `likes`", "contradicts"],
        ),
        (
            "relate_memories",
            json!({"from_id": "5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11", "to_id": id, "relation": "causes", "strength": 2}),
            &["strength is 2"],
        ),
        (
            "related_memories",
            json!({"id": id, "depth": 4}),
            &["depth is 4", "1 to 3"],
        ),
        (
            "related_memories",
            json!({"id": id, "depth": 0}),
            &["depth is 0"],
        ),
    ];
    let count = cases.len();
    for (tool, args, needles) in cases {
        let message = tool_error(&client, tool, args.clone()).await;
        for needle in needles {
            assert!(
                message.contains(needle),
                "{tool}({args:.200}) error should mention {needle:?}: {message}"
            );
        }
    }
    // Nothing above changed anything, and the server still serves.
    let stats = ok(&client, "memory_stats", json!({})).await;
    assert_eq!(stats["total"], 1, "after {count} bad calls");
    let still = ok(&client, "get_memory", json!({"id": id})).await;
    assert_eq!(still["memory"]["content"], "baseline");
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_companion_cannot_touch_another_companions_memories() {
    let db = fresh_db().await;
    let alice = stdio_client(mnemo(&db, "alice-bot", Embed::Hash)).await;
    let bobby = http_server(mnemo(&db, "bobby-bot", Embed::Hash)).await;
    let bob = http_client(&bobby.url).await;
    let secret = ok(
        &alice,
        "store_memory",
        json!({"content": "The launch code is 0000", "user_id": "u1"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = ok(
        &alice,
        "store_memory",
        json!({"content": "second secret", "user_id": "u1"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let own = ok(
        &bob,
        "store_memory",
        json!({"content": "bob's own note", "user_id": "u1"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    for (tool, args) in [
        ("get_memory", json!({"id": secret})),
        (
            "update_memory",
            json!({"id": secret, "content": "hijacked"}),
        ),
        ("archive_memory", json!({"id": secret})),
        ("restore_memory", json!({"id": secret})),
        ("delete_memory", json!({"id": secret})),
        ("related_memories", json!({"id": secret})),
        (
            "relate_memories",
            json!({"from_id": own, "to_id": secret, "relation": "references"}),
        ),
        (
            "relate_memories",
            json!({"from_id": secret, "to_id": other, "relation": "references"}),
        ),
    ] {
        let e = tool_error(&bob, tool, args).await;
        assert!(e.contains("not_found"), "{tool}: {e}");
    }
    let found = ok(
        &bob,
        "search_memories",
        json!({"query": "launch code secret", "user_id": "u1", "include_archived": true}),
    )
    .await;
    let hits = found["results"].as_array().unwrap();
    assert!(hits.iter().all(|h| h["id"] == own.as_str()), "{found}");
    let listed = ok(
        &bob,
        "list_memories",
        json!({"user_id": "u1", "include_archived": true}),
    )
    .await;
    assert_eq!(listed["memories"].as_array().unwrap().len(), 1);
    let stats = ok(&bob, "memory_stats", json!({})).await;
    assert_eq!(stats["total"], 1);

    // Alice's memory is untouched.
    let intact = ok(&alice, "get_memory", json!({"id": secret})).await;
    assert_eq!(intact["memory"]["content"], "The launch code is 0000");
    assert!(intact["memory"]["archived_at"].is_null());
    let sql = db.sql().await;
    let relations: i64 = sql
        .query_one("SELECT count(*) FROM memory_relations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(relations, 0);
    alice.cancel().await.ok();
    bob.cancel().await.ok();
}

#[tokio::test]
async fn expired_memories_never_appear_and_are_purged() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    // ~1.8 seconds
    let short = ok(
        &client,
        "store_memory",
        json!({"content": "the door code today is 4711", "ttl_hours": 0.0005}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lasting = ok(
        &client,
        "store_memory",
        json!({"content": "the door is blue"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = ok(&client, "search_memories", json!({"query": "door code"})).await;
    assert!(
        before["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == short.as_str())
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let after = ok(
        &client,
        "search_memories",
        json!({"query": "door code", "include_archived": true}),
    )
    .await;
    let hits = after["results"].as_array().unwrap();
    assert!(hits.iter().all(|h| h["id"] != short.as_str()), "{after}");
    assert!(hits.iter().any(|h| h["id"] == lasting.as_str()));
    assert!(
        tool_error(&client, "get_memory", json!({"id": short}))
            .await
            .contains("not_found")
    );
    let listed = ok(&client, "list_memories", json!({})).await;
    assert_eq!(listed["memories"].as_array().unwrap().len(), 1);
    // The purge job (every second in tests) deletes the row itself.
    let sql = db.sql().await;
    let mut remaining = 1;
    for _ in 0..50 {
        remaining = sql
            .query_one(
                "SELECT count(*) FROM memories WHERE id = $1::text::uuid",
                &[&short],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(remaining, 0, "the purge job removed the expired memory");
    // Storing the same content again makes a new, live memory.
    let fresh = ok(
        &client,
        "store_memory",
        json!({"content": "the door code today is 4711"}),
    )
    .await;
    assert_eq!(fresh["created"], true);
    client.cancel().await.ok();
}

#[tokio::test]
async fn storing_works_while_the_embedder_is_down_and_vectors_follow() {
    let db = fresh_db().await;
    // An OpenAI-compatible embedder on a port where nothing listens.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_EMBEDDER", "openai")
        .env("MNEMO_OPENAI_BASE_URL", &dead)
        .env("MNEMO_EMBEDDING_DIM", "384");
    let client = stdio_client(cmd).await;
    let stored = ok(
        &client,
        "store_memory",
        json!({"content": "Ana plays the cello"}),
    )
    .await;
    assert_eq!(stored["created"], true);
    assert_eq!(stored["embedded"], false);
    let id = stored["id"].as_str().unwrap().to_string();
    let keyword = ok(
        &client,
        "search_memories",
        json!({"query": "cello", "mode": "keyword"}),
    )
    .await;
    assert_eq!(keyword["results"][0]["id"], id.as_str());
    let hybrid = tool_error(&client, "search_memories", json!({"query": "cello"})).await;
    assert!(
        hybrid.contains("unavailable") && hybrid.contains("keyword"),
        "{hybrid}"
    );
    client.cancel().await.ok();

    // A server with a working embedder fills in the missing vector.
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let mut embedded = false;
    for _ in 0..50 {
        let m = ok(&client, "get_memory", json!({"id": id})).await;
        if m["memory"]["embedded"] == true {
            embedded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        embedded,
        "the backfill job embeds memories stored without a vector"
    );
    let semantic = ok(
        &client,
        "search_memories",
        json!({"query": "cello", "mode": "semantic"}),
    )
    .await;
    assert_eq!(semantic["results"][0]["id"], id.as_str());
    client.cancel().await.ok();
}

#[tokio::test]
async fn batch_store_sends_progress_notifications() {
    use rmcp::model::{CallToolRequestParams, ClientRequest, Request};
    use rmcp::service::PeerRequestOptions;
    use std::sync::{Arc, Mutex};

    /// (progress, total) of each notification received.
    type Seen = Arc<Mutex<Vec<(f64, Option<f64>)>>>;
    #[derive(Clone, Default)]
    struct Recorder(Seen);
    impl rmcp::ClientHandler for Recorder {
        async fn on_progress(
            &self,
            params: rmcp::model::ProgressNotificationParam,
            _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
        ) {
            self.0.lock().unwrap().push((params.progress, params.total));
        }
    }

    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.args(["serve", "--stdio"]);
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let recorder = Recorder::default();
    use rmcp::ServiceExt;
    let client = recorder.clone().serve(transport).await.unwrap();
    let memories: Vec<Value> = (0..100)
        .map(|i| json!({"content": format!("note number {i}")}))
        .collect();
    let Value::Object(args) = json!({"memories": memories}) else {
        unreachable!()
    };
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(
                CallToolRequestParams::new("store_memories").with_arguments(args),
            )),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let response = handle.await_response().await.unwrap();
    let rmcp::model::ServerResult::CallToolResult(result) = response else {
        panic!("store_memories answered {response:?}");
    };
    let stored = result.structured_content.expect("structured result");
    assert_eq!(stored["created"], 100, "{stored}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one notification per chunk of 32: {seen:?}");
    assert_eq!(seen.last().unwrap(), &(100.0, Some(100.0)));
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "progress increases: {seen:?}"
    );
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_batch_keeps_its_order_whatever_order_its_rows_are_written_in() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    // Twelve turns of a conversation: rows are written in hash order, but
    // search finds neighbouring turns by insertion order.
    let turns: Vec<String> = (1..=12)
        .map(|i| format!("turn {i} of the conversation about gardening"))
        .collect();
    let memories: Vec<_> = turns
        .iter()
        .map(|t| json!({"content": t, "user_id": "ana", "kind": "experience"}))
        .collect();
    ok(&client, "store_memories", json!({"memories": memories})).await;
    let stored: Vec<String> = db
        .sql()
        .await
        .query("SELECT content FROM memories ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, turns);
    client.cancel().await.ok();
}

#[tokio::test]
async fn reads_count_without_rewriting_the_memory_and_a_revived_memory_counts_afresh() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    // No purge during the test: the expired row must still be there to revive.
    cmd.env("MNEMO_PURGE_INTERVAL_SECS", "3600");
    let client = stdio_client(cmd).await;
    let content = json!({"content": "Ana keeps bees on the roof", "user_id": "ana"});
    let id = ok(&client, "store_memory", content.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sql = db.sql().await;
    // The row version: a rewrite of the row changes it.
    let version = "SELECT xmin::text FROM memories WHERE id = $1::text::uuid";
    let before: String = sql.query_one(version, &[&id]).await.unwrap().get(0);
    for _ in 0..3 {
        ok(&client, "get_memory", json!({"id": id})).await;
    }
    let counted = "SELECT coalesce((SELECT access_count FROM memory_access \
                   WHERE memory_id = $1::text::uuid), 0)";
    let mut written = 0;
    for _ in 0..50 {
        written = sql
            .query_one(counted, &[&id])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if written == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(written, 3, "the flush job writes the counted reads");
    let after: String = sql.query_one(version, &[&id]).await.unwrap().get(0);
    assert_eq!(before, after, "reads must not rewrite the memory's row");

    // Expired, then stored again: the same row comes back, with no history.
    sql.execute(
        "UPDATE memories SET expires_at = now() - interval '1 second' WHERE id = $1::text::uuid",
        &[&id],
    )
    .await
    .unwrap();
    let again = ok(&client, "store_memory", content).await;
    assert_eq!(again["id"], id.as_str(), "the expired twin is revived");
    assert_eq!(again["created"], true);
    assert_eq!(
        sql.query_one(counted, &[&id])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    let got = ok(&client, "get_memory", json!({"id": id})).await;
    assert_eq!(got["memory"]["access_count"], 1);
    client.cancel().await.ok();
}
