//! Assembling and running a mnemo server: [`start`] builds the [`App`]
//! from a [`Config`] (the embedder, loading in the background; the
//! database, embedded or external, migrated; the companion scope) and
//! starts its background jobs; [`App`] is what tools and transports take
//! from it (the store, embedding with deferral, search orchestration,
//! whether HTTP requires API keys), and [`App::stop_jobs`] ends the jobs.
//! Read-only tool calls go through [`App::read`], which sends them to a
//! read replica when one may serve them (`db::replicas` says when) and runs
//! them again on the primary when the replica fails them.
//!
//! Invariant: this module imports nothing of `tools` or `transport`; they
//! depend on it, so its errors are its own ([`SearchError`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::replicas::{ReplicaStatus, Replicas};
use crate::db::{self, DbError};
use crate::embed::cache::QueryCache;
use crate::embed::{EmbedError, Embedder, LazyEmbedder};
use crate::jobs::Jobs;
use crate::store::search::{Hit, Query};
use crate::store::{ListFilter, Scope, Store, StoreError};

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

/// Why a search (or the embedding of its query) failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the embedding model is unavailable ({0}); mode \"keyword\" still works")]
    EmbedderDown(EmbedError),
    #[error("the embedder returned nothing")]
    NoVector,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a tool call needs, shared by all sessions.
pub struct App {
    pub store: Store,
    pub embedder: Arc<LazyEmbedder>,
    /// The companion this server acts for.
    pub scope: Scope,
    pub default_user: String,
    /// Wakes the embedding backfill job after a store without a vector.
    pub backfill: Arc<Notify>,
    /// Vectors of recent search queries.
    pub query_vectors: QueryCache,
    /// The read replicas (maybe none) and their stores, in the same order.
    replicas: Arc<Replicas>,
    readers: Vec<Store>,
    /// Whether HTTP requests need an API key: once any key was created,
    /// revoked and expired ones included (kept current by `jobs`).
    keys_required: Arc<AtomicBool>,
    jobs: TaskTracker,
    stop_jobs: CancellationToken,
}

/// Builds the shared [`App`] and starts its background jobs, which stop
/// when `stop` is cancelled (or at [`App::stop_jobs`]).
pub async fn start(config: &Config, stop: CancellationToken) -> Result<Arc<App>, StartError> {
    let embedder = LazyEmbedder::from_config(&config.embedder)?;
    // The model loads while the database starts: neither waits for the other.
    embedder.warm_up();
    let db = db::connect(config, embedder.dim()).await?;
    tracing::info!(database = %db.location, embedder = %config.embedder.describe(), "database ready");
    let store = Store::new(db, embedder.dim());
    let replicas = Arc::new(Replicas::open(config)?);
    let readers = replicas
        .members()
        .iter()
        .map(|m| store.with_db(m.db.clone()))
        .collect();
    for m in replicas.members() {
        tracing::info!(replica = %m.name, target = %m.db.location, "read replica configured");
    }
    let scope = store.companion(&config.companion).await?;
    let keys_required = Arc::new(AtomicBool::new(store.any_key_created().await?));
    let backfill = Arc::new(Notify::new());
    let tracker = TaskTracker::new();
    Jobs {
        store: store.clone(),
        embedder: embedder.clone() as Arc<dyn Embedder>,
        backfill: backfill.clone(),
        keys_required: keys_required.clone(),
        purge_every: config.purge_interval,
        replicas: replicas.clone(),
    }
    .spawn(&tracker, stop.clone());
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
        replicas,
        readers,
        keys_required,
        jobs: tracker,
        stop_jobs: stop,
    }))
}

impl App {
    /// Whether HTTP requests need an API key.
    pub fn keys_required(&self) -> bool {
        self.keys_required.load(Ordering::Relaxed)
    }

    /// Stops the background jobs and waits until each has finished what it
    /// was writing; the caller then does the last access flush and closes
    /// the pool.
    pub async fn stop_jobs(&self) {
        self.stop_jobs.cancel();
        self.jobs.close();
        self.jobs.wait().await;
    }

