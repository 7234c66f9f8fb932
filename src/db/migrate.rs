//! Schema migrations: the SQL files in `migrations/`, applied in order under
//! a PostgreSQL advisory lock so replicas starting together migrate once.
//!
//! Each migration runs in its own transaction and is recorded with a
//! checksum in `mnemo_migrations`; an edited, already-applied migration is
//! refused rather than silently skipped. After the files, the embedding
//! dimension is fixed (first start) or checked (every later start).

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::DbError;

/// `pg_advisory_lock` key: "mnemo" in ASCII, so other tools can tell it apart.
const LOCK_KEY: i64 = 0x006d_6e65_6d6f;

/// The migrations, in the order they apply. Names never change once shipped.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_contexts",
        include_str!("../../migrations/0002_contexts.sql"),
    ),
    (
        "0003_api_keys",
        include_str!("../../migrations/0003_api_keys.sql"),
    ),
    (
        "0004_memory_sequence",
        include_str!("../../migrations/0004_memory_sequence.sql"),
    ),
    (
        "0005_memory_access",
        include_str!("../../migrations/0005_memory_access.sql"),
    ),
    (
        "0007_console_sessions",
        include_str!("../../migrations/0007_console_sessions.sql"),
    ),
];

/// Tables with an `embedding vector` column that [`fix_dimension`] types
/// and indexes (`<table>_embedding_hnsw`).
const EMBEDDING_TABLES: &[&str] = &["memories", "messages"];

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub applied: Vec<&'static str>,
    pub embedding_dim: usize,
}

/// Applies pending migrations and fixes or checks the embedding dimension.
pub async fn run(client: &mut Client, embedding_dim: usize) -> Result<Report, DbError> {
    // Session-level lock: held across the per-migration transactions and
    // released below whatever happened (or by PostgreSQL if we die).
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply(client, embedding_dim).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn apply(client: &mut Client, embedding_dim: usize) -> Result<Report, DbError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS mnemo_migrations (
                name       text PRIMARY KEY,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let mut report = Report::default();
    for (name, sql) in MIGRATIONS {
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        let row = client
            .query_opt(
                "SELECT checksum FROM mnemo_migrations WHERE name = $1",
                &[name],
            )
            .await?;
        match row {
            Some(row) => {
                let stored: String = row.get(0);
                if stored != checksum {
                    return Err(DbError::Migration {
                        name: name.to_string(),
                        message: "it was changed after it was applied; add a new migration instead"
                            .into(),
                    });
                }
            }
            None => {
                let tx = client.transaction().await?;
                tx.batch_execute(sql)
                    .await
                    .map_err(|e| migration_error(name, &e))?;
                tx.execute(
                    "INSERT INTO mnemo_migrations (name, checksum) VALUES ($1, $2)",
                    &[name, &checksum],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(migration = name, "applied migration");
                report.applied.push(name);
            }
        }
    }
    report.embedding_dim = fix_dimension(client, embedding_dim).await?;
    Ok(report)
}

fn migration_error(name: &str, e: &tokio_postgres::Error) -> DbError {
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    if message.contains("vector") && message.contains("extension") {
        return DbError::PgvectorMissing(message);
    }
    DbError::Migration {
        name: name.to_string(),
        message,
    }
}

/// The HNSW index of `table`'s embeddings. It holds them at half precision
/// (the table keeps full ones): against full vectors it inserts about 30%
/// faster and is half the size, at the same recall (top-10 recall 0.999,
/// against 0.998 for full vectors, at 10k memories; docs/BENCHMARKS.md).
/// Searches must order by [`crate::db::halfvec_distance`] to use it.
fn hnsw_index(table: &str, dim: usize) -> String {
    format!(
        "CREATE INDEX {table}_embedding_hnsw ON {table} \
         USING hnsw ((embedding::halfvec({dim})) halfvec_cosine_ops);"
    )
}

/// First start: types every `embedding` column as `vector(dim)` and builds
/// its HNSW index. Later starts: refuses a different dimension, and types
/// any column still untyped (a table added by a migration after the
/// dimension was fixed, e.g. `messages` on a database created before 0002).
async fn fix_dimension(client: &mut Client, dim: usize) -> Result<usize, DbError> {
    let row = client
        .query_opt(
            "SELECT (value #>> '{}')::int FROM mnemo_settings WHERE key = 'embedding_dim'",
            &[],
        )
        .await?;
    let stored = row.map(|row| row.get::<_, i32>(0) as usize);
    if let Some(stored) = stored
        && stored != dim
    {
        return Err(DbError::DimensionMismatch {
            stored,
            configured: dim,
        });
    }
    let tx = client.transaction().await?;
    let mut typed = Vec::new();
    for table in EMBEDDING_TABLES {
        // atttypmod is the vector's dimension, or -1 while untyped.
        let typmod: i32 = tx
            .query_one(
                "SELECT atttypmod FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attname = 'embedding'",
                &[table],
            )
            .await?
            .get(0);
        if typmod >= 0 {
            // Typed by an earlier version, whose index held full vectors.
            let index: Option<String> = tx
                .query_one(
                    "SELECT pg_get_indexdef(to_regclass($1))",
                    &[&format!("{table}_embedding_hnsw")],
                )
                .await?
                .get(0);
            if !index.is_some_and(|def| def.contains("halfvec")) {
                tracing::info!(table, "rebuilding the HNSW index on half-precision vectors");
                tx.batch_execute(&format!(
                    "DROP INDEX IF EXISTS {table}_embedding_hnsw; {}",
                    hnsw_index(table, dim)
                ))
                .await
                .map_err(|e| migration_error("half-precision HNSW index", &e))?;
            }
            continue;
        }
        // `dim` is a checked integer (config::check_dim) and `table` a
        // constant above, not user text.
        tx.batch_execute(&format!(
            "ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({dim}); {}",
            hnsw_index(table, dim)
        ))
        .await
        .map_err(|e| migration_error("embedding dimension", &e))?;
        typed.push(*table);
    }
    if stored.is_none() {
        tx.execute(
            "INSERT INTO mnemo_settings (key, value) VALUES ('embedding_dim', to_jsonb($1::int))",
            &[&(dim as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    if !typed.is_empty() {
        tracing::info!(dim, tables = ?typed, "embedding dimension fixed");
    }
    Ok(dim)
}
