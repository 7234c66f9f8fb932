//! The database: connection pool, TLS, migrations and the embedded cluster.
//!
//! [`connect`] turns a [`Config`] into a ready [`Db`]: it starts (or finds)
//! the embedded cluster when no `DATABASE_URL` is set, builds the
//! deadpool-postgres pool, checks pgvector and applies the migrations.

pub mod embedded;
pub mod migrate;
pub mod pooler;
pub mod replicas;
pub mod statements;
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
            let shown = describe_target(&pg);
            Ok((pg, shown))
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

/// The vector search's settings: iterative HNSW scans keep filtered
/// searches from returning fewer rows than asked for (pgvector >= 0.8). Set
/// per session on a direct connection, per search transaction (as `SET
/// LOCAL`) behind a pooler.
pub const SEARCH_SETTINGS: &str =
    "SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100";
/// [`SEARCH_SETTINGS`] for one transaction.
pub const SEARCH_SETTINGS_LOCAL: &str =
    "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = 100";

/// Builds the pool for `pg` with the settings in `config`.
pub fn pool(config: &Config, pg: tokio_postgres::Config) -> Result<Pool, DbError> {
    pool_for(config, pg, statements::pooled(), config.pool_size)
}

/// Builds a pool of up to `size` connections to `pg`; `pooled` says whether
/// a transaction pooler stands in between (see [`pooler`]).
fn pool_for(
    config: &Config,
    mut pg: tokio_postgres::Config,
    pooled: bool,
    size: usize,
) -> Result<Pool, DbError> {
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
        .max_size(size)
        .wait_timeout(Some(config.pool_wait))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(Runtime::Tokio1)
        .post_create(Hook::async_fn(move |client, _| {
            Box::pin(async move {
                if pooled {
                    // No session settings survive a pooler: the search
                    // sets its own per transaction, and the statement
                    // timeout belongs on the role (docs/OPERATIONS.md).
                    return pooler::warm(client)
                        .await
                        .map_err(|e| HookError::message(format!("connection setup failed: {e}")));
                }
                let setup =
                    format!("SET statement_timeout = {statement_timeout}; {SEARCH_SETTINGS}");
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
    let route = Route::of(config, &pg)?;
    statements::set_pooled(route.pooled);
    if route.pooled && route.direct.is_none() {
        tracing::warn!(
            "DATABASE_URL goes through a transaction pooler and no DIRECT_DATABASE_URL is set: \
             migrations take a session advisory lock, which a pooler does not keep; \
             set DIRECT_DATABASE_URL to the database itself"
        );
    }
    {
        // Migrations and their advisory lock need one session: the direct
        // URL's, over a connection of their own.
        let direct = route.direct.clone().unwrap_or_else(|| pg.clone());
        let direct_pool = pool_for(config, direct, false, 1)?;
        let mut client = direct_pool.get().await.map_err(DbError::from)?;
        check_server(&client).await?;
        migrate::run(&mut client, embedding_dim).await?;
    }
    let db = Db {
        pool: pool(config, pg)?,
        location,
        pool_wait: config.pool_wait,
        connect_timeout: config.connect_timeout,
    };
    Ok(db)
}

/// Which connection does what: serving goes to `DATABASE_URL` (or the
/// embedded cluster), migrations and session-bound work to `direct`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `DIRECT_DATABASE_URL`, parsed, when it is set.
    pub direct: Option<tokio_postgres::Config>,
    /// Whether a transaction pooler serves `DATABASE_URL`.
    pub pooled: bool,
}

impl Route {
    /// The route `config` asks for, `pg` being the serving target. The
    /// embedded cluster is direct unless `--pooler transaction` says
    /// otherwise (which benchmarks use to compare the two ways).
    pub fn of(config: &Config, pg: &tokio_postgres::Config) -> Result<Route, DbError> {
        if config.database_url.is_none() {
            return Ok(Route {
                direct: None,
                pooled: config.pooler == pooler::Pooler::Transaction,
            });
        }
        let direct = match &config.direct_database_url {
            Some(url) => Some(url.parse().map_err(|e: tokio_postgres::Error| {
                DbError::BadUrl(format!("DIRECT_DATABASE_URL: {e}"))
            })?),
            None => None,
        };
        let pooled = pooler::is_pooled(config.pooler, pg, direct.as_ref());
        Ok(Route { direct, pooled })
    }
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

/// Where `url` points, safe to print: [`describe_target`] of the parsed
/// configuration. The text itself is never echoed, since a password can sit
/// in any of its forms (`user:pw@`, `password=` in the key/value form, a
/// `?password=` query parameter).
pub fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(pg) => describe_target(&pg),
        Err(_) => "a DATABASE_URL that does not parse (not shown: it may hold a password)".into(),
    }
}

/// Host(s), port(s), user and database of `pg` (and `sslmode` when not the
/// default), in the key/value form; never the password.
pub fn describe_target(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .chain(pg.get_hostaddrs().iter().map(|addr| addr.to_string()))
        .collect();
    let ports: Vec<String> = pg.get_ports().iter().map(u16::to_string).collect();
    let mut parts = Vec::new();
    for (key, value) in [
        ("host", hosts.join(",")),
        ("port", ports.join(",")),
        ("user", pg.get_user().unwrap_or_default().to_string()),
        ("dbname", pg.get_dbname().unwrap_or_default().to_string()),
    ] {
        if !value.is_empty() {
            parts.push(format!("{key}={value}"));
        }
    }
    let sslmode = match pg.get_ssl_mode() {
        SslMode::Disable => Some("disable"),
        SslMode::Require => Some("require"),
        _ => None,
    };
    if let Some(mode) = sslmode {
        parts.push(format!("sslmode={mode}"));
    }
    if parts.is_empty() {
        "the server's defaults".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    /// Each way a PostgreSQL URL can carry a password.
    #[test]
    fn redact_never_shows_the_password_in_any_url_form() {
        let cases = [
            (
                "postgres://me:SECRET@db.example/x?sslmode=require",
                "host=db.example port=5432 user=me dbname=x sslmode=require",
            ),
            (
                "host=/tmp/sock user=me password=SECRET dbname=x",
                "host=/tmp/sock user=me dbname=x",
            ),
            (
                "host=db.example port=6432 user=me password='SEC RET' dbname=x",
                "host=db.example port=6432 user=me dbname=x",
            ),
            (
                "postgres://me@db.example:6543/x?password=SECRET",
                "host=db.example port=6543 user=me dbname=x",
            ),
            (
                "postgresql://me:SECRET@h1,h2:5433/x?password=SECRET&sslmode=disable",
                "host=h1,h2 port=5432,5433 user=me dbname=x sslmode=disable",
            ),
        ];
        for (url, shown) in cases {
            let text = redact(url);
            assert_eq!(text, shown, "{url}");
            assert!(!text.contains("SEC"), "{url} -> {text}");
        }
    }

    #[test]
    fn redact_of_an_unparseable_url_echoes_nothing() {
        let text = redact("postgres://me:SECRET@db.example:notaport/x");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("does not parse"), "{text}");
    }
}