    /// Embeds `texts`; on failure logs it and returns `None` so the caller
    /// can store without vectors (the backfill job fills them in later).
    pub(crate) async fn embed_or_defer(&self, texts: Vec<String>) -> Option<Vec<Vec<f32>>> {
        match self.embedder.embed(texts).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "embedding failed; storing without a vector for the backfill job");
                self.backfill.notify_one();
                None
            }
        }
    }

    /// Embeds a search query, or takes its vector from the recent queries';
    /// failure is an error the caller reports.
    pub(crate) async fn embed_query(&self, text: &str) -> Result<Vec<f32>, SearchError> {
        if let Some(vector) = self.query_vectors.get(text) {
            return Ok(vector);
        }
        let vector = self
            .embedder
            .embed(vec![text.to_string()])
            .await
            .map_err(SearchError::EmbedderDown)?
            .pop()
            .ok_or(SearchError::NoVector)?;
        self.query_vectors.put(text, &vector);
        Ok(vector)
    }

    /// The store a read of `scope` runs on: a replica's (and its index) when
    /// one may serve it, else the primary's.
    fn reader(&self, scope: &Scope) -> (&Store, Option<usize>) {
        match self.replicas.choose(scope.companion_id) {
            Some(i) => (&self.readers[i], Some(i)),
            None => (&self.store, None),
        }
    }

    /// What a read's `result` on `replica` settles: `None` when it must run
    /// again on the primary (the replica failed it, or found nothing where
    /// the primary may find a row written through another server).
    fn settle<T>(
        &self,
        replica: Option<usize>,
        result: Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let Some(i) = replica else {
            return Some(result);
        };
        match result {
            Err(StoreError::Db(e)) => {
                self.replicas.read_failed(i, &e);
                None
            }
            Err(
                StoreError::NotFound(_)
                | StoreError::ContextNotFound(_)
                | StoreError::VersionOutOfRange { .. },
            ) => {
                self.replicas.read_missed(i);
                None
            }
            other => Some(other),
        }
    }

    /// Runs the read-only `op` for `scope` on a read replica when one may
    /// serve it, else on the primary; a replica that fails it (or finds
    /// nothing) hands it to the primary, so no call fails for a replica.
    pub(crate) async fn read<'s, T, F>(
        &'s self,
        scope: &Scope,
        op: impl Fn(&'s Store) -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let (store, replica) = self.reader(scope);
        match self.settle(replica, op(store).await) {
            Some(done) => done,
            None => op(&self.store).await,
        }
    }

    /// Notes that `scope` has just written (a tool call other than a read
    /// has returned): its reads stay on the primary until a replica is known
    /// to hold the write.
    pub(crate) fn wrote(&self, scope: &Scope) {
        self.replicas.wrote(scope.companion_id);
    }

    /// Each read replica's condition, for `/readyz`.
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        self.replicas.status()
    }

    /// Runs `query`: its keyword side while it is embedded (the two use
    /// different cores), then the fusion, on a replica when one may serve
    /// it (see [`App::read`]). When the model is down a search fails with
    /// a hint at keyword mode, unless `keywords_if_down`, which ranks by
    /// keywords alone instead.
    pub(crate) async fn search(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        query: &Query,
        keywords_if_down: bool,
    ) -> Result<Vec<Hit>, SearchError> {
        let embedding = async {
            if !query.wants_embedding() {
                return Ok(None);
            }
            match self.embed_query(&query.text).await {
                Ok(v) => Ok(Some(v)),
                Err(_) if keywords_if_down => Ok(None),
                Err(e) => Err(e),
            }
        };
        let (store, replica) = self.reader(scope);
        let (embedding, keywords) =
            tokio::join!(embedding, store.search_keywords(scope, filter, query));
        let embedding = embedding?;
        let first = match keywords {
            // The vector (1.5 KB at 384 dims) is kept for a second try.
            Ok(keywords) => {
                store
                    .search(scope, filter, query, embedding.clone(), keywords)
                    .await
            }
            Err(e) => Err(e),
        };
        match self.settle(replica, first) {
            Some(done) => Ok(done?),
            None => {
                let keywords = self.store.search_keywords(scope, filter, query).await?;
                Ok(self
                    .store
                    .search(scope, filter, query, embedding, keywords)
                    .await?)
            }
        }
    }
}
