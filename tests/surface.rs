//! The MCP surface beyond tools, through a real client: every resource and
//! template, paginated `resources/list`, the `recall` and
//! `summarize_context` prompts, completions, progress on a large append,
//! cancellation (`notifications/cancelled` stops a batch: nothing is
//! written), log notifications at each session's level, and values SQL
//! cannot take (NUL, huge) answered as invalid params before any query.
// MCP logging, which rmcp marks deprecated and mnemo offers (see tools::logging).
#![allow(deprecated)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequestParams, ClientRequest, CompletionContext, ErrorCode, GetPromptRequestParams,
    LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResult, Request,
    ResourceContents, SetLevelRequestParams,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

fn text_of(result: &ReadResourceResult) -> (String, Option<String>) {
    match &result.contents[0] {
        ResourceContents::TextResourceContents {
            text, mime_type, ..
        } => (text.clone(), mime_type.clone()),
        other => panic!("expected text contents, got {other:?}"),
    }
}

fn protocol_error<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> rmcp::ErrorData {
    match result {
        Err(ServiceError::McpError(e)) => e,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

async fn read(client: &Client, uri: &str) -> ReadResourceResult {
    client
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .unwrap_or_else(|e| panic!("read {uri}: {e}"))
}

/// Ana's and Bob's memories and one conversation with Ana.
async fn seed(client: &Client) -> (String, String) {
    let batch = ok(
        client,
        "store_memories",
        json!({"memories": [
            {"content": "Always answer Ana in Spanish", "kind": "instruction", "importance": 9, "user_id": "ana"},
            {"content": "Ana prefers short answers", "kind": "preference", "user_id": "ana"},
            {"content": "Ana adopted a beagle named Max", "kind": "fact", "importance": 8, "tags": ["pets", "family"], "user_id": "ana"},
            {"content": "Bob likes spicy food", "kind": "preference", "tags": ["food"], "user_id": "bob"},
            {"content": "Carl lives in Oslo", "user_id": "carl"},
            {"content": "María writes poems", "kind": "preference", "user_id": "ana maría"}
        ]}),
    )
    .await;
    let beagle = batch["results"][2]["id"].as_str().unwrap().to_string();
    let context = ok(
        client,
        "append_messages",
        json!({"user_id": "ana", "name": "Trip to Japan", "messages": [
            {"role": "user", "content": "I want to see Kyoto in April"},
            {"role": "assistant", "content": "Cherry blossom season: book early."}
        ]}),
    )
    .await["context_id"]
        .as_str()
        .unwrap()
        .to_string();
    (beagle, context)
}

#[tokio::test]
async fn every_resource_reads_and_the_listing_pages() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let (beagle, context) = seed(&client).await;

    let templates = client.list_resource_templates(None).await.unwrap();
    let uris: Vec<&str> = templates
        .resource_templates
        .iter()
        .map(|t| t.uri_template.as_str())
        .collect();
    assert_eq!(
        uris,
        vec![
            "memory://memories/{id}",
            "memory://contexts/{id}",
            "memory://users/{user_id}/profile"
        ]
    );

    // The profile: instructions, then preferences; no facts.
    let (profile, mime) = text_of(&read(&client, "memory://users/ana/profile").await);
    assert_eq!(mime.as_deref(), Some("text/markdown"));
    let spanish = profile
        .find("Always answer Ana in Spanish")
        .expect(&profile);
    let short = profile.find("Ana prefers short answers").expect(&profile);
    assert!(profile.find("## Instructions").unwrap() < spanish);
    assert!(
        spanish < profile.find("## Preferences").unwrap()
            && profile.find("## Preferences").unwrap() < short
    );
    assert!(!profile.contains("beagle"), "{profile}");
    let (other, _) = text_of(&read(&client, "memory://users/ana%20mar%C3%ADa/profile").await);
    assert!(other.contains("María writes poems"), "{other}");
    let (empty, _) = text_of(&read(&client, "memory://users/zed/profile").await);
    assert!(empty.contains("None stored"), "{empty}");

    // A memory and a context, as JSON.
    let (memory, mime) = text_of(&read(&client, &format!("memory://memories/{beagle}")).await);
    assert_eq!(mime.as_deref(), Some("application/json"));
    let memory: Value = serde_json::from_str(&memory).unwrap();
    assert_eq!(memory["content"], "Ana adopted a beagle named Max");
    assert_eq!(memory["tags"], json!(["pets", "family"]));
    let (ctx, _) = text_of(&read(&client, &format!("memory://contexts/{context}")).await);
    let ctx: Value = serde_json::from_str(&ctx).unwrap();
    assert_eq!(ctx["context"]["name"], "Trip to Japan");
    assert_eq!(
        ctx["messages"][1]["content"],
        "Cherry blossom season: book early."
    );
    assert_eq!(ctx["truncated"], false);

    // Unknown or malformed URIs are "resource not found".
    for uri in [
        "memory://nothing/here",
        "memory://memories/not-a-uuid",
        "memory://contexts/5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11",
        "file:///etc/passwd",
    ] {
        let e = protocol_error(
            client
                .read_resource(ReadResourceRequestParams::new(uri))
                .await,
        );
        assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND, "{uri}: {e:?}");
    }

    // The listing: profiles of users with preferences or instructions, then contexts.
    let first = client.list_resources(None).await.unwrap();
    let listed: Vec<&str> = first.resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        listed,
        vec![
            "memory://users/ana/profile",
            "memory://users/ana%20mar%C3%ADa/profile",
            "memory://users/bob/profile",
            &format!("memory://contexts/{context}"),
        ]
    );
    assert!(first.next_cursor.is_none());
    assert_eq!(first.resources[3].name, "Trip to Japan");

    // Enough contexts for two pages.
    for i in 0..60 {
        ok(
            &client,
            "append_messages",
            json!({"user_id": "bob", "name": format!("chat {i}"), "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    }
    let page1 = client.list_resources(None).await.unwrap();
    assert_eq!(page1.resources.len(), 50);
    let cursor = page1.next_cursor.clone().expect("a second page");
    let page2 = client
        .list_resources(Some(
            PaginatedRequestParams::default().with_cursor(Some(cursor)),
        ))
        .await
        .unwrap();
    assert_eq!(page2.resources.len(), 14);
    assert!(page2.next_cursor.is_none());
    let mut all: Vec<&str> = page1
        .resources
        .iter()
        .chain(&page2.resources)
        .map(|r| r.uri.as_str())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 64, "pages never repeat or skip a resource");
    assert_eq!(client.list_all_resources().await.unwrap().len(), 64);
    let e = protocol_error(
        client
            .list_resources(Some(
                PaginatedRequestParams::default().with_cursor(Some("junk".into())),
            ))
            .await,
    );
    assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
    assert!(e.message.contains("nextCursor"), "{e:?}");
    client.cancel().await.ok();
}

fn prompt_text(result: &rmcp::model::GetPromptResult) -> String {
    result
        .messages
        .iter()
        .filter_map(|m| m.content.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn arguments(args: Value) -> serde_json::Map<String, Value> {
    match args {
        Value::Object(map) => map,
        _ => panic!("arguments must be an object"),
    }
}

#[tokio::test]
async fn prompts_fill_in_memories_and_transcripts() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let (_, context) = seed(&client).await;

    let prompts = client.list_all_prompts().await.unwrap();
    let mut names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["recall", "summarize_context"]);
    let recall = prompts.iter().find(|p| p.name == "recall").unwrap();
    let args = recall.arguments.as_ref().unwrap();
    let topic = args.iter().find(|a| a.name == "topic").unwrap();
    assert_eq!(topic.required, Some(true));
    assert!(
        args.iter()
            .any(|a| a.name == "kind" && a.required == Some(false))
    );

    let got = client
        .get_prompt(
            GetPromptRequestParams::new("recall").with_arguments(arguments(
                json!({"topic": "Ana's beagle", "user_id": "ana"}),
            )),
        )
        .await
        .unwrap();
    let text = prompt_text(&got);
    let beagle = text.find("Ana adopted a beagle named Max").expect(&text);
    assert!(!text.contains("Bob"), "{text}");
    assert!(
        text.find("1. ").unwrap() < beagle && beagle < text.find("2. ").unwrap_or(usize::MAX),
        "{text}"
    );
    let only = client
        .get_prompt(
            GetPromptRequestParams::new("recall").with_arguments(arguments(
                json!({"topic": "how to answer Ana", "user_id": "ana", "kind": "instruction"}),
            )),
        )
        .await
        .unwrap();
    let text = prompt_text(&only);
    assert!(
        text.contains("Spanish") && !text.contains("short answers"),
        "{text}"
    );
    let tagged = client
        .get_prompt(
            GetPromptRequestParams::new("recall").with_arguments(arguments(
                json!({"topic": "Ana", "user_id": "ana", "tag": "pets"}),
            )),
        )
        .await
        .unwrap();
    let text = prompt_text(&tagged);
    assert!(
        text.contains("beagle") && !text.contains("Spanish"),
        "{text}"
    );
    let none = client
        .get_prompt(
            GetPromptRequestParams::new("recall").with_arguments(arguments(
                json!({"topic": "quantum chromodynamics", "user_id": "zed"}),
            )),
        )
        .await
        .unwrap();
    assert!(prompt_text(&none).contains("no memories about zed"));

    // summarize_context on a fork shows the inherited messages, then its own.
    let fork = ok(
        &client,
        "fork_context",
        json!({"id": context, "version": 1}),
    )
    .await["context"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        &client,
        "append_messages",
        json!({"context_id": fork, "messages": [{"role": "assistant", "content": "Maybe autumn leaves instead?"}]}),
    )
    .await;
    let summary = client
        .get_prompt(
            GetPromptRequestParams::new("summarize_context")
                .with_arguments(arguments(json!({"context_id": fork}))),
        )
        .await
        .unwrap();
    let text = prompt_text(&summary);
    let kyoto = text
        .find("[1] user: I want to see Kyoto in April")
        .expect(&text);
    let autumn = text
        .find("[2] assistant: Maybe autumn leaves instead?")
        .expect(&text);
    assert!(kyoto < autumn);
    assert!(
        !text.contains("Cherry blossom"),
        "the fork is at version 1: {text}"
    );
    assert!(text.contains("store_memory"), "{text}");
    let later = client
        .get_prompt(
            GetPromptRequestParams::new("summarize_context").with_arguments(arguments(
                json!({"context_id": context, "since_version": "1"}),
            )),
        )
        .await
        .unwrap();
    let text = prompt_text(&later);
    assert!(
        text.contains("Cherry blossom") && !text.contains("Kyoto in April"),
        "{text}"
    );

    // Bad arguments are invalid params that say what to fix.
    for (name, args, needle) in [
        ("recall", json!({}), "missing field `topic`"),
        (
            "recall",
            json!({"topic": "x", "kind": "rumour"}),
            "fact, experience",
        ),
        (
            "recall",
            json!({"topic": "x", "colour": "red"}),
            "unknown argument `colour`",
        ),
        (
            "summarize_context",
            json!({"context_id": "5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11"}),
            "no context with id",
        ),
        (
            "summarize_context",
            json!({"context_id": "nope"}),
            "not a context id",
        ),
        (
            "summarize_context",
            json!({"context_id": context, "since_version": "two"}),
            "not a version",
        ),
    ] {
        let e = protocol_error(
            client
                .get_prompt(
                    GetPromptRequestParams::new(name).with_arguments(arguments(args.clone())),
                )
                .await,
        );
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{name}({args}): {e:?}");
        assert!(e.message.contains(needle), "{name}({args}): {}", e.message);
    }
    client.cancel().await.ok();
}

#[tokio::test]
async fn completions_suggest_kinds_tags_users_and_ids() {
    let db = fresh_db().await;
    let client = stdio_client(mnemo(&db, "default", Embed::Hash)).await;
    let (beagle, context) = seed(&client).await;
    let complete =
        |prompt: &'static str, arg: &'static str, value: String, ctx: Option<CompletionContext>| {
            let client = &client;
            async move {
                client
                    .complete_prompt_argument(prompt, arg, value, ctx)
                    .await
                    .unwrap_or_else(|e| panic!("complete {prompt}.{arg}: {e}"))
                    .values
            }
        };
    assert_eq!(
        complete("recall", "kind", "pr".into(), None).await,
        vec!["preference"]
    );
    assert_eq!(complete("recall", "kind", "".into(), None).await.len(), 5);
    assert_eq!(
        complete("recall", "tag", "f".into(), None).await,
        vec!["family", "food"]
    );
    let ana =
        CompletionContext::with_arguments([("user_id".to_string(), "ana".to_string())].into());
    assert_eq!(
        complete("recall", "tag", "f".into(), Some(ana)).await,
        vec!["family"]
    );
    assert_eq!(
        complete("recall", "user_id", "ana".into(), None).await,
        vec!["ana", "ana maría"]
    );
    assert!(
        complete("recall", "topic", "x".into(), None)
            .await
            .is_empty()
    );
    assert_eq!(
        complete(
            "summarize_context",
            "context_id",
            context[..6].to_string(),
            None
        )
        .await,
        vec![context.clone()]
    );
    assert_eq!(
        complete("summarize_context", "context_id", "TRIP".into(), None).await,
        vec![context.clone()],
        "context names match too, ignoring case"
    );
    let ids = client
        .complete_resource_argument("memory://memories/{id}", "id", &beagle[..8], None)
        .await
        .unwrap();
    assert_eq!(ids.values, vec![beagle.clone()]);
    let ids = client
        .complete_resource_argument("memory://contexts/{id}", "id", "", None)
        .await
        .unwrap();
    assert_eq!(ids.values, vec![context.clone()]);
    let users = client
        .complete_resource_argument("memory://users/{user_id}/profile", "user_id", "b", None)
        .await
        .unwrap();
    assert_eq!(users.values, vec!["bob"]);
    for (result, needle) in [
        (
            client
                .complete_prompt_argument("forget", "x", "", None)
                .await,
            "no prompt named \"forget\"",
        ),
        (
            client
                .complete_prompt_argument("recall", "colour", "", None)
                .await,
            "no argument \"colour\"",
        ),
        (
            client
                .complete_resource_argument("memory://nope/{id}", "id", "", None)
                .await,
            "no resource template",
        ),
    ] {
        let e = protocol_error(result);
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
        assert!(e.message.contains(needle), "{}", e.message);
    }
    client.cancel().await.ok();
}

/// (progress, total) of each progress notification received.
type Seen = Arc<Mutex<Vec<(f64, Option<f64>)>>>;

/// A client that records progress and log notifications, and the server's
/// stderr.
#[derive(Clone, Default)]
struct Recorder {
    seen: Seen,
    /// Each `notifications/message` received.
    logs: Arc<Mutex<Vec<LoggingMessageNotificationParam>>>,
    /// The server's stderr, line by line.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// The levels of the log notifications received so far.
    fn levels(&self) -> Vec<LoggingLevel> {
        self.logs.lock().unwrap().iter().map(|l| l.level).collect()
    }

    /// Waits (up to a minute) until `count` log notifications came in.
    async fn await_logs(&self, count: usize) -> Vec<LoggingMessageNotificationParam> {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let logs = self.logs.lock().unwrap().clone();
                if logs.len() >= count {
                    return logs;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {count} log notifications: {:?}", self.levels()))
    }

    /// The server's stderr lines logged at ERROR.
    fn error_lines(&self) -> Vec<String> {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(" ERROR "))
            .cloned()
            .collect()
    }
}

impl rmcp::ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen
            .lock()
            .unwrap()
            .push((params.progress, params.total));
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.logs.lock().unwrap().push(params);
    }
}

