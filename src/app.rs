//! Assembling a running mnemo from a [`Config`]: the embedder (loading in
//! the background), the database (embedded or external, migrated), the
//! companion scope and the background jobs.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::{self, DbError};
use crate::embed::cache::QueryCache;
use crate::embed::{EmbedError, Embedder, LazyEmbedder};
use crate::store::{Store, StoreError, jobs};
use crate::tools::App;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// Builds the shared [`App`] and starts its background jobs, which stop
/// when `stop` is cancelled.
pub async fn start(config: &Config, stop: CancellationToken) -> Result<Arc<App>, StartError> {
    let embedder = LazyEmbedder::from_config(&config.embedder)?;
    // The model loads while the database starts: neither waits for the other.
    embedder.warm_up();
    let db = db::connect(config, embedder.dim()).await?;
    tracing::info!(database = %db.location, embedder = %config.embedder.describe(), "database ready");
    let store = Store::new(db, embedder.dim());
    let scope = store.companion(&config.companion).await?;
    let backfill = Arc::new(Notify::new());
    jobs::spawn(
        store.clone(),
        embedder.clone() as Arc<dyn Embedder>,
        config.purge_interval,
        backfill.clone(),
        stop,
    );
    // Pick up memories left unembedded by an earlier run.
    backfill.notify_one();
    let query_vectors = QueryCache::new(config.query_cache, embedder.dim());
    Ok(Arc::new(App {
        store,
        embedder,
        scope,
        default_user: config.default_user.clone(),
        backfill,
        query_vectors,
    }))
}
