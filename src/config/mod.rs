//! Configuration: the command line (clap), its environment fallbacks, the
//! optional TOML file and the defaults, resolved once into [`Config`].
//!
//! Precedence is flags > environment (`DATABASE_URL`, `MNEMO_*`) > TOML file >
//! defaults. Every setting is an `Option` in [`Settings`] so the three sources
//! merge field by field; [`Settings::resolve`] applies the defaults, each
//! of them one constant in [`defaults`] that `--help` shows too.
//!
//! - `cli`: the command, subcommands and their arguments.
//! - `settings`: [`Settings`], the shared options (flags, env, TOML file).
//! - `resolve`: defaults and range checks, into [`Config`].
//! - [`defaults`]: the default of every setting.

mod cli;
pub mod defaults;
mod resolve;
mod settings;

pub use cli::{
    Cli, Command, DbAction, EmbedderKind, ExportArgs, ImportArgs, ImportFormat, LogFormat,
    ServeArgs, TokenAction,
};
pub use settings::Settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

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

/// The fully resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub database_url: Option<String>,
    /// Migrations and session-bound work; `None` = `database_url`.
    pub direct_database_url: Option<String>,
    pub pooler: crate::db::pooler::Pooler,
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
    /// Read replicas (`--read-database-url`), in the order given.
    pub read_database_urls: Vec<String>,
    /// Replicas further behind than this are skipped.
    pub read_max_lag: Duration,
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
        .unwrap_or_else(|| default_data_dir().join(defaults::RUNTIME_DIR))
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(super) fn default_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".config"));
    let path = base.join("mnemo/config.toml");
    path.exists().then_some(path)
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
