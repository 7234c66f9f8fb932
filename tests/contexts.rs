//! Conversation contexts through a real MCP client: append, read, fork,
//! list, delete and search, over stdio and HTTP; concurrent appends with
//! and without expected_version; validation; isolation between companions;
//! the message embedding column on databases migrated before contexts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn versions(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["version"].as_i64().expect("version"))
        .collect()
}

fn id_of(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .to_string()
}

/// The same promises, whichever transport carries them.
async fn contexts_work(client: &Client) {
    // Start a context by appending without a context_id.
    let started = ok(
        client,
        "append_messages",
        json!({"name": "Trip planning", "user_id": "ana", "messages": [
            {"role": "system", "content": "You are Ana's travel assistant."},
            {"role": "user", "content": "I am training for the Lisbon marathon in October", "token_count": 11},
            {"role": "assistant", "content": "Great! Let's plan around it.", "model": "test-model"}
        ]}),
    )
    .await;
    assert_eq!(started["created"], true);
    assert_eq!(started["versions"], json!([1, 2, 3]));
    assert_eq!(started["latest_version"], 3);
    assert_eq!(started["message_count"], 3);
    // 31 chars -> 8 estimated, 11 given, 28 chars -> 7 estimated.
    assert_eq!(started["total_tokens"], 8 + 11 + 7);
    assert_eq!(started["embedded"], true);
    let root = id_of(&started, "context_id");

    // Append with the version we saw: a tool call and its result.
    let more = ok(
        client,
        "append_messages",
        json!({"context_id": root, "expected_version": 3, "messages": [
            {"role": "assistant", "content": "Checking flights", "tool_name": "flights", "tool_call_id": "c1"},
            {"role": "tool", "content": "TAP 123 departs 09:40", "tool_name": "flights", "tool_call_id": "c1"}
        ]}),
    )
    .await;
    assert_eq!(more["created"], false);
    assert_eq!(more["versions"], json!([4, 5]));
    assert_eq!(more["latest_version"], 5);

    // Read it back in version order, whole and in pages.
    let read = ok(client, "get_context", json!({"id": root})).await;
    assert_eq!(versions(&read["messages"]), vec![1, 2, 3, 4, 5]);
    assert_eq!(read["context"]["name"], "Trip planning");
    assert_eq!(read["context"]["user_id"], "ana");
    assert_eq!(read["context"]["message_count"], 5);
    assert_eq!(read["messages"][0]["role"], "system");
    assert_eq!(read["messages"][2]["model"], "test-model");
    assert_eq!(read["messages"][4]["role"], "tool");
    assert_eq!(read["messages"][4]["tool_call_id"], "c1");
    assert!(read["next_since_version"].is_null(), "{read}");
    let page = ok(
        client,
        "get_context",
        json!({"id": root, "since_version": 2, "limit": 2}),
    )
    .await;
    assert_eq!(versions(&page["messages"]), vec![3, 4]);
    assert_eq!(page["next_since_version"], 4);
    let rest = ok(
        client,
        "get_context",
        json!({"id": root, "since_version": 4}),
    )
    .await;
    assert_eq!(versions(&rest["messages"]), vec![5]);
    assert!(rest["next_since_version"].is_null());

    // Fork at version 3: shares 1..3, continues at 4.
    let fork = ok(
        client,
        "fork_context",
        json!({"id": root, "version": 3, "name": "Trip planning, by train"}),
    )
    .await["context"]
        .clone();
    let fork_id = id_of(&fork, "id");
    assert_eq!(fork["parent_id"], root.as_str());
    assert_eq!(fork["fork_version"], 3);
    assert_eq!(fork["latest_version"], 3);
    assert_eq!(fork["message_count"], 3);
    assert_eq!(fork["total_tokens"], 26);
    let own = ok(
        client,
        "append_messages",
        json!({"context_id": fork_id, "expected_version": 3, "messages": [
            {"role": "user", "content": "Actually, let's take the night train to Porto"}
        ]}),
    )
    .await;
    assert_eq!(
        own["versions"],
        json!([4]),
        "a fork numbers on from its fork point"
    );
    let forked = ok(client, "get_context", json!({"id": fork_id})).await;
    assert_eq!(versions(&forked["messages"]), vec![1, 2, 3, 4]);
    let writers: Vec<&str> = forked["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["context_id"].as_str().unwrap())
        .collect();
    assert_eq!(writers, vec![root.as_str(), &root, &root, &fork_id]);
    assert!(
        forked["messages"][3]["content"]
            .as_str()
            .unwrap()
            .contains("night train")
    );
    assert_eq!(forked["context"]["message_count"], 4);
    // Paging works across the fork point.
    let across = ok(
        client,
        "get_context",
        json!({"id": fork_id, "since_version": 2, "limit": 2}),
    )
    .await;
    assert_eq!(versions(&across["messages"]), vec![3, 4]);
    // The parent did not change.
    let parent = ok(client, "get_context", json!({"id": root})).await;
    assert_eq!(versions(&parent["messages"]), vec![1, 2, 3, 4, 5]);
    assert!(
        parent["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| !m["content"].as_str().unwrap().contains("night train"))
    );

    // A fork of a fork, before the first fork's own fork point.
    let early =
        ok(client, "fork_context", json!({"id": fork_id, "version": 2})).await["context"].clone();
    let early_id = id_of(&early, "id");
    assert_eq!(early["message_count"], 2);
    assert!(
        early["name"].as_str().unwrap().contains("fork at 2"),
        "{early}"
    );
    let early_read = ok(client, "get_context", json!({"id": early_id})).await;
    assert_eq!(versions(&early_read["messages"]), vec![1, 2]);
    // And one at the latest version (the default).
    let late = ok(client, "fork_context", json!({"id": fork_id})).await["context"].clone();
    assert_eq!(late["fork_version"], 4);
    let late_id = id_of(&late, "id");
    ok(
        client,
        "append_messages",
        json!({"context_id": late_id, "messages": [{"role": "assistant", "content": "Booked the sleeper"}]}),
    )
    .await;
    let late_read = ok(client, "get_context", json!({"id": late_id})).await;
    assert_eq!(versions(&late_read["messages"]), vec![1, 2, 3, 4, 5]);
    assert_eq!(late_read["messages"][3]["context_id"], fork_id.as_str());
    assert_eq!(late_read["messages"][4]["context_id"], late_id.as_str());

    // Listing: newest first, with a forks-only filter.
    let listed = ok(client, "list_contexts", json!({"user_id": "ana"})).await;
    let ids: Vec<&str> = listed["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![late_id.as_str(), &early_id, &fork_id, &root]);
    let page1 = ok(
        client,
        "list_contexts",
        json!({"user_id": "ana", "limit": 3}),
    )
    .await;
    let cursor = id_of(&page1, "next_cursor");
    let page2 = ok(
        client,
        "list_contexts",
        json!({"user_id": "ana", "limit": 3, "cursor": cursor}),
    )
    .await;
    assert_eq!(page2["contexts"][0]["id"], root.as_str());
    assert!(page2["next_cursor"].is_null());
    let forks = ok(
        client,
        "list_contexts",
        json!({"user_id": "ana", "parent_id": fork_id}),
    )
    .await;
    assert_eq!(forks["contexts"].as_array().unwrap().len(), 2);
    let nobody = ok(client, "list_contexts", json!({"user_id": "zed"})).await;
    assert!(nobody["contexts"].as_array().unwrap().is_empty());

    // Search: every mode finds the marathon message; roles filter; one context's log.
    for mode in ["hybrid", "semantic", "keyword"] {
        let found = ok(
            client,
            "search_messages",
            json!({"query": "Lisbon marathon", "user_id": "ana", "mode": mode}),
        )
        .await;
        let top = &found["results"][0];
        assert_eq!(top["message"]["version"], 2, "mode {mode}: {found}");
        assert_eq!(top["message"]["context_id"], root.as_str());
        assert_eq!(top["context_name"], "Trip planning");
        assert!(top["score"].as_f64().unwrap() > 0.0);
    }
    let tools_only = ok(
        client,
        "search_messages",
        json!({"query": "flights TAP", "user_id": "ana", "roles": ["tool"], "mode": "keyword"}),
    )
    .await;
    let hits = tools_only["results"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{tools_only}");
    assert_eq!(hits[0]["message"]["role"], "tool");
    let in_early = ok(
        client,
        "search_messages",
        json!({"query": "night train Porto marathon", "context_id": early_id, "mode": "keyword"}),
    )
    .await;
    let hits = in_early["results"].as_array().unwrap();
    assert_eq!(
        hits.len(),
        1,
        "the early fork's log holds only the marathon message: {in_early}"
    );
    assert_eq!(hits[0]["message"]["version"], 2);

    // Soft delete: the parent goes, its forks keep the shared history.
    let deleted = ok(client, "delete_context", json!({"id": root})).await;
    assert_eq!(deleted["deleted"], true);
    for (tool, args) in [
        ("get_context", json!({"id": root})),
        ("delete_context", json!({"id": root})),
        ("fork_context", json!({"id": root})),
        (
            "append_messages",
            json!({"context_id": root, "messages": [{"role": "user", "content": "hello?"}]}),
        ),
        (
            "search_messages",
            json!({"query": "marathon", "context_id": root}),
        ),
    ] {
        let e = tool_error(client, tool, args).await;
        assert!(
            e.contains("not_found") && e.contains("list_contexts"),
            "{tool}: {e}"
        );
    }
    let survivor = ok(client, "get_context", json!({"id": fork_id})).await;
    assert_eq!(versions(&survivor["messages"]), vec![1, 2, 3, 4]);
    assert_eq!(survivor["messages"][1]["context_id"], root.as_str());
    let everywhere = ok(
        client,
        "search_messages",
        json!({"query": "Lisbon marathon", "user_id": "ana", "mode": "keyword"}),
    )
    .await;
    assert!(
        everywhere["results"].as_array().unwrap().is_empty(),
        "messages written by a deleted context leave the user-wide search: {everywhere}"
    );
    let via_fork = ok(
        client,
        "search_messages",
        json!({"query": "Lisbon marathon", "context_id": fork_id, "mode": "keyword"}),
    )
    .await;
    assert_eq!(via_fork["results"][0]["message"]["version"], 2);
    let listed = ok(client, "list_contexts", json!({"user_id": "ana"})).await;
    assert_eq!(listed["contexts"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn contexts_work_over_stdio() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    contexts_work(&client).await;
    client.cancel().await.ok();
}

#[tokio::test]
async fn contexts_work_over_http() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let client = http_client(&server.url).await;
    contexts_work(&client).await;
    client.cancel().await.ok();
}

#[tokio::test]
async fn concurrent_appends_never_collide_and_expected_version_refuses_the_losers() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let a = http_client(&server.url).await;
    let b = http_client(&server.url).await;
    let c = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let clients = [&a, &b, &c];
    let started = ok(
        &a,
        "append_messages",
        json!({"messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let id = id_of(&started, "context_id");

    // Nine writers who all saw version 1: exactly one wins.
    let attempts = (0..9).map(|i| {
        let client = clients[i % 3];
        let id = id.clone();
        async move {
            call(
                client,
                "append_messages",
                json!({"context_id": id, "expected_version": 1, "messages": [
                    {"role": "user", "content": format!("writer {i} first")},
                    {"role": "assistant", "content": format!("writer {i} second")}
                ]}),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let (won, lost): (Vec<_>, Vec<_>) = results.iter().partition(|r| r.is_error != Some(true));
    assert_eq!(won.len(), 1, "exactly one writer wins: {results:?}");
    assert_eq!(
        won[0].structured_content.as_ref().unwrap()["versions"],
        json!([2, 3])
    );
    for r in &lost {
        let text = r.content[0].as_text().unwrap().text.clone();
        assert!(
            text.contains("conflict") && text.contains("is at version 3"),
            "{text}"
        );
    }

    // Writers without expected_version all succeed, each append contiguous.
    let appends = (0..12).map(|i| {
        let client = clients[i % 3];
        let id = id.clone();
        async move {
            ok(
                client,
                "append_messages",
                json!({"context_id": id, "messages": [
                    {"role": "user", "content": format!("burst {i} a")},
                    {"role": "user", "content": format!("burst {i} b")},
                    {"role": "user", "content": format!("burst {i} c")}
                ]}),
            )
            .await
        }
    });
    let results = futures::future::join_all(appends).await;
    let mut all = Vec::new();
    for r in &results {
        let v: Vec<i64> = r["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(v.len(), 3);
        assert!(
            v[1] == v[0] + 1 && v[2] == v[1] + 1,
            "one append's messages are consecutive: {v:?}"
        );
        all.extend(v);
    }
    all.sort();
    assert_eq!(
        all,
        (4..=39).collect::<Vec<i64>>(),
        "no gaps, no collisions"
    );
    let read = ok(&a, "get_context", json!({"id": id, "limit": 500})).await;
    assert_eq!(versions(&read["messages"]), (1..=39).collect::<Vec<i64>>());
    assert_eq!(read["context"]["message_count"], 39);
    // Each burst's three messages sit together in the log.
    let contents: Vec<&str> = read["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    for chunk in contents[3..].chunks(3) {
        let burst = chunk[0].trim_end_matches(" a");
        assert_eq!(
            chunk,
            [
                format!("{burst} a").as_str(),
                &format!("{burst} b"),
                &format!("{burst} c")
            ]
        );
    }

    // Read-modify-write writers who retry on conflict all get through, in turn.
    let retrying = (0..6).map(|i| {
        let client = clients[i % 3];
        let id = id.clone();
        async move {
            for _ in 0..50 {
                let seen = ok(
                    client,
                    "get_context",
                    json!({"id": id, "since_version": 1_000}),
                )
                .await["context"]["latest_version"]
                    .as_i64()
                    .unwrap();
                let r = call(
                    client,
                    "append_messages",
                    json!({"context_id": id, "expected_version": seen,
                           "messages": [{"role": "assistant", "content": format!("retry {i}")}]}),
                )
                .await;
                if r.is_error != Some(true) {
                    return r.structured_content.unwrap()["versions"][0]
                        .as_i64()
                        .unwrap();
                }
            }
            panic!("writer {i} never got through");
        }
    });
    let mut got = futures::future::join_all(retrying).await;
    got.sort();
    assert_eq!(got, (40..=45).collect::<Vec<i64>>());
    for client in [a, b, c] {
        client.cancel().await.ok();
    }
}

#[tokio::test]
async fn bad_context_arguments_get_clear_tool_errors_and_change_nothing() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let started = ok(
        &client,
        "append_messages",
        json!({"messages": [{"role": "user", "content": "baseline"}]}),
    )
    .await;
    let id = id_of(&started, "context_id");
    const MISSING: &str = "5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11";
    let missing = MISSING;
    let long = "x".repeat(65_537);
    let many: Vec<Value> = (0..501)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let cases: Vec<(&str, Value, &[&str])> = vec![
        ("append_messages", json!({}), &["missing field `messages`"]),
        (
            "append_messages",
            json!({"messages": []}),
            &["0 entries", "500"],
        ),
        (
            "append_messages",
            json!({"messages": many}),
            &["501 entries", "500"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "   "}]}),
            &["messages[0].content is empty", "65536"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": long}]}),
            &["65537 characters", "65536"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "a\u{0}b"}]}),
            &["NUL"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "narrator", "content": "x"}]}),
            &["unknown variant `narrator`", "assistant"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "tool", "content": "42"}]}),
            &["tool_call_id is missing"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x", "tool_name": "calc"}]}),
            &["assistant and tool messages only"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x", "token_count": -1}]}),
            &["token_count is -1", "estimate"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "assistant", "content": "x", "model": ""}]}),
            &["messages[0].model", "256"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "context_id": "nope"}),
            &["not a context id", "UUID"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "context_id": missing}),
            &["not_found", MISSING],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "context_id": id, "name": "n"}),
            &["name and user_id are for starting a new context"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "expected_version": 3}),
            &["expected_version must be 0"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "context_id": id, "expected_version": -2}),
            &["expected_version is -2"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "context_id": id, "expected_version": 7}),
            &["conflict", "version 1", "expected_version 7"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "name": ""}),
            &["name", "256"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x"}], "user_id": ""}),
            &["user_id"],
        ),
        (
            "append_messages",
            json!({"messages": [{"role": "user", "content": "x", "contnet": "typo"}]}),
            &["unknown field `contnet`"],
        ),
        (
            "append_messages",
            json!({"msgs": []}),
            &["unknown argument `msgs`", "messages"],
        ),
        ("get_context", json!({}), &["missing field `id`"]),
        ("get_context", json!({"id": "42"}), &["not a context id"]),
        ("get_context", json!({"id": missing}), &["not_found"]),
        (
            "get_context",
            json!({"id": id, "limit": 0}),
            &["limit is 0", "1 to 500"],
        ),
        (
            "get_context",
            json!({"id": id, "limit": 501}),
            &["limit is 501"],
        ),
        (
            "get_context",
            json!({"id": id, "since_version": -1}),
            &["since_version is -1"],
        ),
        ("fork_context", json!({"id": "x"}), &["not a context id"]),
        ("fork_context", json!({"id": missing}), &["not_found"]),
        (
            "fork_context",
            json!({"id": id, "version": 2}),
            &["no version 2", "0", "to 1"],
        ),
        (
            "fork_context",
            json!({"id": id, "version": -1}),
            &["version is -1"],
        ),
        (
            "fork_context",
            json!({"id": id, "name": "\u{7}"}),
            &["name", "printable"],
        ),
        (
            "list_contexts",
            json!({"cursor": "nonsense"}),
            &["cursor", "next_cursor"],
        ),
        (
            "list_contexts",
            json!({"limit": 101}),
            &["limit is 101", "1 to 100"],
        ),
        (
            "list_contexts",
            json!({"parent_id": "x"}),
            &["parent_id", "not a context id"],
        ),
        ("delete_context", json!({"id": "x"}), &["not a context id"]),
        ("delete_context", json!({"id": missing}), &["not_found"]),
        (
            "search_messages",
            json!({"query": ""}),
            &["query must be 1 to 2048"],
        ),
        (
            "search_messages",
            json!({"query": "x", "limit": 0}),
            &["limit is 0"],
        ),
        (
            "search_messages",
            json!({"query": "x", "mode": "fuzzy"}),
            &["unknown variant `fuzzy`", "hybrid"],
        ),
        (
            "search_messages",
            json!({"query": "x", "roles": ["robot"]}),
            &["unknown variant `robot`"],
        ),
        (
            "search_messages",
            json!({"query": "x", "context_id": "x"}),
            &["context_id", "not a context id"],
        ),
        (
            "search_messages",
            json!({"query": "x", "context_id": missing}),
            &["not_found"],
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
    // Nothing above wrote anything.
    let sql = db.sql().await;
    let (contexts, messages): (i64, i64) = {
        let row = sql
            .query_one(
                "SELECT (SELECT count(*) FROM contexts), (SELECT count(*) FROM messages)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((contexts, messages), (1, 1), "after {count} bad calls");
    let still = ok(&client, "get_context", json!({"id": id})).await;
    assert_eq!(still["context"]["latest_version"], 1);
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_companion_cannot_touch_another_companions_contexts() {
    use rmcp::model::ReadResourceRequestParams;

    let db = fresh_db().await;
    let alice = stdio_client(mnemo(&db, "alice-bot", Embed::Hash)).await;
    let bobby = http_server(mnemo(&db, "bobby-bot", Embed::Hash)).await;
    let bob = http_client(&bobby.url).await;
    let secret = ok(
        &alice,
        "append_messages",
        json!({"user_id": "u1", "name": "secret plans", "messages": [
            {"role": "user", "content": "The vault code is 0451"}
        ]}),
    )
    .await;
    let secret_id = id_of(&secret, "context_id");
    let memory = ok(
        &alice,
        "store_memory",
        json!({"content": "u1 prefers the vault at night", "kind": "preference", "user_id": "u1"}),
    )
    .await;
    let memory_id = id_of(&memory, "id");
    let own = ok(
        &bob,
        "append_messages",
        json!({"user_id": "u1", "messages": [{"role": "user", "content": "bob's own vault chat"}]}),
    )
    .await;
    let own_id = id_of(&own, "context_id");

    for (tool, args) in [
        ("get_context", json!({"id": secret_id})),
        (
            "append_messages",
            json!({"context_id": secret_id, "messages": [{"role": "user", "content": "hijack"}]}),
        ),
        ("fork_context", json!({"id": secret_id})),
        ("delete_context", json!({"id": secret_id})),
        (
            "search_messages",
            json!({"query": "vault code", "context_id": secret_id}),
        ),
        ("list_contexts", json!({"parent_id": secret_id})),
    ] {
        let result = call(&bob, tool, args).await;
        if tool == "list_contexts" {
            let listed = result.structured_content.unwrap();
            assert!(listed["contexts"].as_array().unwrap().is_empty());
            continue;
        }
        assert_eq!(result.is_error, Some(true), "{tool}: {result:?}");
        let e = result.content[0].as_text().unwrap().text.clone();
        assert!(e.contains("not_found"), "{tool}: {e}");
    }
    let found = ok(
        &bob,
        "search_messages",
        json!({"query": "vault code", "user_id": "u1"}),
    )
    .await;
    let hits = found["results"].as_array().unwrap();
    assert!(
        hits.iter()
            .all(|h| h["message"]["context_id"] == own_id.as_str()),
        "{found}"
    );
    let listed = ok(&bob, "list_contexts", json!({"user_id": "u1"})).await;
    assert_eq!(listed["contexts"].as_array().unwrap().len(), 1);

    // Nor through resources, resource listings or completion.
    for uri in [
        format!("memory://contexts/{secret_id}"),
        format!("memory://memories/{memory_id}"),
    ] {
        let read = bob
            .read_resource(ReadResourceRequestParams::new(&uri))
            .await;
        match read {
            Err(rmcp::ServiceError::McpError(e)) => {
                assert_eq!(
                    e.code,
                    rmcp::model::ErrorCode::RESOURCE_NOT_FOUND,
                    "{uri}: {e:?}"
                )
            }
            other => panic!("another companion's {uri} must not be readable: {other:?}"),
        }
    }
    let profile = bob
        .read_resource(ReadResourceRequestParams::new("memory://users/u1/profile"))
        .await
        .unwrap();
    let text = resource_text(&profile);
    assert!(!text.contains("vault"), "{text}");
    let listed = bob.list_all_resources().await.unwrap();
    assert!(
        listed.iter().all(|r| !r.uri.contains(&secret_id)),
        "{listed:?}"
    );
    assert!(listed.iter().any(|r| r.uri.contains(&own_id)));
    let completion = bob
        .complete_prompt_argument("summarize_context", "context_id", "", None)
        .await
        .unwrap();
    assert_eq!(completion.values, vec![own_id.clone()]);
    let completion = bob
        .complete_resource_argument("memory://memories/{id}", "id", "", None)
        .await
        .unwrap();
    assert!(completion.values.is_empty(), "{completion:?}");

    // Alice's context is intact.
    let intact = ok(&alice, "get_context", json!({"id": secret_id})).await;
    assert_eq!(versions(&intact["messages"]), vec![1]);
    alice.cancel().await.ok();
    bob.cancel().await.ok();
}

fn resource_text(result: &rmcp::model::ReadResourceResult) -> String {
    match &result.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("expected text contents, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_stored_while_the_embedder_is_down_are_embedded_later() {
    let db = fresh_db().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_EMBEDDER", "openai")
        .env("MNEMO_OPENAI_BASE_URL", &dead)
        .env("MNEMO_EMBEDDING_DIM", "384");
    let client = stdio_client(cmd).await;
    let appended = ok(
        &client,
        "append_messages",
        json!({"messages": [{"role": "user", "content": "My cello needs new strings"}]}),
    )
    .await;
    assert_eq!(appended["embedded"], false);
    let id = id_of(&appended, "context_id");
    let keyword = ok(
        &client,
        "search_messages",
        json!({"query": "cello strings", "mode": "keyword"}),
    )
    .await;
    assert_eq!(keyword["results"][0]["message"]["context_id"], id.as_str());
    client.cancel().await.ok();

    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let sql = db.sql().await;
    let mut unembedded = 1;
    for _ in 0..50 {
        unembedded = sql
            .query_one("SELECT count(*) FROM messages WHERE embedding IS NULL", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        if unembedded == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        unembedded, 0,
        "the backfill job embeds messages stored without a vector"
    );
    let semantic = ok(
        &client,
        "search_messages",
        json!({"query": "cello strings", "mode": "semantic"}),
    )
    .await;
    assert_eq!(semantic["results"][0]["message"]["context_id"], id.as_str());
    client.cancel().await.ok();
}

#[tokio::test]
async fn message_embeddings_are_typed_on_databases_fixed_before_contexts_existed() {
    let db = empty_db().await;
    let (mut client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    mnemo::db::migrate::run(&mut client, 384).await.unwrap();
    let typed = "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                 WHERE attrelid = 'messages'::regclass AND attname = 'embedding'";
    let index = "SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_embedding_hnsw'";
    let column: String = client.query_one(typed, &[]).await.unwrap().get(0);
    assert_eq!(column, "vector(384)", "a fresh database types both columns");
    // A database whose dimension was fixed before 0002: the settings row
    // exists, but 0002 just created an untyped column.
    client
        .batch_execute(
            "DROP INDEX messages_embedding_hnsw; \
             ALTER TABLE messages ALTER COLUMN embedding TYPE vector",
        )
        .await
        .unwrap();
    let column: String = client.query_one(typed, &[]).await.unwrap().get(0);
    assert_eq!(column, "vector");
    let report = mnemo::db::migrate::run(&mut client, 384).await.unwrap();
    assert!(report.applied.is_empty());
    let column: String = client.query_one(typed, &[]).await.unwrap().get(0);
    assert_eq!(column, "vector(384)");
    let n: i64 = client.query_one(index, &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "and builds its HNSW index");
    // A different dimension is still refused.
    let e = mnemo::db::migrate::run(&mut client, 768)
        .await
        .expect_err("dimension mismatch");
    assert!(e.to_string().contains("384"), "{e}");
}
