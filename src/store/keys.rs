//! API keys: create, list, revoke, and look up by hash.

use crate::db::statements::Statements;
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
        let row = client
            .one(
                "INSERT INTO api_keys (companion_id, key_hash, prefix, label, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&scope.companion_id, &hash, &prefix, &label, &expires_at],
            )
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let client = self.client().await?;
        let rows = client.rows("SELECT k.id, c.name AS companion, k.label, k.prefix, k.created_at, k.expires_at, k.revoked_at, \
                        k.last_used_at \
                 FROM api_keys k JOIN companions c ON c.id = k.companion_id \
                 ORDER BY k.created_at DESC", &[]).await?;
        super::read_rows(&rows, |r| {
            Ok(KeyInfo {
                id: r.try_get("id")?,
                companion: r.try_get("companion")?,
                label: r.try_get("label")?,
                prefix: r.try_get("prefix")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
                revoked_at: r.try_get("revoked_at")?,
                last_used_at: r.try_get("last_used_at")?,
            })
        })
    }

    /// Revokes the key with this id or prefix; returns how many were revoked.
    pub async fn revoke_key(&self, id_or_prefix: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .run(
                "UPDATE api_keys SET revoked_at = now() \
                 WHERE revoked_at IS NULL AND (id::text = $1 OR prefix = $1)",
                &[&id_or_prefix],
            )
            .await?)
    }

    /// The live key with this hash: its id and companion.
    pub async fn find_key(&self, hash: &[u8]) -> Result<Option<(Uuid, Scope)>, StoreError> {
        let client = self.client().await?;
        let Some(row) = client
            .opt(
                "UPDATE api_keys SET last_used_at = now() \
                 WHERE key_hash = $1 AND revoked_at IS NULL \
                   AND (expires_at IS NULL OR expires_at > now()) \
                 RETURNING id, companion_id",
                &[&hash],
            )
            .await?
        else {
            return Ok(None);
        };
        let scope = Scope {
            companion_id: row.try_get("companion_id")?,
        };
        Ok(Some((row.try_get("id")?, scope)))
    }

    /// Whether any key could authenticate now.
    pub async fn has_live_keys(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .one(
                "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > now()))",
                &[],
            )
            .await?
            .get(0))
    }

    /// Whether a key was ever created (revoked and expired ones count): from
    /// then on HTTP requires keys, across restarts too.
    pub async fn any_key_created(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .one("SELECT EXISTS (SELECT 1 FROM api_keys)", &[])
            .await?
            .try_get(0)?)
    }

    /// Deletes every revoked or expired key (and, by cascade, its sessions)
    /// unless a live key remains; returns how many were deleted, or `None`
    /// when live keys remain and nothing was deleted.
    pub async fn delete_dead_keys(&self) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .one(
                "WITH live AS (SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL \
                               AND (expires_at IS NULL OR expires_at > now())), \
                      gone AS (DELETE FROM api_keys WHERE (SELECT n FROM live) = 0 RETURNING 1) \
                 SELECT (SELECT n FROM live) AS live, (SELECT count(*) FROM gone) AS deleted",
                &[],
            )
            .await?;
        let live: i64 = row.try_get("live")?;
        let deleted: i64 = row.try_get("deleted")?;
        Ok((live == 0).then_some(deleted as u64))
    }
}
