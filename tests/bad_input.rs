//! Bad input never crashes mnemo and always gets a clear answer:
//! property-based tests (proptest) over every tool's argument decoding and
//! validation, in-process against a real database and through a live HTTP
//! server, and raw HTTP requests that break the transport's rules.
//!
//! Case counts: `MNEMO_PROPTEST_CASES` (default 256 per tool in-process, a
//! fifth of that over HTTP); runs are seeded, so a failure reproduces.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mnemo::tools::output::{Args, ToolError};
use mnemo::tools::{self, MnemoServer};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{
    Config as PropConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, Extensions};
use serde_json::{Map, Value, json};

fn cases() -> u32 {
    std::env::var("MNEMO_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn runner(cases: u32) -> TestRunner {
    let config = PropConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..PropConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Strings that break naive code: empty, whitespace, NUL and control
/// characters, any Unicode, huge, almost-ids, almost-dates, almost-enums.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("   \t\n".to_string()),
        1 => "[a-z ]{0,8}\u{0}[a-z ]{0,8}",
        1 => "[\u{1}-\u{1f}]{1,4}",
        1 => "\\PC{1,40}",
        1 => (0usize..40_000).prop_map(|n| "é".repeat(n)),
        1 => (32_760usize..32_780).prop_map(|n| "a".repeat(n)),
        1 => "[0-9a-fA-F-]{30,40}",
        1 => Just("5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11".to_string()),
        1 => "-?[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?",
        1 => "-?[0-9]{1,19}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        1 => prop::sample::select(vec![
            "fact", "FACT", "facts", "experience", "preference", "instruction", "reflection",
            "follows", "contradicts", "elaborates", "corrects", "references", "causes",
            "hybrid", "semantic", "keyword", "any", "all", "null", "true", "0",
        ]).prop_map(str::to_string),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-20i64..20).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-2.0f64..2.0).prop_map(Value::from),
        prop::sample::select(vec![1e300, -1e300, 1e-300, 0.5, 1.0000001, -0.0])
            .prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        nasty_string().prop_map(Value::String),
    ]
}

/// Any JSON value, nested up to a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object nested `depth` levels deep.
fn deep(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |v, _| json!({ "d": v }))
}

/// An argument object whose keys are mostly the tool's own, with values of
/// any type; sometimes deeply nested, sometimes not an object at all.
fn arguments(
    fields: &'static [&'static str],
    ids: Vec<String>,
    max_depth: usize,
) -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        6 => any_json(),
        2 => prop::sample::select(ids).prop_map(Value::String),
        1 => (1usize..max_depth).prop_map(deep),
        1 => prop::collection::vec(nasty_string().prop_map(Value::String), 0..40).prop_map(Value::Array),
    ];
    let key = prop_oneof![
        8 => prop::sample::select(fields.to_vec()).prop_map(str::to_string),
        1 => nasty_string(),
    ];
    prop_oneof![
        12 => prop::collection::btree_map(key, value, 0..(fields.len() + 2))
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => any_json(),
    ]
}

const TOOLS: &[(&str, &[&str])] = &[
    (
        "store_memory",
        &[
            "content",
            "kind",
            "importance",
            "confidence",
            "tags",
            "metadata",
            "user_id",
            "occurred_at",
            "expires_at",
            "ttl_hours",
        ],
    ),
    (
        "search_memories",
        &[
            "query",
            "limit",
            "mode",
            "user_id",
            "kinds",
            "tags",
            "tags_match",
            "min_importance",
            "since",
            "until",
            "include_archived",
        ],
    ),
    (
        "list_memories",
        &[
            "limit",
            "cursor",
            "user_id",
            "kinds",
            "tags",
            "tags_match",
            "min_importance",
            "since",
            "until",
            "include_archived",
        ],
    ),
    ("get_memory", &["id"]),
    (
        "update_memory",
        &[
            "id",
            "content",
            "kind",
            "importance",
            "confidence",
            "tags",
            "metadata",
            "occurred_at",
            "expires_at",
            "ttl_hours",
            "clear_expiry",
            "expected_updated_at",
        ],
    ),
    ("archive_memory", &["id"]),
    ("restore_memory", &["id"]),
    ("delete_memory", &["id"]),
    (
        "relate_memories",
        &["from_id", "to_id", "relation", "strength"],
    ),
    ("related_memories", &["id", "depth", "relations", "limit"]),
    ("memory_stats", &["user_id"]),
];

