//! Load benchmark: mnemo's server as a separate process, driven by real MCP
//! clients over Streamable HTTP (and stdio for single-client latency).
//!
//! For each store size N it seeds N memories, measures the floor (one query
//! embedding alone, one bare HNSW query alone), ingest through the tools, a
//! mixed workload (70% search, 20% store, 10% get/relate) at each
//! concurrency, cheap `get_memory` calls at 32 sessions, and the server's
//! peak RSS; then cold start to `initialize` over stdio.
//!
//! ```text
//! cargo build --release --bin mnemo --example loadgen
//! target/release/examples/loadgen [--sizes 1000,10000,100000] [--concurrency 1,16,64]
//!     [--secs 15] [--server target/release/mnemo] [--distinct 4000]
//!     [--phases all|floor,breakdown,mixed,cheap,stdio,cold]
//! ```
//!
//! Databases live in the embedded cluster at /tmp/mnemo-bench-$UID (one per
//! size, `loadgen_<N>`, kept between runs so seeding happens once). Seeding
//! takes a direct bulk path: `--distinct` texts are embedded for real and the
//! remaining memories are those texts plus an entry number, with their
//! vector jittered (cosine ≈ 0.95 to the original), so the HNSW graph holds
//! N distinct points without embedding N texts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench_common::{Client, Server, call, connect, ms, percentile, print_machine};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rmcp::ServiceExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[path = "common/mod.rs"]
mod bench_common;

const USER: &str = "loadgen-user";
const COMPANION: &str = "loadgen";

struct Opts {
    sizes: Vec<usize>,
    concurrency: Vec<usize>,
    secs: u64,
    server: PathBuf,
    distinct: usize,
    phases: Vec<String>,
}

impl Opts {
    fn wants(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase || p == "all")
    }
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        sizes: vec![1_000, 10_000, 100_000],
        concurrency: vec![1, 16, 64],
        secs: 15,
        server: PathBuf::from("target/release/mnemo"),
        distinct: 4_000,
        phases: vec!["all".into()],
    };
    let list = |v: String| -> anyhow::Result<Vec<usize>> {
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .context("a comma-separated list of numbers")
            })
            .collect()
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--sizes" => o.sizes = list(value()?)?,
            "--concurrency" => o.concurrency = list(value()?)?,
            "--secs" => o.secs = value()?.parse()?,
            "--server" => o.server = value()?.into(),
            "--distinct" => o.distinct = value()?.parse()?,
            "--phases" => o.phases = value()?.split(',').map(str::to_string).collect(),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = parse_opts()?;
    bench_common::require_server(&opts.server)?;
    let config = mnemo::config::Config::from_env()?;
    let cluster = bench_common::bench_cluster(&config, "mnemo-bench")?;
    let admin = connect(&cluster, "postgres").await?;
    let embedder = mnemo::embed::LazyEmbedder::from_config(&config.embedder)?;
    let embedder = embedder.get().await?;
    print_machine();

    for &n in &opts.sizes {
        let dbname = format!("loadgen_{n}");
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE \"{dbname}\""))
                .await?;
        }
        let url = bench_common::database_url(&cluster, &dbname);
        println!("\n=== {n} memories (database {dbname}) ===");
        let server = Server::start(&opts.server, &url, &[("MNEMO_COMPANION", COMPANION)]).await?;
        let setup = server.client().await?;
        // Creates the companion and user rows the bulk path needs.
        call(
            &setup,
            "store_memory",
            json!({"content": "loadgen anchor memory", "user_id": USER}),
        )
        .await?;
        let db = connect(&cluster, &dbname).await?;
        seed(&db, embedder.as_ref(), n, opts.distinct).await?;
        let ids = memory_ids(&db).await?;

        let floor = measure_floor(&db, embedder.as_ref()).await?;
        println!(
            "floor: embed one query p50 {:.2} ms + HNSW query p50 {:.2} ms = {:.2} ms; \
             bare embedder {:.0} texts/s (batches of 100)",
            ms(floor.embed_p50),
            ms(floor.hnsw_p50),
            ms(floor.embed_p50 + floor.hnsw_p50),
            floor.embed_rate
        );
        if opts.wants("floor") {
            let ingest = measure_ingest(&setup, &server).await?;
            println!(
                "ingest: store_memory {:.1}/s single stream; store_memories {:.1} memories/s \
             (batches of 100) = {:.2} x bare embedder",
                ingest.single_rate,
                ingest.batch_rate,
                ingest.batch_rate / floor.embed_rate
            );
        }
        setup.cancel().await.ok();

        if opts.wants("breakdown") {
            breakdown(&server, 150).await?;
        }
        let ids = Arc::new(ids);
        for &c in opts.concurrency.iter().filter(|_| opts.wants("mixed")) {
            let mut report = run_mixed(&server, c, opts.secs, ids.clone()).await?;
            report.print(&format!("mixed, {c} sessions, HTTP"));
            if c == 1
                && let Some(search) = report.tools.get("search_memories")
            {
                let p50 = percentile(search, 0.5);
                println!(
                    "search p50 / floor = {:.2} (target <= 1.3)",
                    p50.as_secs_f64() / (floor.embed_p50 + floor.hnsw_p50).as_secs_f64()
                );
            }
        }
        if opts.wants("cheap") {
            let mut cheap = run_cheap(&server, 32, opts.secs, ids.clone()).await?;
            cheap.print("get_memory only, 32 sessions, HTTP");
        }
        if opts.wants("stdio") {
            let mut stdio = run_stdio_searches(&opts.server, &url, 200).await?;
            stdio.print("search_memories, 1 client, stdio");
            if let Some(search) = stdio.tools.get("search_memories") {
                let p50 = percentile(search, 0.5);
                println!(
                    "stdio search p50 / floor = {:.2} (target <= 1.3)",
                    p50.as_secs_f64() / (floor.embed_p50 + floor.hnsw_p50).as_secs_f64()
                );
            }
        }
        let (rss, hwm) = server.rss();
        println!(
            "server memory: RSS {} MB now, peak {} MB",
            rss / 1024,
            hwm / 1024
        );
        server.stop().await;
    }

    let url = bench_common::database_url(
        &cluster,
        &format!("loadgen_{}", opts.sizes.first().copied().unwrap_or(1000)),
    );
    if opts.wants("cold") {
        cold_start(&opts.server, &url).await?;
    }
    Ok(())
}

