//! mnemo: long-term memory for AI agents, served over MCP, stored in
//! PostgreSQL + pgvector.
//!
//! # Layout
//!
//! Authority runs one way: `migrations/` → [`store`] (rows and SQL) →
//! [`tools`] (the MCP contract: arguments, validation, results) →
//! [`transport`] (stdio, Streamable HTTP).
//!
//! - [`config`]: command line, environment, TOML file and defaults.
//! - [`db`]: pool, TLS, migrations, and the embedded PostgreSQL cluster.
//! - [`embed`]: the [`embed::Embedder`] interface and its providers.
//! - [`store`]: every SQL statement; scoped by companion, knows no MCP.
//! - [`timeframe`]: the dates and periods a search query talks about.
//! - [`tools`]: the MCP server and its tools; writes no SQL.
//! - [`transport`]: stdio and HTTP adapters; only stdio writes to stdout.
//! - [`console`]: the web console at `/console` (server-rendered HTML).
//! - [`app`]: assembles the above from a configuration; [`app::App`] is what
//!   tools and transports share.
//! - [`jobs`]: every background schedule (access flush, purges, embedding
//!   backfill, API-key watch) on one task tracker.
//! - [`doctor`]: `mnemo doctor`'s checks.
//! - [`backup`]: `mnemo export` / `mnemo import` (JSONL backups, server-memory files).
//! - [`limits`]: the sizes stored values may have (tools and backup share them).

pub mod app;
pub mod auth;
pub mod backup;
pub mod config;
pub mod console;
pub mod db;
pub mod doctor;
pub mod embed;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod store;
pub mod timeframe;
pub mod tools;
pub mod transport;
