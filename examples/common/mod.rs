//! What the benchmark examples share: the embedded bench cluster, a mnemo
//! server process (Streamable HTTP, with its RSS) or a stdio child, one
//! tool call, percentiles. Included by each example with
//! `#[path = "common/mod.rs"] mod bench_common;`.

// Each example uses only part of this module.
#![allow(dead_code)]

pub mod locomo;
pub mod pglog;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

pub type Client = RunningService<RoleClient, ()>;

/// The embedded cluster under `/tmp/<name>-$UID`, with the PostgreSQL
/// binaries `config` names (started by [`connect`]).
pub fn bench_cluster(
    config: &mnemo::config::Config,
    name: &str,
) -> anyhow::Result<mnemo::db::embedded::EmbeddedCluster> {
    let data_dir = std::path::PathBuf::from(format!("/tmp/{name}-{}", nix::unistd::geteuid()));
    std::fs::create_dir_all(&data_dir)?;
    Ok(mnemo::db::embedded::EmbeddedCluster::new(
        &data_dir,
        &config.pg_bin,
        None,
    )?)
}

/// A connection to `dbname` in the cluster (created if missing).
pub async fn connect(
    cluster: &mnemo::db::embedded::EmbeddedCluster,
    dbname: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    let cfg = cluster.ensure_running(dbname).await?;
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The `DATABASE_URL` of `dbname` in the cluster.
pub fn database_url(cluster: &mnemo::db::embedded::EmbeddedCluster, dbname: &str) -> String {
    format!(
        "host={} user=postgres dbname={dbname}",
        cluster.socket_dir().display()
    )
}

pub fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Fails with the command that builds it when the server binary is missing.
pub fn require_server(binary: &Path) -> anyhow::Result<()> {
    if !binary.is_file() {
        bail!(
            "{} not found: cargo build --release --bin mnemo",
            binary.display()
        );
    }
    Ok(())
}

/// A mnemo server process serving Streamable HTTP on a free loopback port,
/// without rate limits, its stderr in `/tmp/mnemo-bench-server-<port>.log`.
pub struct Server {
    child: tokio::process::Child,
    pub url: String,
    pub pid: u32,
}

impl Server {
    /// Starts `binary serve --http` on `database_url` with `env` added and
    /// waits until `/readyz` answers.
    pub async fn start(
        binary: &Path,
        database_url: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log_path = format!("/tmp/mnemo-bench-server-{port}.log");
        let log = std::fs::File::create(&log_path)?;
        let child = tokio::process::Command::new(binary)
            .args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url)
            .env("MNEMO_RATE_LIMIT", "0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("server pid")?;
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            pid,
        };
        let health = format!("http://127.0.0.1:{port}/readyz");
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = http.get(&health).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("server did not become ready; see {log_path}")
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(
            ().serve(StreamableHttpClientTransport::from_uri(self.url.clone()))
                .await?,
        )
    }

    /// Every histogram's (sum, count) from the server's `/metrics`, keyed by
    /// name and labels: what [`print_server_means`] diffs.
    pub async fn histograms(&self) -> anyhow::Result<Histograms> {
        let url = self.url.replace("/mcp", "/metrics");
        let text = reqwest::get(&url).await?.error_for_status()?.text().await?;
        let mut out = Histograms::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let labels = labels.trim_end_matches('}');
            if let Some(base) = name.strip_suffix("_seconds_sum") {
                out.entry(format!("{base}{{{labels}}}")).or_default().0 = value;
            } else if let Some(base) = name.strip_suffix("_seconds_count") {
                out.entry(format!("{base}{{{labels}}}")).or_default().1 = value;
            }
        }
        Ok(out)
    }

    /// (current RSS, peak RSS) in kB.
    pub fn rss(&self) -> (u64, u64) {
        rss_of(self.pid)
    }

    pub async fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Histogram (sum of seconds, count) by series.
pub type Histograms = std::collections::BTreeMap<String, (f64, f64)>;

/// Prints the mean duration of every timed series that counted calls
/// between `before` and `after`: where the server spends a request.
pub fn print_server_means(stretch: &str, before: &Histograms, after: &Histograms) {
    println!("  inside the HTTP server, {stretch} (mean per call):");
    for (series, (sum, count)) in after {
        let (sum0, count0) = before.get(series).copied().unwrap_or_default();
        let calls = count - count0;
        if calls >= 1.0 {
            let name = series.trim_start_matches("mnemo_");
            let mean = (sum - sum0) * 1000.0 / calls;
            println!("    {name:<60} {calls:>6.0} calls  {mean:>7.2} ms");
        }
    }
}

/// The mean of series `series` (e.g. `mnemo_embedding_duration{}`) over the
/// calls between two readings, in ms; `None` when it counted none.
pub fn mean_ms(before: &Histograms, after: &Histograms, series: &str) -> Option<f64> {
    let (sum, count) = after.get(series).copied()?;
    let (sum0, count0) = before.get(series).copied().unwrap_or_default();
    (count > count0).then(|| (sum - sum0) * 1000.0 / (count - count0))
}

/// (VmRSS, VmHWM) of a process in kB, zeros when it is gone.
pub fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `binary serve --stdio` on `database_url` with `env` added, for rmcp's
/// child-process transport; its stderr (logs) is dropped, so that it does not
/// mix into the benchmark's output.
pub fn stdio_child(
    binary: &Path,
    database_url: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<TokioChildProcess> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["serve", "--stdio"])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    let (child, _) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok(child)
}

/// One tool call; a tool error becomes an error. Returns the structured content.
pub async fn call(client: &Client, tool: &'static str, args: Value) -> anyhow::Result<Value> {
    let Value::Object(map) = args else {
        bail!("arguments must be an object")
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(map))
        .await?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {:?}", result.content);
    }
    result.structured_content.context("no structured content")
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0 to 1) of sorted durations, zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
