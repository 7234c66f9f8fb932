//! The command line: the `mnemo` command, its subcommands and their own
//! arguments. The settings every command shares are [`super::Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use super::Settings;

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
    /// Write every companion, user, memory, relation, context and message as JSON lines (a backup), to stdout
    /// or --output. Progress goes to stderr.
    Export(ExportArgs),
    /// Read a file written by `mnemo export` (safe to repeat: ids are kept, present rows are
    /// skipped), or with --format server-memory the knowledge graph of the reference MCP memory
    /// server (@modelcontextprotocol/server-memory).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this user's memories, the relations between them, and their contexts.
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
        /// When the key stops working: a duration (90d, 12h, 30m, 1week) or an RFC 3339 time.
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
    /// Let HTTP serve requests without a key again. Once a key was created, HTTP requires
    /// one, across restarts, even after every key is revoked or expired; this deletes the
    /// revoked and expired keys (refused while an active key exists), and the next start
    /// serves keyless requests.
    ResetAuth,
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