fn params<T>(v: &Value) -> Parameters<Args<T>>
where
    Args<T>: serde::de::DeserializeOwned,
{
    Parameters(serde_json::from_value(v.clone()).expect("Args always decodes a JSON value"))
}

/// Runs `tool` in-process; Ok(None) for success, Ok(Some(err)) for a tool error.
async fn call_in_process(server: &MnemoServer, tool: &str, args: &Value) -> Option<ToolError> {
    let ext = Extensions::default;
    macro_rules! run {
        ($method:ident) => {
            server.$method(params(args), ext()).await.err()
        };
    }
    match tool {
        "store_memory" => run!(store_memory),
        "search_memories" => run!(search_memories),
        "list_memories" => run!(list_memories),
        "get_memory" => run!(get_memory),
        "update_memory" => run!(update_memory),
        "archive_memory" => run!(archive_memory),
        "restore_memory" => run!(restore_memory),
        "delete_memory" => run!(delete_memory),
        "relate_memories" => run!(relate_memories),
        "related_memories" => run!(related_memories),
        "memory_stats" => run!(memory_stats),
        other => panic!("no tool {other}"),
    }
}

/// A bad argument is the caller's fault (`invalid_argument`), or names a
/// memory that is not there (`not_found`), or loses a race (`conflict`):
/// never `unavailable`, which would mean the input reached the database and
/// broke something there.
fn acceptable(error: &ToolError) -> bool {
    !matches!(error, ToolError::Unavailable(_)) && !error.to_string().trim().is_empty()
}

async fn in_process_server(db: &TestDb) -> MnemoServer {
    let cli = <mnemo::config::Cli as clap::Parser>::try_parse_from([
        "mnemo",
        "--config",
        "/dev/null",
        "--database-url",
        &db.url,
        "--embedder",
        "hash",
        "migrate",
    ])
    .expect("flags");
    let config = cli
        .settings
        .merge_file()
        .and_then(|s| s.resolve())
        .expect("config");
    let app = mnemo::app::start(&config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("in-process app");
    MnemoServer::new(app)
}

async fn seed(server: &MnemoServer) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..4 {
        let out = server
            .store_memory(
                params(&json!({"content": format!("seed memory {i}")})),
                Extensions::default(),
            )
            .await
            .map_err(|e| e.to_string())
            .expect("seed");
        ids.push(out.0.id.to_string());
    }
    ids
}

