//! API keys: create, list, revoke, and look up by hash.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Scope, Store, StoreError};

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: Uuid,
    pub companion: String,
    pub label: Option<String>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records a key (by hash) for `scope`'s companion.
    pub async fn create_key(
        &self,
        scope: &Scope,
        hash: &[u8],
        prefix: &str,
        label: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Uuid, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO api_keys (companion_id, key_hash, prefix, label, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[&scope.companion_id, &hash, &prefix, &label, &expires_at],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT k.id, c.name, k.label, k.prefix, k.created_at, k.expires_at, k.revoked_at, \
                        k.last_used_at \
                 FROM api_keys k JOIN companions c ON c.id = k.companion_id \
                 ORDER BY k.created_at DESC",
            )
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| KeyInfo {
                id: r.get(0),
                companion: r.get(1),
                label: r.get(2),
                prefix: r.get(3),
                created_at: r.get(4),
                expires_at: r.get(5),
                revoked_at: r.get(6),
                last_used_at: r.get(7),
            })
            .collect())
    }

    /// Revokes the key with this id or prefix; returns how many were revoked.
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE api_keys SET revoked_at = now() \
                 WHERE revoked_at IS NULL AND (id::text = $1 OR prefix = $1)",
            )
            .await?;
        Ok(client.execute(&stmt, &[&id_or_prefix]).await?)
    }

    /// The live key with this hash: its id and companion.
    pub async fn find_key(&self, hash: &[u8]) -> Result<Option<(Uuid, Scope)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE api_keys SET last_used_at = now() \
                 WHERE key_hash = $1 AND revoked_at IS NULL \
                   AND (expires_at IS NULL OR expires_at > now()) \
                 RETURNING id, companion_id",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&hash]).await?.map(|r| {
            (
                r.get(0),
                Scope {
                    companion_id: r.get(1),
                },
            )
        }))
    }

    /// Whether any key could authenticate now.
    pub async fn has_live_keys(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > now()))",
            )
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.get(0))
    }

    /// Whether a key was ever created (revoked and expired ones count): from
    /// then on HTTP requires keys, across restarts too.
    pub async fn any_key_created(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM api_keys)")
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
    }

    /// Deletes every revoked or expired key (and, by cascade, its sessions)
    /// unless a live key remains; returns how many were deleted, or `None`
    /// when live keys remain and nothing was deleted.
    pub async fn delete_dead_keys(&self) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH live AS (SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL \
                               AND (expires_at IS NULL OR expires_at > now())), \
                      gone AS (DELETE FROM api_keys WHERE (SELECT n FROM live) = 0 RETURNING 1) \
                 SELECT (SELECT n FROM live) AS live, (SELECT count(*) FROM gone) AS deleted",
            )
            .await?;
        let row = client.query_one(&stmt, &[]).await?;
        let live: i64 = row.try_get("live")?;
        let deleted: i64 = row.try_get("deleted")?;
        Ok((live == 0).then_some(deleted as u64))
    }
}
