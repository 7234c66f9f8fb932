//! The HTTP transport under hostile or careless clients (issue 16 items 3,
//! 7 and 9): stalled sockets cannot starve real clients, oversized and
//! half-sent bodies close their connection, failed key look-ups are limited
//! per address, and the answers MCP clients trip over are put right.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `mnemo` run through `sh` with the open-file limit lowered to `nofile`.
fn mnemo_with_ulimit(db: &TestDb, nofile: u32) -> tokio::process::Command {
    let inner = mnemo(db, "default", Embed::Hash);
    let std = inner.as_std();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(std.get_program());
    for (k, v) in std.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.kill_on_drop(true);
    cmd
}

fn addr_of(server: &HttpServer) -> String {
    server
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string()
}

async fn client_with(url: &str, key: Option<&str>) -> Client {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .reinit_on_expired_session(false);
    if let Some(key) = key {
        config = config.auth_header(key.to_string());
    }
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initialize failed")
}

/// Reads from `socket` until the server closes it (or `within` passes);
/// returns what arrived and whether it was closed.
async fn read_until_closed(socket: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into(), false),
        }
    }
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn stalled_sockets_do_not_starve_a_real_client() {
    let db = fresh_db().await;
    let mut cmd = mnemo_with_ulimit(&db, 512);
    cmd.args(["--http-header-timeout-secs", "2"]);
    let server = http_server(cmd).await;
    let addr = addr_of(&server);

    // More half-sent requests than the server has file descriptors.
    let mut stalled = Vec::new();
    for _ in 0..600 {
        let mut socket = TcpStream::connect(&addr).await.expect("connect");
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        stalled.push(socket);
    }

    let started = Instant::now();
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        let client = client_with(&server.url, None).await;
        let stored = call(&client, "store_memory", json!({"content": "served"})).await;
        client.cancel().await.ok();
        stored
    })
    .await
    .expect("a real client was not served within 5 s of 600 stalled sockets");
    assert_ne!(served.is_error, Some(true), "{served:?}");
    eprintln!("served after {:?}", started.elapsed());

    // The first stalled socket was closed by the server.
    let (_, closed) = read_until_closed(&mut stalled[0], Duration::from_secs(10)).await;
    assert!(
        closed,
        "a socket that never finished its headers stays open"
    );
    drop(stalled);

    let base = server.url.trim_end_matches("/mcp");
    let dropped = counter(
        &metrics(base).await,
        "mnemo_http_connections_dropped_total{reason=\"header_timeout\"}",
    );
    assert!(dropped >= 1.0, "no dropped connection counted");
}

#[tokio::test]
async fn a_half_sent_body_is_answered_408_and_closed() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.args(["--http-body-timeout-secs", "1"]);
    let server = http_server(cmd).await;
    let mut socket = TcpStream::connect(addr_of(&server)).await.unwrap();
    socket
        .write_all(
            b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
        )
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut socket, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("--http-body-timeout-secs"), "{answer}");
    assert!(closed, "the connection stayed open after the 408");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413_and_the_connection_closes() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.args(["--max-body-bytes", "1024"]);
    let server = http_server(cmd).await;
    let mut socket = TcpStream::connect(addr_of(&server)).await.unwrap();
    let chunk = "x".repeat(4096);
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let (answer, closed) = read_until_closed(&mut socket, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed, "the connection stayed open after the 413");
}

#[tokio::test]
async fn an_event_stream_outlives_the_idle_timeout() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.args(["--http-idle-timeout-secs", "2"]);
    let server = http_server(cmd).await;
    let session = initialize(&server.url, None).await;
    let mut stream = reqwest::Client::new()
        .get(&server.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // Three idle timeouts later, the stream still delivers keep-alives.
    let started = Instant::now();
    let mut late_bytes = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("the event stream went silent")
            .expect("the event stream broke");
        let chunk = chunk.expect("the server ended the event stream");
        if started.elapsed() > Duration::from_secs(4) {
            late_bytes += chunk.len();
        }
    }
    assert!(late_bytes > 0);
}

/// initialize + initialized over plain HTTP; returns the session id.
async fn initialize(url: &str, authorization: Option<&str>) -> String {
    let http = reqwest::Client::new();
    let post = |body: Value, session: Option<&str>| {
        let mut request = http
            .post(url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        if let Some(s) = session {
            request = request
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-06-18");
        }
        request.send()
    };
    let response = post(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "hardening-test", "version": "1"}}}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200, "initialize");
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.text().await;
    let note = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await
    .unwrap();
    assert!(note.status().is_success(), "initialized: {}", note.status());
    session
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let db = fresh_db().await;
    let key = create_key(&db, "default").await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    initialize(&server.url, Some(&format!("BEARER {key}"))).await;
    initialize(&server.url, Some(&format!("bearer {key}"))).await;
}

#[tokio::test]
async fn ending_a_session_answers_204() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let session = initialize(&server.url, None).await;
    let response = reqwest::Client::new()
        .delete(&server.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn failed_key_attempts_are_limited_per_address() {
    let db = fresh_db().await;
    let key = create_key(&db, "default").await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..25 {
        let response = http
            .post(&server.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .bearer_auth(format!("mnemo_wrong_{i}"))
            .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string())
            .send()
            .await
            .unwrap();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        statuses.push((response.status().as_u16(), retry));
    }
    assert!(
        statuses[..20].iter().all(|(s, _)| *s == 401),
        "{statuses:?}"
    );
    let (status, retry) = statuses[24];
    assert_eq!(status, 429, "{statuses:?}");
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{statuses:?}");
    let base = server.url.trim_end_matches("/mcp");
    let limited = counter(
        &metrics(base).await,
        "mnemo_http_rate_limited_total{reason=\"auth_failures\"}",
    );
    assert!(limited >= 1.0, "not counted");
    // Once the refusal runs out, a good key from the same address works.
    tokio::time::sleep(Duration::from_secs(retry.unwrap_or(1))).await;
    initialize(&server.url, Some(&format!("Bearer {key}"))).await;
}

#[tokio::test]
async fn operations_endpoints_check_the_host() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let base = server.url.trim_end_matches("/mcp").to_string();
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let get = |host: &str| {
            http.get(format!("{base}{path}"))
                .header("host", host)
                .send()
        };
        let rebound = get("attacker.example").await.unwrap();
        assert_eq!(rebound.status(), 403, "{path} with a foreign Host");
        for host in ["localhost", "127.0.0.1:8080", "10.1.2.3:8080", "[::1]:1"] {
            let response = get(host).await.unwrap();
            assert_eq!(response.status(), 200, "{path} with Host {host}");
        }
    }
}

#[tokio::test]
async fn a_post_without_a_session_id_gets_a_json_rpc_error() {
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let response = reqwest::Client::new()
        .post(&server.url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 3);
    assert_eq!(body["error"]["code"], -32600);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Mcp-Session-Id"), "{message}");
}
