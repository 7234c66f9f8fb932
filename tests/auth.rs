//! Authentication across restarts: once a key was created, HTTP requires one
//! even after every key is revoked or expired and the server restarts,
//! until the operator runs `mnemo token reset-auth`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// `mnemo ARGS` against `db`; returns (success, stdout, stderr).
async fn cli(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = mnemo(db, "default", Embed::Hash)
        .args(args)
        .output()
        .await
        .expect("run mnemo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn create_key(db: &TestDb) -> String {
    let (ok, key, err) = cli(db, &["token", "create", "--companion", "alice"]).await;
    assert!(ok, "{err}");
    key
}

async fn post(url: &str, key: Option<&str>, body: Value) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("send").status().as_u16()
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "auth-test", "version": "1"}}})
}

fn tool_call() -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
           "params": {"name": "memory_stats", "arguments": {}}})
}

/// The statuses of a keyless initialize and a keyless tool call.
async fn keyless(url: &str) -> (u16, u16) {
    (
        post(url, None, initialize()).await,
        post(url, None, tool_call()).await,
    )
}

/// Stops `server` as an operator would (SIGTERM) and checks it exits cleanly.
async fn stop(mut server: HttpServer) {
    let pid = server.child.id().expect("running") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("mnemo did not stop within 30 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn revoking_every_key_keeps_auth_on_across_a_restart() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let client = http_client(&server.url).await;
    ok(
        &client,
        "store_memory",
        json!({"content": "stored keyless"}),
    )
    .await;
    client.cancel().await.ok();

    let key = create_key(&db).await;
    // The running server notices the key within seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while post(&server.url, None, initialize()).await != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the running server kept serving keyless requests after a key was created"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok_revoke, _, err) = cli(
        &db,
        &["token", "revoke", &mnemo::auth::display_prefix(&key)],
    )
    .await;
    assert!(ok_revoke, "{err}");
    assert_eq!(keyless(&server.url).await, (401, 401), "running server");
    assert_eq!(post(&server.url, Some(&key), initialize()).await, 401);
    stop(server).await;

    let restarted = http_server(mnemo(&db, "default", Embed::Hash)).await;
    assert_eq!(
        keyless(&restarted.url).await,
        (401, 401),
        "after a restart with every key revoked"
    );
    assert_eq!(post(&restarted.url, Some(&key), initialize()).await, 401);
}

#[tokio::test]
async fn an_expired_key_keeps_auth_on_across_a_restart() {
    let db = fresh_db().await;
    let key = create_key(&db).await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    assert_eq!(keyless(&server.url).await, (401, 401));
    assert_eq!(post(&server.url, Some(&key), initialize()).await, 200);
    stop(server).await;
    db.sql()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .expect("expire the key");

    let restarted = http_server(mnemo(&db, "default", Embed::Hash)).await;
    assert_eq!(
        keyless(&restarted.url).await,
        (401, 401),
        "after a restart with the only key expired"
    );
    assert_eq!(post(&restarted.url, Some(&key), initialize()).await, 401);
}

#[tokio::test]
async fn reset_auth_opens_the_server_only_when_no_key_is_active() {
    let db = fresh_db().await;
    let first = create_key(&db).await;
    let second = create_key(&db).await;
    let (ok_revoke, _, err) = cli(
        &db,
        &["token", "revoke", &mnemo::auth::display_prefix(&first)],
    )
    .await;
    assert!(ok_revoke, "{err}");

    // An active key remains: refused, and nothing is deleted.
    let (reset, _, err) = cli(&db, &["token", "reset-auth"]).await;
    assert!(!reset, "reset-auth succeeded with an active key");
    assert!(
        err.contains("active keys remain") && err.contains("token revoke"),
        "{err}"
    );
    let (_, listed, _) = cli(&db, &["token", "list"]).await;
    assert_eq!(listed.lines().count(), 3, "{listed}");

    let (ok_revoke, _, err) = cli(
        &db,
        &["token", "revoke", &mnemo::auth::display_prefix(&second)],
    )
    .await;
    assert!(ok_revoke, "{err}");
    let (reset, out, err) = cli(&db, &["token", "reset-auth"]).await;
    assert!(reset, "{err}");
    assert!(out.contains("deleted 2"), "{out}");
    let (_, listed, _) = cli(&db, &["token", "list"]).await;
    assert_eq!(
        listed.lines().count(),
        1,
        "only the header is left: {listed}"
    );

    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    assert_eq!(post(&server.url, None, initialize()).await, 200);
    let client = http_client(&server.url).await;
    ok(&client, "store_memory", json!({"content": "keyless again"})).await;
    client.cancel().await.ok();
}
