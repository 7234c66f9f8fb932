//! Leave-one-conversation-out cross-validation of the search tuning
//! (`--cv`, issue 15): every point of a parameter grid is run once over
//! all questions (the store's [`Tuning`] set between runs, one ingest);
//! then, for each conversation, the point with the best mean R@10 (ties:
//! R@5, then the earlier point) on the other four is chosen and scored on
//! the held-out one. Prints markdown tables: the folds, their mean, the
//! point chosen on all five with its (in-sample) score, and for each grid
//! axis the cross-validated gain of letting it vary against holding it at
//! its first listed value, with the search latency beside it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use mnemo::store::Store;
use mnemo::store::tuning::Tuning;
use serde_json::json;

use super::Question;
use super::bench_common::{Client, call, ms, percentile};

/// Today's defaults lie inside; each axis lists its "off" or current value
/// first (the feature gains compare against it).
pub const DEFAULT_GRID: &str = "rrf_k=4,2.5,6;neighbour=0.45,0.3,0.6;neighbour_reach=1,2,3";

pub struct Grid {
    pub axes: Vec<(String, Vec<f64>)>,
    /// Each point's value index on every axis, and its tuning.
    pub points: Vec<(Vec<usize>, Tuning)>,
}

impl Grid {
    fn label(&self, point: usize) -> String {
        let (idx, _) = &self.points[point];
        self.axes
            .iter()
            .zip(idx)
            .filter(|((_, values), _)| values.len() > 1)
            .map(|((name, values), i)| format!("{name}={}", values[*i]))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Parses `name=v1,v2;name=v1` into the product of the values.
pub fn parse_grid(spec: &str) -> anyhow::Result<Grid> {
    let mut axes = Vec::new();
    for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, values) = part
            .split_once('=')
            .context("grid axis needs name=values")?;
        let values = values
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("grid axis {name}"))?;
        set(&mut Tuning::default(), name.trim(), values[0])?;
        axes.push((name.trim().to_string(), values));
    }
    let mut points = vec![(Vec::new(), Tuning::DEFAULT)];
    for (name, values) in &axes {
        let mut next = Vec::new();
        for (idx, tuning) in &points {
            for (i, v) in values.iter().enumerate() {
                let mut t = *tuning;
                set(&mut t, name, *v)?;
                let mut idx = idx.clone();
                idx.push(i);
                next.push((idx, t));
            }
        }
        points = next;
    }
    Ok(Grid { axes, points })
}

fn set(t: &mut Tuning, name: &str, v: f64) -> anyhow::Result<()> {
    match name {
        "rrf_k" => t.rrf_k = v,
        "w_semantic" => t.w_semantic = v,
        "w_keyword" => t.w_keyword = v,
        "w_time" => t.w_time = v,
        "neighbour" => t.neighbour = v,
        "neighbour_pool" => t.neighbour_pool = v as i64,
        "neighbour_reach" => t.neighbour_reach = v as i64,
        "neighbour_falloff" => t.neighbour_falloff = v,
        other => bail!("unknown grid axis {other}"),
    }
    Ok(())
}

/// One grid point's recall@(1, 5, 10, 25) per question, and its latency.
pub struct Run {
    per_question: Vec<[f64; 4]>,
    p50: Duration,
}

