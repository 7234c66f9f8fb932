//! Every background schedule of a running server, on one [`TaskTracker`]:
//! writing counted reads (access statistics, each second), purging expired
//! memories, embedding memories and messages stored without a vector,
//! purging expired MCP sessions, noticing the first API key, and probing
//! how far behind the read replicas are.
//!
//! The store gives the SQL; the schedules, the embedder calls and the
//! logging are here. None runs on a request's path. Each loop finishes the
//! statement it is in, then stops when `stop` is cancelled, so the caller
//! can wait for the tracker before the last access flush and the pool's
//! close (and no job sees the pool close under it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::replicas::Replicas;
use crate::embed::Embedder;
use crate::store::Store;
use crate::store::upkeep::Embeddable;

/// How often counted reads are written (see `store::access`).
const ACCESS_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Memories deleted per purge statement, so none runs long.
const PURGE_BATCH: i64 = 500;
/// Rows embedded per backfill round: one embedder call.
const EMBED_BATCH: i64 = 32;
/// The backfill also runs this often without being woken.
const BACKFILL_EVERY: Duration = Duration::from_secs(60);
/// How often expired MCP sessions are deleted.
const SESSION_PURGE_EVERY: Duration = Duration::from_secs(300);
/// How soon a key created while the server runs is required (`mnemo token
/// create` is another process, so this polls).
const KEY_POLL_EVERY: Duration = Duration::from_secs(5);

/// What the jobs work on, handed over by `app`.
pub struct Jobs {
    pub store: Store,
    pub embedder: Arc<dyn Embedder>,
    /// Wakes the embedding backfill.
    pub backfill: Arc<Notify>,
    /// Set once any API key exists; never cleared while running.
    pub keys_required: Arc<AtomicBool>,
    pub purge_every: Duration,
    /// Probed for their lag (when there are any).
    pub replicas: Arc<Replicas>,
}

impl Jobs {
    /// Starts every schedule on `tracker`; each stops when `stop` is
    /// cancelled.
    pub fn spawn(self, tracker: &TaskTracker, stop: CancellationToken) {
        let Jobs {
            store,
            embedder,
            backfill,
            keys_required,
            purge_every,
            replicas,
        } = self;
        if !replicas.is_empty() {
            tracker.spawn(probe_replicas(store.clone(), replicas, stop.clone()));
        }
        tracker.spawn(flush_access(store.clone(), stop.clone()));
        tracker.spawn(purge_memories(store.clone(), purge_every, stop.clone()));
        tracker.spawn(purge_sessions(store.clone(), stop.clone()));
        tracker.spawn(watch_keys(store.clone(), keys_required, stop.clone()));
        tracker.spawn(backfill_embeddings(store, embedder, backfill, stop));
    }
}

/// Waits for the next tick, or returns false once `stop` is cancelled.
async fn tick(interval: &mut tokio::time::Interval, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        _ = interval.tick() => true,
    }
}

async fn flush_access(store: Store, stop: CancellationToken) {
    let mut interval = tokio::time::interval(ACCESS_FLUSH_EVERY);
    // The last flush is the caller's, after this stops and requests ended.
    while tick(&mut interval, &stop).await {
        if let Err(e) = store.flush_access().await {
            tracing::warn!(error = %e, "writing access statistics failed; will retry");
        }
    }
}

async fn purge_memories(store: Store, every: Duration, stop: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    while tick(&mut interval, &stop).await {
        let mut purged = 0;
        while !stop.is_cancelled() {
            match store.purge_expired(PURGE_BATCH).await {
                Ok(n) => {
                    purged += n;
                    if (n as i64) < PURGE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired memories failed; will retry");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "purged expired memories");
        }
    }
}

async fn purge_sessions(store: Store, stop: CancellationToken) {
    let mut interval = tokio::time::interval(SESSION_PURGE_EVERY);
    while tick(&mut interval, &stop).await {
        match store.purge_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "purging sessions failed; will retry"),
        }
    }
}

/// Sets `keys_required` once a key exists (created by `mnemo token create`
/// while the server runs), then stops: once required, keys stay required,
/// so revoking the last key never opens the server.
async fn watch_keys(store: Store, keys_required: Arc<AtomicBool>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(KEY_POLL_EVERY);
    while !keys_required.load(Ordering::Relaxed) && tick(&mut interval, &stop).await {
        match store.any_key_created().await {
            Ok(true) => {
                keys_required.store(true, Ordering::Relaxed);
                tracing::info!("API keys exist now: HTTP requests need one");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "checking for API keys failed; will retry"),
        }
    }
}

/// Probes the read replicas' lag against the primary (see `db::replicas`)
/// several times per lag bound.
async fn probe_replicas(store: Store, replicas: Arc<Replicas>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(replicas.probe_every());
    // A late probe only makes replicas look staler: skip missed ticks.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tick(&mut interval, &stop).await {
        replicas.probe(store.db()).await;
    }
}

/// Embeds what was stored without a vector, memories first, whenever woken
/// (a store while the embedder was down) and every [`BACKFILL_EVERY`].
async fn backfill_embeddings(
    store: Store,
    embedder: Arc<dyn Embedder>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(BACKFILL_EVERY) => {}
        }
        for table in [Embeddable::Memories, Embeddable::Messages] {
            loop {
                let n = backfill_round(&store, embedder.as_ref(), table, &stop).await;
                if n == 0 {
                    break;
                }
                tracing::info!(
                    embedded = n,
                    ?table,
                    "embedded rows stored without a vector"
                );
            }
        }
    }
}

/// Embeds one batch of `table`; returns how many rows it filled in, 0 when
/// there was nothing to do, it failed (logged; the next round retries) or
/// `stop` was cancelled.
async fn backfill_round(
    store: &Store,
    embedder: &dyn Embedder,
    table: Embeddable,
    stop: &CancellationToken,
) -> usize {
    if stop.is_cancelled() {
        return 0;
    }
    let rows = match store.unembedded(table, EMBED_BATCH).await {
        Ok(rows) if rows.is_empty() => return 0,
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, ?table, "reading rows to embed failed; will retry");
            return 0;
        }
    };
    let texts = rows.iter().map(|r| r.content.clone()).collect();
    // Embedding writes nothing, so shutdown need not wait for it (the model
    // may still be loading).
    let vectors = tokio::select! {
        biased;
        _ = stop.cancelled() => return 0,
        v = embedder.embed(texts) => v,
    };
    let vectors = match vectors {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, ?table, "embedding backfill failed; will retry");
            return 0;
        }
    };
    match store
        .set_embeddings(table, &rows, vectors, embedder.model_id())
        .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, ?table, "storing backfilled vectors failed; will retry");
            0
        }
    }
}
