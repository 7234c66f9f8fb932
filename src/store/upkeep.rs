//! The SQL of background upkeep, across companions: deleting expired
//! memories, and reading and filling in the vectors of memories and
//! messages stored while the embedder was unavailable. The schedules that
//! run these (and the embedder they call) are `crate::jobs`'.

use crate::db::statements::Statements;
use pgvector::Vector;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Store, StoreError};

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
