//! The two ways a statement can go out (issue 17), compared in one process
//! on one database: prepared once per connection and cached (a direct
//! connection) against one unnamed parse-bind-execute with learned parameter
//! types (behind a transaction pooler). The store's own hybrid search and
//! `get` run in rounds that alternate the mode (and its order) so both see
//! the same machine load; the query vectors are stored memories' own, so no
//! embedder runs and the difference is the statements'.
//!
//! ```text
//! cargo build --release --example pooler_ab
//! DATABASE_URL='host=/tmp/mnemo-bench-0/run user=postgres dbname=loadgen_10000' \
//!     target/release/examples/pooler_ab [--rounds 10] [--queries 50]
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use mnemo::db::statements::set_pooled;
use mnemo::store::search::{Query, SearchMode};
use mnemo::store::{ListFilter, Store};

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut rounds = 10usize;
    let mut queries = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v: usize = args.next().context("a value")?.parse()?;
        match a.as_str() {
            "--rounds" => rounds = v,
            "--queries" => queries = v,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let config = mnemo::config::Config::from_env()?;
    let url = config.database_url.clone().context("set DATABASE_URL")?;
    let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = sql
        .query_one(
            "SELECT c.name, u.external_id, count(*) AS n FROM memories m \
             JOIN companions c ON c.id = m.companion_id JOIN users u ON u.id = m.user_id \
             GROUP BY 1, 2 ORDER BY n DESC LIMIT 1",
            &[],
        )
        .await?;
    let (companion, user, scope_size): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
    let samples = sql
        .query(
            "SELECT id, embedding::real[], split_part(content, ' ', 1) || ' ' || split_part(content, ' ', 2) \
             FROM memories WHERE embedding IS NOT NULL ORDER BY id LIMIT $1",
            &[&(queries as i64)],
        )
        .await?;
    let dim = samples
        .first()
        .map(|r| r.get::<_, Vec<f32>>(1).len())
        .context("no embedded memories")?;
    set_pooled(false);
    let store = Store::new(mnemo::db::connect(&config, dim).await?, dim);
    let scope = store.companion(&companion).await?;
    let filter = ListFilter {
        user: user.clone(),
        ..Default::default()
    };
    println!(
        "scope: companion {companion}, user {user}, {scope_size} memories; {queries} queries x {rounds} rounds per mode"
    );
    let mut search = [Vec::new(), Vec::new()];
    let mut get = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for pooled in order {
            set_pooled(pooled);
            for r in &samples {
                let query = Query {
                    text: r.get(2),
                    mode: SearchMode::Hybrid,
                    windows: Vec::new(),
                    limit: 10,
                };
                let started = Instant::now();
                let keywords = store.search_keywords(&scope, &filter, &query).await?;
                store
                    .search(&scope, &filter, &query, Some(r.get(1)), keywords)
                    .await?;
                search[pooled as usize].push(started.elapsed());
                let started = Instant::now();
                store.get(&scope, r.get(0)).await?;
                get[pooled as usize].push(started.elapsed());
            }
        }
    }
    for (name, mut runs) in [("hybrid search", search), ("get", get)] {
        let [direct, pooled] = &mut runs;
        let (d50, d95) = (percentile(direct, 0.5), percentile(direct, 0.95));
        let (p50, p95) = (percentile(pooled, 0.5), percentile(pooled, 0.95));
        println!(
            "{name}: prepared p50 {:.2} ms p95 {:.2} ms | unnamed p50 {:.2} ms p95 {:.2} ms | unnamed/prepared p50 {:.2}",
            d50.as_secs_f64() * 1e3,
            d95.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            p50.as_secs_f64() / d50.as_secs_f64()
        );
    }
    Ok(())
}
