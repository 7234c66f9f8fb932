//! Faults a memory server must survive without losing or corrupting what it
//! acknowledged: `kill -9` mid-write, a database outage under load, 16
//! clients racing on the same memories, and servers sharing one embedded
//! cluster started and killed in random order.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mnemo::db::embedded::{ClusterStatus, EmbeddedCluster};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

/// Calls a tool without panicking: Ok(result) for a tool answer (success or
/// tool error), Err for a transport/protocol failure.
async fn try_call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<rmcp::model::CallToolResult, String> {
    call_within(client, tool, args, Duration::from_secs(30)).await
}

/// [`try_call`] with its own time limit.
async fn call_within(
    client: &Client,
    tool: &str,
    args: Value,
    limit: Duration,
) -> Result<rmcp::model::CallToolResult, String> {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    match tokio::time::timeout(
        limit,
        client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)),
    )
    .await
    {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{tool} timed out after {limit:?}")),
    }
}

#[tokio::test]
async fn acknowledged_stores_survive_kill_9_exactly_once_and_become_searchable() {
    let db = fresh_db().await;
    let port = free_port();
    // The first server has no embedding model, so its stores are acknowledged
    // without vectors and left for the backfill job: the crash must not lose them.
    let mut cmd = mnemo(&db, "default", Embed::Local);
    cmd.env("MNEMO_MODEL_DIR", "/nonexistent/model");
    let mut server = http_server_at(cmd, &format!("127.0.0.1:{port}")).await;

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let in_flight: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = http_client(&server.url).await;
        let (acked, in_flight, count) = (acked.clone(), in_flight.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                // Writers 0 and 1 store one at a time, 2 and 3 in batches of 3.
                let contents: Vec<String> = if w < 2 {
                    vec![format!("crash memory w{w}n{i}")]
                } else {
                    (0..3)
                        .map(|k| format!("crash memory w{w}n{i}k{k}"))
                        .collect()
                };
                // A call cut off by the kill may wait on its event stream
                // instead of failing: 5 s is far beyond any normal store.
                let limit = Duration::from_secs(5);
                let result = if w < 2 {
                    call_within(
                        &client,
                        "store_memory",
                        json!({"content": contents[0]}),
                        limit,
                    )
                    .await
                } else {
                    let batch: Vec<Value> =
                        contents.iter().map(|c| json!({"content": c})).collect();
                    call_within(&client, "store_memories", json!({"memories": batch}), limit).await
                };
                match result {
                    Ok(r) if r.is_error != Some(true) => {
                        let out = r.structured_content.expect("structured");
                        let ids: Vec<String> = if w < 2 {
                            vec![out["id"].as_str().unwrap().to_string()]
                        } else {
                            out["results"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|r| r["id"].as_str().unwrap().to_string())
                                .collect()
                        };
                        assert!(out.to_string().contains("\"embedded\":false"), "{out}");
                        let mut a = acked.lock().unwrap();
                        a.extend(contents.into_iter().zip(ids));
                        count.store(a.len(), Ordering::SeqCst);
                    }
                    Ok(r) => panic!("store failed before the crash: {:?}", error_text(&r)),
                    Err(_) => {
                        // The server died with this call in flight: not acknowledged.
                        in_flight.lock().unwrap().extend(contents);
                        return;
                    }
                }
            }
        }));
    }
    let began = Instant::now();
    while count.load(Ordering::SeqCst) < 120 {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "writers too slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().await.expect("kill -9");
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("writer stuck")
            .expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    let in_flight = in_flight.lock().unwrap().clone();

    // Restarted on the same data, now with a working embedder.
    let server = http_server_at(
        mnemo(&db, "default", Embed::Hash),
        &format!("127.0.0.1:{port}"),
    )
    .await;
    let sql = db.sql().await;
    for (content, id) in &acked {
        let rows = sql
            .query(
                "SELECT id::text FROM memories WHERE content = $1",
                &[content],
            )
            .await
            .unwrap();
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            ids,
            vec![id.clone()],
            "{content:?} must be stored exactly once as {id}"
        );
    }
    // A retried in-flight store lands exactly once, whether or not it had committed.
    let client = http_client(&server.url).await;
    for content in &in_flight {
        ok(&client, "store_memory", json!({"content": content})).await;
        let n: i64 = sql
            .query_one(
                "SELECT count(*) FROM memories WHERE content = $1",
                &[content],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{content:?}");
    }
    // The backfill job embeds what the first server could not.
    let began = Instant::now();
    loop {
        let missing: i64 = sql
            .query_one("SELECT count(*) FROM memories WHERE embedding IS NULL", &[])
            .await
            .unwrap()
            .get(0);
        if missing == 0 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{missing} memories never embedded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (content, id) in &acked {
        // The hash embedder maps words to 384 buckets: distinct texts can tie,
        // so look for the memory among the nearest few.
        let found = ok(
            &client,
            "search_memories",
            json!({"query": content, "mode": "semantic", "limit": 10}),
        )
        .await;
        let ids: Vec<&str> = found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert!(
            ids.contains(&id.as_str()),
            "{content:?} not found by vector search: {found}"
        );
    }
    eprintln!(
        "kill -9: {} acknowledged memories intact and searchable, {} in-flight stores retried once",
        acked.len(),
        in_flight.len()
    );
    client.cancel().await.ok();
}

/// Whether the database was down when a call started, how long it took,
/// and its tool error if any.
type Outcome = (bool, Duration, Result<(), String>);

#[tokio::test]
async fn a_database_outage_fails_fast_with_a_tool_error_and_the_same_server_recovers() {
    let data_dir = temp_data_dir("outage");
    let _cleanup = StopClusterOnDrop(data_dir.clone());
    let cluster = EmbeddedCluster::new(&data_dir, &pg_bin(), None).expect("private cluster");
    cluster
        .ensure_running("outage")
        .await
        .expect("start private cluster");
    let db = TestDb {
        name: "outage".into(),
        url: format!(
            "host={} user=postgres dbname=outage",
            cluster.socket_dir().display()
        ),
    };
    let short = |mut cmd: tokio::process::Command| {
        cmd.env("MNEMO_POOL_WAIT_MS", "1000")
            .env("MNEMO_CONNECT_TIMEOUT_MS", "1000")
            .env("MNEMO_STATEMENT_TIMEOUT_MS", "2000");
        cmd
    };
    let (stdio, mut stdio_child) =
        stdio_client_and_child(short(mnemo(&db, "default", Embed::Hash))).await;
    let mut http = http_server(short(mnemo(&db, "default", Embed::Hash))).await;
    let http_client = http_client(&http.url).await;
    let ready = http.url.replace("/mcp", "/readyz");
    assert_eq!(reqwest::get(&ready).await.unwrap().status(), 200);

    // Load from both transports for the whole outage.
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stdio = Arc::new(stdio);
    let http_client = Arc::new(http_client);
    let mut load = Vec::new();
    for (w, client) in [
        stdio.clone(),
        http_client.clone(),
        stdio.clone(),
        http_client.clone(),
    ]
    .into_iter()
    .enumerate()
    {
        let (down, stop, outcomes) = (down.clone(), stop.clone(), outcomes.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let was_down = down.load(Ordering::SeqCst);
                let began = Instant::now();
                let (tool, args) = if i % 2 == 0 {
                    (
                        "store_memory",
                        json!({"content": format!("outage {w}-{i}")}),
                    )
                } else {
                    ("search_memories", json!({"query": "outage"}))
                };
                let result = try_call(&client, tool, args)
                    .await
                    .expect("a protocol error during the outage");
                let outcome = match error_text(&result) {
                    None => Ok(()),
                    Some(e) => Err(e),
                };
                outcomes
                    .lock()
                    .unwrap()
                    .push((was_down, began.elapsed(), outcome));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    down.store(true, Ordering::SeqCst);
    assert!(cluster.stop().await.expect("stop PostgreSQL"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let not_ready = reqwest::get(&ready).await.unwrap();
    assert_eq!(not_ready.status(), 503, "readyz during the outage");
    cluster
        .ensure_running("outage")
        .await
        .expect("start PostgreSQL again");
    let back = Instant::now();
    down.store(false, Ordering::SeqCst);
    // The same processes serve again without a restart.
    loop {
        let s = try_call(
            &stdio,
            "store_memory",
            json!({"content": "after the outage (stdio)"}),
        )
        .await
        .unwrap();
        let h = try_call(
            &http_client,
            "store_memory",
            json!({"content": "after the outage (http)"}),
        )
        .await
        .unwrap();
        if s.is_error != Some(true) && h.is_error != Some(true) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not serving 10 s after PostgreSQL came back: {:?} {:?}",
            error_text(&s),
            error_text(&h)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_in = back.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.expect("load task");
    }
    assert_eq!(
        reqwest::get(&ready).await.unwrap().status(),
        200,
        "readyz after the outage"
    );
    assert!(
        stdio_child.try_wait().unwrap().is_none(),
        "the stdio server died"
    );
    assert!(
        http.child.try_wait().unwrap().is_none(),
        "the HTTP server died"
    );

    let outcomes = outcomes.lock().unwrap().clone();
    let during: Vec<_> = outcomes.iter().filter(|(d, _, _)| *d).collect();
    let failed: Vec<_> = during.iter().filter(|(_, _, o)| o.is_err()).collect();
    assert!(
        failed.len() >= 4,
        "calls during the outage should fail: {during:?}"
    );
    for (_, took, outcome) in &during {
        // connect timeout 1 s, pool wait 1 s: nothing may hang past them.
        assert!(
            *took < Duration::from_millis(2500),
            "a call took {took:?} during the outage"
        );
        if let Err(e) = outcome {
            assert!(
                e.starts_with("unavailable: the database is unavailable"),
                "{e}"
            );
        }
    }
    let slowest = during.iter().map(|(_, t, _)| *t).max().unwrap_or_default();
    eprintln!(
        "outage: {} calls during the outage ({} failed as unavailable, slowest {slowest:?}), {} in total; serving again {recovered_in:?} after restart",
        during.len(),
        failed.len(),
        outcomes.len()
    );
    if let Ok(stdio) = Arc::try_unwrap(stdio) {
        stdio.cancel().await.ok();
    }
    drop(http_client);
    cluster.stop().await.ok();
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// What the clients were told, to compare with the final state.
#[derive(Default)]
struct Ledger {
    /// Every memory state a call returned, by id.
    states: HashMap<String, Vec<Value>>,
    deleted: HashSet<String>,
    relations: Vec<(String, String)>,
    unexpected: Vec<String>,
}

impl Ledger {
    fn saw(&mut self, memory: &Value) {
        let id = memory["id"].as_str().unwrap().to_string();
        self.states.entry(id).or_default().push(memory.clone());
    }
}

#[tokio::test]
async fn sixteen_clients_racing_on_the_same_memories_lose_and_duplicate_nothing() {
    let db = fresh_db().await;
    // A race, not a rate-limit test: 16 clients can outrun the default
    // 1,200 requests a minute now that reads no longer write.
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_RATE_LIMIT", "0");
    let server = http_server(cmd).await;
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(Arc::new(http_client(&server.url).await));
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();

    // 1. Identical stores at the same moment, single and in batches of shuffled order.
    let singles: Vec<String> = (0..8).map(|i| format!("identical memory {i}")).collect();
    let batched: Vec<String> = (0..12)
        .map(|i| format!("identical batched memory {i}"))
        .collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let (client, barrier, singles, batched, calls) = (
            client.clone(),
            barrier.clone(),
            singles.clone(),
            batched.clone(),
            calls.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            let mut mine = batched.clone();
            mine.shuffle(&mut rng);
            let batch: Vec<Value> = mine
                .iter()
                .map(|m| json!({"content": m, "user_id": "race"}))
                .collect();
            barrier.wait().await;
            let mut seen: Vec<(String, String, bool)> = Vec::new();
            let out = ok(&client, "store_memories", json!({"memories": batch})).await;
            for (content, r) in mine.iter().zip(out["results"].as_array().unwrap()) {
                seen.push((
                    content.clone(),
                    r["id"].as_str().unwrap().into(),
                    r["created"].as_bool().unwrap(),
                ));
            }
            for content in &singles {
                let r = ok(
                    &client,
                    "store_memory",
                    json!({"content": content, "user_id": "race"}),
                )
                .await;
                seen.push((
                    content.clone(),
                    r["id"].as_str().unwrap().into(),
                    r["created"].as_bool().unwrap(),
                ));
            }
            calls.fetch_add(1 + singles.len(), Ordering::Relaxed);
            seen
        }));
    }
    let mut by_content: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
    for t in tasks {
        for (content, id, created) in tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("deadlock in identical stores")
            .unwrap()
        {
            by_content.entry(content).or_default().push((id, created));
        }
    }
    for (content, seen) in &by_content {
        let ids: HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 1, "{content:?} got several ids: {seen:?}");
        assert_eq!(
            seen.iter().filter(|(_, c)| *c).count(),
            1,
            "{content:?} created more than once"
        );
    }

    // 2. Optimistic read-modify-write increments: none may be lost.
    let mut counters = Vec::new();
    for k in 0..4 {
        let r = ok(
            &clients[0],
            "store_memory",
            json!({"content": format!("counter {k}"), "user_id": "race", "metadata": {"n": 0}}),
        )
        .await;
        counters.push(r["id"].as_str().unwrap().to_string());
    }
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let (client, counters, conflicts, calls) = (
            client.clone(),
            counters.clone(),
            conflicts.clone(),
            calls.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut done: HashMap<String, i64> = HashMap::new();
            for i in 0..5 {
                let id = &counters[(c + i) % counters.len()];
                loop {
                    let m = ok(&client, "get_memory", json!({"id": id})).await["memory"].clone();
                    let n = m["metadata"]["n"].as_i64().unwrap();
                    let r = try_call(&client, "update_memory", json!({"id": id, "metadata": {"n": n + 1}, "expected_updated_at": m["updated_at"]})).await.unwrap();
                    calls.fetch_add(2, Ordering::Relaxed);
                    match error_text(&r) {
                        None => break,
                        Some(e) if e.starts_with("conflict:") => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(e) => panic!("increment failed: {e}"),
                    }
                }
                *done.entry(id.clone()).or_default() += 1;
            }
            done
        }));
    }
    let mut expected: HashMap<String, i64> = HashMap::new();
    for t in tasks {
        for (id, n) in tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("deadlock in increments")
            .unwrap()
        {
            *expected.entry(id).or_default() += n;
        }
    }
    for id in &counters {
        let m = ok(&clients[0], "get_memory", json!({"id": id})).await;
        assert_eq!(
            m["memory"]["metadata"]["n"].as_i64(),
            expected.get(id).copied(),
            "lost update on counter {id}"
        );
    }

    // 3. Everything at once on a small set of memories.
    let pool: Vec<String> = (0..10).map(|i| format!("contended memory {i}")).collect();
    let mut ids = Vec::new();
    for content in &pool {
        ids.push(
            ok(
                &clients[0],
                "store_memory",
                json!({"content": content, "user_id": "race"}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let known = Arc::new(Mutex::new(ids));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let (client, known, ledger, pool, calls) = (
            client.clone(),
            known.clone(),
            ledger.clone(),
            pool.clone(),
            calls.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1000 + c as u64);
            for step in 0..30 {
                let pick = |rng: &mut StdRng| {
                    let k = known.lock().unwrap();
                    k[rng.random_range(0..k.len())].clone()
                };
                let op = rng.random_range(0..100);
                let (tool, args) = match op {
                    0..15 => ("store_memory", json!({"content": pool[rng.random_range(0..pool.len())], "user_id": "race"})),
                    15..30 => ("update_memory", json!({"id": pick(&mut rng), "tags": [format!("c{c}s{step}")]})),
                    30..45 => {
                        let id = pick(&mut rng);
                        let current = try_call(&client, "get_memory", json!({"id": id})).await.unwrap();
                        calls.fetch_add(1, Ordering::Relaxed);
                        match current.structured_content {
                            Some(m) if current.is_error != Some(true) => {
                                ledger.lock().unwrap().saw(&m["memory"]);
                                ("update_memory", json!({"id": id, "importance": rng.random_range(0..=10), "expected_updated_at": m["memory"]["updated_at"]}))
                            }
                            _ => ("get_memory", json!({"id": id})),
                        }
                    }
                    45..60 => {
                        let (a, b) = (pick(&mut rng), pick(&mut rng));
                        if a == b {
                            continue;
                        }
                        let relation = ["follows", "references", "elaborates"][rng.random_range(0..3)];
                        ("relate_memories", json!({"from_id": a, "to_id": b, "relation": relation}))
                    }
                    60..72 => ("archive_memory", json!({"id": pick(&mut rng)})),
                    72..84 => ("restore_memory", json!({"id": pick(&mut rng)})),
                    84..92 => ("delete_memory", json!({"id": pick(&mut rng)})),
                    _ => ("get_memory", json!({"id": pick(&mut rng)})),
                };
                let result = try_call(&client, tool, args.clone()).await.unwrap_or_else(|e| panic!("{tool}: {e}"));
                calls.fetch_add(1, Ordering::Relaxed);
                let mut ledger = ledger.lock().unwrap();
                match (error_text(&result), result.structured_content) {
                    (None, Some(out)) => match tool {
                        "store_memory" => {
                            let id = out["id"].as_str().unwrap().to_string();
                            let mut k = known.lock().unwrap();
                            if !k.contains(&id) {
                                k.push(id);
                            }
                        }
                        "delete_memory" => {
                            ledger.deleted.insert(out["id"].as_str().unwrap().to_string());
                        }
                        "relate_memories" => {
                            ledger.relations.push((args["from_id"].as_str().unwrap().into(), args["to_id"].as_str().unwrap().into()));
                        }
                        _ => ledger.saw(&out["memory"]),
                    },
                    (Some(e), _) if e.starts_with("not_found:") || e.starts_with("conflict:") => {}
                    (Some(e), _) => ledger.unexpected.push(format!("{tool}({args}): {e}")),
                    (None, None) => ledger.unexpected.push(format!("{tool}: no structured content")),
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("deadlock in mixed operations")
            .unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(
        ledger.unexpected.is_empty(),
        "unexpected errors: {:#?}",
        ledger.unexpected
    );

    // Every memory reads back as the last acknowledged write left it.
    let fields = [
        "content",
        "tags",
        "importance",
        "metadata",
        "archived_at",
        "updated_at",
    ];
    let mut checked = 0;
    for (id, states) in &ledger.states {
        let result = try_call(&clients[0], "get_memory", json!({"id": id}))
            .await
            .unwrap();
        if ledger.deleted.contains(id) {
            assert!(
                error_text(&result).is_some_and(|e| e.starts_with("not_found")),
                "deleted {id} is back"
            );
            continue;
        }
        let lost = error_text(&result);
        let now = &result
            .structured_content
            .unwrap_or_else(|| panic!("{id} lost: {lost:?}"))["memory"];
        let at = |s: &Value| {
            chrono::DateTime::parse_from_rfc3339(s["updated_at"].as_str().unwrap()).unwrap()
        };
        let last = states.iter().max_by_key(|s| at(s)).unwrap();
        for f in fields {
            assert_eq!(
                now[f], last[f],
                "{id}: {f} is not what the last acknowledged write set"
            );
        }
        checked += 1;
    }
    let sql = db.sql().await;
    let check = |q: &'static str| {
        let sql = &sql;
        async move { sql.query_one(q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(check("SELECT count(*) FROM (SELECT 1 FROM memories WHERE archived_at IS NULL GROUP BY companion_id, user_id, content_hash HAVING count(*) > 1) d").await, 0, "duplicate live content");
    assert_eq!(check("SELECT count(*) FROM memories WHERE content_hash <> sha256(convert_to(content, 'UTF8'))").await, 0, "content_hash out of date");
    assert_eq!(check("SELECT count(*) FROM memory_relations r JOIN memories f ON f.id = r.from_id JOIN memories t ON t.id = r.to_id WHERE f.companion_id <> r.companion_id OR t.companion_id <> r.companion_id OR r.from_id = r.to_id").await, 0, "relation across companions");
    for (from, to) in &ledger.relations {
        if ledger.deleted.contains(from) || ledger.deleted.contains(to) {
            continue;
        }
        let n: i64 = sql
            .query_one("SELECT count(*) FROM memory_relations WHERE from_id = $1::text::uuid AND to_id = $2::text::uuid", &[from, to])
            .await
            .unwrap()
            .get(0);
        assert!(n >= 1, "acknowledged relation {from} -> {to} is gone");
    }
    eprintln!(
        "concurrency: 16 clients, {} calls in {:?}; {} optimistic conflicts retried; {} memories checked against the last acknowledged write, {} deleted, {} relations",
        calls.load(Ordering::Relaxed),
        began.elapsed(),
        conflicts.load(Ordering::Relaxed),
        checked,
        ledger.deleted.len(),
        ledger.relations.len()
    );
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.cancel().await.ok();
        }
    }
}

/// One running `mnemo serve --stdio` on the shared data dir, writing in a loop.
struct Writer {
    name: String,
    child: tokio::process::Child,
    client: Arc<Client>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_writer(
    data_dir: &std::path::Path,
    name: String,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> Writer {
    let (client, child) = stdio_client_and_child(embedded_mnemo(data_dir, "default")).await;
    let client = Arc::new(client);
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let (client, stop, name) = (client.clone(), stop.clone(), name.clone());
        tokio::spawn(async move {
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let content = format!("shared cluster memory {name}-{i}");
                match try_call(&client, "store_memory", json!({"content": content})).await {
                    Ok(r) => match error_text(&r) {
                        None => {
                            let id = r.structured_content.unwrap()["id"]
                                .as_str()
                                .unwrap()
                                .to_string();
                            acked.lock().unwrap().push((content, id));
                        }
                        // The database is down (its postmaster was killed): keep trying.
                        Some(e) => assert!(e.starts_with("unavailable"), "{e}"),
                    },
                    // The process is gone.
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    Writer {
        name,
        child,
        client,
        stop,
        task,
    }
}

#[tokio::test]
async fn servers_sharing_an_embedded_cluster_lose_nothing_when_started_and_killed_in_any_order() {
    let data_dir = temp_data_dir("shared-chaos");
    let _cleanup = StopClusterOnDrop(data_dir.clone());
    let cluster = EmbeddedCluster::new(&data_dir, &pg_bin(), None).expect("cluster");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut rng = StdRng::seed_from_u64(20_240_508);
    let mut running: Vec<Writer> = Vec::new();
    let mut log = Vec::new();
    let mut started = 0;
    let began = Instant::now();
    for step in 0..14 {
        let action = if running.is_empty() {
            0
        } else {
            rng.random_range(0..10)
        };
        match action {
            _ if step == 7 => {
                // PostgreSQL itself crashes: the next server to start recovers it.
                let Ok(ClusterStatus::Running { pid }) = cluster.status().await else {
                    panic!("the cluster should be running at step 7 ({log:?})");
                };
                log.push(format!("kill -9 postmaster {pid}"));
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .expect("kill the postmaster");
                tokio::time::sleep(Duration::from_millis(300)).await;
                started += 1;
                let name = format!("p{started}");
                log.push(format!("start {name}"));
                running.push(start_writer(&data_dir, name, acked.clone()).await);
                // The new server recovered the cluster: the ones already
                // running reconnect and store again, without a restart.
                let recovered = acked.lock().unwrap().len();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                for w in &running {
                    let tag = format!(" {}-", w.name);
                    let stored = acked.lock().unwrap()[recovered..]
                        .iter()
                        .filter(|(c, _)| c.contains(&tag))
                        .count();
                    assert!(
                        stored > 0,
                        "{} stopped storing after the cluster recovered ({log:?})",
                        w.name
                    );
                }
                log.push(format!("all {} running servers store again", running.len()));
            }
            0..4 if running.len() < 4 => {
                started += 1;
                let name = format!("p{started}");
                log.push(format!("start {name}"));
                running.push(start_writer(&data_dir, name, acked.clone()).await);
            }
            4..7 => {
                let mut w = running.remove(rng.random_range(0..running.len()));
                log.push(format!("kill -9 {}", w.name));
                w.child.kill().await.expect("kill -9");
                w.task.await.ok();
            }
            7..9 => {
                let w = running.remove(rng.random_range(0..running.len()));
                log.push(format!("stop {}", w.name));
                w.stop.store(true, Ordering::SeqCst);
                w.task.await.ok();
                if let Ok(client) = Arc::try_unwrap(w.client) {
                    client.cancel().await.ok();
                }
                let mut child = w.child;
                tokio::time::timeout(Duration::from_secs(20), child.wait())
                    .await
                    .expect("stdio server did not exit")
                    .ok();
            }
            _ => log.push("write for a while".into()),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..600))).await;
    }
    for w in running.drain(..) {
        w.stop.store(true, Ordering::SeqCst);
        w.task.await.ok();
        if let Ok(client) = Arc::try_unwrap(w.client) {
            client.cancel().await.ok();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "too few writes to mean anything: {} ({log:?})",
        acked.len()
    );

    // `mnemo db stop`, then a new server opens the cluster and finds everything.
    let stop = embedded_mnemo(&data_dir, "default")
        .args(["db", "stop"])
        .output()
        .await
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let (client, _child) = stdio_client_and_child(embedded_mnemo(&data_dir, "default")).await;
    let stats = ok(&client, "memory_stats", json!({})).await;
    let config = cluster.client_config("mnemo");
    let (sql, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = sql
        .query("SELECT content, id::text FROM memories", &[])
        .await
        .unwrap();
    let stored: HashMap<String, Vec<String>> = rows.iter().fold(HashMap::new(), |mut m, r| {
        m.entry(r.get(0)).or_default().push(r.get(1));
        m
    });
    for (content, id) in &acked {
        assert_eq!(
            stored.get(content),
            Some(&vec![id.clone()]),
            "{content:?} lost or duplicated ({log:?})"
        );
    }
    eprintln!(
        "shared cluster: {} acknowledged stores over {} server lifetimes, all present once; {} rows; events: {log:?}; {:?}",
        acked.len(),
        started,
        stats["total"],
        began.elapsed()
    );
    client.cancel().await.ok();
    let stop = embedded_mnemo(&data_dir, "default")
        .args(["db", "stop"])
        .output()
        .await
        .unwrap();
    assert!(stop.status.success());
    let _ = std::fs::remove_dir_all(&data_dir);
}