// ---- synthetic memories and queries -------------------------------------

const PEOPLE: [&str; 24] = [
    "I",
    "My sister",
    "My brother",
    "My partner",
    "My boss",
    "Our neighbour",
    "My friend Ana",
    "My dad",
    "My mum",
    "Grandma",
    "My colleague Tom",
    "My son",
    "My daughter",
    "Uncle Joe",
    "My roommate",
    "Coach Lee",
    "My best friend",
    "Our dentist",
    "My cousin Mia",
    "The landlord",
    "My teacher",
    "Aunt Rosa",
    "My manager",
    "Our vet",
];
const ACTIVITIES: [&str; 40] = [
    "went hiking",
    "baked sourdough bread",
    "started learning the cello",
    "adopted a beagle",
    "painted a sunset",
    "ran a half marathon",
    "planted tomatoes",
    "fixed the bicycle",
    "read a mystery novel",
    "booked flights",
    "tried a new ramen place",
    "lost the car keys",
    "signed up for pottery",
    "watched a documentary about whales",
    "repainted the kitchen",
    "went to a jazz concert",
    "visited the art museum",
    "learned to make dumplings",
    "volunteered at the shelter",
    "started a vegetable garden",
    "bought a used camera",
    "went camping",
    "had a job interview",
    "cooked lasagna",
    "practised yoga",
    "joined a book club",
    "went skiing",
    "built a bookshelf",
    "got a flu shot",
    "moved into a new flat",
    "celebrated a birthday",
    "wrote a short story",
    "went fishing",
    "took a cooking class",
    "repaired the roof",
    "went to the dentist",
    "sold the old sofa",
    "adopted a kitten",
    "planned a wedding",
    "studied for the exam",
];
const PLACES: [&str; 20] = [
    "in the mountains",
    "near the lake",
    "downtown",
    "at the community centre",
    "in Lisbon",
    "at home",
    "in the park",
    "by the beach",
    "at the office",
    "in Kyoto",
    "at the farmers market",
    "in the garden",
    "at school",
    "in Berlin",
    "at the gym",
    "in the countryside",
    "at the library",
    "in Toronto",
    "at the hospital",
    "on the island",
];
const FEELINGS: [&str; 12] = [
    "loved every minute",
    "found it exhausting",
    "wants to do it again",
    "was nervous",
    "felt proud",
    "thought it was expensive",
    "had a great time",
    "was disappointed",
    "felt relaxed",
    "laughed a lot",
    "got a little lost",
    "made new friends",
];

