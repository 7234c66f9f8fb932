//! Read replicas (issue 17, items 3 and 4): a streaming standby made with
//! `pg_basebackup` from the same PostgreSQL build serves searches; a memory
//! just stored is found at once (read-your-writes) while the standby is
//! behind; a standby lagging past the bound is skipped; and the standby
//! killed with SIGKILL in the middle of a load of mixed calls fails none of
//! them, while `/readyz` and `/metrics` report it down.
//!
//! The primary is a cluster of this test's own (the embedded cluster, in a
//! temp dir), so the standby copies nothing of the shared test cluster and
//! the test never stops it.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, Embed, HttpServer, StopClusterOnDrop, TestDb, ok};
use mnemo::db::embedded::EmbeddedCluster;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

/// Generous: a loaded 2-core CI machine is slow, and every wait polls.
const PATIENCE: Duration = Duration::from_secs(120);

/// Polls `check` every 200 ms until it gives `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a PostgreSQL program as the user the embedded cluster runs as
/// (`nobody` when the tests run as root: PostgreSQL refuses root).
fn as_postgres_user(cmd: &mut std::process::Command) -> &mut std::process::Command {
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("nobody")
            .expect("look up nobody")
            .expect("no user nobody");
        // std drops the supplementary groups too when root changes uid.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    cmd.env("PGPASSFILE", "/nonexistent/pgpass")
}

fn chown_to_postgres_user(path: &Path) {
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .expect("chown to nobody");
    }
}

/// A hot standby of a primary, streaming from it, killed (SIGKILL) when
/// dropped.
struct Standby {
    dir: PathBuf,
    postmaster: std::process::Child,
}

