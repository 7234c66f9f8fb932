//! [`Settings`]: every option shared by all commands, from any source (a
//! flag, its environment variable, the TOML file), and the merge of the
//! file under what the command line gave.
//!
//! One table declares them all ([`settings!`]): each option is a global
//! `--flag` named after its field, and its `--help` line ends in its
//! default, taken from [`super::defaults`] (the constant resolution uses).

use std::fmt::Display;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::defaults;
use super::{ConfigError, EmbedderKind, LogFormat, default_config_file};
use crate::db::pooler::Pooler;

/// Declares [`Settings`] and its field-by-field merge. An entry is the
/// option's doc comment (its `--help` text), `field: Type`, the rest of its
/// `#[arg(...)]` in brackets, and optionally `= default` as `--help` shows it.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty [$($arg:tt)*] $(= $shown:expr)?;
    )+) => {
        /// Every setting, from any source. `None` means "not given here".
        #[derive(Debug, Default, Args, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Settings {
            /// TOML config file (default: $XDG_CONFIG_HOME/mnemo/config.toml if it exists).
            #[arg(long, global = true, env = "MNEMO_CONFIG", value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])+
                #[arg(long, global = true, $($arg)*)]
                #[arg(help = help(&[$($doc),+], &[$(&$shown as &dyn Display)?]))]
                pub $field: Option<$ty>,
            )+
        }

        impl Settings {
            /// Fills every field these settings leave unset from `other`.
            fn fill_from(&mut self, other: Settings) {
                $( if self.$field.is_none() { self.$field = other.$field; } )+
            }
        }
    };
}

/// An option's `--help` line: its doc comment as clap shows one (lines
/// joined, without the final period), then `[default: ...]` when it has one.
fn help(doc: &[&str], default: &[&dyn Display]) -> String {
    let text = doc
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.strip_suffix('.').unwrap_or(&text);
    match default {
        [shown] => format!("{text} [default: {shown}]"),
        _ => text.to_string(),
    }
}

/// How `--help` names an enum's value (`local`, `text`).
fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// A path under the runtime dir, as `--help` shows it.
fn in_runtime(path: &str) -> String {
    format!("<runtime dir>/{path}")
}