#[test]
fn arbitrary_arguments_to_every_tool_get_a_clear_answer_in_process() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, ids) = rt.block_on(async {
        let db = fresh_db().await;
        let server = in_process_server(&db).await;
        let ids = seed(&server).await;
        (server, ids)
    });
    // Edge cases random generation rarely reaches: times at the ends of what
    // chrono parses but PostgreSQL may not store, tiny and huge numbers.
    let uuid = "5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11";
    let edges = [
        (
            "list_memories",
            json!({"cursor": format!("-8000000000000000000_{uuid}")}),
        ),
        (
            "list_memories",
            json!({"cursor": format!("8000000000000000000_{uuid}")}),
        ),
        (
            "list_memories",
            json!({"cursor": format!("-210000000000000000_{uuid}")}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "occurred_at": "0000-01-01T00:00:00+23:59"}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "occurred_at": "9999-12-31T23:59:59.999999999-23:59"}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "expires_at": "9999-12-31T23:59:59Z"}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "ttl_hours": 1e-300}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "ttl_hours": 876000}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "importance": 1e20}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "confidence": 5e-324}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "metadata": {"\u{0}": 1}}),
        ),
        (
            "store_memory",
            json!({"content": "edge", "tags": ["\u{200b}"]}),
        ),
        (
            "search_memories",
            json!({"query": "the a of", "since": "0000-01-01", "until": "9999-12-31"}),
        ),
        (
            "search_memories",
            json!({"query": "!!! ::: & | <-> ''", "mode": "keyword"}),
        ),
        (
            "search_memories",
            json!({"query": "a:* & b", "mode": "hybrid"}),
        ),
        (
            "update_memory",
            json!({"id": ids[0], "expected_updated_at": "0000-01-01T00:00:00+23:59"}),
        ),
        (
            "update_memory",
            json!({"id": ids[0], "occurred_at": "0000-01-01T00:00:00+23:59"}),
        ),
        (
            "related_memories",
            json!({"id": ids[0], "depth": 9223372036854775807u64}),
        ),
        (
            "relate_memories",
            json!({"from_id": ids[0], "to_id": ids[0], "relation": "causes"}),
        ),
        (
            "relate_memories",
            json!({"from_id": ids[0], "to_id": ids[1], "relation": "causes", "strength": 1e-45}),
        ),
    ];
    for (tool, args) in &edges {
        if let Some(err) = rt.block_on(call_in_process(&server, tool, args))
            && !acceptable(&err)
        {
            panic!("{tool}({args}) -> {err:?}");
        }
    }
    let per_tool = cases();
    let mut total = edges.len() as u32;
    let mut errors = 0;
    for (tool, fields) in TOOLS {
        let mut runner = runner(per_tool);
        let counted = std::cell::Cell::new((0u32, 0u32));
        runner
            .run(&arguments(fields, ids.clone(), 300), |args| {
                let outcome = rt.block_on(call_in_process(&server, tool, &args));
                let (n, e) = counted.get();
                counted.set((n + 1, e + u32::from(outcome.is_some())));
                match outcome {
                    Some(err) if !acceptable(&err) => {
                        Err(TestCaseError::fail(format!("{tool}({args}) -> {err:?}")))
                    }
                    _ => Ok(()),
                }
            })
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let (n, e) = counted.get();
        total += n;
        errors += e;
    }
    eprintln!(
        "in-process: {total} arbitrary argument sets over {} tools, {errors} answered with a tool error, none unavailable, no panic",
        TOOLS.len()
    );
}

