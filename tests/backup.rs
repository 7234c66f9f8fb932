//! Backups and moving in: `mnemo export` / `mnemo import` round-trip every
//! row exactly (memories, relations, conversations with their forks) and
//! are idempotent; a knowledge graph from the reference MCP memory server
//! becomes searchable, related memories.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn run(db: &TestDb, args: &[&str]) -> Output {
    run_command(mnemo(db, "default", Embed::Hash), args).await
}

async fn run_command(mut command: tokio::process::Command, args: &[&str]) -> Output {
    let out = command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run mnemo");
    assert!(
        out.status.success(),
        "mnemo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every row of the exported tables, as JSON text per table, in a stable order.
async fn dump(db: &TestDb) -> Vec<(&'static str, String)> {
    let sql = db.sql().await;
    let mut out = Vec::new();
    for (table, key) in [
        ("companions", "id"),
        ("users", "id"),
        ("memories", "id"),
        ("memory_relations", "id"),
        ("memory_access", "memory_id"),
        ("contexts", "id"),
        ("messages", "id"),
    ] {
        let row = sql
            .query_one(
                &format!("SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.{key}), '[]')::text FROM {table} t"),
                &[],
            )
            .await
            .unwrap();
        out.push((table, row.get(0)));
    }
    out
}

fn lines_without_header(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

async fn count(db: &TestDb, query: &str) -> i64 {
    db.sql().await.query_one(query, &[]).await.unwrap().get(0)
}

/// A database with a bit of everything: two companions, several users,
/// archived, expiring, updated and unembedded memories, relations, and
/// conversations (see [`converse`]).
async fn populate(db: &TestDb) {
    let client = stdio_client(mnemo(db, "default", Embed::Hash)).await;
    let a = ok(&client, "store_memory", json!({"content": "Ana adopted a beagle named Max", "user_id": "ana",
        "kind": "fact", "importance": 8, "confidence": 0.75, "tags": ["pets", "family"],
        "metadata": {"source": "chat", "nested": {"n": [1, 2.5, null, "ü"]}}, "occurred_at": "2024-05-08T13:56:00.123456Z"})).await;
    let b = ok(&client, "store_memory", json!({"content": "Ana walks Max every morning", "user_id": "ana", "kind": "experience", "ttl_hours": 1000})).await;
    let c = ok(
        &client,
        "store_memory",
        json!({"content": "Ana used to have a cat", "user_id": "ana"}),
    )
    .await;
    let d = ok(
        &client,
        "store_memory",
        json!({"content": "Bob prefers tea", "user_id": "bob", "kind": "preference"}),
    )
    .await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    ok(
        &client,
        "relate_memories",
        json!({"from_id": id(&b), "to_id": id(&a), "relation": "elaborates", "strength": 0.6}),
    )
    .await;
    ok(
        &client,
        "relate_memories",
        json!({"from_id": id(&c), "to_id": id(&a), "relation": "follows"}),
    )
    .await;
    ok(&client, "archive_memory", json!({"id": id(&c)})).await;
    ok(
        &client,
        "update_memory",
        json!({"id": id(&d), "content": "Bob prefers green tea", "importance": 3}),
    )
    .await;
    ok(&client, "get_memory", json!({"id": id(&a)})).await;
    client.cancel().await.ok();
    let other = stdio_client(mnemo(db, "other", Embed::Hash)).await;
    ok(
        &other,
        "store_memory",
        json!({"content": "Ana adopted a beagle named Max", "user_id": "ana"}),
    )
    .await;
    other.cancel().await.ok();
    // One memory still waiting for its embedding.
    db.sql()
        .await
        .execute("UPDATE memories SET embedding = NULL, embedding_model = NULL WHERE content = 'Bob prefers green tea'", &[])
        .await
        .unwrap();
    converse(db).await;
}

/// Conversations: ana's trip (a tool call, a model, a token count) with a
/// fork that goes on by bus, a deleted context, bob's, and one in the other
/// companion; one message still waiting for its embedding, and the fork
/// older than its parent (clocks differ between the hosts that wrote them),
/// so only ancestry, not time, puts the parent first. 5 contexts, 8 messages.
async fn converse(db: &TestDb) -> (String, String) {
    let client = stdio_client(mnemo(db, "default", Embed::Hash)).await;
    let trip = ok(&client, "append_messages", json!({"name": "Trip to Porto", "user_id": "ana", "messages": [
        {"role": "system", "content": "You are Ana's travel assistant."},
        {"role": "user", "content": "Book me a train to Porto", "token_count": 7},
        {"role": "assistant", "content": "Checking trains", "tool_name": "trains", "tool_call_id": "c1", "model": "m-1"},
        {"role": "tool", "content": "CP 521 departs 09:40", "tool_name": "trains", "tool_call_id": "c1"}
    ]})).await;
    let trip = trip["context_id"].as_str().unwrap().to_string();
    let fork = ok(
        &client,
        "fork_context",
        json!({"id": trip, "version": 2, "name": "Trip to Porto, by bus"}),
    )
    .await;
    let fork = fork["context"]["id"].as_str().unwrap().to_string();
    ok(
        &client,
        "append_messages",
        json!({"context_id": fork, "expected_version": 2, "messages": [
            {"role": "user", "content": "Actually, the night bus is cheaper"}
        ]}),
    )
    .await;
    let scratch = ok(
        &client,
        "append_messages",
        json!({"name": "Scratch", "user_id": "ana", "messages": [
            {"role": "user", "content": "Forget this one"}
        ]}),
    )
    .await;
    ok(
        &client,
        "delete_context",
        json!({"id": scratch["context_id"]}),
    )
    .await;
    ok(
        &client,
        "append_messages",
        json!({"name": "Tea", "user_id": "bob", "messages": [
            {"role": "user", "content": "Green or black tea?"}
        ]}),
    )
    .await;
    client.cancel().await.ok();
    let other = stdio_client(mnemo(db, "other", Embed::Hash)).await;
    ok(
        &other,
        "append_messages",
        json!({"name": "Elsewhere", "user_id": "ana", "messages": [
            {"role": "user", "content": "Hello from the other companion"}
        ]}),
    )
    .await;
    other.cancel().await.ok();
    let sql = db.sql().await;
    sql.execute("UPDATE messages SET embedding = NULL, embedding_model = NULL WHERE content = 'Actually, the night bus is cheaper'", &[])
        .await
        .unwrap();
    sql.execute(
        "UPDATE contexts SET created_at = created_at - interval '1 day' WHERE parent_id IS NOT NULL",
        &[],
    )
    .await
    .unwrap();
    (trip, fork)
}

#[tokio::test]
async fn export_then_import_is_lossless_and_importing_again_changes_nothing() {
    let source = fresh_db().await;
    populate(&source).await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    run(&source, &["export", "--output", a.to_str().unwrap()]).await;
    // stdout export is the same (besides the header's time).
    let stdout = run(&source, &["export"]).await;
    let via_stdout: Vec<String> = String::from_utf8(stdout.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(via_stdout, lines_without_header(&a));
    let header: Value =
        serde_json::from_str(std::fs::read_to_string(&a).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(header["type"], "header");
    assert_eq!(header["format"], "mnemo-export");
    assert_eq!(header["version"], 2);
    // A fork's line comes after its parent's, whatever their times.
    let text = std::fs::read_to_string(&a).unwrap();
    let parent_line = text.find("\"name\":\"Trip to Porto\"").unwrap();
    let fork_line = text.find("\"name\":\"Trip to Porto, by bus\"").unwrap();
    assert!(
        parent_line < fork_line,
        "the fork is written before its parent"
    );

    // populate read one memory: its access statistics travel too.
    assert_eq!(
        count(
            &source,
            "SELECT count(*) FROM memory_access WHERE access_count = 1"
        )
        .await,
        1
    );
    let target = fresh_db().await;
    let out = run(&target, &["import", a.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "imported 2 companions, 2 users, 5 memories, 2 relations, 5 contexts, 8 messages"
        ),
        "{stderr}"
    );
    assert_eq!(
        dump(&target).await,
        dump(&source).await,
        "rows differ after the round trip"
    );

    let b = dir.path().join("b.jsonl");
    run(&target, &["export", "-o", b.to_str().unwrap()]).await;
    assert_eq!(lines_without_header(&b), lines_without_header(&a));

    // Importing again (and into the source itself) changes nothing.
    let before = dump(&target).await;
    let out = run(&target, &["import", a.to_str().unwrap()]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "imported 0 companions, 0 users, 0 memories, 0 relations, 0 contexts, 0 messages (24 already present)"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&target).await, before);
    let source_before = dump(&source).await;
    run(&source, &["import", a.to_str().unwrap()]).await;
    assert_eq!(dump(&source).await, source_before);
}

#[tokio::test]
async fn export_of_one_user_without_embeddings_is_reembedded_after_import() {
    let source = fresh_db().await;
    populate(&source).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ana.jsonl");
    run(
        &source,
        &[
            "export",
            "--user",
            "ana",
            "--no-embeddings",
            "-o",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let records: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |t: &str| records.iter().filter(|r| r["type"] == t).count();
    assert_eq!(
        (
            of("header"),
            of("companion"),
            of("user"),
            of("memory"),
            of("relation"),
            of("context"),
            of("message")
        ),
        (1, 2, 1, 4, 2, 4, 7)
    );
    assert!(records.iter().all(|r| r.get("embedding").is_none()));
    assert!(
        records
            .iter()
            .filter(|r| r["type"] == "memory" || r["type"] == "context")
            .all(|r| r["user"] == "ana")
    );

    let target = fresh_db().await;
    run(&target, &["import", file.to_str().unwrap()]).await;
    const UNEMBEDDED: &str = "SELECT (SELECT count(*) FROM memories WHERE embedding IS NULL) \
        + (SELECT count(*) FROM messages WHERE embedding IS NULL)";
    assert_eq!(count(&target, UNEMBEDDED).await, 4 + 7);
    // A server embeds them in the background; vector search then finds them.
    let client = stdio_client(mnemo(&target, "default", Embed::Hash)).await;
    let began = Instant::now();
    while count(&target, UNEMBEDDED).await > 0 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "never re-embedded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = ok(&client, "search_memories", json!({"query": "Ana walks Max every morning", "user_id": "ana", "mode": "semantic", "limit": 1})).await;
    assert_eq!(
        found["results"][0]["content"],
        "Ana walks Max every morning"
    );
    let found = ok(&client, "search_messages", json!({"query": "Book me a train to Porto", "user_id": "ana", "mode": "semantic", "limit": 1})).await;
    assert_eq!(
        found["results"][0]["message"]["content"],
        "Book me a train to Porto"
    );
    client.cancel().await.ok();

    let missing = mnemo(&source, "default", Embed::Hash)
        .args(["export", "--user", "nobody-here"])
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nobody-here"));
}

#[tokio::test]
async fn large_imports_report_progress_and_bad_lines_name_their_number() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let mut text = String::new();
    text.push_str(&json!({"type": "header", "format": "mnemo-export", "version": 1, "exported_at": "2024-01-01T00:00:00Z", "mnemo_version": "0", "embedding_dim": 384}).to_string());
    text.push('\n');
    let mut ids = Vec::new();
    for i in 0..2500 {
        let id = uuid::Uuid::new_v4();
        ids.push(id);
        text.push_str(&json!({"type": "memory", "id": id, "companion": "default", "user": format!("user{}", i % 7),
            "content": format!("bulk memory number {i}"), "kind": "fact", "importance": 5, "confidence": 1.0, "tags": [],
            "metadata": {}, "occurred_at": "2024-01-01T00:00:00Z", "expires_at": null, "archived_at": null,
            "access_count": 0, "last_accessed_at": null, "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z"}).to_string());
        text.push('\n');
    }
    for w in ids.windows(2).take(300) {
        text.push_str(&json!({"type": "relation", "id": uuid::Uuid::new_v4(), "companion": "default", "from_id": w[0], "to_id": w[1],
            "relation": "follows", "strength": 1.0, "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}).to_string());
        text.push('\n');
    }
    std::fs::write(&file, &text).unwrap();
    let db = fresh_db().await;
    let out = run(&db, &["import", file.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "import: 1000 records read",
        "import: 2000 records read",
        "2500 memories, 300 relations",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM memories").await, 2500);
    assert_eq!(count(&db, "SELECT count(*) FROM users").await, 7);

    // A broken line is reported by number, and what came before it is kept.
    let broken = dir.path().join("broken.jsonl");
    let mut lines: Vec<&str> = text.lines().take(10).collect();
    lines.push("{\"type\": \"memory\", \"oops\": true}");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let out = mnemo(&db, "default", Embed::Hash)
        .args(["import", broken.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 11"), "{stderr}");
    // A server-memory file given as a mnemo export says what to do.
    let graph = dir.path().join("graph.jsonl");
    std::fs::write(
        &graph,
        "{\"type\":\"entity\",\"name\":\"A\",\"entityType\":\"x\",\"observations\":[]}\n",
    )
    .unwrap();
    let out = mnemo(&db, "default", Embed::Hash)
        .args(["import", graph.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--format server-memory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const KNOWLEDGE_GRAPH: &str = r#"{"type":"entity","name":"John_Smith","entityType":"person","observations":["Speaks fluent Spanish","Graduated in 2019"]}
{"type":"entity","name":"Anthropic","entityType":"organization","observations":["Builds Claude"]}
{"type":"relation","from":"John_Smith","to":"Anthropic","relationType":"works_at"}
{"type":"relation","from":"John_Smith","to":"Madrid","relationType":"lives_in"}
{"type":"entity","name":"Empty_Entity","entityType":"thing","observations":[]}
"#;

#[tokio::test]
async fn a_server_memory_knowledge_graph_imports_as_searchable_related_memories() {
    let db = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("memory.jsonl");
    std::fs::write(&file, KNOWLEDGE_GRAPH).unwrap();
    run(
        &db,
        &[
            "import",
            "--format",
            "server-memory",
            "--user",
            "john",
            file.to_str().unwrap(),
        ],
    )
    .await;
    // 4 anchors (John, Anthropic, Empty, and Madrid which only a relation names),
    // 3 observations, 2 relation statements.
    assert_eq!(count(&db, "SELECT count(*) FROM memories").await, 9);
    // 3 observations + 2 statements elaborate their anchors; 2 references between anchors.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM memory_relations WHERE relation = 'elaborates'"
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM memory_relations WHERE relation = 'references'"
        )
        .await,
        2
    );
    let before = dump(&db).await;
    run(
        &db,
        &[
            "import",
            "--format",
            "server-memory",
            "--user",
            "john",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(
        dump(&db).await,
        before,
        "importing the graph again must change nothing"
    );

    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let found = ok(
        &client,
        "search_memories",
        json!({"query": "Spanish", "user_id": "john", "mode": "keyword"}),
    )
    .await;
    let hit = &found["results"][0];
    assert_eq!(hit["content"], "John_Smith (person): Speaks fluent Spanish");
    assert_eq!(hit["tags"], json!(["person", "John_Smith"]));
    assert_eq!(hit["metadata"]["source"], "server-memory");
    let anchor_id: String = db
        .sql()
        .await
        .query_one(
            "SELECT id::text FROM memories WHERE content = 'John_Smith is a person.'",
            &[],
        )
        .await
        .expect("John's anchor memory")
        .get(0);
    let related = ok(
        &client,
        "related_memories",
        json!({"id": anchor_id, "relations": ["references"]}),
    )
    .await;
    let contents: Vec<&str> = related["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["memory"]["content"].as_str().unwrap())
        .collect();
    assert!(
        contents.contains(&"Anthropic is an organization.")
            && contents.contains(&"Madrid is an entity."),
        "{contents:?}"
    );
    // Embedded by the server's backfill job, then found by meaning too.
    let began = Instant::now();
    while count(&db, "SELECT count(*) FROM memories WHERE embedding IS NULL").await > 0 {
        assert!(began.elapsed() < Duration::from_secs(30), "never embedded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = ok(&client, "search_memories", json!({"query": "John_Smith works_at Anthropic", "user_id": "john", "mode": "semantic", "limit": 1})).await;
    assert_eq!(
        found["results"][0]["content"],
        "John_Smith works_at Anthropic"
    );
    client.cancel().await.ok();
}

/// What get_context answers for `id`, whole.
async fn read_context(client: &Client, id: &str) -> Value {
    ok(client, "get_context", json!({"id": id, "limit": 500})).await
}

#[tokio::test]
async fn a_conversation_survives_export_and_import_into_an_empty_data_dir() {
    let source = fresh_db().await;
    let (trip, fork) = converse(&source).await;
    let client = stdio_client(mnemo(&source, "default", Embed::Hash)).await;
    let (trip_before, fork_before) = (
        read_context(&client, &trip).await,
        read_context(&client, &fork).await,
    );
    client.cancel().await.ok();
    // The fork's resolved log: its parent's first two messages, then its own.
    let versions: Vec<i64> = fork_before["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.jsonl");
    run(&source, &["export", "-o", file.to_str().unwrap()]).await;

    let data_dir = temp_data_dir("restore");
    let _stop = StopClusterOnDrop(data_dir.clone());
    let out = run_command(
        embedded_mnemo(&data_dir, "default"),
        &["import", file.to_str().unwrap()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5 contexts, 8 messages"), "{stderr}");
    let restored = stdio_client(embedded_mnemo(&data_dir, "default")).await;
    assert_eq!(read_context(&restored, &trip).await, trip_before);
    assert_eq!(read_context(&restored, &fork).await, fork_before);
    // The deleted context stays deleted; the fork goes on where it was.
    let listed = ok(&restored, "list_contexts", json!({"user_id": "ana"})).await;
    let names: Vec<&str> = listed["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"Scratch") && names.len() == 2, "{names:?}");
    let more = ok(
        &restored,
        "append_messages",
        json!({"context_id": fork, "expected_version": 3, "messages": [
            {"role": "assistant", "content": "The night bus leaves at 23:00"}
        ]}),
    )
    .await;
    assert_eq!(more["versions"], json!([4]));
    restored.cancel().await.ok();
}
