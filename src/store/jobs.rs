//! Background upkeep that never blocks a request: writing counted reads
//! (access statistics), purging expired memories, and embedding memories
//! and messages stored while the embedder was unavailable.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Store, StoreError, to_vector};
use crate::embed::Embedder;

/// Rows per purge or backfill round, so no single statement runs long.
const BATCH: i64 = 500;
const EMBED_BATCH: i64 = 32;
/// How often counted reads are written (see `access`).
const ACCESS_FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Store {
    /// Deletes up to [`BATCH`] expired memories; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM memories WHERE id IN ( \
                    SELECT id FROM memories WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)",
            )
            .await?;
        Ok(client.execute(&stmt, &[&BATCH]).await?)
    }

    /// Embeds up to [`EMBED_BATCH`] memories that have no vector; returns
    /// how many were filled in.
    pub async fn backfill_embeddings(&self, embedder: &dyn Embedder) -> Result<usize, StoreError> {
        let rows = {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT id, content, content_hash FROM memories WHERE embedding IS NULL \
                     ORDER BY created_at LIMIT $1",
                )
                .await?;
            client.query(&stmt, &[&EMBED_BATCH]).await?
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let texts: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
        let vectors = embedder
            .embed(texts)
            .await
            .map_err(|e| StoreError::Constraint(format!("embedding backfill: {e}")))?;
        let client = self.client().await?;
        // Only fill a row whose content is still the one embedded.
        let stmt = client
            .prepare_cached(
                "UPDATE memories SET embedding = $2, embedding_model = $3 \
                 WHERE id = $1 AND content_hash = $4 AND embedding IS NULL",
            )
            .await?;
        let mut filled = 0;
        for (row, vector) in rows.iter().zip(vectors) {
            let id: Uuid = row.get(0);
            let hash: Vec<u8> = row.get(2);
            filled += client
                .execute(
                    &stmt,
                    &[&id, &to_vector(Some(vector)), &embedder.model_id(), &hash],
                )
                .await? as usize;
        }
        Ok(filled)
    }
}

/// Runs the purge every `purge_every` and the embedding backfill whenever
/// `wake` is notified (and once a minute), until `stop` is cancelled.
pub fn spawn(
    store: Store,
    embedder: Arc<dyn Embedder>,
    purge_every: Duration,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let access_store = store.clone();
    let access_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ACCESS_FLUSH_EVERY);
        // The last flush is the server's, at shutdown, once requests stop.
        loop {
            tokio::select! {
                _ = access_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = access_store.flush_access().await {
                tracing::warn!(error = %e, "writing access statistics failed; will retry");
            }
        }
    });
    let purge_store = store.clone();
    let purge_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(purge_every);
        loop {
            tokio::select! {
                _ = purge_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match purge_store.purge_expired().await {
                    Ok(n) if n as i64 >= BATCH => continue,
                    Ok(0) => break,
                    Ok(n) => {
                        tracing::info!(purged = n, "purged expired memories");
                        break;
                    }
                    // Shutting down: the pool closed under the purge.
                    Err(_) if purge_stop.is_cancelled() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "purging expired memories failed; will retry");
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            loop {
                match store.backfill_embeddings(embedder.as_ref()).await {
                    Ok(0) => break,
                    Ok(n) => {
                        tracing::info!(embedded = n, "embedded memories stored without a vector")
                    }
                    Err(_) if stop.is_cancelled() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "embedding backfill failed; will retry");
                        break;
                    }
                }
            }
            loop {
                match store.backfill_message_embeddings(embedder.as_ref()).await {
                    Ok(0) => break,
                    Ok(n) => {
                        tracing::info!(embedded = n, "embedded messages stored without a vector")
                    }
                    Err(_) if stop.is_cancelled() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "message embedding backfill failed; will retry");
                        break;
                    }
                }
            }
        }
    });
}