#[test]
fn any_stored_content_reads_back_exactly_or_is_refused_with_the_reason() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let db = fresh_db().await;
        in_process_server(&db).await
    });
    let mut runner = runner(cases() * 2);
    let counted = std::cell::Cell::new(0u32);
    runner
        .run(&nasty_string(), |content| {
            counted.set(counted.get() + 1);
            rt.block_on(async {
                let stored = server
                    .store_memory(
                        params(&json!({"content": content, "user_id": "roundtrip"})),
                        Extensions::default(),
                    )
                    .await;
                let trimmed = content.trim();
                let chars = trimmed.chars().count();
                let valid = (1..=tools::validate::MAX_CONTENT_CHARS).contains(&chars)
                    && !trimmed.contains('\0');
                match stored {
                    Ok(out) => {
                        prop_assert!(valid, "accepted invalid content {content:?}");
                        let got = server
                            .get_memory(
                                params(&json!({"id": out.0.id.to_string()})),
                                Extensions::default(),
                            )
                            .await
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(got.0.memory.content.as_str(), trimmed);
                    }
                    Err(ToolError::Invalid(message)) => {
                        prop_assert!(!valid, "refused valid content: {message}");
                        prop_assert!(message.contains("content"), "{message}");
                    }
                    Err(other) => {
                        return Err(TestCaseError::fail(format!("{content:?}: {other:?}")));
                    }
                }
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("content round trip: {} cases", counted.get());
}

/// Time arguments as clients write them: RFC 3339 with any offset and
/// precision, or a plain date, with years at and beyond both ends of
/// 0001..=9999 and days that do not exist.
fn time_text() -> impl Strategy<Value = String> {
    let year = prop_oneof![0i32..=2, 9997i32..=9999, 0i32..=9999];
    let offset = prop_oneof![
        Just("Z".to_string()),
        (any::<bool>(), 0u32..24, 0u32..60)
            .prop_map(|(west, h, m)| format!("{}{h:02}:{m:02}", if west { '-' } else { '+' })),
    ];
    let fraction = prop_oneof![
        Just(String::new()),
        (0u32..1_000_000_000).prop_map(|n| format!(".{n:09}")),
        (0u32..1000).prop_map(|n| format!(".{n:03}")),
    ];
    prop_oneof![
        (
            year.clone(),
            1u32..=12,
            1u32..=31,
            0u32..24,
            0u32..60,
            0u32..60,
            fraction,
            offset
        )
            .prop_map(|(y, mo, d, h, mi, s, f, off)| {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}{off}")
            }),
        (year, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        prop::sample::select(vec![
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T00:00:00-23:59",
            "-0001-01-01",
            "0000-01-01",
            "0000-12-31T23:00:00-01:00",
            "0001-01-01T00:00:00+00:01",
            "0001-01-01T23:59:59+23:59",
            "+10000-01-01",
        ])
        .prop_map(String::from),
    ]
}

/// What the server must make of `text`: the instant in UTC, or None when it
/// is no time at all.
fn instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// A tool's structured result as the client sees it.
fn seen<T: serde::Serialize>(out: T) -> Value {
    serde_json::to_value(out).expect("results serialise")
}

/// Every time the server accepts comes back as one it accepts again: stored
/// as occurred_at (and expires_at when in the future), read back, written
/// back with update_memory (with expected_updated_at as read), and used as
/// since/until filters of list_memories and search_memories. A time outside
/// the years 0001..=9999 in UTC is refused naming the argument and the
/// range ("9999-12-31T23:59:59-23:59" used to be stored and read back as
/// "+10000-01-01T23:58:59Z", which the server then refused).
#[test]
fn every_accepted_time_reads_back_as_one_the_server_accepts_again() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let db = fresh_db().await;
        in_process_server(&db).await
    });
    let ext = Extensions::default;
    let now = chrono::Utc::now();
    let counted = std::cell::Cell::new((0u32, 0u32));
    runner(cases())
        .run(&time_text(), |text| {
            let (n, refused) = counted.get();
            let user = format!("times-{n}");
            let expected = instant(&text);
            let in_range = expected.is_some_and(|t| (1..=9999).contains(&chrono::Datelike::year(&t)));
            let future = expected.is_some_and(|t| t > now + chrono::Duration::minutes(10));
            let mut args = json!({"content": format!("time case {n}"), "user_id": user, "occurred_at": text});
            if future {
                args["expires_at"] = json!(text);
            }
            rt.block_on(async {
                let stored = server.store_memory(params(&args), ext()).await;
                let id = match stored {
                    Ok(out) => out.0.id.to_string(),
                    Err(ToolError::Invalid(message)) => {
                        prop_assert!(!in_range, "{text:?} refused: {message}");
                        prop_assert!(message.contains("occurred_at"), "{message}");
                        if expected.is_some() {
                            prop_assert!(message.contains("0001 to 9999"), "{message}");
                        }
                        counted.set((n + 1, refused + 1));
                        return Ok(());
                    }
                    Err(other) => return Err(TestCaseError::fail(format!("{text:?}: {other:?}"))),
                };
                prop_assert!(in_range, "{text:?} accepted, but it is {expected:?} in UTC");
                let fail = |what: &str, e: ToolError| TestCaseError::fail(format!("{text:?}: {what}: {e}"));
                let got = seen(server.get_memory(params(&json!({"id": id})), ext()).await.map_err(|e| fail("get", e))?.0);
                let memory = &got["memory"];
                let back = memory["occurred_at"].as_str().unwrap().to_string();
                // PostgreSQL keeps microseconds.
                let stored_at = instant(&back).expect("read back as RFC 3339");
                let want = expected.unwrap();
                prop_assert!((want - stored_at).abs() < chrono::Duration::microseconds(1),
                    "{text:?} read back as {back:?}");
                let mut update = json!({
                    "id": id,
                    "occurred_at": back,
                    "expected_updated_at": memory["updated_at"],
                });
                if future {
                    update["expires_at"] = memory["expires_at"].clone();
                }
                server.update_memory(params(&update), ext()).await.map_err(|e| fail("update", e))?;
                let listed = seen(server.list_memories(params(&json!({"user_id": user, "since": back})), ext()).await.map_err(|e| fail("list since", e))?.0);
                prop_assert_eq!(listed["memories"].as_array().map(Vec::len), Some(1), "since {}", back);
                let until = seen(server.list_memories(params(&json!({"user_id": user, "until": back})), ext()).await.map_err(|e| fail("list until", e))?.0);
                prop_assert_eq!(until["memories"].as_array().map(Vec::len), Some(0), "until {}", back);
                server
                    .search_memories(params(&json!({"query": "time case", "mode": "keyword", "user_id": user, "since": back})), ext())
                    .await
                    .map_err(|e| fail("search since", e))?;
                counted.set((n + 1, refused));
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (n, refused) = counted.get();
    eprintln!(
        "times: {n} cases, {refused} refused, every accepted one read back and accepted again"
    );
}

#[tokio::test]
async fn arbitrary_tool_calls_over_http_never_break_the_server() {
    let db = fresh_db().await;
    let mut server = http_server(mnemo(&db, "default", Embed::Hash)).await;
    let client = http_client(&server.url).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            ok(
                &client,
                "store_memory",
                json!({"content": format!("seed {i}")}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut tools_with_batch: Vec<(&str, &[&str])> = TOOLS.to_vec();
    tools_with_batch.push(("store_memories", &["memories"]));
    let per_tool = (cases() / 5).max(5);
    let mut total = 0;
    let mut errors = 0;
    let client = Arc::new(client);
    for (tool, fields) in tools_with_batch {
        let mut runner = runner(per_tool);
        // JSON nested deeper than about 120 levels is refused by the HTTP
        // layer's parser (see the raw HTTP test): keep these calls below that.
        let strategy = if tool == "store_memories" {
            // A list of argument objects of store_memory's shape (or anything).
            prop_oneof![
                4 => prop::collection::vec(arguments(TOOLS[0].1, ids.clone(), 100), 0..4)
                    .prop_map(|m| json!({"memories": m})),
                1 => arguments(fields, ids.clone(), 100),
            ]
            .boxed()
        } else {
            arguments(fields, ids.clone(), 100).boxed()
        };
        let cases_here: Vec<Value> = (0..per_tool)
            .map(|_| strategy.new_tree(&mut runner).expect("generate").current())
            .collect();
        for args in cases_here {
            total += 1;
            let Value::Object(map) = args.clone() else {
                // The protocol needs an object: a non-object cannot even be sent.
                continue;
            };
            let result = tokio::time::timeout(
                Duration::from_secs(30),
                client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)),
            )
            .await
            .unwrap_or_else(|_| panic!("{tool}({args}) hung"))
            .unwrap_or_else(|e| panic!("{tool}({args}) failed at the protocol level: {e}"));
            if let Some(e) = error_text(&result) {
                errors += 1;
                assert!(!e.starts_with("unavailable"), "{tool}({args}) -> {e}");
            }
        }
    }
    // Still serving, same process.
    ok(&client, "store_memory", json!({"content": "still serving"})).await;
    assert!(server.child.try_wait().unwrap().is_none());
    eprintln!(
        "over HTTP: {total} arbitrary tool calls, {errors} tool errors, server still serving"
    );
}

/// POSTs `body` with the headers an MCP client sends.
async fn post(
    url: &str,
    session: Option<&str>,
    protocol: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    if let Some(p) = protocol {
        request = request.header("mcp-protocol-version", p);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn initialize(url: &str) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bad", "version": "1"}}});
    let response = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.text().await;
    let (status, _) = post(
        url,
        Some(&session),
        Some("2025-06-18"),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert!(status < 300, "{status}");
    session
}

/// The JSON-RPC message in a JSON or SSE body.
fn message(body: &str) -> Option<Value> {
    serde_json::from_str(body).ok().or_else(|| {
        body.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| m.get("id").is_some())
    })
}

#[tokio::test]
async fn malformed_http_requests_get_the_right_status_and_the_server_keeps_serving() {
    let db = fresh_db().await;
    let mut cmd = mnemo(&db, "default", Embed::Hash);
    cmd.env("MNEMO_MAX_BODY_BYTES", "65536");
    let mut server = http_server(cmd).await;
    let url = server.url.clone();
    let session = initialize(&url).await;
    let call = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "memory_stats", "arguments": {}}});
    let v = Some("2025-06-18");
    let s = Some(session.as_str());

    let mut observed = Vec::new();
    let mut check =
        |what: &str, (status, body): (u16, String), expected: &[u16], code: Option<i64>| {
            assert!(
                expected.contains(&status),
                "{what}: HTTP {status} (expected {expected:?}): {body}"
            );
            if let Some(code) = code {
                let m = message(&body)
                    .unwrap_or_else(|| panic!("{what}: no JSON-RPC error in {body:?}"));
                assert_eq!(m["error"]["code"].as_i64(), Some(code), "{what}: {m}");
            }
            observed.push(format!("{what}: {status}"));
        };

    check(
        "not JSON",
        post(&url, s, v, b"{not json".to_vec()).await,
        &[400],
        Some(-32700),
    );
    check(
        "invalid UTF-8",
        post(
            &url,
            s,
            v,
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}".to_vec(),
        )
        .await,
        &[400],
        Some(-32700),
    );
    check(
        "a JSON array",
        post(&url, s, v, b"[]".to_vec()).await,
        &[400],
        Some(-32600),
    );
    check(
        "not JSON-RPC",
        post(
            &url,
            s,
            v,
            json!({"hello": "world"}).to_string().into_bytes(),
        )
        .await,
        &[400],
        Some(-32600),
    );
    check(
        "JSON-RPC 1.0",
        post(
            &url,
            s,
            v,
            json!({"jsonrpc": "1.0", "id": 1, "method": "tools/list"})
                .to_string()
                .into_bytes(),
        )
        .await,
        &[400],
        Some(-32600),
    );
    check(
        "nested 10000 deep",
        post(
            &url,
            s,
            v,
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        )
        .await,
        &[400],
        Some(-32700),
    );
    check(
        "oversized body",
        post(
            &url,
            s,
            v,
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"pad\":\"{}\"}}",
                "x".repeat(100_000)
            )
            .into_bytes(),
        )
        .await,
        &[413],
        None,
    );
    check(
        "unknown protocol version",
        post(
            &url,
            s,
            Some("1999-01-01"),
            call(2).to_string().into_bytes(),
        )
        .await,
        &[400],
        None,
    );
    check(
        "missing session id",
        post(&url, None, v, call(3).to_string().into_bytes()).await,
        &[400],
        None,
    );
    check(
        "unknown session id",
        post(
            &url,
            Some("no-such-session"),
            v,
            call(4).to_string().into_bytes(),
        )
        .await,
        &[404],
        None,
    );
    check(
        "unknown method",
        post(
            &url,
            s,
            v,
            json!({"jsonrpc": "2.0", "id": 5, "method": "memories/steal"})
                .to_string()
                .into_bytes(),
        )
        .await,
        &[200, 404],
        Some(-32601),
    );
    check("unknown tool", post(&url, s, v, json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "drop_database", "arguments": {}}}).to_string().into_bytes()).await, &[200], Some(-32602));
    check("arguments not an object", post(&url, s, v, json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "memory_stats", "arguments": [1, 2]}}).to_string().into_bytes()).await, &[200], Some(-32602));

    // A wrong argument type is a tool error, not a protocol error.
    let (status, body) = post(&url, s, v, json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "store_memory", "arguments": {"content": 42}}}).to_string().into_bytes()).await;
    assert_eq!(status, 200);
    let m = message(&body).expect("a result");
    assert_eq!(m["result"]["isError"], true, "{m}");
    observed.push("wrong argument type: 200 + isError".into());

    // Still serving the same session, and new ones.
    let (status, body) = post(&url, s, v, call(9).to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        message(&body).is_some_and(|m| m.get("result").is_some()),
        "{body}"
    );
    let client = http_client(&url).await;
    ok(
        &client,
        "store_memory",
        json!({"content": "still serving after bad requests"}),
    )
    .await;
    assert!(server.child.try_wait().unwrap().is_none());
    eprintln!(
        "raw HTTP: {} malformed requests: {observed:?}",
        observed.len()
    );
    client.cancel().await.ok();
}
