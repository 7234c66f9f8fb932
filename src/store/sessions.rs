//! MCP sessions in `companion_sessions`: what a client's `initialize` said,
//! who created the session, and when it was last used, so any replica can
//! resume a session after a restart.

use crate::db::statements::Statements;
use std::time::Duration;

use uuid::Uuid;

use super::{Scope, Store, StoreError};

/// What a session request may do, decided by its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCheck {
    /// Live, owned by the caller; its expiry was pushed back.
    Ok,
    /// No such session, or it expired.
    Unknown,
    /// Live, but created by another principal.
    Forbidden,
}

impl Store {
    /// Stores (or replaces) a session's initialize state.
    #[allow(clippy::too_many_arguments)]
    pub async fn save_session(
        &self,
        id: &str,
        scope: &Scope,
        api_key_id: Option<Uuid>,
        principal: &str,
        init_state: &serde_json::Value,
        protocol_version: &str,
        client_info: &serde_json::Value,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .run("INSERT INTO companion_sessions (id, companion_id, api_key_id, principal, init_state, \
                    protocol_version, client_info, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8)) \
                 ON CONFLICT (id) DO UPDATE SET init_state = EXCLUDED.init_state, \
                    protocol_version = EXCLUDED.protocol_version, client_info = EXCLUDED.client_info, \
                    last_activity_at = now(), expires_at = EXCLUDED.expires_at \
                 WHERE companion_sessions.principal IS NOT DISTINCT FROM EXCLUDED.principal",
                &[
                    &id,
                    &scope.companion_id,
                    &api_key_id,
                    &principal,
                    init_state,
                    &protocol_version,
                    client_info,
                    &ttl.as_secs_f64(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The stored initialize state of a live session.
    pub async fn load_session(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client().await?;
        let row = client
            .opt(
                "SELECT init_state FROM companion_sessions \
                 WHERE id = $1 AND expires_at > now() AND init_state IS NOT NULL",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| r.try_get("init_state")).transpose()?)
    }

    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .run("DELETE FROM companion_sessions WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// Checks that session `id` is live and belongs to `principal`, and if
    /// so slides its expiry to `ttl` from now.
    ///
    /// Every HTTP request passes here, so the slide is written only when the
    /// last one is older than a tenth of the TTL (at most 30 s): most checks
    /// are then a primary-key read, with no commit to wait for (measured:
    /// writing on every request cost about 40% of `get_memory` throughput).
    pub async fn touch_session(
        &self,
        id: &str,
        principal: &str,
        ttl: Duration,
    ) -> Result<SessionCheck, StoreError> {
        let client = self.client().await?;
        let row = client
            .one("WITH s AS (SELECT principal FROM companion_sessions WHERE id = $1 AND expires_at > now()), \
                 t AS (UPDATE companion_sessions SET last_activity_at = now(), \
                         expires_at = now() + make_interval(secs => $3) \
                       WHERE id = $1 AND expires_at > now() AND principal IS NOT DISTINCT FROM $2 \
                         AND last_activity_at < now() - make_interval(secs => least(30, $3::float8 / 10)) \
                       RETURNING 1) \
                 SELECT (SELECT count(*) FROM s) AS live, \
                        (SELECT count(*) FROM s WHERE principal IS NOT DISTINCT FROM $2) AS owned", &[&id, &principal, &ttl.as_secs_f64()])
            .await?;
        let (exists, owned): (i64, i64) = (row.try_get("live")?, row.try_get("owned")?);
        Ok(match (exists, owned) {
            (0, _) => SessionCheck::Unknown,
            (_, 0) => SessionCheck::Forbidden,
            _ => SessionCheck::Ok,
        })
    }

    /// Deletes expired sessions; returns how many.
    pub async fn purge_sessions(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .run(
                "DELETE FROM companion_sessions WHERE expires_at <= now()",
                &[],
            )
            .await?)
    }

    /// Live sessions, for metrics.
    pub async fn count_sessions(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .one(
                "SELECT count(*) AS n FROM companion_sessions WHERE expires_at > now()",
                &[],
            )
            .await?
            .try_get("n")?)
    }
}