/// A [`Recorder`] connected to `cmd` (`mnemo ... serve --stdio`).
async fn recording_client(
    cmd: tokio::process::Command,
) -> (RunningService<RoleClient, Recorder>, Recorder) {
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let recorder = Recorder::default();
    let lines = recorder.stderr.clone();
    let mut stderr = tokio::io::BufReader::new(stderr.expect("piped stderr")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            eprintln!("{line}");
            lines.lock().unwrap().push(line);
        }
    });
    let client = tokio::time::timeout(Duration::from_secs(60), recorder.clone().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize failed");
    (client, recorder)
}

fn tool_request(tool: &str, args: Value) -> ClientRequest {
    ClientRequest::CallToolRequest(Request::new(
        CallToolRequestParams::new(tool.to_string()).with_arguments(arguments(args)),
    ))
}

#[tokio::test]
async fn a_large_append_sends_progress_notifications() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.args(["serve", "--stdio"]);
    let (client, recorder) = recording_client(cmd).await;
    let messages: Vec<Value> = (0..100)
        .map(|i| json!({"role": "user", "content": format!("line {i}")}))
        .collect();
    let handle = client
        .send_cancellable_request(
            tool_request("append_messages", json!({"messages": messages})),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let response = format!("{:?}", handle.await_response().await.unwrap());
    assert!(
        response.contains("latest_version") && response.contains("100"),
        "{response}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one notification per chunk of 32: {seen:?}");
    assert_eq!(seen.last().unwrap(), &(100.0, Some(100.0)));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    client.cancel().await.ok();
}

