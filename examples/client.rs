//! A small MCP client that stores two memories and searches them, over
//! either transport.
//!
//! ```text
//! cargo run --example client -- http http://127.0.0.1:8080/mcp
//! cargo run --example client -- stdio target/release/mnemo [mnemo args...]
//! ```

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client: RunningService<RoleClient, ()> = match args.first().map(String::as_str) {
        Some("http") => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:8080/mcp".into());
            ().serve(StreamableHttpClientTransport::from_uri(url))
                .await?
        }
        Some("stdio") => {
            let binary = args.get(1).cloned().unwrap_or_else(|| "mnemo".into());
            let mut cmd = tokio::process::Command::new(binary);
            cmd.args(&args[2..]).args(["serve", "--stdio"]);
            ().serve(TokioChildProcess::new(cmd)?).await?
        }
        _ => anyhow::bail!("usage: client http [URL] | client stdio [PATH-TO-MNEMO] [ARGS...]"),
    };
    let info = client.peer_info().and_then(|i| i.server_info.clone());
    println!("connected to {:?}", info.map(|i| (i.name, i.version)));

    for content in [
        "The user adopted a beagle named Max",
        "The user prefers concise answers",
    ] {
        let result = call(
            &client,
            "store_memory",
            json!({"content": content, "user_id": "example"}),
        )
        .await?;
        println!("store_memory: {}", text(&result));
    }
    let result = call(
        &client,
        "search_memories",
        json!({"query": "what pet does the user have?", "user_id": "example", "limit": 2}),
    )
    .await?;
    println!("search_memories:\n{}", text(&result));
    client.cancel().await?;
    Ok(())
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: serde_json::Value,
) -> anyhow::Result<CallToolResult> {
    let serde_json::Value::Object(map) = args else {
        anyhow::bail!("arguments must be an object")
    };
    Ok(client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(map))
        .await?)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}
