//! `mnemo export` and `mnemo import`: backups as JSON lines, and moving in
//! from the reference MCP memory server (`@modelcontextprotocol/server-memory`).
//!
//! - `format`: the mnemo export format, one tagged [`format::Record`] per
//!   line (version 2: companions, users, memories, relations, contexts,
//!   messages; version 1 files, without conversations, still import).
//! - `commands`: the two commands, with progress on stderr. Ids are kept,
//!   so an import recreates relations and forks exactly and importing a
//!   file twice changes nothing. Embeddings are optional: memories and
//!   messages without one (or with one of another dimension) are stored
//!   without a vector and embedded by a running server's backfill job, as
//!   after an embedder outage.
//! - `server_memory`: a knowledge graph of entities and relations becomes
//!   related memories of one user.
//!
//! A backup holds what the tables of memories and conversations hold. It
//! leaves out API keys (secrets to re-issue, whose hashes belong to the old
//! deployment) and MCP sessions (ephemeral: clients initialize again).
//!
//! Invariant: the data goes to the file (or stdout, for `mnemo export`
//! without `--output`); progress and summaries go to stderr. This module
//! uses the store, never `tools`, `transport` or `app`.

mod commands;
pub mod format;
mod server_memory;

use std::path::PathBuf;

use crate::config::Config;
use crate::db::{self, DbError};
use crate::embed::{EmbedError, Embedder, LazyEmbedder};
use crate::store::{Store, StoreError};

pub use crate::store::bulk::Counts;
pub use commands::{export, export_command, import, import_command};
pub use server_memory::import_server_memory;

/// Rows per import transaction.
const BATCH: usize = 500;
/// A progress line on stderr every this many records.
const PROGRESS_EVERY: u64 = 1000;

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Line {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// Opens the configured database (migrating it) for a backup command.
async fn open_store(config: &Config) -> Result<Store, BackupError> {
    let embedder = LazyEmbedder::from_config(&config.embedder)?;
    let db = db::connect(config, embedder.dim()).await?;
    Ok(Store::new(db, embedder.dim()))
}

/// A user id given on the command line, trimmed: 1 to
/// [`crate::limits::MAX_USER_CHARS`] printable characters.
fn user_flag(value: &str) -> Result<String, BackupError> {
    let user = value.trim();
    if crate::limits::is_label(user, crate::limits::MAX_USER_CHARS) {
        Ok(user.to_string())
    } else {
        Err(BackupError::Usage(format!(
            "--user {value:?} is not valid: use 1 to {} printable characters",
            crate::limits::MAX_USER_CHARS
        )))
    }
}
