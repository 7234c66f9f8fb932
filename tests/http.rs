//! Streamable HTTP in production: sessions in PostgreSQL survive `kill -9`
//! and move between replicas, API keys decide the companion, and the
//! 401/403/404/429 paths, Origin checks and operations endpoints behave.

mod common;

use std::time::Duration;

use common::*;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

async fn http_server_on(cmd: tokio::process::Command, port: u16) -> HttpServer {
    let server = http_server_at(cmd, &format!("127.0.0.1:{port}")).await;
    assert!(server.url.contains(&port.to_string()));
    server
}

async fn client_with(url: &str, key: Option<&str>) -> Client {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .reinit_on_expired_session(false);
    if let Some(key) = key {
        config = config.auth_header(key.to_string());
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        ().serve(StreamableHttpClientTransport::from_config(config)),
    )
    .await
    .expect("initialize timed out")
    .expect("initialize failed")
}

async fn sessions(db: &TestDb) -> i64 {
    db.sql()
        .await
        .query_one("SELECT count(*) FROM companion_sessions", &[])
        .await
        .expect("count sessions")
        .get(0)
}

#[tokio::test]
async fn session_survives_kill_9_and_restart() {
    let db = fresh_db().await;
    let port = free_port();
    let mut server = http_server_on(mnemo(&db, "default", Embed::Hash), port).await;
    let client = client_with(&server.url, None).await;
    let id = ok(
        &client,
        "store_memory",
        json!({"content": "survives restarts"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sessions(&db).await, 1);

    server.child.kill().await.expect("kill -9");
    let _server = http_server_on(mnemo(&db, "default", Embed::Hash), port).await;
    // Same client, same Mcp-Session-Id, no re-initialize (it is disabled).
    let read = ok(&client, "get_memory", json!({"id": id})).await;
    assert_eq!(read["memory"]["content"], "survives restarts");
    assert_eq!(
        sessions(&db).await,
        1,
        "the old session was resumed, not replaced"
    );
    client.cancel().await.ok();
}

/// Raw MCP over HTTP, to control headers exactly.
struct Raw {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

impl Raw {
    fn new(url: &str, key: Option<&str>) -> Self {
        Raw {
            http: reqwest::Client::new(),
            url: url.to_string(),
            key: key.map(str::to_string),
        }
    }

    async fn post(&self, session: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = session {
            request = request
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-06-18");
        }
        if let Some(k) = &self.key {
            request = request.bearer_auth(k);
        }
        request.send().await.expect("send")
    }

    /// initialize + initialized; returns the session id.
    async fn initialize(&self) -> String {
        let response = self
            .post(
                None,
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "1"}}}),
            )
            .await;
        assert_eq!(response.status(), 200, "initialize");
        let session = response
            .headers()
            .get("mcp-session-id")
            .expect("session id header")
            .to_str()
            .unwrap()
            .to_string();
        let _ = response.text().await;
        let note = self
            .post(
                Some(&session),
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert!(note.status().is_success(), "initialized: {}", note.status());
        session
    }

    /// A tools/call; returns (status, JSON-RPC message if any).
    async fn call(&self, session: &str, tool: &str, args: Value) -> (u16, Option<Value>) {
        let response = self
            .post(
                Some(session),
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": tool, "arguments": args}}),
            )
            .await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let message = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| m.get("id").is_some())
            .or_else(|| serde_json::from_str(&text).ok());
        (status, message)
    }
}

