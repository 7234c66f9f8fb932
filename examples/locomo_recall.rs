//! LoCoMo retrieval benchmark: turn-level recall@k of `search_memories`.
//!
//! Stores every dialog turn of each LoCoMo conversation as one memory (one
//! user per conversation, `occurred_at` = the session's date) through
//! `store_memories`, asks every question through `search_memories`, and
//! reports recall@1/5/10/25 overall (categories 1-4) and per category,
//! search latency and ingest rate. Both calls go through a real MCP client
//! talking to mnemo's server in-process, so the full tool path is measured.
//!
//! ```text
//! cargo run --release --example locomo_recall [-- PATH/TO/locomo-dev.json] [--mode hybrid|semantic|keyword] [--db NAME]
//! cargo run --example locomo_recall -- --db NAME --cv [--grid 'rrf_k=3,4,6;neighbour=0.35,0.45'] [--concurrency 2]
//! ```
//!
//! `--cv` runs a parameter grid (see `cv.rs`: every combination of the
//! listed values of [`mnemo::store::tuning::Tuning`], set on the server's
//! store between runs) and cross-validates it leave-one-conversation-out.
//!
//! Uses DATABASE_URL if set, else an embedded cluster in /tmp/mnemo-bench-$UID
//! with a fresh database per run; `--db NAME` reuses (or creates) a named
//! database there and skips ingest when it already holds the turns, so
//! ranking changes can be measured in a minute. The dataset is read from
//! ../shared/datasets/locomo/locomo-dev.json by default and never copied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use bench_common::{call, ms, percentile};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;

#[path = "common/mod.rs"]
mod bench_common;
#[path = "locomo_recall/cv.rs"]
mod cv;

const KS: [usize; 4] = [1, 5, 10, 25];

pub struct Question {
    pub user: String,
    pub text: String,
    pub category: u64,
    pub evidence: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut path = bench_common::locomo::DEFAULT_PATH.to_string();
    let mut mode = "hybrid".to_string();
    let mut db_name = None;
    let mut grid: Option<String> = None;
    let mut concurrency = 2usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mode" => mode = args.next().context("--mode needs a value")?,
            "--db" => db_name = Some(args.next().context("--db needs a name")?),
            "--cv" => grid = grid.or(Some(cv::DEFAULT_GRID.to_string())),
            "--grid" => grid = Some(args.next().context("--grid needs a spec")?),
            "--concurrency" => {
                concurrency = args
                    .next()
                    .context("--concurrency needs a number")?
                    .parse()?
            }
            other => path = other.to_string(),
        }
    }
    let conversations = bench_common::locomo::load(&path)?;

    let (client, app, ingested) = start_server(db_name.as_deref()).await?;

    // Ingest (each memory's metadata names its dialog turn).
    let mut id_to_turns: HashMap<String, Vec<String>> = HashMap::new();
    let mut questions = Vec::new();
    let mut dropped = 0usize;
    let mut evidence_cleaned = 0usize;
    let mut turns_total = 0usize;
    let ingest_started = Instant::now();
    for conv in &conversations {
        let user = conv.sample_id.clone();
        let mut known: HashSet<String> = HashSet::new();
        for session in &conv.sessions {
            let date = session.at.to_rfc3339();
            let mut batch = Vec::new();
            let mut ids = Vec::new();
            for t in &session.turns {
                known.insert(t.dia_id.clone());
                ids.push(t.dia_id.clone());
                batch.push(
                    json!({"content": t.content(), "user_id": user, "occurred_at": date,
                                  "kind": "experience", "metadata": {"dia_id": t.dia_id}}),
                );
            }
            turns_total += batch.len();
            if ingested {
                continue;
            }
            for (chunk, chunk_ids) in batch.chunks(500).zip(ids.chunks(500)) {
                let stored = call(&client, "store_memories", json!({"memories": chunk})).await?;
                let results = stored["results"].as_array().context("results")?;
                for (r, dia) in results.iter().zip(chunk_ids) {
                    let id = r["id"].as_str().context("id")?.to_string();
                    id_to_turns.entry(id).or_default().push(dia.clone());
                }
            }
        }
        for q in &conv.questions {
            let (evidence, changed) = clean_evidence(&q.evidence, &known);
            if changed {
                evidence_cleaned += 1;
            }
            if evidence.is_empty() {
                dropped += 1;
                continue;
            }
            questions.push(Question {
                user: user.clone(),
                text: q.text.clone(),
                category: q.category,
                evidence,
            });
        }
    }
    let ingest = ingest_started.elapsed();

    if let Some(spec) = grid {
        let grid = cv::parse_grid(&spec)?;
        // Adversarial questions (category 5) are not scored: not asked.
        questions.retain(|q| (1..=4).contains(&q.category));
        let runs = cv::run_grid(
            &client,
            &app.store,
            &grid,
            &questions,
            &id_to_turns,
            concurrency,
        )
        .await?;
        client.cancel().await.ok();
        cv::report(&grid, &runs, &questions);
        return Ok(());
    }

    // Ask.
    let mut per_cat: BTreeMap<u64, Vec<[f64; 4]>> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(questions.len());
    for q in &questions {
        let started = Instant::now();
        let found = call(
            &client,
            "search_memories",
            json!({"query": q.text, "user_id": q.user, "limit": 25, "mode": mode}),
        )
        .await?;
        latencies.push(started.elapsed());
        per_cat
            .entry(q.category)
            .or_default()
            .push(recall(&found, q, &id_to_turns)?);
    }
    client.cancel().await.ok();

    println!("LoCoMo turn-level recall ({path}, mode {mode})");
    println!(
        "questions kept: {} (dropped {dropped} with no valid evidence; {evidence_cleaned} evidence lists cleaned)",
        questions.len()
    );
    println!(
        "{:<22} {:>5} {:>7} {:>7} {:>7} {:>7}",
        "category", "n", "R@1", "R@5", "R@10", "R@25"
    );
    let names = [
        (1, "1 multi-hop"),
        (2, "2 temporal"),
        (3, "3 open-domain"),
        (4, "4 single-hop"),
    ];
    let mut overall: Vec<[f64; 4]> = Vec::new();
    for (cat, name) in names {
        let rows = per_cat.get(&cat).cloned().unwrap_or_default();
        print_row(name, &rows);
        overall.extend(rows);
    }
    print_row("overall (1-4)", &overall);
    print_row(
        "5 adversarial",
        per_cat.get(&5).map(Vec::as_slice).unwrap_or(&[]),
    );
    latencies.sort();
    println!(
        "search latency: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} searches, query embedding included)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.95)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
        latencies.len()
    );
    if ingested {
        println!("ingest: skipped ({turns_total} turns already in the database)");
    } else {
        println!(
            "ingest: {turns_total} turns in {:.1} s = {:.0} memories/s (store_memories, batches per session)",
            ingest.as_secs_f64(),
            turns_total as f64 / ingest.as_secs_f64()
        );
    }
    Ok(())
}

