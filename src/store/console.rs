//! What the web console needs beyond the tools' statements: its sign-in
//! sessions (`console_sessions`, migration 0007), and read-only views for
//! people: a memory read without counting an access, memories across users
//! and states (archived, expired but not yet purged), and growth by day.
//! Scoped by companion like everything in the store.

use crate::db::statements::Statements;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::sql::MEMORY_COLUMNS;
use super::{Kind, Memory, Scope, Store, StoreError};

/// A live console session, found by the hash of its id.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub scope: Scope,
    /// The key that signed in; `None` on a server without keys.
    pub api_key_id: Option<Uuid>,
    pub csrf_token: String,
}

/// Which memories a listing shows, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryState {
    /// Neither archived nor expired (what search and list_memories see).
    #[default]
    Live,
    Archived,
    /// Past their expiry and not yet purged.
    Expired,
    All,
}

impl MemoryState {
    pub const ALL: [MemoryState; 4] = [
        MemoryState::Live,
        MemoryState::Archived,
        MemoryState::Expired,
        MemoryState::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryState::Live => "live",
            MemoryState::Archived => "archived",
            MemoryState::Expired => "expired",
            MemoryState::All => "all",
        }
    }

    pub fn parse(text: &str) -> Option<MemoryState> {
        MemoryState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Filters of the console's memory listing.
#[derive(Debug, Clone, Default)]
pub struct Browse {
    /// One user's memories, or every user's.
    pub user: Option<String>,
    pub kinds: Option<Vec<Kind>>,
    pub tags_any: Option<Vec<String>>,
    pub tags_all: Option<Vec<String>>,
    pub state: MemoryState,
    /// `occurred_at` at or after.
    pub since: Option<DateTime<Utc>>,
    /// `occurred_at` before.
    pub until: Option<DateTime<Utc>>,
}

impl Store {
    /// Records a console session for `scope`, signed in with `api_key_id`.
    pub async fn create_console_session(
        &self,
        scope: &Scope,
        api_key_id: Option<Uuid>,
        id_hash: &[u8],
        csrf_token: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .run("INSERT INTO console_sessions (id_hash, companion_id, api_key_id, csrf_token, expires_at) \
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
                &[
                    &id_hash,
                    &scope.companion_id,
                    &api_key_id,
                    &csrf_token,
                    &ttl.as_secs_f64(),
                ],
            )
            .await?;
        Ok(())
    }

    /// The live session with this id hash. A session opened with a key ends
    /// when the key is revoked or expires.
    pub async fn console_session(
        &self,
        id_hash: &[u8],
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .opt(
                "SELECT s.companion_id, s.api_key_id, s.csrf_token FROM console_sessions s \
                 LEFT JOIN api_keys k ON k.id = s.api_key_id \
                 WHERE s.id_hash = $1 AND s.expires_at > now() \
                   AND (s.api_key_id IS NULL OR (k.revoked_at IS NULL \
                        AND (k.expires_at IS NULL OR k.expires_at > now())))",
                &[&id_hash],
            )
            .await?
            .map(|r| ConsoleSession {
                scope: Scope {
                    companion_id: r.get("companion_id"),
                },
                api_key_id: r.get("api_key_id"),
                csrf_token: r.get("csrf_token"),
            }))
    }

    /// Ends a console session (sign-out).
    pub async fn end_console_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .run(
                "DELETE FROM console_sessions WHERE id_hash = $1",
                &[&id_hash],
            )
            .await?;
        Ok(())
    }

    /// Deletes expired console sessions; returns how many.
    pub async fn purge_console_sessions(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .run(
                "DELETE FROM console_sessions WHERE expires_at <= now()",
                &[],
            )
            .await?)
    }

    /// One memory by id in any state (expired ones too), without counting
    /// an access: a person looking at a memory is not the agent using it.
    pub async fn peek_memory(&self, scope: &Scope, id: Uuid) -> Result<Memory, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.id = m.user_id \
             WHERE m.id = $1 AND m.companion_id = $2"
        );
        let row = client
            .opt(&sql, &[&id, &scope.companion_id])
            .await?
            .ok_or(StoreError::NotFound(id))?;
        Memory::from_row(&row)
    }

    /// Memories newest first, `limit` per page after `cursor` (the
    /// `(created_at, id)` of the previous page's last row).
    pub async fn browse_memories(
        &self,
        scope: &Scope,
        filter: &Browse,
        cursor: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Memory>, StoreError> {
        let client = self.client().await?;
        // A person's listing, not a hot path: one statement with optional
        // filters is enough (the tools' planned variants are for search).
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.id = m.user_id \
             WHERE m.companion_id = $1 \
               AND ($2::text IS NULL OR u.external_id = $2) \
               AND ($3::text[] IS NULL OR m.kind::text = ANY($3)) \
               AND ($4::text[] IS NULL OR m.tags && $4) \
               AND ($5::text[] IS NULL OR m.tags @> $5) \
               AND ($6::timestamptz IS NULL OR m.occurred_at >= $6) \
               AND ($7::timestamptz IS NULL OR m.occurred_at < $7) \
               AND CASE $8::text \
                    WHEN 'live' THEN m.archived_at IS NULL \
                        AND (m.expires_at IS NULL OR m.expires_at > now()) \
                    WHEN 'archived' THEN m.archived_at IS NOT NULL \
                    WHEN 'expired' THEN m.expires_at <= now() \
                    ELSE true END \
               AND ($9::timestamptz IS NULL OR (m.created_at, m.id) < ($9, $10::uuid)) \
             ORDER BY m.created_at DESC, m.id DESC LIMIT $11"
        );
        let kinds: Option<Vec<&str>> = filter
            .kinds
            .as_ref()
            .map(|k| k.iter().map(|k| k.as_str()).collect());
        let (at, after) = match cursor {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let rows = client
            .rows(
                &sql,
                &[
                    &scope.companion_id,
                    &filter.user,
                    &kinds,
                    &filter.tags_any,
                    &filter.tags_all,
                    &filter.since,
                    &filter.until,
                    &filter.state.as_str(),
                    &at,
                    &after,
                    &limit,
                ],
            )
            .await?;
        rows.iter().map(Memory::from_row).collect()
    }

    /// Memories stored per day over the last `days` days (days without any
    /// are left out), oldest first.
    pub async fn memory_growth(
        &self,
        scope: &Scope,
        days: i32,
    ) -> Result<Vec<(NaiveDate, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client.rows("SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS stored FROM memories \
                 WHERE companion_id = $1 AND created_at >= now() - make_interval(days => $2) \
                 GROUP BY day ORDER BY day", &[&scope.companion_id, &days]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("day"), r.get("stored")))
            .collect())
    }
}