pub async fn run_grid(
    client: &Client,
    store: &Store,
    grid: &Grid,
    questions: &[Question],
    id_to_turns: &HashMap<String, Vec<String>>,
    concurrency: usize,
) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    let started = Instant::now();
    for (n, (_, tuning)) in grid.points.iter().enumerate() {
        store.set_tuning(*tuning)?;
        let results: Vec<anyhow::Result<([f64; 4], Duration)>> =
            futures::stream::iter(questions.iter().map(|q| async move {
                let asked = Instant::now();
                let found = call(
                    client,
                    "search_memories",
                    json!({"query": q.text, "user_id": q.user, "limit": 25}),
                )
                .await?;
                Ok((super::recall(&found, q, id_to_turns)?, asked.elapsed()))
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let mut per_question = Vec::with_capacity(results.len());
        let mut latencies = Vec::with_capacity(results.len());
        for r in results {
            let (recall, latency) = r?;
            per_question.push(recall);
            latencies.push(latency);
        }
        latencies.sort();
        let run = Run {
            per_question,
            p50: percentile(&latencies, 0.5),
        };
        let all: Vec<usize> = (0..questions.len()).collect();
        let (r5, r10) = mean(&run, &all);
        eprintln!(
            "[{:>4.0} s] point {}/{} {}: R@5 {r5:.3} R@10 {r10:.3}, p50 {:.1} ms",
            started.elapsed().as_secs_f64(),
            n + 1,
            grid.points.len(),
            grid.label(n),
            ms(run.p50)
        );
        runs.push(run);
    }
    store.set_tuning(Tuning::DEFAULT)?;
    Ok(runs)
}

/// Mean R@5 and R@10 over the questions `idx`.
fn mean(run: &Run, idx: &[usize]) -> (f64, f64) {
    let n = idx.len().max(1) as f64;
    let sum = |k: usize| idx.iter().map(|&i| run.per_question[i][k]).sum::<f64>() / n;
    (sum(1), sum(2))
}

/// The point among `candidates` with the best mean R@10 on `train`, then
/// R@5, then the earliest.
fn choose(runs: &[Run], candidates: &[usize], train: &[usize]) -> usize {
    let mut best = candidates[0];
    let mut best_score = mean(&runs[best], train);
    for &c in &candidates[1..] {
        let (r5, r10) = mean(&runs[c], train);
        if r10 > best_score.1 || (r10 == best_score.1 && r5 > best_score.0) {
            best = c;
            best_score = (r5, r10);
        }
    }
    best
}

/// Cross-validation of choosing among `candidates`: each fold's chosen
/// point, and the held-out recall pooled over all questions.
fn cross_validate(
    runs: &[Run],
    candidates: &[usize],
    folds: &[(String, Vec<usize>)],
    n: usize,
) -> (Vec<usize>, Vec<[f64; 4]>) {
    let mut chosen = Vec::new();
    let mut held_out = vec![[0.0; 4]; n];
    for (_, test) in folds {
        let train: Vec<usize> = (0..n).filter(|i| !test.contains(i)).collect();
        let c = choose(runs, candidates, &train);
        for &i in test {
            held_out[i] = runs[c].per_question[i];
        }
        chosen.push(c);
    }
    (chosen, held_out)
}

fn cell(rows: &[[f64; 4]], idx: &[usize]) -> String {
    let n = idx.len().max(1) as f64;
    // (+ 0.0 turns a -0.0 sum of nothing into 0.)
    let m = |k: usize| idx.iter().map(|&i| rows[i][k]).sum::<f64>() / n + 0.0;
    format!("{:.3} / {:.3}", m(1), m(2))
}

/// Per-category cells (R@5 / R@10) of `rows` over the questions `idx`.
fn categories(rows: &[[f64; 4]], idx: &[usize], questions: &[Question]) -> String {
    (1..=4)
        .map(|c| {
            let of: Vec<usize> = idx
                .iter()
                .copied()
                .filter(|&i| questions[i].category == c)
                .collect();
            cell(rows, &of)
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn report(grid: &Grid, runs: &[Run], questions: &[Question]) {
    let n = questions.len();
    let mut folds: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        match folds.iter_mut().find(|(u, _)| *u == q.user) {
            Some((_, idx)) => idx.push(i),
            None => folds.push((q.user.clone(), vec![i])),
        }
    }
    let all_points: Vec<usize> = (0..runs.len()).collect();
    let all: Vec<usize> = (0..n).collect();
    let (chosen, held_out) = cross_validate(runs, &all_points, &folds, n);

    println!(
        "\nLeave-one-conversation-out, {} grid points, {n} questions (categories 1-4)",
        runs.len()
    );
    println!(
        "grid: {}",
        grid.axes
            .iter()
            .map(|(a, v)| format!("{a}={v:?}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("\nR@5 / R@10 of the held-out conversation:\n");
    println!(
        "| held out | n | chosen on the other four | overall | 1 multi-hop | 2 temporal | 3 open-domain | 4 single-hop |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut fold_means = (0.0, 0.0);
    for ((user, test), c) in folds.iter().zip(&chosen) {
        let (r5, r10) = mean(&runs[*c], test);
        fold_means.0 += r5 / folds.len() as f64;
        fold_means.1 += r10 / folds.len() as f64;
        println!(
            "| {user} | {} | {} | {} | {} |",
            test.len(),
            grid.label(*c),
            cell(&held_out, test),
            categories(&held_out, test, questions)
        );
    }
    println!(
        "| **mean of folds** | | | **{:.3} / {:.3}** | | | | |",
        fold_means.0, fold_means.1
    );
    println!(
        "| pooled over questions | {n} | | {} | {} |",
        cell(&held_out, &all),
        categories(&held_out, &all, questions)
    );

    let best = choose(runs, &all_points, &all);
    println!(
        "\nChosen on all five: {} -> full dev set {} ({})",
        grid.label(best),
        cell(&runs[best].per_question, &all),
        categories(&runs[best].per_question, &all, questions)
    );
    if let Some(today) = grid.points.iter().position(|(_, t)| *t == Tuning::DEFAULT) {
        let per_fold: Vec<String> = folds
            .iter()
            .map(|(u, test)| format!("{u} {}", cell(&runs[today].per_question, test)))
            .collect();
        println!(
            "Today's defaults (no choice): full dev set {}; per conversation: {}",
            cell(&runs[today].per_question, &all),
            per_fold.join(", ")
        );
    }

    // Each axis: choosing over the whole grid against over the points that
    // hold it at its first value.
    println!(
        "\n| axis | values | CV R@5 / R@10 holding it at the first | CV gain of varying it | p50 at first / other values |"
    );
    println!("|---|---|---|---|---|");
    let (cv5, cv10) = pooled(&held_out);
    for (a, (name, values)) in grid.axes.iter().enumerate() {
        if values.len() < 2 {
            continue;
        }
        let first: Vec<usize> = all_points
            .iter()
            .copied()
            .filter(|&p| grid.points[p].0[a] == 0)
            .collect();
        let (_, fixed) = cross_validate(runs, &first, &folds, n);
        let (f5, f10) = pooled(&fixed);
        let p50 = |on: bool| {
            let ps: Vec<f64> = all_points
                .iter()
                .filter(|&&p| (grid.points[p].0[a] == 0) != on)
                .map(|&p| ms(runs[p].p50))
                .collect();
            ps.iter().sum::<f64>() / ps.len().max(1) as f64
        };
        println!(
            "| {name} | {values:?} | {f5:.3} / {f10:.3} | {:+.3} / {:+.3} | {:.1} / {:.1} ms |",
            cv5 - f5,
            cv10 - f10,
            p50(false),
            p50(true)
        );
    }
}

fn pooled(rows: &[[f64; 4]]) -> (f64, f64) {
    let n = rows.len().max(1) as f64;
    (
        rows.iter().map(|r| r[1]).sum::<f64>() / n,
        rows.iter().map(|r| r[2]).sum::<f64>() / n,
    )
}
