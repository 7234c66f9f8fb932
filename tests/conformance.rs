//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! pinned) against the real `mnemo serve --http 127.0.0.1:0`: every server
//! scenario that needs no fixture must pass.
//!
//! Most of the suite's server scenarios test fixtures a server under test
//! is asked to implement (tools named `test_simple_text`,
//! `test_tool_with_logging`, ..., resources `test://static-text`, prompts
//! `test_simple_prompt`, `test_prompt_with_arguments`, which
//! `completion-complete` completes too): mnemo has none of them, so those
//! scenarios cannot pass here and are not run. The fixture-free ones are
//! [`SCENARIOS`], read from the suite's `src/scenarios/server/*.ts` at the
//! pinned tag.
//!
//! Installed with npm into `$XDG_CACHE_HOME/mnemo` (else `~/.cache/mnemo`) on
//! first run, like the Inspector (tests/inspector.rs). Without Node.js and
//! npm this test fails: it is a check, not an option.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// 0.1.13 is the newest release that runs on Node.js 20 (Debian's): 0.1.14
/// and later import `fs.globSync`, which arrived in Node.js 22.
const CONFORMANCE_VERSION: &str = "0.1.13";

/// The server scenarios that need no fixture.
const SCENARIOS: [&str; 8] = [
    "server-initialize",
    "logging-set-level",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
];

/// The suite's CLI, installed on first use.
async fn conformance() -> PathBuf {
    common::npm_tool(
        "conformance",
        "@modelcontextprotocol/conformance",
        CONFORMANCE_VERSION,
        "conformance",
    )
    .await
}

/// The checks of one scenario run: what the suite wrote to checks.json.
fn checks(results: &Path) -> Vec<Value> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .expect("results directory")
        .map(|e| e.expect("results entry").path())
        .collect();
    assert_eq!(dirs.len(), 1, "one result directory per run: {dirs:?}");
    let text = std::fs::read_to_string(dirs[0].join("checks.json")).expect("checks.json");
    serde_json::from_str(&text).expect("checks.json is JSON")
}

#[tokio::test]
async fn the_official_conformance_suite_passes_every_fixture_free_server_scenario() {
    let bin = conformance().await;
    let db = fresh_db().await;
    let server = http_server(mnemo(&db, "conformance", Embed::Hash)).await;
    let work = std::env::temp_dir().join(format!("mnemo-conformance-{}", uuid::Uuid::new_v4()));
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        let results = work.join(scenario);
        std::fs::create_dir_all(&results).unwrap();
        let run = tokio::process::Command::new(&bin)
            .args(["server", "--url", &server.url, "--scenario", scenario])
            .arg("--output-dir")
            .arg(&results)
            .current_dir(&work)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("{scenario} did not finish within 2 minutes"))
            .expect("cannot run the conformance suite");
        let checks = checks(&results);
        let status = |c: &Value| c["status"].as_str().unwrap_or("").to_string();
        let passed = checks.iter().filter(|c| status(c) == "SUCCESS").count();
        let failed: Vec<&Value> = checks.iter().filter(|c| status(c) == "FAILURE").collect();
        eprintln!("{scenario}: {passed} passed, {} failed", failed.len());
        if !out.status.success() || passed == 0 || !failed.is_empty() {
            failures.push(format!(
                "{scenario} ({}): {failed:#?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
