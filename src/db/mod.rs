//! The database: connection pool, TLS, migrations and the embedded cluster.
//!
//! [`connect`] turns a [`Config`] into a ready [`Db`]: it starts (or finds)
//! the embedded cluster when no `DATABASE_URL` is set, builds the
//! deadpool-postgres pool, checks pgvector and applies the migrations.

pub mod embedded;
pub mod migrate;
mod tls;

use std::time::{Duration, Instant};

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

use crate::config::Config;

/// Why the database could not be reached or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error("embedded PostgreSQL: {0}")]
    Embedded(#[from] embedded::EmbeddedError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error(
        "database is busy: no connection free within {0:?} (raise --pool-size or --pool-wait-ms)"
    )]
    PoolTimeout(Duration),
    #[error(
        "no pgvector in the database: {0}. Install pgvector on the server and run CREATE EXTENSION vector \
         as a superuser, or unset DATABASE_URL to use the embedded database"
    )]
    PgvectorMissing(String),
    #[error("PostgreSQL {found} is too old: mnemo needs PostgreSQL 15 or newer")]
    TooOld { found: String },
    #[error(
        "this database stores {stored}-dimensional embeddings but the configured embedder makes {configured}: \
         use the embedder the database was created with, or a fresh database"
    )]
    DimensionMismatch { stored: usize, configured: usize },
    #[error("migration {name} failed: {message}")]
    Migration { name: String, message: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

/// A PostgreSQL error with the server's own message ("db error" alone, as
/// tokio_postgres displays it, says nothing).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Timeout(_) => DbError::PoolTimeout(Duration::ZERO),
            PoolError::Backend(e) => DbError::Postgres(e),
            other => DbError::Connect(other.to_string()),
        }
    }
}

/// The pool plus what was learned while opening it.
#[derive(Clone)]
pub struct Db {
    pub pool: Pool,
    /// Where the data lives, for logs and `doctor` (never includes a password).
    pub location: String,
    pool_wait: Duration,
    connect_timeout: Duration,
}

/// Queries slower than this are logged as slow.
pub const SLOW_QUERY: Duration = Duration::from_millis(100);

impl Db {
    /// A pooled connection, or a clear error once the wait timeout passes.
    ///
    /// While PostgreSQL is down this fails within the connect timeout (the
    /// pool opens a new connection for each request, since closed ones are
    /// never handed out); once it is back, the next request connects again.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        use deadpool_postgres::{PoolError, TimeoutType};
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => DbError::PoolTimeout(self.pool_wait),
            PoolError::Timeout(_) => DbError::Connect(format!(
                "no answer within {:?} (is PostgreSQL running and reachable?)",
                self.connect_timeout
            )),
            PoolError::Backend(e) => DbError::Connect(describe(&e)),
            other => DbError::from(other),
        })
    }
}

/// The cosine distance between an `embedding` column and a `vector`
/// parameter, in the half-precision form the HNSW index holds (see
/// `migrate`): ordering by anything else scans the table. The parameter is
/// cast in two steps: cast straight to `halfvec`, PostgreSQL would ask the
/// client for a `halfvec`.
pub fn halfvec_distance(column: &str, param: &str, dim: usize) -> String {
    format!("{column}::halfvec({dim}) <=> {param}::vector::halfvec({dim})")
}

/// Records how long statement `name` took (a metric), and logs it as slow
/// when `started` is more than [`SLOW_QUERY`] ago.
pub fn note_duration(name: &str, started: Instant) {
    let elapsed = started.elapsed();
    crate::metrics::statement(name, elapsed);
    if elapsed > SLOW_QUERY {
        tracing::warn!(
            query = name,
            elapsed_ms = elapsed.as_millis() as u64,
            "slow query"
        );
    }
}

/// The PostgreSQL client configuration `config` points at: the external
/// database, or the embedded cluster (started if needed).
pub async fn target(config: &Config) -> Result<(tokio_postgres::Config, String), DbError> {
    match &config.database_url {
        Some(url) => {
            let pg: tokio_postgres::Config = url
                .parse()
                .map_err(|e: tokio_postgres::Error| DbError::BadUrl(e.to_string()))?;
            Ok((pg, redact(url)))
        }
        None => {
            let cluster = embedded::EmbeddedCluster::new(
                &config.data_dir,
                &config.pg_bin,
                Some(config.pg_user.as_str()),
            )?;
            let pg = cluster.ensure_running("mnemo").await?;
            Ok((
                pg,
                format!("embedded cluster in {}", cluster.pgdata().display()),
            ))
        }
    }
}

/// Builds the pool for `pg` with the settings in `config`.
pub fn pool(config: &Config, mut pg: tokio_postgres::Config) -> Result<Pool, DbError> {
    pg.connect_timeout(config.connect_timeout);
    if pg.get_application_name().is_none() {
        pg.application_name("mnemo");
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match pg.get_ssl_mode() {
        SslMode::Disable => Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
        _ => Manager::from_config(
            pg,
            tls::connector(config.db_ca_file.as_deref())?,
            manager_config,
        ),
    };
    let statement_timeout = config.statement_timeout.as_millis() as u64;
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.pool_wait))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .post_create(Hook::async_fn(move |client, _| {
            Box::pin(async move {
                // Iterative HNSW scans keep filtered vector searches from
                // returning fewer rows than asked for (pgvector >= 0.8).
                let setup = format!(
                    "SET statement_timeout = {statement_timeout}; \
                     SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100"
                );
                client
                    .batch_execute(&setup)
                    .await
                    .map_err(|e| HookError::message(format!("session setup failed: {e}")))
            })
        }))
        .build()
        .map_err(|e| DbError::Connect(e.to_string()))
}

/// Starts or finds the database, builds the pool, checks the server and
/// applies migrations, fixing the embedding dimension on first use.
pub async fn connect(config: &Config, embedding_dim: usize) -> Result<Db, DbError> {
    let (pg, location) = target(config).await?;
    let pool = pool(config, pg)?;
    let db = Db {
        pool,
        location,
        pool_wait: config.pool_wait,
        connect_timeout: config.connect_timeout,
    };
    let mut client = db.client().await?;
    check_server(&client).await?;
    migrate::run(&mut client, embedding_dim).await?;
    Ok(db)
}

/// Fails clearly on PostgreSQL < 15 or a server without pgvector.
pub async fn check_server(client: &tokio_postgres::Client) -> Result<ServerInfo, DbError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version'), \
             (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), \
             (SELECT extversion FROM pg_extension WHERE extname = 'vector')",
            &[],
        )
        .await?;
    let version_num: i32 = row.get(0);
    let version: String = row.get(1);
    if version_num < 150000 {
        return Err(DbError::TooOld { found: version });
    }
    let available: Option<String> = row.get(2);
    let installed: Option<String> = row.get(3);
    if available.is_none() && installed.is_none() {
        return Err(DbError::PgvectorMissing(format!(
            "the vector extension is not available on PostgreSQL {version}"
        )));
    }
    Ok(ServerInfo {
        version,
        pgvector: installed.or(available).unwrap_or_default(),
    })
}

/// What `check_server` found.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub pgvector: String,
}

/// The URL with any password replaced, safe to log.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://me:secret@db.example/x?sslmode=require"),
            "postgres://me:***@db.example/x?sslmode=require"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
        assert_eq!(redact("host=/tmp dbname=x"), "host=/tmp dbname=x");
    }
}
