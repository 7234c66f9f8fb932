//! How every store statement reaches PostgreSQL: prepared once and cached
//! per connection on a direct connection, unnamed behind a transaction
//! pooler.
//!
//! A transaction pooler (PgBouncer, Supavisor, RDS Proxy, Neon's pooled
//! URL) hands each transaction, or each statement outside one, to whichever
//! server connection is free. A named prepared statement lives on one server
//! connection, so tokio-postgres's two steps (prepare, then bind and run)
//! fail there with `prepared statement "sN" does not exist` (measured: 3,027
//! of 3,528 calls through PgBouncer 1.18). Behind a pooler each statement is
//! therefore sent as one unnamed parse-bind-execute (`query_typed`), whose
//! parameter types are learned once per statement text by
//! [`crate::db::pooler`] and kept for the process.
//!
//! The mode is one per process ([`set_pooled`], at connect): a process talks
//! to one database through one route, and statements are run from too many
//! places for each to carry the mode.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row, RowStream};

use super::pooler;

/// A statement parameter.
pub type Param<'a> = &'a (dyn ToSql + Sync);

static POOLED: AtomicBool = AtomicBool::new(false);

/// Chooses how this process sends statements (see the module doc).
pub fn set_pooled(pooled: bool) {
    POOLED.store(pooled, Ordering::Relaxed);
}

/// Whether statements go out unnamed, for a transaction pooler.
pub fn pooled() -> bool {
    POOLED.load(Ordering::Relaxed)
}

/// Runs statements given as SQL text, on a pooled connection or inside a
/// transaction alike. Each method is the tokio-postgres one it is named
/// after, minus the separate prepare.
pub trait Statements: Sync {
    /// Every row.
    fn rows<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a;

    /// Exactly one row.
    fn one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a;

    /// At most one row.
    fn opt<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a;

    /// The number of rows written.
    fn run<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a;

    /// The rows as a stream, for results too large to hold.
    fn stream<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Param<'a>],
    ) -> impl Future<Output = Result<RowStream, Error>> + Send + 'a;
}

/// `params` paired with the types a pooled statement declares.
fn typed<'a>(params: &'a [Param<'a>], types: &[Type]) -> Vec<(Param<'a>, Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

/// Implements [`Statements`] for a client type that has tokio-postgres's
/// `query_typed_raw` and `simple_query` and deadpool's `prepare_cached`.
macro_rules! statements_for {
    ($ty:ty) => {
        impl Statements for $ty {
            async fn rows<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [Param<'a>],
            ) -> Result<Vec<Row>, Error> {
                if pooled() {
                    let types = pooler::param_types(
                        |q: String| async move { self.simple_query(&q).await },
                        sql,
                    )
                    .await?;
                    self.query_typed(sql, &typed(params, &types)).await
                } else {
                    let stmt = self.prepare_cached(sql).await?;
                    self.query(&stmt, params).await
                }
            }

            async fn one<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [Param<'a>],
            ) -> Result<Row, Error> {
                if pooled() {
                    let types = pooler::param_types(
                        |q: String| async move { self.simple_query(&q).await },
                        sql,
                    )
                    .await?;
                    self.query_typed_one(sql, &typed(params, &types)).await
                } else {
                    let stmt = self.prepare_cached(sql).await?;
                    self.query_one(&stmt, params).await
                }
            }

            async fn opt<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [Param<'a>],
            ) -> Result<Option<Row>, Error> {
                if pooled() {
                    let types = pooler::param_types(
                        |q: String| async move { self.simple_query(&q).await },
                        sql,
                    )
                    .await?;
                    self.query_typed_opt(sql, &typed(params, &types)).await
                } else {
                    let stmt = self.prepare_cached(sql).await?;
                    self.query_opt(&stmt, params).await
                }
            }

            async fn run<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [Param<'a>],
            ) -> Result<u64, Error> {
                if pooled() {
                    let mut stream = std::pin::pin!(self.stream(sql, params).await?);
                    while let Some(row) = stream.next().await {
                        row?;
                    }
                    Ok(stream.rows_affected().unwrap_or(0))
                } else {
                    let stmt = self.prepare_cached(sql).await?;
                    self.execute(&stmt, params).await
                }
            }

            async fn stream<'a>(
                &'a self,
                sql: &'a str,
                params: &'a [Param<'a>],
            ) -> Result<RowStream, Error> {
                if pooled() {
                    let types = pooler::param_types(
                        |q: String| async move { self.simple_query(&q).await },
                        sql,
                    )
                    .await?;
                    self.query_typed_raw(sql, typed(params, &types)).await
                } else {
                    let stmt = self.prepare_cached(sql).await?;
                    self.query_raw(&stmt, params.iter().copied()).await
                }
            }
        }
    };
}

statements_for!(deadpool_postgres::ClientWrapper);
statements_for!(deadpool_postgres::Client);
statements_for!(deadpool_postgres::Transaction<'_>);
