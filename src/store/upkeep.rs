//! The SQL of upkeep, across companions: deleting expired memories,
//! reading and filling in the vectors of memories and messages stored while
//! the embedder was unavailable, and refreshing the planner's statistics of
//! `memories` after a write that made most of a scope. The schedules that
//! run the first two (and the embedder they call) are `crate::jobs`'; the
//! statistics are refreshed by the write itself ([`Store::insert_batch`]),
//! before it answers.

use std::collections::HashMap;

use crate::db::statements::Statements;
use pgvector::Vector;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Scope, Store, StoreError};

/// The tables whose rows the embedding backfill fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embeddable {
    Memories,
    Messages,
}

/// A row stored without a vector.
#[derive(Debug, Clone)]
pub struct Unembedded {
    pub id: Uuid,
    pub content: String,
    /// Memories only: the hash of the content read, so a row edited since
    /// is not filled with the vector of its old content (messages never
    /// change).
    pub content_hash: Option<Vec<u8>>,
}

impl Store {
    /// Deletes up to `limit` expired memories; returns how many.
    pub async fn purge_expired(&self, limit: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client.run("DELETE FROM memories WHERE id IN ( \
                    SELECT id FROM memories WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)", &[&limit]).await?)
    }

    /// Up to `limit` rows of `table` without a vector, oldest first.
    pub async fn unembedded(
        &self,
        table: Embeddable,
        limit: i64,
    ) -> Result<Vec<Unembedded>, StoreError> {
        let sql = match table {
            Embeddable::Memories => {
                "SELECT id, content, content_hash FROM memories WHERE embedding IS NULL \
                 ORDER BY created_at LIMIT $1"
            }
            Embeddable::Messages => {
                "SELECT id, content, NULL::bytea AS content_hash FROM messages \
                 WHERE embedding IS NULL ORDER BY created_at LIMIT $1"
            }
        };
        let client = self.client().await?;
        client
            .rows(sql, &[&limit])
            .await?
            .iter()
            .map(|row| {
                Ok(Unembedded {
                    id: row.try_get("id")?,
                    content: row.try_get("content")?,
                    content_hash: row.try_get("content_hash")?,
                })
            })
            .collect()
    }

    /// Stores `vectors[i]` (made by `model`) for `rows[i]` where that row
    /// still has no vector and, for a memory, the content embedded; returns
    /// how many rows were filled in.
    pub async fn set_embeddings(
        &self,
        table: Embeddable,
        rows: &[Unembedded],
        vectors: Vec<Vec<f32>>,
        model: &str,
    ) -> Result<usize, StoreError> {
        let sql = match table {
            Embeddable::Memories => {
                "UPDATE memories SET embedding = $2, embedding_model = $3 \
                 WHERE id = $1 AND content_hash = $4 AND embedding IS NULL"
            }
            Embeddable::Messages => {
                "UPDATE messages SET embedding = $2, embedding_model = $3 \
                 WHERE id = $1 AND embedding IS NULL"
            }
        };
        let client = self.client().await?;
        let mut filled = 0;
        for (row, vector) in rows.iter().zip(vectors) {
            let vector = Vector::from(vector);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&row.id, &vector, &model];
            if table == Embeddable::Memories {
                params.push(&row.content_hash);
            }
            filled += client.run(sql, &params).await? as usize;
        }
        Ok(filled)
    }
}

/// A batch that creates at least this many memories for a user, making up
/// more than half of that user's memories (the scope at least doubled),
/// refreshes the statistics before it answers. Below it a wrong estimate
/// costs little: the slow plans it leads to scan the scope once per
/// candidate, and 200 rows scanned 250 times take a few ms.
pub(crate) const FRESH_SCOPE_ROWS: i64 = 200;

/// How many of a scope's live memories there are, counted up to `$3`.
const SCOPE_ROWS_SQL: &str = "SELECT count(*) AS n FROM ( \
        SELECT 1 FROM memories m \
        WHERE m.companion_id = $1 AND m.user_id = $2 AND m.archived_at IS NULL LIMIT $3) x";

/// The statistics search plans read: the scope columns (the estimate of a
/// scope's size), every column a filter or the fusion compares, and the
/// full-text column (which decides between its GIN index and a scan of the
/// scope). Content, hashes, metadata and the vectors are left to
/// autovacuum: no plan reads their statistics, and they are most of the
/// cost of a full ANALYZE (docs/BENCHMARKS.md, "Plans right after writes").
const ANALYZE_SQL: &str = "ANALYZE memories (companion_id, user_id, kind, importance, tags, \
     search_tsv, occurred_at, expires_at, archived_at, created_at, seq)";

impl Store {
    /// Refreshes the planner's statistics of `memories` when a batch that
    /// created `created[user]` memories in `scope` made more than half of
    /// one of those scopes, at least [`FRESH_SCOPE_ROWS`] of them.
    ///
    /// Right after such a write the statistics still describe the table
    /// without those rows: on a fresh install none are there yet, and in a
    /// large table a new scope is a value they have never seen. Either way
    /// the planner takes the scope for one row and plans search statements
    /// that scan the whole scope once per candidate (EXPLAIN in
    /// docs/BENCHMARKS.md). Autovacuum only looks once a minute, and in a
    /// large table waits for 2% of it to change (migration 0008), while
    /// the agent searches as soon as the batch returns: so the batch
    /// refreshes them itself. A refresh that fails (a role without the
    /// right to ANALYZE gets a warning, not an error) leaves the write as it
    /// is, committed. (The full-text index has no pending entries to merge:
    /// migration 0011.)
    pub(crate) async fn refresh_statistics_after(
        &self,
        scope: &Scope,
        created: &HashMap<Uuid, i64>,
    ) -> Result<bool, StoreError> {
        let candidates: Vec<(&Uuid, i64)> = created
            .iter()
            .map(|(user, n)| (user, *n))
            .filter(|(_, n)| *n >= FRESH_SCOPE_ROWS)
            .collect();
        if candidates.is_empty() {
            return Ok(false);
        }
        let client = self.client().await?;
        let mut fresh = false;
        for (user, n) in candidates {
            let bound = 2 * n;
            let row = client
                .one(SCOPE_ROWS_SQL, &[&scope.companion_id, user, &bound])
                .await?;
            if row.try_get::<_, i64>("n")? < bound {
                fresh = true;
                break;
            }
        }
        if fresh {
            super::timed("analyze_memories", client.batch_execute(ANALYZE_SQL)).await?;
        }
        Ok(fresh)
    }
}