impl Standby {
    /// `pg_basebackup -R` of the primary listening in `primary_socket`,
    /// started in `dir` (its data and its socket).
    async fn start(primary_socket: &Path, dir: PathBuf) -> Standby {
        let bin = common::pg_bin();
        std::fs::create_dir_all(&dir).expect("create the standby dir");
        chown_to_postgres_user(&dir);
        let data = dir.join("data");
        let status = as_postgres_user(&mut std::process::Command::new(bin.join("pg_basebackup")))
            .arg("-h")
            .arg(primary_socket)
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .status()
            .expect("run pg_basebackup");
        assert!(status.success(), "pg_basebackup failed: {status}");
        // postgresql.auto.conf is read last: its own socket, still no TCP
        // (the copied mnemo.conf names the primary's socket dir).
        let mut auto = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))
            .expect("open postgresql.auto.conf");
        use std::io::Write;
        writeln!(
            auto,
            "unix_socket_directories = '{}'\nlisten_addresses = ''\nport = 5432",
            dir.display()
        )
        .expect("configure the standby");
        let log = std::fs::File::create(dir.join("standby.log")).expect("standby log");
        let postmaster = as_postgres_user(&mut std::process::Command::new(bin.join("postgres")))
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the standby");
        let standby = Standby { dir, postmaster };
        let url = standby.url();
        eventually("the standby accepts read-only connections", || async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(conn);
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .ok()?;
            row.get::<_, bool>(0).then_some(())
        })
        .await;
        standby
    }

    fn url(&self) -> String {
        format!("host={} user=postgres dbname=mnemo", self.dir.display())
    }

    async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the standby");
        tokio::spawn(conn);
        client
    }

    /// SIGKILL to the postmaster: its backends exit when they notice, and
    /// every connection to it breaks.
    fn kill(&mut self) {
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mnemo serve --http` for `companion` on the primary, reading from the
/// standby, skipping it past `max_lag_ms`.
async fn server(primary: &str, standby: &Standby, companion: &str, max_lag_ms: u64) -> HttpServer {
    let db = TestDb {
        name: "mnemo".into(),
        url: primary.into(),
    };
    let mut cmd = common::mnemo(&db, companion, Embed::Hash);
    cmd.env("READ_DATABASE_URL", standby.url())
        .env("MNEMO_READ_MAX_LAG_MS", max_lag_ms.to_string())
        .env("MNEMO_RATE_LIMIT", "0");
    common::http_server(cmd).await
}

fn base(server: &HttpServer) -> String {
    server.url.trim_end_matches("/mcp").to_string()
}

/// `/readyz`: its status and body.
async fn readyz(server: &HttpServer) -> (u16, Value) {
    let response = reqwest::get(format!("{}/readyz", base(server)))
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("readyz JSON"))
}

/// The replica's condition as `/readyz` shows it.
async fn condition(server: &HttpServer) -> String {
    let (_, body) = readyz(server).await;
    body["replicas"][0]["condition"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The value of the metric `name` whose labels include every one of
/// `labels` (0 when it was never recorded).
async fn metric(server: &HttpServer, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(format!("{}/metrics", base(server)))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn replica_reads(server: &HttpServer) -> f64 {
    metric(server, "mnemo_replica_reads_total", &[("replica", "1")]).await
}

/// Index and sequential scans of `memories` counted on the standby: they
/// grow only when queries run there (replay counts none).
async fn standby_scans(standby: &Standby) -> i64 {
    standby
        .sql()
        .await
        .query_one(
            "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint \
             FROM pg_stat_user_tables WHERE relname = 'memories'",
            &[],
        )
        .await
        .expect("scan counts on the standby")
        .get(0)
}

fn id(value: &Value, key: &str) -> String {
    value[key].as_str().expect("an id").to_string()
}

/// What a reader asks, by turns: every kind of read a replica serves.
fn read_call(n: usize, memory: &str, context: &str) -> (&'static str, Value) {
    match n % 8 {
        0 => (
            "search_memories",
            json!({"query": "what coffee does Ana drink", "user_id": "ana"}),
        ),
        1 => ("get_memory", json!({"id": memory})),
        2 => ("list_memories", json!({"user_id": "ana", "limit": 5})),
        3 => ("memory_stats", json!({})),
        4 => ("related_memories", json!({"id": memory})),
        5 => ("get_context", json!({"id": context})),
        6 => (
            "search_messages",
            json!({"query": "Lisbon marathon", "user_id": "ana", "mode": "keyword"}),
        ),
        _ => ("list_contexts", json!({"user_id": "ana"})),
    }
}

/// Calls made and failed by the load, and how many were made after the kill.
#[derive(Default)]
struct Tally {
    calls: AtomicUsize,
    after_kill: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

/// Runs calls (made by `next`) until `stop`, counting every one that fails
/// in any way: a tool error, a protocol error, a timeout.
async fn load(
    client: Client,
    next: impl Fn(usize) -> (&'static str, Value),
    tally: Arc<Tally>,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let (tool, args) = next(n);
        n += 1;
        let Value::Object(map) = args.clone() else {
            unreachable!()
        };
        let request = CallToolRequestParams::new(tool.to_string()).with_arguments(map);
        let outcome =
            tokio::time::timeout(Duration::from_secs(60), client.call_tool(request)).await;
        let failure = match outcome {
            Err(_) => Some("timed out".to_string()),
            Ok(Err(e)) => Some(format!("protocol error: {e}")),
            Ok(Ok(result)) => common::error_text(&result),
        };
        if let Some(why) = failure {
            tally
                .failures
                .lock()
                .unwrap()
                .push(format!("{tool}({args}): {why}"));
        }
        tally.calls.fetch_add(1, Ordering::Relaxed);
        if killed.load(Ordering::Relaxed) {
            tally.after_kill.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_standby_serves_reads_and_its_death_fails_no_call() {
    // The primary: an embedded cluster of this test's own.
    let data_dir = common::temp_data_dir("replica");
    let _primary_guard = StopClusterOnDrop(data_dir.clone());
    let cluster = EmbeddedCluster::new(&data_dir, &common::pg_bin(), None).expect("cluster");
    cluster
        .ensure_running("mnemo")
        .await
        .expect("start the primary");
    let primary = format!(
        "host={} user=postgres dbname=mnemo",
        cluster.socket_dir().display()
    );
    // Dropped before the primary's guard (declared after it).
    let mut standby = Standby::start(cluster.socket_dir(), data_dir.join("standby")).await;

    // The reader's lag bound is wide, so only read-your-writes can send its
    // reads to the primary while the standby is paused below; the writer's
    // is narrow, so it sees the paused standby lag past it.
    let reader = server(&primary, &standby, "reader", 60_000).await;
    let writer = server(&primary, &standby, "writer", 500).await;
    for s in [&reader, &writer] {
        eventually("the replica serves reads", || async {
            (condition(s).await == "serving").then_some(())
        })
        .await;
    }
    let client = common::http_client(&reader.url).await;

    // What the reader reads: memories, a relation, a conversation.
    let mut memories = Vec::new();
    for content in [
        "Ana drinks her coffee black, no sugar",
        "Ana is training for the Lisbon marathon",
        "Ana prefers short answers",
        "Ana's sister Rita lives in Porto",
    ] {
        let stored = ok(
            &client,
            "store_memory",
            json!({"content": content, "user_id": "ana"}),
        )
        .await;
        memories.push(id(&stored, "id"));
    }
    ok(
        &client,
        "relate_memories",
        json!({"from_id": memories[1], "to_id": memories[0], "relation": "references"}),
    )
    .await;
    let context = ok(
        &client,
        "append_messages",
        json!({"name": "Training", "user_id": "ana", "messages": [
            {"role": "user", "content": "I signed up for the Lisbon marathon"}
        ]}),
    )
    .await;
    let context = id(&context, "context_id");

    // Searches are served by the standby: once a probe sees it hold the
    // writes above, the reader's counter moves and so do the standby's own
    // scan counts (its statistics count only queries run on it).
    let scans_before = standby_scans(&standby).await;
    let search = json!({"query": "coffee", "user_id": "ana"});
    eventually("a search is served by the replica", || async {
        let before = replica_reads(&reader).await;
        let hits = ok(&client, "search_memories", search.clone()).await;
        assert_eq!(hits["results"][0]["id"], memories[0].as_str(), "{hits}");
        (replica_reads(&reader).await > before).then_some(())
    })
    .await;
    eventually(
        "the standby counts the scans of the searches it served",
        || async {
            ok(&client, "search_memories", search.clone()).await;
            (standby_scans(&standby).await > scans_before).then_some(())
        },
    )
    .await;

    // Read-your-writes: with replay paused the standby holds nothing new,
    // yet what the reader stores it finds at once (the primary serves its
    // reads until a probe sees the standby hold the write).
    standby
        .sql()
        .await
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay on the standby");
    let own_write = [("reason", "own_write")];
    let skipped_before = metric(&reader, "mnemo_replica_skipped_total", &own_write).await;
    let fresh = ok(
        &client,
        "store_memory",
        json!({"content": "Ana just moved to Zanzibar", "user_id": "ana"}),
    )
    .await;
    let fresh_id = id(&fresh, "id");
    let found = ok(
        &client,
        "search_memories",
        json!({"query": "Zanzibar", "user_id": "ana"}),
    )
    .await;
    assert_eq!(found["results"][0]["id"], fresh_id.as_str(), "{found}");
    let got = ok(&client, "get_memory", json!({"id": fresh_id})).await;
    assert_eq!(got["memory"]["content"], "Ana just moved to Zanzibar");
    let on_standby: i64 = standby
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM memories WHERE content LIKE '%Zanzibar%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        on_standby, 0,
        "the paused standby must not hold the new memory yet"
    );
    assert_eq!(
        condition(&reader).await,
        "serving",
        "within the reader's lag bound, only read-your-writes sent its reads to the primary"
    );
    assert!(
        metric(&reader, "mnemo_replica_skipped_total", &own_write).await >= skipped_before + 2.0,
        "the search and the get after the write skipped the replica for it"
    );

    // Lag past the bound: the writer (500 ms) skips the paused standby,
    // says so in /readyz (still ready) and the metrics, and fails nothing.
    eventually("the writer sees the paused standby lag", || async {
        (condition(&writer).await == "lagging").then_some(())
    })
    .await;
    let writer_client = common::http_client(&writer.url).await;
    ok(
        &writer_client,
        "search_memories",
        json!({"query": "anything"}),
    )
    .await;
    let (status, body) = readyz(&writer).await;
    assert_eq!(
        status, 200,
        "a lagging replica leaves the server ready: {body}"
    );
    assert!(
        body["replicas"][0]["lag_ms"].as_u64().unwrap() > 500,
        "{body}"
    );
    assert!(
        metric(
            &writer,
            "mnemo_replica_skipped_total",
            &[("reason", "lagging")]
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&writer, "mnemo_replica_serving", &[("replica", "1")]).await,
        0.0
    );

    standby
        .sql()
        .await
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay on the standby");
    eventually("the writer's replica catches up", || async {
        (condition(&writer).await == "serving").then_some(())
    })
    .await;

    // The load: three readers on the reader's server, one writer storing
    // and searching on the writer's, all through real MCP clients.
    let tally = Arc::new(Tally::default());
    let (killed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (memory, context) = (memories[0].clone(), context.clone());
        workers.push(tokio::spawn(load(
            common::http_client(&reader.url).await,
            move |n| read_call(n, &memory, &context),
            tally.clone(),
            killed.clone(),
            stop.clone(),
        )));
    }
    workers.push(tokio::spawn(load(
        common::http_client(&writer.url).await,
        |n| match n % 2 {
            0 => (
                "store_memory",
                json!({"content": format!("Load note number {n}"), "user_id": "bo"}),
            ),
            _ => (
                "search_memories",
                json!({"query": "load note", "user_id": "bo"}),
            ),
        },
        tally.clone(),
        killed.clone(),
        stop.clone(),
    )));
    let served_before_load = replica_reads(&reader).await;
    eventually("the replica serves the load's reads", || async {
        (replica_reads(&reader).await >= served_before_load + 30.0).then_some(())
    })
    .await;

    standby.kill();
    killed.store(true, Ordering::Relaxed);
    eventually("the reader sees the replica down", || async {
        (condition(&reader).await == "down").then_some(())
    })
    .await;
    eventually("the load goes on after the kill", || async {
        (tally.after_kill.load(Ordering::Relaxed) >= 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }
    let failures = tally.failures.lock().unwrap().clone();
    eprintln!(
        "load: {} calls, {} after the standby's kill, {} failed",
        tally.calls.load(Ordering::Relaxed),
        tally.after_kill.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {failures:#?}",
        failures.len(),
        tally.calls.load(Ordering::Relaxed)
    );

    // Reported: /readyz stays 200 with the replica down and why; the metrics
    // count the reads that skipped it.
    let (status, body) = readyz(&reader).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], true, "{body}");
    let replica = &body["replicas"][0];
    assert_eq!(replica["condition"], "down", "{body}");
    assert!(
        replica["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        replica["target"].as_str().unwrap().contains("dbname=mnemo"),
        "{body}"
    );
    assert_eq!(
        metric(&reader, "mnemo_replica_serving", &[("replica", "1")]).await,
        0.0
    );
    assert!(
        metric(
            &reader,
            "mnemo_replica_skipped_total",
            &[("reason", "down")]
        )
        .await
            >= 1.0
    );
    // And reads keep working on the primary alone.
    let hits = ok(&client, "search_memories", search).await;
    assert_eq!(hits["results"][0]["id"], memories[0].as_str());
}
