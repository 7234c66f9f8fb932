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

/// The migrations, in the order they apply: every `migrations/*.sql`, by
/// name (listed by `build.rs`). Names never change once shipped.
pub const MIGRATIONS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

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
        let checksum = checksum(sql);
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

/// What `mnemo_migrations` records of a migration's text.
fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
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
        let column = tx
            .query_one(
                "SELECT atttypmod, attstorage FROM pg_attribute \
                 WHERE attrelid = $1::text::regclass AND attname = 'embedding'",
                &[table],
            )
            .await?;
        let (typmod, storage): (i32, i8) = (column.get(0), column.get(1));
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
        } else {
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
        // pgvector's types default to EXTERNAL storage: out of line as soon
        // as a row passes the TOAST threshold (migration 0010 says why that
        // is slow). MAIN keeps them in the row; setting it is catalog-only,
        // and needed again after ALTER COLUMN TYPE, which resets it.
        if typmod < 0 || storage != b'm' as i8 {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN"
            ))
            .await
            .map_err(|e| migration_error("embedding storage", &e))?;
        }
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

#[cfg(test)]
mod tests {
    use super::{MIGRATIONS, checksum};

    /// A migration is a file: each one in `migrations/`, in name order,
    /// with its text exactly (the checksum of an applied one must not move).
    #[test]
    fn every_file_in_migrations_is_listed_in_name_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("migrations/")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .map(|path| {
                let name = path
                    .file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned();
                (
                    name,
                    std::fs::read_to_string(&path).expect("migration text"),
                )
            })
            .collect();
        files.sort();
        let listed: Vec<(String, String)> = MIGRATIONS
            .iter()
            .map(|(name, sql)| (name.to_string(), sql.to_string()))
            .collect();
        assert_eq!(listed, files);
        assert_eq!(listed[0].0, "0001_init", "{listed:?}");
    }

    /// Databases in use recorded these: a shipped migration's text never
    /// changes, however the list of files is made.
    #[test]
    fn shipped_migrations_keep_their_checksums() {
        let shipped = [
            (
                "0001_init",
                "8a30441fde234d4cbb5e80aa189e7af845d41709eea209a726791ef6349aba83",
            ),
            (
                "0002_contexts",
                "f3bb754b6c5bacbbda18521913467be644d0522669a2926d5ad645008aeee3d6",
            ),
            (
                "0003_api_keys",
                "dbafb47cbeab415f253eb848b583d3f1b79f01372f3c6f95442d8d5af38b88b1",
            ),
            (
                "0004_memory_sequence",
                "891ce7a74a2e3a0e754bb1bdd26ceeaf233a1e0c56518c4be1dd5b4c251a079e",
            ),
            (
                "0005_memory_access",
                "c66951379d0446e93f15e3834b3721ba8b307613fb22a9ecfa88a3c1fe139c46",
            ),
            (
                "0007_console_sessions",
                "86c66497918e568a54827316e0abf6ebe25e95cbd8231fa63ae83cb081283614",
            ),
            (
                "0008_memory_statistics",
                "9b3460b1dd1a5e77445998b08af5a16bab1a9e8c90ce8ac0dc833ff6fd5b0627",
            ),
            (
                "0009_memory_access_companion",
                "f5a689717818e71a28b778271f70d1c74195d42ec6cf91d98e2dc45b5d58fb44",
            ),
        ];
        for (i, (name, sum)) in shipped.iter().enumerate() {
            let (listed, sql) = MIGRATIONS[i];
            assert_eq!((listed, checksum(sql).as_str()), (*name, *sum));
        }
    }
}