/// An OpenAI-compatible embeddings endpoint that takes `delay` per
/// request: a slow path that does not depend on how fast the machine is.
/// Returns its base URL and the number of requests it has received.
async fn slow_embedder(delay: Duration) -> (String, Arc<AtomicUsize>) {
    use axum::{Json, Router, routing::post};
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let app = Router::new().route(
        "/v1/embeddings",
        post(move |Json(body): Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let n = body["input"].as_array().map_or(0, Vec::len);
                let data: Vec<Value> = (0..n)
                    .map(|i| {
                        let mut v = vec![0.0f32; 384];
                        v[i % 384] = 1.0;
                        json!({"index": i, "embedding": v})
                    })
                    .collect();
                Json(json!({"data": data}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, requests)
}

/// Sends `tool` with `args` (a 500-item batch), cancels it once the first
/// progress notification shows it under way, and checks the work stopped:
/// at most the chunk in flight finishes, nothing more is embedded.
async fn cancel_midway(
    client: &RunningService<RoleClient, Recorder>,
    recorder: &Recorder,
    requests: &AtomicUsize,
    tool: &str,
    args: Value,
) {
    recorder.seen.lock().unwrap().clear();
    let handle = client
        .send_cancellable_request(tool_request(tool, args), PeerRequestOptions::no_options())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while recorder.seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the batch never reported progress");
    handle
        .cancel(Some("the user pressed stop".into()))
        .await
        .unwrap();
    let embedded_at_cancel = requests.load(Ordering::SeqCst);
    // Had the work gone on, several more chunks would be embedded by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let seen = recorder.seen.lock().unwrap().clone();
    let embedded = requests.load(Ordering::SeqCst);
    assert!(
        embedded <= embedded_at_cancel + 1,
        "{tool}: embedding went on after the cancellation ({embedded_at_cancel} requests, then {embedded})"
    );
    assert!(seen.len() <= 3, "{tool}: {seen:?}");
    assert!(seen.last().unwrap().0 < 500.0, "{tool}: {seen:?}");
}

#[tokio::test]
async fn cancelling_a_batch_stops_it_and_writes_nothing() {
    let db = fresh_db().await;
    // 16 chunks of 32 at 200 ms each: about 3 seconds per batch if not cancelled.
    let (url, requests) = slow_embedder(Duration::from_millis(200)).await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_EMBEDDER", "openai")
        .env("MNEMO_OPENAI_BASE_URL", &url)
        .env("MNEMO_EMBEDDING_DIM", "384")
        .args(["serve", "--stdio"]);
    let (client, recorder) = recording_client(cmd).await;
    let memories: Vec<Value> = (0..500)
        .map(|i| json!({"content": format!("memory number {i}")}))
        .collect();
    cancel_midway(
        &client,
        &recorder,
        &requests,
        "store_memories",
        json!({"memories": memories}),
    )
    .await;
    let messages: Vec<Value> = (0..500)
        .map(|i| json!({"role": "user", "content": format!("message number {i}")}))
        .collect();
    cancel_midway(
        &client,
        &recorder,
        &requests,
        "append_messages",
        json!({"messages": messages}),
    )
    .await;

    let sql = db.sql().await;
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM memories), (SELECT count(*) FROM contexts), \
             (SELECT count(*) FROM messages)",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(counts, (0, 0, 0), "a cancelled batch writes nothing");
    // The server still serves, and an uncancelled batch goes through.
    let done = client
        .send_request(tool_request(
            "store_memories",
            json!({"memories": [{"content": "after the cancellations"}]}),
        ))
        .await
        .unwrap();
    assert!(
        format!("{done:?}").contains("\"created\": Number(1)"),
        "{done:?}"
    );
    client.cancel().await.ok();
}

/// Values no argument can hold (a NUL or other control character, far more
/// characters than the argument takes) in completions, prompt arguments,
/// resource URIs and listing cursors: invalid params (resource not found
/// for a URI) with a short message, answered before any query: nothing is
/// logged at ERROR and the server keeps serving. A NUL completion value used
/// to reach PostgreSQL and come back as -32603 "the database is
/// unavailable", logged at ERROR for anyone to flood the log with.
#[tokio::test]
async fn values_sql_cannot_take_are_refused_before_any_query() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.args(["serve", "--stdio"]);
    let (client, recorder) = recording_client(cmd).await;
    let huge = "x".repeat(100_000);
    let user = |u: &str| {
        CompletionContext::with_arguments([("user_id".to_string(), u.to_string())].into())
    };
    let short = |e: &rmcp::ErrorData| {
        assert!(
            e.message.len() < 400,
            "{} bytes: {}",
            e.message.len(),
            &e.message[..400]
        );
    };
    let prompt_values = [
        ("recall", "user_id", "a\0", None),
        ("recall", "tag", "f\0", None),
        ("recall", "tag", "f", Some(user("a\0"))),
        ("recall", "tag", "f", Some(user(&huge))),
        ("recall", "user_id", huge.as_str(), None),
        ("recall", "topic", "a\0", None),
        ("recall", "kind", "\u{7}", None),
        ("summarize_context", "context_id", "\0", None),
        ("summarize_context", "context_id", huge.as_str(), None),
    ];
    for (prompt, arg, value, context) in prompt_values {
        let e = protocol_error(
            client
                .complete_prompt_argument(prompt, arg, value, context)
                .await,
        );
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{prompt}.{arg}: {e:?}");
        assert!(e.message.contains("completion/complete"), "{}", e.message);
        short(&e);
    }
    for (template, arg) in [
        ("memory://memories/{id}", "id"),
        ("memory://contexts/{id}", "id"),
        ("memory://users/{user_id}/profile", "user_id"),
    ] {
        for value in ["\0", huge.as_str()] {
            let e = protocol_error(
                client
                    .complete_resource_argument(template, arg, value, None)
                    .await,
            );
            assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{template}: {e:?}");
            short(&e);
        }
    }
    // A topic may hold a line break: it completes to nothing, as before.
    let fine = client
        .complete_prompt_argument("recall", "topic", "a\nb", None)
        .await
        .unwrap();
    assert!(fine.values.is_empty());

    for (prompt, args) in [
        ("recall", json!({"topic": "a\u{0}"})),
        ("recall", json!({"topic": "pets", "user_id": "a\u{0}"})),
        ("recall", json!({"topic": "pets", "tag": "a\u{0}"})),
        ("recall", json!({"topic": "pets", "kind": "a\u{0}"})),
        ("recall", json!({"topic": "pets", "user_id": huge})),
        ("summarize_context", json!({"context_id": "a\u{0}"})),
        ("summarize_context", json!({"context_id": huge})),
    ] {
        let e = protocol_error(
            client
                .get_prompt(GetPromptRequestParams::new(prompt).with_arguments(arguments(args)))
                .await,
        );
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{prompt}: {e:?}");
        short(&e);
    }
    for uri in [
        "memory://users/a%00/profile".to_string(),
        "memory://memories/%00".to_string(),
        "memory://contexts/\u{0}".to_string(),
        format!("memory://users/{huge}/profile"),
        format!("memory://{huge}"),
    ] {
        let e = protocol_error(
            client
                .read_resource(ReadResourceRequestParams::new(uri.as_str()))
                .await,
        );
        assert_eq!(e.code, ErrorCode::RESOURCE_NOT_FOUND, "{e:?}");
        short(&e);
    }
    for cursor in ["0_a\u{0}", "1_\u{0}"] {
        let e = protocol_error(
            client
                .list_resources(Some(
                    PaginatedRequestParams::default().with_cursor(Some(cursor.to_string())),
                ))
                .await,
        );
        assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
    }

    // Still serving, and nothing reached the database to fail there.
    let kinds = client
        .complete_prompt_argument("recall", "kind", "pr", None)
        .await
        .unwrap();
    assert_eq!(kinds.values, vec!["preference"]);
    assert_eq!(recorder.error_lines(), Vec::<String>::new());
    client.cancel().await.ok();
}

/// An OpenAI-compatible embeddings endpoint that refuses every request
/// (400, which the client does not retry): the embedding model is down.
async fn refusing_embedder() -> String {
    use axum::{Router, http::StatusCode, routing::post};
    let app = Router::new().route(
        "/v1/embeddings",
        post(|| async { (StatusCode::BAD_REQUEST, "no model loaded") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn with_refusing_embedder(cmd: &mut tokio::process::Command, url: &str) {
    cmd.env("MNEMO_EMBEDDER", "openai")
        .env("MNEMO_OPENAI_BASE_URL", url)
        .env("MNEMO_EMBEDDING_DIM", "384");
}

/// `logging/setLevel` and `notifications/message`: a memory stored without
/// a vector is a warning, a search the embedder was needed for an error,
/// each sent only at or above the level the session asked for.
#[tokio::test]
async fn log_notifications_tell_the_client_what_degraded_at_its_level() {
    let db = fresh_db().await;
    let url = refusing_embedder().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    with_refusing_embedder(&mut cmd, &url);
    cmd.args(["serve", "--stdio"]);
    let (client, recorder) = recording_client(cmd).await;
    let info = client.peer_info().expect("server info");
    assert!(info.capabilities.logging.is_some(), "{info:?}");
    let call = |tool: &str, args: Value| client.send_request(tool_request(tool, args));

    // The default level lets warnings through.
    call("store_memory", json!({"content": "Ana likes tea"}))
        .await
        .unwrap();
    let logs = recorder.await_logs(1).await;
    assert_eq!(logs[0].level, LoggingLevel::Warning);
    assert_eq!(logs[0].logger.as_deref(), Some("mnemo"));
    assert_eq!(logs[0].data["tool"], "store_memory");
    let message = logs[0].data["message"].as_str().unwrap();
    assert!(message.contains("without a vector"), "{message}");

    // At "error", the warning is held back and the failed search is heard.
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Error))
        .await
        .unwrap();
    call("store_memory", json!({"content": "Ana likes coffee"}))
        .await
        .unwrap();
    call(
        "search_memories",
        json!({"query": "drinks", "mode": "semantic"}),
    )
    .await
    .unwrap();
    let logs = recorder.await_logs(2).await;
    assert_eq!(
        recorder.levels(),
        vec![LoggingLevel::Warning, LoggingLevel::Error]
    );
    assert_eq!(logs[1].data["tool"], "search_memories");
    let message = logs[1].data["message"].as_str().unwrap();
    assert!(
        message.starts_with("unavailable: the embedding model is unavailable"),
        "{message}"
    );

    // At "emergency" nothing mnemo says gets through; at "debug" all of it.
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Emergency))
        .await
        .unwrap();
    call(
        "search_memories",
        json!({"query": "tea", "mode": "semantic"}),
    )
    .await
    .unwrap();
    client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .unwrap();
    let messages: Vec<Value> = (0..40)
        .map(|i| json!({"role": "user", "content": format!("line {i}")}))
        .collect();
    call("append_messages", json!({"messages": messages}))
        .await
        .unwrap();
    let logs = recorder.await_logs(3).await;
    assert_eq!(
        recorder.levels(),
        vec![
            LoggingLevel::Warning,
            LoggingLevel::Error,
            LoggingLevel::Warning
        ],
        "one warning for the two chunks of the append, none for the muted search"
    );
    assert_eq!(logs[2].data["tool"], "append_messages");
    client.cancel().await.ok();
}

/// A client over HTTP that records log notifications.
async fn recording_http_client(url: &str) -> (RunningService<RoleClient, Recorder>, Recorder) {
    let recorder = Recorder::default();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.to_string());
    let client = tokio::time::timeout(Duration::from_secs(30), recorder.clone().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize failed");
    (client, recorder)
}

/// Over HTTP each session has its own level: one session muting warnings
/// leaves another hearing them.
#[tokio::test]
async fn each_http_session_keeps_its_own_log_level() {
    let db = fresh_db().await;
    let url = refusing_embedder().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    with_refusing_embedder(&mut cmd, &url);
    let server = http_server(cmd).await;
    let (quiet, quiet_logs) = recording_http_client(&server.url).await;
    let (loud, loud_logs) = recording_http_client(&server.url).await;
    quiet
        .set_level(SetLevelRequestParams::new(LoggingLevel::Error))
        .await
        .unwrap();
    for (client, content) in [(&quiet, "stored quietly"), (&loud, "stored loudly")] {
        client
            .send_request(tool_request("store_memory", json!({"content": content})))
            .await
            .unwrap();
    }
    let logs = loud_logs.await_logs(1).await;
    assert_eq!(logs[0].level, LoggingLevel::Warning);
    // An error the quiet session does hear: a warning sent before it would
    // have come first.
    quiet
        .send_request(tool_request(
            "search_memories",
            json!({"query": "stored", "mode": "semantic"}),
        ))
        .await
        .unwrap();
    quiet_logs.await_logs(1).await;
    assert_eq!(quiet_logs.levels(), vec![LoggingLevel::Error]);
    assert_eq!(loud_logs.levels(), vec![LoggingLevel::Warning]);
    quiet.cancel().await.ok();
    loud.cancel().await.ok();
}