fn memory_text(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, xs: &[&'static str]| xs[rng.random_range(0..xs.len())];
    format!(
        "{} {} {} and {}.",
        pick(rng, &PEOPLE),
        pick(rng, &ACTIVITIES),
        pick(rng, &PLACES),
        pick(rng, &FEELINGS)
    )
}

fn query_text(rng: &mut StdRng) -> String {
    let pick = |rng: &mut StdRng, xs: &[&'static str]| xs[rng.random_range(0..xs.len())];
    let question = match rng.random_range(0..4) {
        0 => format!(
            "what did {} do {}?",
            pick(rng, &PEOPLE).to_lowercase(),
            pick(rng, &PLACES)
        ),
        1 => format!("who {}?", pick(rng, &ACTIVITIES)),
        2 => format!("when was the last time someone {}", pick(rng, &ACTIVITIES)),
        _ => format!(
            "how did it feel when {} {}",
            pick(rng, &PEOPLE).to_lowercase(),
            pick(rng, &ACTIVITIES)
        ),
    };
    format!("{question} ({})", nonce())
}

/// A made-up three-letter word, different for each of a run's first 17,576
/// queries (a run of every phase asks about 2,000 per size): the templates
/// repeat, and the server keeps the vectors of repeated queries, which would
/// flatter every search number. It adds a token or two to the query (eight
/// letters added about 1.5 ms of embedding); a few of them are words the
/// memories use ("gym", "car"), which is as harmless as in a real query.
/// Every run asks the same sequence.
fn nonce() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (0..3)
        .map(|_| {
            let letter = (b'a' + (n % 26) as u8) as char;
            n /= 26;
            letter
        })
        .collect()
}

/// Fills the database up to `n` memories for the loadgen user by bulk SQL.
async fn seed(
    db: &tokio_postgres::Client,
    embedder: &dyn mnemo::embed::Embedder,
    n: usize,
    distinct: usize,
) -> anyhow::Result<()> {
    let have: i64 = db
        .query_one(
            "SELECT count(*) FROM memories m JOIN users u ON u.id = m.user_id WHERE u.external_id = $1",
            &[&USER],
        )
        .await?
        .get(0);
    if have as usize >= n {
        // Earlier runs' ingest and mixed phases stored more: drop the newest
        // so that each size is measured at its size.
        let trimmed = db
            .execute(
                "DELETE FROM memories WHERE id IN ( \
                    SELECT m.id FROM memories m JOIN users u ON u.id = m.user_id \
                    WHERE u.external_id = $1 ORDER BY m.seq DESC LIMIT $2)",
                &[&USER, &(have - n as i64)],
            )
            .await?;
        if trimmed > 0 {
            // Now, not in the middle of the measurements: vacuuming an HNSW
            // index after deletions takes both cores for a while.
            db.batch_execute("VACUUM (ANALYZE) memories").await?;
        }
        println!("seed: {have} memories already there, {trimmed} newest removed");
        return Ok(());
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(n as u64);
    let distinct = distinct.min(n).max(1);
    let bases: Vec<String> = (0..distinct).map(|_| memory_text(&mut rng)).collect();
    let mut vectors = Vec::with_capacity(distinct);
    for chunk in bases.chunks(100) {
        vectors.extend(embedder.embed(chunk.to_vec()).await?);
    }
    let embedded = started.elapsed();
    let (companion, user) = scope_ids(db).await?;
    let insert = db
        .prepare(
            "INSERT INTO memories (companion_id, user_id, content, content_hash, kind, embedding, \
             embedding_model, occurred_at) \
             SELECT $1, $2, c, sha256(convert_to(c, 'UTF8')), 'experience', e::vector, $3, o \
             FROM unnest($4::text[], $5::text[], $6::timestamptz[]) AS t(c, e, o) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let sigma = 0.33 / (vectors.first().map_or(384, Vec::len) as f32).sqrt();
    let start_at = chrono::Utc::now() - chrono::Duration::days(730);
    let mut i = have as usize;
    while i < n {
        let end = (i + 1000).min(n);
        let mut contents = Vec::with_capacity(end - i);
        let mut embeddings = Vec::with_capacity(end - i);
        let mut times = Vec::with_capacity(end - i);
        for j in i..end {
            let b = j % distinct;
            let mut v = vectors[b].clone();
            let content = if j < distinct {
                bases[b].clone()
            } else {
                for x in v.iter_mut() {
                    *x += sigma * gaussian(&mut rng);
                }
                mnemo::embed::normalize(&mut v);
                format!("{} (entry {j})", bases[b])
            };
            contents.push(content);
            embeddings.push(format!(
                "[{}]",
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            times.push(start_at + chrono::Duration::minutes(j as i64 * 10));
        }
        db.execute(
            &insert,
            &[
                &companion,
                &user,
                &embedder.model_id(),
                &contents,
                &embeddings,
                &times,
            ],
        )
        .await?;
        i = end;
    }
    db.batch_execute("VACUUM ANALYZE memories").await?;
    println!(
        "seed: {} memories in {:.1} s ({distinct} texts embedded in {:.1} s, bulk SQL insert with the HNSW index live: {:.0} rows/s)",
        n - have as usize,
        started.elapsed().as_secs_f64(),
        embedded.as_secs_f64(),
        (n - have as usize) as f64 / (started.elapsed() - embedded).as_secs_f64()
    );
    Ok(())
}

/// The loadgen companion's and user's row ids.
async fn scope_ids(db: &tokio_postgres::Client) -> anyhow::Result<(uuid::Uuid, uuid::Uuid)> {
    let row = db
        .query_one(
            "SELECT c.id, u.id FROM companions c, users u WHERE c.name = $1 AND u.external_id = $2",
            &[&COMPANION, &USER],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

async fn memory_ids(db: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    Ok(db
        .query(
            "SELECT m.id::text FROM memories m JOIN users u ON u.id = m.user_id \
             WHERE u.external_id = $1 ORDER BY random() LIMIT 5000",
            &[&USER],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

// ---- floor and ingest -----------------------------------------------------

struct Floor {
    embed_p50: Duration,
    hnsw_p50: Duration,
    embed_rate: f64,
}

async fn measure_floor(
    db: &tokio_postgres::Client,
    embedder: &dyn mnemo::embed::Embedder,
) -> anyhow::Result<Floor> {
    let mut rng = StdRng::seed_from_u64(7);
    let queries: Vec<String> = (0..60).map(|_| query_text(&mut rng)).collect();
    let mut embed_times = Vec::new();
    let mut vectors = Vec::new();
    for q in &queries {
        let started = Instant::now();
        let mut v = embedder.embed(vec![q.clone()]).await?;
        embed_times.push(started.elapsed());
        vectors.push(v.remove(0));
    }
    // The server's own HNSW settings (src/db/mod.rs), on the same scope.
    db.batch_execute("SET hnsw.ef_search = 100; SET hnsw.iterative_scan = relaxed_order")
        .await?;
    let (companion, user) = scope_ids(db).await?;
    // The distance the server's index serves (half precision).
    let distance = mnemo::db::halfvec_distance("m.embedding", "$3", embedder.dim());
    let hnsw = db
        .prepare(&format!(
            "SELECT m.id FROM memories m WHERE m.companion_id = $1 AND m.user_id = $2 \
             ORDER BY {distance} LIMIT 10"
        ))
        .await?;
    let vectors: Vec<pgvector::Vector> = vectors.into_iter().map(pgvector::Vector::from).collect();
    // One untimed pass brings the index into the cache, as the server's
    // searches have by the time they are timed.
    for v in &vectors {
        db.query(&hnsw, &[&companion, &user, v]).await?;
    }
    let mut hnsw_times = Vec::new();
    for v in &vectors {
        let started = Instant::now();
        db.query(&hnsw, &[&companion, &user, v]).await?;
        hnsw_times.push(started.elapsed());
    }
    // Shaped like the texts the ingest phase stores (same suffix), so the
    // ratio compares equal work.
    let texts: Vec<String> = (0..INGEST_BATCHES * 100)
        .map(|i| {
            let b = i / 100;
            let j = i % 100;
            format!(
                "{} (batch {b}.{j} {})",
                memory_text(&mut rng),
                rng.random::<u32>()
            )
        })
        .collect();
    let started = Instant::now();
    for chunk in texts.chunks(100) {
        embedder.embed(chunk.to_vec()).await?;
    }
    let embed_rate = texts.len() as f64 / started.elapsed().as_secs_f64();
    embed_times.sort();
    hnsw_times.sort();
    // Skip the first embedding (warm-up) by taking the median of the rest.
    Ok(Floor {
        embed_p50: percentile(&embed_times[1..], 0.5),
        hnsw_p50: percentile(&hnsw_times[1..], 0.5),
        embed_rate,
    })
}

struct Ingest {
    single_rate: f64,
    batch_rate: f64,
}

/// Batches of 100 in the ingest measurement (and as many texts for the bare
/// embedder): fewer left the ratio at the mercy of one slow second.
const INGEST_BATCHES: usize = 10;

async fn measure_ingest(client: &Client, server: &Server) -> anyhow::Result<Ingest> {
    let metrics_url = server.url.replace("/mcp", "/metrics");
    let http = reqwest::Client::new();
    let scrape = || async { http.get(&metrics_url).send().await?.text().await };
    let mut rng = StdRng::seed_from_u64(rand::rng().random());
    let started = Instant::now();
    let singles = 100;
    for i in 0..singles {
        let content = format!(
            "{} (single {i} {})",
            memory_text(&mut rng),
            rng.random::<u32>()
        );
        call(
            client,
            "store_memory",
            json!({"content": content, "user_id": USER}),
        )
        .await?;
    }
    let single_rate = singles as f64 / started.elapsed().as_secs_f64();
    let before = scrape().await?;
    let started = Instant::now();
    let batches = INGEST_BATCHES;
    for b in 0..batches {
        let memories: Vec<Value> = (0..100)
            .map(|i| {
                json!({"content": format!("{} (batch {b}.{i} {})", memory_text(&mut rng), rng.random::<u32>()),
                       "user_id": USER})
            })
            .collect();
        call(client, "store_memories", json!({"memories": memories})).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let batch_rate = (batches * 100) as f64 / elapsed;
    let after = scrape().await?;
    let spent = |series: &str| histogram(&after, series).0 - histogram(&before, series).0;
    let embedding = spent("mnemo_embedding_duration_seconds");
    // A batch is one multi-row INSERT, with single-row ones only for races.
    let inserts = spent("mnemo_db_statement_duration_seconds{statement=\"store_memories\"}")
        + spent("mnemo_db_statement_duration_seconds{statement=\"store_memory\"}");
    println!(
        "store_memories time: embedding {:.0}%, SQL inserts {:.0}%, the rest {:.0}%",
        100.0 * embedding / elapsed,
        100.0 * inserts / elapsed,
        100.0 * (elapsed - embedding - inserts) / elapsed
    );
    Ok(Ingest {
        single_rate,
        batch_rate,
    })
}

// ---- workloads --------------------------------------------------------------

#[derive(Default)]
struct Report {
    tools: BTreeMap<&'static str, Vec<Duration>>,
    errors: BTreeMap<String, usize>,
    elapsed: Duration,
}

impl Report {
    fn merge(&mut self, other: Report) {
        for (tool, mut times) in other.tools {
            self.tools.entry(tool).or_default().append(&mut times);
        }
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
    }

    fn print(&mut self, title: &str) {
        let total: usize = self.tools.values().map(Vec::len).sum();
        let errors: usize = self.errors.values().sum();
        println!(
            "{title}: {total} calls in {:.1} s = {:.0} calls/s, {errors} errors",
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64()
        );
        println!(
            "  {:<16} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "tool", "calls", "p50 ms", "p95 ms", "p99 ms", "calls/s"
        );
        for (tool, times) in self.tools.iter_mut() {
            times.sort();
            println!(
                "  {:<16} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                tool,
                times.len(),
                ms(percentile(times, 0.50)),
                ms(percentile(times, 0.95)),
                ms(percentile(times, 0.99)),
                times.len() as f64 / self.elapsed.as_secs_f64()
            );
        }
        for (e, n) in &self.errors {
            println!("  error x{n}: {e}");
        }
    }
}

/// One session's loop: a weighted mix of tools until `deadline`.
async fn session_loop(
    client: Client,
    deadline: Instant,
    ids: Arc<Vec<String>>,
    seed: u64,
    cheap_only: bool,
) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = Report::default();
    let mut mine: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        let roll = rng.random_range(0..100);
        let id = || ids[rand::rng().random_range(0..ids.len().max(1))].clone();
        let (tool, args) = if cheap_only || (90..95).contains(&roll) {
            ("get_memory", json!({"id": id()}))
        } else if roll < 70 {
            (
                "search_memories",
                json!({"query": query_text(&mut rng), "user_id": USER, "limit": 10}),
            )
        } else if roll < 90 {
            let content = format!(
                "{} (live {seed}.{})",
                memory_text(&mut rng),
                rng.random::<u64>()
            );
            ("store_memory", json!({"content": content, "user_id": USER}))
        } else {
            let from = mine.last().cloned().unwrap_or_else(id);
            let to = id();
            if from == to {
                continue;
            }
            (
                "relate_memories",
                json!({"from_id": from, "to_id": to, "relation": "references", "strength": 0.5}),
            )
        };
        let started = Instant::now();
        match call(&client, tool, args).await {
            Ok(out) => {
                report
                    .tools
                    .entry(tool)
                    .or_default()
                    .push(started.elapsed());
                if tool == "store_memory"
                    && let Some(id) = out["id"].as_str()
                {
                    mine.push(id.to_string());
                }
            }
            Err(e) => {
                let text = e.to_string();
                *report
                    .errors
                    .entry(format!(
                        "{tool}: {}",
                        text.chars().take(160).collect::<String>()
                    ))
                    .or_default() += 1;
            }
        }
    }
    client.cancel().await.ok();
    report
}

async fn run_sessions(
    server: &Server,
    sessions: usize,
    secs: u64,
    ids: Arc<Vec<String>>,
    cheap_only: bool,
) -> anyhow::Result<Report> {
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        clients.push(server.client().await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let merged = Arc::new(Mutex::new(Report::default()));
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let ids = ids.clone();
        let merged = merged.clone();
        tasks.push(tokio::spawn(async move {
            let r = session_loop(client, deadline, ids, i as u64 + 1, cheap_only).await;
            merged.lock().await.merge(r);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut report = std::mem::take(&mut *merged.lock().await);
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn run_mixed(
    server: &Server,
    sessions: usize,
    secs: u64,
    ids: Arc<Vec<String>>,
) -> anyhow::Result<Report> {
    run_sessions(server, sessions, secs, ids, false).await
}

async fn run_cheap(
    server: &Server,
    sessions: usize,
    secs: u64,
    ids: Arc<Vec<String>>,
) -> anyhow::Result<Report> {
    run_sessions(server, sessions, secs, ids, true).await
}

/// Sum and count of a Prometheus histogram series whose line starts with
/// `series` (name plus labels).
fn histogram(metrics: &str, series: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let key = if labels.is_empty() {
            format!("{name}{suffix} ")
        } else {
            format!("{name}{suffix}{{{labels} ")
        };
        metrics
            .lines()
            .find(|l| l.starts_with(&key))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("_sum"), value("_count"))
}

/// Where a search's time goes: one session searching alone over HTTP, with
/// the server's own metrics (tool, embedding, SQL) read before and after.
async fn breakdown(server: &Server, n: usize) -> anyhow::Result<()> {
    breakdown_mode(server, n, "hybrid", false).await?;
    breakdown_mode(server, n, "semantic", false).await?;
    // One query asked again and again: its vector comes from the server's
    // cache of recent queries.
    breakdown_mode(server, n, "hybrid", true).await
}

async fn breakdown_mode(
    server: &Server,
    n: usize,
    mode: &str,
    repeated: bool,
) -> anyhow::Result<()> {
    let metrics_url = server.url.replace("/mcp", "/metrics");
    let http = reqwest::Client::new();
    let scrape = || async { http.get(&metrics_url).send().await?.text().await };
    let client = server.client().await?;
    let mut rng = StdRng::seed_from_u64(23);
    let before = scrape().await?;
    let mut times = Vec::with_capacity(n);
    let same = query_text(&mut rng);
    for _ in 0..n {
        let query = if repeated {
            same.clone()
        } else {
            query_text(&mut rng)
        };
        let started = Instant::now();
        call(
            &client,
            "search_memories",
            json!({"query": query, "user_id": USER, "limit": 10, "mode": mode}),
        )
        .await?;
        times.push(started.elapsed());
    }
    let after = scrape().await?;
    client.cancel().await.ok();
    let mean = |series: &str| {
        let (s0, c0) = histogram(&before, series);
        let (s1, c1) = histogram(&after, series);
        if c1 > c0 {
            (s1 - s0) / (c1 - c0) * 1000.0
        } else {
            0.0
        }
    };
    let tool = mean("mnemo_tool_duration_seconds{tool=\"search_memories\"}");
    // Per search, not per embedding: a repeated query is embedded once.
    let embed = {
        let series = "mnemo_embedding_duration_seconds";
        (histogram(&after, series).0 - histogram(&before, series).0) / n.max(1) as f64 * 1000.0
    };
    let keywords = mean("mnemo_db_statement_duration_seconds{statement=\"search_keywords\"}");
    let sql = mean("mnemo_db_statement_duration_seconds{statement=\"search_memories\"}");
    let client_mean = times.iter().map(|t| ms(*t)).sum::<f64>() / n.max(1) as f64;
    times.sort();
    // The keyword statement runs while the query is embedded, so it is
    // shown beside the embedding and not added to the sum.
    let label = if repeated {
        format!("{mode}, one query repeated")
    } else {
        mode.to_string()
    };
    println!(
        "search breakdown, {label} ({n} searches, 1 session, HTTP, means): client {client_mean:.1} ms \
         (p50 {:.1}) = embedding {embed:.1} (keyword SQL {keywords:.1} alongside) + fusion SQL {sql:.1} \
         + rest of the tool {:.1} + protocol/HTTP {:.1}",
        ms(percentile(&times, 0.5)),
        tool - embed - sql,
        client_mean - tool
    );
    Ok(())
}

/// A client of a `mnemo serve --stdio` child for the loadgen companion.
async fn stdio_client(binary: &std::path::Path, database_url: &str) -> anyhow::Result<Client> {
    let child = bench_common::stdio_child(binary, database_url, &[("MNEMO_COMPANION", COMPANION)])?;
    Ok(().serve(child).await?)
}

async fn run_stdio_searches(
    binary: &std::path::Path,
    database_url: &str,
    n: usize,
) -> anyhow::Result<Report> {
    let client = stdio_client(binary, database_url).await?;
    let mut rng = StdRng::seed_from_u64(11);
    // The model loads in the background: the first search waits for it.
    call(
        &client,
        "search_memories",
        json!({"query": "warm up", "user_id": USER}),
    )
    .await?;
    let mut report = Report::default();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        call(
            &client,
            "search_memories",
            json!({"query": query_text(&mut rng), "user_id": USER, "limit": 10}),
        )
        .await?;
        report
            .tools
            .entry("search_memories")
            .or_default()
            .push(t.elapsed());
    }
    report.elapsed = started.elapsed();
    client.cancel().await.ok();
    Ok(report)
}

/// Process start to `initialize` answered, over stdio, on a database that
/// exists (the embedded cluster's first-ever initdb is not included).
async fn cold_start(binary: &std::path::Path, database_url: &str) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let client = stdio_client(binary, database_url).await?;
        times.push(started.elapsed());
        client.cancel().await.ok();
    }
    times.sort();
    println!(
        "\ncold start (process start to initialize answered, stdio, 7 runs): p50 {:.0} ms, max {:.0} ms",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    Ok(())
}