settings! {
    /// Where mnemo keeps its embedded PostgreSQL cluster.
    data_dir: PathBuf [env = "MNEMO_DATA_DIR", value_name = "DIR"]
        = "$XDG_DATA_HOME/mnemo, else ~/.local/share/mnemo; /var/lib/mnemo when run as root";

    /// Where scripts/setup.sh installed PostgreSQL and the model.
    runtime_dir: PathBuf [env = "MNEMO_RUNTIME_DIR", value_name = "DIR"]
        = format!("<default data dir>/{}", defaults::RUNTIME_DIR);

    /// An external PostgreSQL (>= 15, with pgvector); unset = the embedded cluster.
    /// TLS follows sslmode (disable, prefer, require); certificates are checked against the
    /// Mozilla roots plus --db-ca-file.
    database_url: String [env = "DATABASE_URL", value_name = "URL", hide_env_values = true];

    /// A direct (unpooled) URL to the same database, for migrations and anything bound to a
    /// session; unset = DATABASE_URL. Set it when DATABASE_URL points at a transaction pooler.
    direct_database_url: String [env = "DIRECT_DATABASE_URL", value_name = "URL", hide_env_values = true];

    /// Whether DATABASE_URL goes through a transaction pooler (PgBouncer, Supavisor, RDS Proxy):
    /// `auto` says yes when DIRECT_DATABASE_URL names another server, or the port is 6432 or
    /// 6543, or the host name holds "pooler".
    pooler: Pooler [env = "MNEMO_POOLER", value_enum] = value_name(defaults::POOLER);

    /// Extra CA certificate (PEM) trusted for TLS to the external database.
    db_ca_file: PathBuf [env = "MNEMO_DB_CA_FILE", value_name = "FILE"];

    /// Directory with initdb, pg_ctl and postgres for the embedded cluster.
    pg_bin: PathBuf [env = "MNEMO_PG_BIN", value_name = "DIR"] = in_runtime(defaults::PG_BIN);

    /// Unprivileged user that runs the embedded postgres when mnemo runs as root.
    pg_user: String [env = "MNEMO_PG_USER", value_name = "USER"] = defaults::PG_USER;

    /// Maximum database connections in the pool.
    pool_size: usize [env = "MNEMO_POOL_SIZE", value_name = "N"] = defaults::POOL_SIZE;

    /// How long a request waits for a free pooled connection, in ms.
    pool_wait_ms: u64 [env = "MNEMO_POOL_WAIT_MS", value_name = "MS"] = defaults::POOL_WAIT_MS;

    /// Timeout for opening a database connection, in ms.
    connect_timeout_ms: u64 [env = "MNEMO_CONNECT_TIMEOUT_MS", value_name = "MS"]
        = defaults::CONNECT_TIMEOUT_MS;

    /// Server-side statement timeout, in ms.
    statement_timeout_ms: u64 [env = "MNEMO_STATEMENT_TIMEOUT_MS", value_name = "MS"]
        = defaults::STATEMENT_TIMEOUT_MS;

    /// The companion (AI entity) whose memories this server reads and writes.
    companion: String [env = "MNEMO_COMPANION", value_name = "NAME"] = defaults::COMPANION;

    /// The user a tool call is about when it names none.
    default_user: String [env = "MNEMO_DEFAULT_USER", value_name = "ID"] = defaults::DEFAULT_USER;

    /// Embedding provider.
    embedder: EmbedderKind [env = "MNEMO_EMBEDDER", value_enum] = value_name(defaults::EMBEDDER);

    /// Directory with tokenizer.json and config.json (and model.safetensors
    /// for candle).
    model_dir: PathBuf [env = "MNEMO_MODEL_DIR", value_name = "DIR"]
        = in_runtime(defaults::MODEL_DIR);

    /// The ONNX graph of the local embedder.
    onnx_model: PathBuf [env = "MNEMO_ONNX_MODEL", value_name = "FILE"]
        = in_runtime(defaults::ONNX_MODEL);

    /// The ONNX Runtime shared library, loaded at start-up.
    onnxruntime_lib: PathBuf [env = "MNEMO_ONNXRUNTIME_LIB", value_name = "FILE"]
        = in_runtime(defaults::ONNXRUNTIME_LIB);

    /// Base URL of the OpenAI-compatible API.
    openai_base_url: String [env = "MNEMO_OPENAI_BASE_URL", value_name = "URL"]
        = defaults::OPENAI_BASE_URL;

    /// Embedding model name for the OpenAI-compatible API.
    openai_model: String [env = "MNEMO_OPENAI_MODEL", value_name = "NAME"]
        = defaults::OPENAI_MODEL;

    /// API key for the OpenAI-compatible API (falls back to OPENAI_API_KEY).
    openai_api_key: String [env = "MNEMO_OPENAI_API_KEY", value_name = "KEY", hide_env_values = true];

    /// Dimension of the embedding vectors for openai/hash providers.
    embedding_dim: usize [env = "MNEMO_EMBEDDING_DIM", value_name = "N"] = format!(
        "{} for openai, {} for hash",
        defaults::OPENAI_EMBEDDING_DIM,
        defaults::HASH_EMBEDDING_DIM
    );

    /// Search queries whose vectors are kept, so a repeated query skips the model; 0 keeps
    /// none.
    query_cache: usize [env = "MNEMO_QUERY_CACHE", value_name = "N"] = defaults::QUERY_CACHE;

    /// Seconds between purges of expired memories.
    purge_interval_secs: u64 [env = "MNEMO_PURGE_INTERVAL_SECS", value_name = "SECS"]
        = defaults::PURGE_INTERVAL_SECS;

    /// Idle time after which an HTTP session expires, in hours.
    session_ttl_hours: f64 [env = "MNEMO_SESSION_TTL_HOURS", value_name = "HOURS"] = format!(
        "{} ({} days)",
        defaults::SESSION_TTL_HOURS,
        defaults::SESSION_TTL_HOURS / 24.0
    );

    /// Extra Host header values accepted over HTTP, comma-separated (loopback names are always
    /// accepted). Needed behind a proxy or on a public address; `*` accepts any host.
    allowed_hosts: Vec<String>
        [env = "MNEMO_ALLOWED_HOSTS", value_name = "HOSTS", value_delimiter = ','];

    /// Browser origins allowed to call the HTTP endpoint (and answered with CORS headers),
    /// comma-separated, e.g. https://app.example.com. Loopback origins are always allowed.
    allowed_origins: Vec<String>
        [env = "MNEMO_ALLOWED_ORIGINS", value_name = "ORIGINS", value_delimiter = ','];

    /// Requests per minute allowed per API key (or per server without keys); 0 disables.
    rate_limit: u32 [env = "MNEMO_RATE_LIMIT", value_name = "PER_MINUTE"] = defaults::RATE_LIMIT;

    /// Largest accepted HTTP request body in bytes.
    max_body_bytes: usize [env = "MNEMO_MAX_BODY_BYTES", value_name = "BYTES"]
        = defaults::MAX_BODY_BYTES;

    /// Seconds a client gets to send a request's headers (also the longest wait for the next
    /// request on a keep-alive connection).
    http_header_timeout_secs: u64 [env = "MNEMO_HTTP_HEADER_TIMEOUT_SECS", value_name = "SECS"]
        = defaults::HTTP_HEADER_TIMEOUT_SECS;

    /// Seconds a connection may move no byte before it is closed.
    http_idle_timeout_secs: u64 [env = "MNEMO_HTTP_IDLE_TIMEOUT_SECS", value_name = "SECS"]
        = defaults::HTTP_IDLE_TIMEOUT_SECS;

    /// Seconds a client gets to send a whole request body.
    http_body_timeout_secs: u64 [env = "MNEMO_HTTP_BODY_TIMEOUT_SECS", value_name = "SECS"]
        = defaults::HTTP_BODY_TIMEOUT_SECS;

    /// Most HTTP connections open at once (at most the open-file limit less 128); more wait
    /// to be accepted.
    http_max_connections: usize [env = "MNEMO_HTTP_MAX_CONNECTIONS", value_name = "N"]
        = defaults::HTTP_MAX_CONNECTIONS;

    /// Serve HTTP on a non-loopback address without API keys. Anyone who can reach the port
    /// can then read and change every memory of the configured companion.
    insecure_no_auth: bool
        [env = "MNEMO_INSECURE_NO_AUTH", num_args = 0..=1, default_missing_value = "true"];

    /// Log format on stderr.
    log_format: LogFormat [env = "MNEMO_LOG_FORMAT", value_enum] = value_name(defaults::LOG_FORMAT);

    /// Read replicas: streaming standbys of the primary (DATABASE_URL) that serve read-only
    /// tool calls (search, get, list, related, stats, resources, contexts); several separated
    /// by `;` or given as repeated flags. A replica that is down or lags is skipped.
    read_database_url: Vec<String> [env = "READ_DATABASE_URL", value_name = "URL",
        value_delimiter = ';', hide_env_values = true];

    /// A read replica further behind the primary than this, in ms, is skipped until it
    /// catches up (its lag is probed four times per this bound, at most once a second).
    read_max_lag_ms: u64 [env = "MNEMO_READ_MAX_LAG_MS", value_name = "MS"]
        = defaults::READ_MAX_LAG_MS;
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
}
