//! mnemo behind a transaction pooler: Debian's PgBouncer 1.18 in
//! transaction mode with 4 server connections per database, the direct URL
//! for migrations. Before statements went out unnamed, 16 sessions of this
//! load failed 3,027 of 3,528 calls with `prepared statement "sN" does not
//! exist`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

/// A server on `db` through PgBouncer, migrating over the direct URL.
async fn pooled_server(db: &TestDb) -> HttpServer {
    pgbouncer::port().await;
    let pooled = pgbouncer::url(db).expect("pgbouncer is running");
    let mut cmd = mnemo(db, "alpha", Embed::Hash);
    cmd.env("DATABASE_URL", pooled)
        .env("DIRECT_DATABASE_URL", &db.url)
        .env("MNEMO_POOL_SIZE", "16")
        // The load is one client address; the limit is not what is tested.
        .env("MNEMO_RATE_LIMIT", "0");
    http_server(cmd).await
}

/// One call; its failure as text (a tool error or a protocol one).
async fn attempt(client: &Client, tool: &str, args: Value) -> Result<Value, String> {
    let Value::Object(map) = args else {
        unreachable!("arguments are objects")
    };
    let call = client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map));
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Err(_) => Err(format!("{tool} timed out")),
        Ok(Err(e)) => Err(format!("{tool}: {e}")),
        Ok(Ok(r)) if r.is_error == Some(true) => Err(format!("{tool}: {:?}", r.content)),
        Ok(Ok(r)) => Ok(r.structured_content.unwrap_or(Value::Null)),
    }
}

/// The load: 16 sessions of mixed store/search/get for 20 s on a
/// database migrated at start-up, through 4 server connections. Every call
/// must succeed, and the server side must never see more connections than
/// PgBouncer's pool (which shows the traffic really went through it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_sessions_through_pgbouncer_lose_no_call() {
    let db = empty_db().await;
    let server = pooled_server(&db).await;
    let sql = db.sql().await;
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sessions = Vec::new();
    for s in 0..16 {
        let url = server.url.clone();
        let done = done.clone();
        sessions.push(tokio::spawn(async move {
            let client = http_client(&url).await;
            let mut failures = Vec::new();
            let mut ids: Vec<String> = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let outcome = match i % 3 {
                    0 => attempt(
                        &client,
                        "search_memories",
                        json!({"query": format!("lentil soup {s} {i}"), "limit": 5}),
                    )
                    .await
                    .map(|_| ()),
                    1 => attempt(
                        &client,
                        "store_memory",
                        json!({"content": format!("session {s} says lentil soup number {i}"),
                               "user_id": format!("u{}", s % 4)}),
                    )
                    .await
                    .map(|v| ids.extend(v["id"].as_str().map(str::to_string))),
                    _ => match ids.last() {
                        Some(id) => attempt(&client, "get_memory", json!({"id": id}))
                            .await
                            .map(|_| ()),
                        None => Ok(()),
                    },
                };
                match outcome {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
            }
            let _ = client.cancel().await;
            failures
        }));
    }
    // Watch the server side while the load runs.
    let mut most_backends = 0i64;
    while Instant::now() < deadline {
        let n: i64 = sql
            .query_one(
                // Client backends only: autovacuum workers also name the
                // database they work in.
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .await
            .expect("count backends")
            .get(0);
        most_backends = most_backends.max(n);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut failures = Vec::new();
    for session in sessions {
        failures.extend(session.await.expect("session task"));
    }
    let done = done.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} calls failed through PgBouncer, e.g. {:?}",
        failures.len(),
        failures.len() + done,
        &failures[..failures.len().min(5)]
    );
    assert!(done >= 16 * 3, "only {done} calls completed in 20 s");
    assert!(
        most_backends <= pgbouncer::SERVER_CONNECTIONS as i64,
        "{most_backends} server connections: the load did not go through PgBouncer's pool of {}",
        pgbouncer::SERVER_CONNECTIONS
    );
    let stored: i64 = sql
        .query_one("SELECT count(*) FROM memories", &[])
        .await
        .unwrap()
        .get(0);
    assert!(stored > 0, "nothing was stored");
}

/// Sessions are rows, and rows are what survives: a session opened through
/// the pooler works on a second server (another replica) through it too.
#[tokio::test]
async fn a_session_opened_through_pgbouncer_continues_on_another_server() {
    let db = fresh_db().await;
    let first = pooled_server(&db).await;
    let client = http_client(&first.url).await;
    let stored = attempt(
        &client,
        "store_memory",
        json!({"content": "Ana moved to Lisbon"}),
    )
    .await
    .expect("store through the pooler");
    let second = pooled_server(&db).await;
    let again = http_client(&second.url).await;
    let read = attempt(&again, "get_memory", json!({"id": stored["id"]}))
        .await
        .expect("read through the pooler on another server");
    assert_eq!(read["memory"]["content"], "Ana moved to Lisbon");
    let found = attempt(&again, "search_memories", json!({"query": "Lisbon"}))
        .await
        .expect("search through the pooler");
    assert!(found.to_string().contains("Lisbon"), "{found}");
}

/// `doctor` says which URL does what, and warns when migrations would go
/// through the pooler.
#[tokio::test]
async fn doctor_names_each_url_and_warns_about_migrating_through_a_pooler() {
    let db = fresh_db().await;
    pgbouncer::port().await;
    let pooled = pgbouncer::url(&db).expect("pgbouncer is running");
    let port = pgbouncer::port().await.to_string();

    let mut alone = mnemo(&db, "alpha", Embed::Hash);
    alone
        .env("DATABASE_URL", &pooled)
        .env_remove("DIRECT_DATABASE_URL")
        .env("MNEMO_POOLER", "transaction")
        .args(["doctor"]);
    let out = alone.output().await.expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("through a transaction pooler") && text.contains("set DIRECT_DATABASE_URL"),
        "{text}"
    );
    assert!(
        !out.status.success(),
        "a pooler used for migrations is a failed check"
    );

    let mut paired = mnemo(&db, "alpha", Embed::Hash);
    paired
        .env("DATABASE_URL", &pooled)
        .env("DIRECT_DATABASE_URL", &db.url)
        .args(["doctor"]);
    let out = paired.output().await.expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("connections"))
        .unwrap_or_else(|| panic!("no connections line: {text}"));
    assert!(
        line.contains(&format!("port={port}")) && line.contains("migrations: host=/"),
        "{line}"
    );
    assert!(!line.contains("set DIRECT_DATABASE_URL"), "{line}");
}
