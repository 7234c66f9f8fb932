//! The MCP surface as the official MCP Inspector CLI sees it, against the
//! real `mnemo serve --stdio`: every tool listed with a description, input
//! and output schemas and annotations, no schema the Inspector's `--strict`
//! check calls unportable, and the prompts and resource templates.
//!
//! The Inspector (pinned) is installed with npm into
//! `$XDG_CACHE_HOME/mnemo` (else `~/.cache/mnemo`) on first run. Without
//! Node.js and npm this test fails: it is a check, not an option.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

const INSPECTOR_VERSION: &str = "2.12.0";

const TOOLS: [&str; 18] = [
    "append_messages",
    "archive_memory",
    "delete_context",
    "delete_memory",
    "fork_context",
    "get_context",
    "get_memory",
    "list_contexts",
    "list_memories",
    "memory_stats",
    "related_memories",
    "relate_memories",
    "restore_memory",
    "search_memories",
    "search_messages",
    "store_memories",
    "store_memory",
    "update_memory",
];

/// The Inspector's CLI, installed on first use.
async fn inspector() -> PathBuf {
    common::npm_tool(
        "inspector",
        "@modelcontextprotocol/inspector",
        INSPECTOR_VERSION,
        "mcp-inspector",
    )
    .await
}

/// Runs the Inspector CLI against `mnemo serve --stdio` on `db` and returns
/// its JSON answer.
async fn inspect(bin: &PathBuf, db: &TestDb, args: &[&str]) -> Value {
    let run = tokio::process::Command::new(bin)
        .arg("--cli")
        .args(args)
        .args(["-e", &format!("DATABASE_URL={}", db.url)])
        .args(["-e", "MNEMO_EMBEDDER=hash", "-e", "MNEMO_CONFIG=/dev/null"])
        .args(["-e", "MNEMO_LOG=warn", "-e", "MNEMO_COMPANION=inspector"])
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_mnemo"))
        .args(["serve", "--stdio"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the Inspector did not finish within 2 minutes")
        .expect("cannot run the Inspector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inspector {args:?} failed ({}):\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspector {args:?} printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test]
async fn the_mcp_inspector_lists_every_tool_prompt_and_template() {
    let bin = inspector().await;
    let db = fresh_db().await;

    // --strict fails (exit 6) on any tool schema the Inspector finds unportable.
    let listed = inspect(&bin, &db, &["--method", "tools/list", "--strict"]).await;
    let tools = listed["tools"].as_array().expect("a tools array");
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let mut expected = TOOLS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for tool in tools {
        let name = &tool["name"];
        let description = tool["description"].as_str().unwrap_or_default();
        assert!(
            description.len() > 40,
            "{name}: description {description:?}"
        );
        assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
        assert_eq!(tool["outputSchema"]["type"], "object", "{name}");
        let annotations = &tool["annotations"];
        assert!(annotations["title"].is_string(), "{name}: {annotations}");
        assert!(
            annotations["readOnlyHint"].is_boolean(),
            "{name}: {annotations}"
        );
        assert_eq!(annotations["openWorldHint"], false, "{name}");
    }
    let append = tools
        .iter()
        .find(|t| t["name"] == "append_messages")
        .unwrap();
    assert!(append["inputSchema"]["properties"]["expected_version"].is_object());
    assert_eq!(
        append["inputSchema"]["required"],
        serde_json::json!(["messages"])
    );

    let prompts = inspect(&bin, &db, &["--method", "prompts/list"]).await;
    let mut names: Vec<&str> = prompts["prompts"]
        .as_array()
        .expect("a prompts array")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["recall", "summarize_context"]);

    let templates = inspect(&bin, &db, &["--method", "resources/templates/list"]).await;
    let uris: Vec<&str> = templates["resourceTemplates"]
        .as_array()
        .expect("a resourceTemplates array")
        .iter()
        .map(|t| t["uriTemplate"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        vec![
            "memory://memories/{id}",
            "memory://contexts/{id}",
            "memory://users/{user_id}/profile"
        ]
    );
}