/// Recall@[`KS`] of one question's search results `found`.
pub fn recall(
    found: &serde_json::Value,
    q: &Question,
    id_to_turns: &HashMap<String, Vec<String>>,
) -> anyhow::Result<[f64; 4]> {
    let ranked: Vec<Vec<String>> = found["results"]
        .as_array()
        .context("results")?
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default();
            // Identical turns are stored once: a memory may stand for several.
            let mut turns = id_to_turns.get(id).cloned().unwrap_or_default();
            if let Some(dia) = r["metadata"]["dia_id"].as_str()
                && !turns.iter().any(|t| t == dia)
            {
                turns.push(dia.to_string());
            }
            turns
        })
        .collect();
    let mut recall = [0.0; 4];
    for (i, k) in KS.iter().enumerate() {
        let top: HashSet<&str> = ranked
            .iter()
            .take(*k)
            .flatten()
            .map(String::as_str)
            .collect();
        let hit = q
            .evidence
            .iter()
            .filter(|e| top.contains(e.as_str()))
            .count();
        recall[i] = hit as f64 / q.evidence.len() as f64;
    }
    Ok(recall)
}

fn print_row(name: &str, rows: &[[f64; 4]]) {
    let n = rows.len().max(1) as f64;
    let mean = |i: usize| rows.iter().map(|r| r[i]).sum::<f64>() / n;
    println!(
        "{:<22} {:>5} {:>7.3} {:>7.3} {:>7.3} {:>7.3}",
        name,
        rows.len(),
        mean(0),
        mean(1),
        mean(2),
        mean(3)
    );
}

/// Splits `;`-joined ids, repairs `D:11:26` and leading zeros (`D30:05`),
/// and drops ids that name no turn. Returns whether anything changed.
fn clean_evidence(raw: &[String], known: &HashSet<String>) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    for item in raw {
        for part in item.split([';', ',']) {
            let p = part.trim().trim_start_matches("D:").trim_start_matches('D');
            let mut nums = p.split(':').filter_map(|n| n.trim().parse::<u32>().ok());
            if let (Some(s), Some(t)) = (nums.next(), nums.next()) {
                let id = format!("D{s}:{t}");
                if known.contains(&id) && !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    }
    let changed = out.len() != raw.len() || out.iter().zip(raw).any(|(a, b)| a != b);
    (out, changed)
}

/// mnemo's server on a fresh database (or on DATABASE_URL, which should
/// then be an empty database, or on the named `db`), connected to an
/// in-process client. Also says whether the turns are already stored.
async fn start_server(
    db: Option<&str>,
) -> anyhow::Result<(
    RunningService<RoleClient, ()>,
    std::sync::Arc<mnemo::app::App>,
    bool,
)> {
    let mut config = mnemo::config::Config::from_env()?;
    if config.database_url.is_none() {
        let cluster = bench_common::bench_cluster(&config, "mnemo-bench")?;
        let admin = bench_common::connect(&cluster, "postgres").await?;
        let name = match db {
            Some(name) => name.to_string(),
            None => format!("locomo_{}", chrono::Utc::now().format("%Y%m%d%H%M%S")),
        };
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await?;
        }
        config.database_url = Some(bench_common::database_url(&cluster, &name));
    }
    let app = mnemo::app::start(&config, tokio_util::sync::CancellationToken::new()).await?;
    let ingested = app.store.stats(&app.scope, None).await?.total > 0;
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = mnemo::tools::MnemoServer::new(app.clone());
    tokio::spawn(async move {
        match server.serve(server_io).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => eprintln!("server failed: {e}"),
        }
    });
    Ok((().serve(client_io).await?, app, ingested))
}