#[tokio::test]
async fn a_session_started_on_one_replica_is_served_by_another() {
    let db = fresh_db().await;
    let a = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let b = http_server(mnemo(&db, "default", Embed::Hash)).await;
    assert_ne!(a.url, b.url);
    let on_a = Raw::new(&a.url, None);
    let session = on_a.initialize().await;
    let (status, stored) = on_a
        .call(&session, "store_memory", json!({"content": "written on A"}))
        .await;
    assert_eq!(status, 200);
    let id = stored.unwrap()["result"]["structuredContent"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let on_b = Raw::new(&b.url, None);
    let (status, read) = on_b.call(&session, "get_memory", json!({"id": id})).await;
    assert_eq!(status, 200);
    assert_eq!(
        read.unwrap()["result"]["structuredContent"]["memory"]["content"],
        "written on A"
    );
}

#[tokio::test]
async fn keys_decide_who_gets_in_and_which_companion_they_are() {
    let db = fresh_db().await;
    let key_a = create_key(&db, "companion-a").await;
    let key_b = create_key(&db, "companion-b").await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;

    // 401 without a key, with a wrong key; WWW-Authenticate says Bearer.
    for key in [None, Some("mnemo_wrong")] {
        let response = Raw::new(&server.url, key)
            .post(
                None,
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
            )
            .await;
        assert_eq!(response.status(), 401);
        let challenge = response
            .headers()
            .get("www-authenticate")
            .expect("challenge");
        assert!(challenge.to_str().unwrap().starts_with("Bearer"));
    }

    let a = client_with(&server.url, Some(&key_a)).await;
    let b = client_with(&server.url, Some(&key_b)).await;
    let secret = ok(
        &a,
        "store_memory",
        json!({"content": "A's secret plan", "user_id": "u"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let own = ok(
        &b,
        "store_memory",
        json!({"content": "B's note", "user_id": "u"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (tool, args) in [
        ("get_memory", json!({"id": secret})),
        (
            "update_memory",
            json!({"id": secret, "content": "B was here"}),
        ),
        ("archive_memory", json!({"id": secret})),
        ("delete_memory", json!({"id": secret})),
        (
            "relate_memories",
            json!({"from_id": own, "to_id": secret, "relation": "references"}),
        ),
        ("related_memories", json!({"id": secret})),
    ] {
        assert!(
            tool_error(&b, tool, args).await.contains("not_found"),
            "{tool}"
        );
    }
    let found = ok(
        &b,
        "search_memories",
        json!({"query": "secret plan", "user_id": "u"}),
    )
    .await;
    assert!(
        found["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] == own.as_str())
    );
    let intact = ok(&a, "get_memory", json!({"id": secret})).await;
    assert_eq!(intact["memory"]["content"], "A's secret plan");
    let companions: Vec<String> = db
        .sql()
        .await
        .query(
            "SELECT c.name FROM memories m JOIN companions c ON c.id = m.companion_id ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(companions, ["companion-a", "companion-b"]);

    // A session belongs to the key that made it: 403 for another key, 404 when unknown.
    let raw_a = Raw::new(&server.url, Some(&key_a));
    let session = raw_a.initialize().await;
    let (status, _) = Raw::new(&server.url, Some(&key_b))
        .call(&session, "memory_stats", json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = raw_a
        .call("no-such-session", "memory_stats", json!({}))
        .await;
    assert_eq!(status, 404);

    // DELETE ends the session.
    let deleted = reqwest::Client::new()
        .delete(&server.url)
        .bearer_auth(&key_a)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let (status, _) = raw_a.call(&session, "memory_stats", json!({})).await;
    assert_eq!(status, 404);

    // A revoked key stops working.
    let out = mnemo(&db, "default", Embed::Hash)
        .args(["token", "revoke", &mnemo::auth::display_prefix(&key_b)])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let response = Raw::new(&server.url, Some(&key_b))
        .post(
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}),
        )
        .await;
    assert_eq!(response.status(), 401);
    a.cancel().await.ok();
    b.cancel().await.ok();
}

#[tokio::test]
async fn too_many_requests_get_429_with_retry_after() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_RATE_LIMIT", "5");
    let server = http_server(cmd).await;
    let raw = Raw::new(&server.url, None);
    let session = raw.initialize().await; // 2 requests
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = raw
            .post(
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
            )
            .await;
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        statuses.push((response.status().as_u16(), retry));
    }
    assert_eq!(statuses[0].0, 200);
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{statuses:?}");
    let wait: u64 = limited[0]
        .1
        .as_deref()
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn foreign_origins_are_refused_and_loopback_ones_allowed() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "o", "version": "1"}}});
    let send = |origin: &'static str| {
        reqwest::Client::new()
            .post(&server.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("origin", origin)
            .body(init.to_string())
            .send()
    };
    let evil = send("http://evil.example").await.unwrap();
    assert!(evil.status().is_client_error(), "{}", evil.status());
    let local = send("http://localhost:5173").await.unwrap();
    assert_eq!(local.status(), 200);
    let exposed = local
        .headers()
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap().to_lowercase())
        .unwrap_or_default();
    assert!(exposed.contains("mcp-session-id"), "{exposed:?}");
    // A forged Host (DNS rebinding) is refused too.
    let rebound = reqwest::Client::new()
        .post(&server.url)
        .header("host", "attacker.example")
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    assert!(rebound.status().is_client_error(), "{}", rebound.status());
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints_report() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let base = server.url.trim_end_matches("/mcp").to_string();
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({"database": true, "migrations": true, "model": true})
    );

    let client = client_with(&server.url, None).await;
    ok(&client, "store_memory", json!({"content": "measured"})).await;
    tool_error(&client, "get_memory", json!({"id": "nope"})).await;
    // A repeated query takes its vector from the cache: same answer, no
    // second embedding.
    let search = json!({"query": "what was measured", "mode": "semantic"});
    let first = ok(&client, "search_memories", search.clone()).await;
    let again = ok(&client, "search_memories", search).await;
    let ids = |found: &Value| -> Vec<Value> {
        let results = found["results"].as_array().unwrap();
        results.iter().map(|r| r["id"].clone()).collect()
    };
    assert_eq!(ids(&first), ids(&again));
    assert_eq!(ids(&first).len(), 1, "{first}");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "mnemo_tool_calls_total{tool=\"store_memory\",outcome=\"ok\"} 1",
        "mnemo_tool_calls_total{tool=\"get_memory\",outcome=\"tool_error\"} 1",
        "mnemo_tool_duration_seconds_bucket",
        "mnemo_embedding_duration_seconds",
        "mnemo_db_pool_size",
        "mnemo_sessions 1",
        "mnemo_query_cache_total{outcome=\"miss\"} 1",
        "mnemo_query_cache_total{outcome=\"hit\"} 1",
        "mnemo_embedded_texts_total 2",
    ] {
        // A needle ending in a value must be a whole line ("... 2" is not "... 20").
        let valued = needle
            .rsplit(' ')
            .next()
            .is_some_and(|v| v.parse::<f64>().is_ok());
        let found = if valued {
            metrics.lines().any(|l| l == needle)
        } else {
            metrics.contains(needle)
        };
        assert!(found, "metrics lack {needle}:\n{metrics}");
    }
    client.cancel().await.ok();
}

#[tokio::test]
async fn a_public_address_without_keys_is_refused() {
    let db = fresh_db().await;
    let out = mnemo(&db, "default", Embed::Hash)
        .args(["serve", "--http", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without API keys") && err.contains("token create"),
        "{err}"
    );
}
