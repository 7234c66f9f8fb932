//! Memory rows once stored (storing is `insert`): get, list, update,
//! archive, restore, delete and statistics, all confined to a [`Scope`].

use crate::db::statements::Statements;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::filter::Shape;
pub use super::insert::content_hash;
use super::sql::{Builder, Cache, MEMORY_COLUMNS, Slot, Statement};
use super::{
    Kind, ListFilter, Memory, Scope, Store, StoreError, read_rows, retry_on_conflict, to_vector,
};

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MemoryPatch {
    pub content: Option<String>,
    pub kind: Option<Kind>,
    pub importance: Option<i16>,
    pub confidence: Option<f32>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<serde_json::Value>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// Statistics for one companion (optionally one user).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Stats {
    /// Memories stored, including archived and not yet purged expired ones.
    pub total: i64,
    /// Live (not archived, not expired) memories by kind.
    pub by_kind: std::collections::BTreeMap<String, i64>,
    pub archived: i64,
    /// Expired but not yet purged.
    pub expired: i64,
    /// Waiting for the embedding job.
    pub unembedded: i64,
    pub relations: i64,
    pub users: i64,
    pub oldest_occurred_at: Option<DateTime<Utc>>,
    pub newest_occurred_at: Option<DateTime<Utc>>,
    pub oldest_created_at: Option<DateTime<Utc>>,
    pub newest_created_at: Option<DateTime<Utc>>,
}

const GET_SQL: &str = concat!(
    "SELECT ",
    memory_columns!(),
    " FROM memories m JOIN users u ON u.id = m.user_id \
     WHERE m.id = $1 AND m.companion_id = $2 AND ",
    not_expired!()
);

/// The list statement for filters of `shape`, after a cursor or not: the
/// text names only what is in use (see [`Shape`]).
pub(crate) fn list_sql(shape: Shape, after_cursor: bool) -> Statement {
    let mut b = Builder::default();
    let filter = shape.sql(&mut b);
    let cursor = if after_cursor {
        format!(
            " AND (m.created_at, m.id) < ({}, {})",
            b.param(Slot::CursorAt),
            b.param(Slot::CursorId)
        )
    } else {
        String::new()
    };
    let limit = b.param(Slot::Limit);
    b.finish(format!(
        "SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.id = m.user_id \
         WHERE {filter}{cursor} \
         ORDER BY m.created_at DESC, m.id DESC LIMIT {limit}"
    ))
}

/// [`list_sql`]'s statements, built once each.
static LIST: LazyLock<Cache<(Shape, bool)>> = LazyLock::new(Cache::default);

const UPDATE_SQL: &str = concat!(
    "UPDATE memories AS m SET \
        content = coalesce($3, m.content), \
        content_hash = coalesce($4, m.content_hash), \
        kind = coalesce($5, m.kind), \
        importance = coalesce($6, m.importance), \
        confidence = coalesce($7, m.confidence), \
        tags = coalesce($8, m.tags), \
        metadata = coalesce($9, m.metadata), \
        occurred_at = coalesce($10, m.occurred_at), \
        expires_at = CASE WHEN $11::bool THEN $12::timestamptz ELSE m.expires_at END, \
        embedding = CASE WHEN $3::text IS NULL THEN m.embedding ELSE $13 END, \
        embedding_model = CASE WHEN $3::text IS NULL THEN m.embedding_model ELSE $14 END \
     FROM users u \
     WHERE u.id = m.user_id AND m.id = $1 AND m.companion_id = $2 AND ",
    not_expired!(),
    " AND ($15::timestamptz IS NULL OR m.updated_at = $15) \
     RETURNING ",
    memory_columns!()
);

const SET_ARCHIVED_SQL: &str = concat!(
    "UPDATE memories AS m SET archived_at = CASE WHEN $3 THEN coalesce(m.archived_at, now()) ELSE NULL END \
     FROM users u WHERE u.id = m.user_id AND m.id = $1 AND m.companion_id = $2 AND ",
    not_expired!(),
    " RETURNING ",
    memory_columns!()
);

const DELETE_SQL: &str = "DELETE FROM memories WHERE id = $1 AND companion_id = $2";

const STATS_TOTALS_SQL: &str = "SELECT count(*) AS total, \
        count(*) FILTER (WHERE m.archived_at IS NOT NULL) AS archived, \
        count(*) FILTER (WHERE m.expires_at <= now()) AS expired, \
        count(*) FILTER (WHERE m.embedding IS NULL) AS unembedded, \
        count(DISTINCT m.user_id) AS users, \
        min(m.occurred_at) AS oldest_occurred_at, max(m.occurred_at) AS newest_occurred_at, \
        min(m.created_at) AS oldest_created_at, max(m.created_at) AS newest_created_at \
     FROM memories m WHERE m.companion_id = $1 AND ($2::uuid IS NULL OR m.user_id = $2)";

const STATS_KINDS_SQL: &str = concat!(
    "SELECT m.kind, count(*) AS n FROM memories m \
     WHERE m.companion_id = $1 AND ($2::uuid IS NULL OR m.user_id = $2) AND ",
    live!(),
    " GROUP BY m.kind"
);

const STATS_RELATIONS_SQL: &str = "SELECT count(*) AS n FROM memory_relations r \
     JOIN memories f ON f.id = r.from_id \
     WHERE r.companion_id = $1 AND ($2::uuid IS NULL OR f.user_id = $2)";

const UPDATED_AT_SQL: &str = concat!(
    "SELECT m.updated_at FROM memories m WHERE m.id = $1 AND m.companion_id = $2 AND ",
    not_expired!()
);

const LIVE_TWIN_SQL: &str = "SELECT t.id FROM memories s JOIN memories t \
       ON t.companion_id = s.companion_id AND t.user_id = s.user_id \
      AND t.content_hash = coalesce($3, s.content_hash) AND t.archived_at IS NULL AND t.id <> s.id \
     WHERE s.id = $1 AND s.companion_id = $2";

impl Store {
    /// One memory by id; counts an access (written later, see `access`).
    pub async fn get(&self, scope: &Scope, id: Uuid) -> Result<Memory, StoreError> {
        let client = self.client().await?;
        let row = super::timed(
            "get_memory",
            client.opt(GET_SQL, &[&id, &scope.companion_id]),
        )
        .await?
        .ok_or(StoreError::NotFound(id))?;
        let mut memory = Memory::from_row(&row)?;
        let now = Utc::now();
        memory.access_count += self.access.record(id, now);
        memory.last_accessed_at = Some(now);
        Ok(memory)
    }

    /// Memories newest first, `limit` per page, after `cursor` (the
    /// `(created_at, id)` of the last row of the previous page).
    pub async fn list(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        cursor: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Memory>, StoreError> {
        let client = self.client().await?;
        let Some(user_id) = Store::find_user(&client, &filter.user).await? else {
            return Ok(Vec::new());
        };
        let (shape, after) = (filter.shape(), cursor.is_some());
        let list = LIST.get((shape, after), || list_sql(shape, after));
        let (cursor_at, cursor_id) = match cursor {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let values = filter.values(scope, user_id);
        let params = list.values(|slot| match slot {
            Slot::CursorAt => Some(&cursor_at),
            Slot::CursorId => Some(&cursor_id),
            Slot::Limit => Some(&limit),
            filter => values.get(filter),
        })?;
        let rows = super::timed("list_memories", client.rows(&list.sql, &params)).await?;
        read_rows(&rows, Memory::from_row)
    }

    /// Applies `patch`; with `expected_updated_at`, only if nobody changed
    /// the memory since. A content change needs its new `embedding` (or
    /// `None`, to be filled in by the embedding job).
    pub async fn update(
        &self,
        scope: &Scope,
        id: Uuid,
        patch: &MemoryPatch,
        embedding: Option<Vec<f32>>,
        model: &str,
        expected_updated_at: Option<DateTime<Utc>>,
    ) -> Result<Memory, StoreError> {
        let embedding = &embedding;
        retry_on_conflict(|| async move {
            let client = self.client().await?;
            let hash = patch.content.as_deref().map(content_hash);
            let (set_expiry, expiry) = match patch.expires_at {
                Some(e) => (true, e),
                None => (false, None),
            };
            let has_embedding = embedding.is_some();
            let result = super::timed(
                "update_memory",
                client.opt(
                    UPDATE_SQL,
                    &[
                        &id,
                        &scope.companion_id,
                        &patch.content,
                        &hash,
                        &patch.kind,
                        &patch.importance,
                        &patch.confidence,
                        &patch.tags,
                        &patch.metadata,
                        &patch.occurred_at,
                        &set_expiry,
                        &expiry,
                        &to_vector(embedding.clone()),
                        &has_embedding.then_some(model),
                        &expected_updated_at,
                    ],
                ),
            )
            .await;
            let row = match result {
                Ok(row) => row,
                Err(e) if is_unique_violation(&e) => {
                    let twin = self.live_twin(scope, id, patch.content.as_deref()).await?;
                    return Err(StoreError::DuplicateContent(twin.unwrap_or(id)));
                }
                Err(e) => return Err(e.into()),
            };
            match row {
                Some(row) => Memory::from_row(&row),
                None => Err(self.why_unchanged(scope, id, expected_updated_at).await),
            }
        })
        .await
    }

    /// Archives a memory (hidden from search and lists unless asked for).
    /// Archiving an archived memory changes nothing.
    pub async fn archive(&self, scope: &Scope, id: Uuid) -> Result<Memory, StoreError> {
        self.set_archived(scope, id, true).await
    }

    /// Brings an archived memory back.
    pub async fn restore(&self, scope: &Scope, id: Uuid) -> Result<Memory, StoreError> {
        self.set_archived(scope, id, false).await
    }

    async fn set_archived(
        &self,
        scope: &Scope,
        id: Uuid,
        archived: bool,
    ) -> Result<Memory, StoreError> {
        retry_on_conflict(|| self.set_archived_once(scope, id, archived)).await
    }

    async fn set_archived_once(
        &self,
        scope: &Scope,
        id: Uuid,
        archived: bool,
    ) -> Result<Memory, StoreError> {
        let client = self.client().await?;
        match client
            .opt(SET_ARCHIVED_SQL, &[&id, &scope.companion_id, &archived])
            .await
        {
            Ok(Some(row)) => Memory::from_row(&row),
            Ok(None) => Err(StoreError::NotFound(id)),
            Err(e) if is_unique_violation(&e) => {
                let twin = self.live_twin(scope, id, None).await?;
                Err(StoreError::DuplicateContent(twin.unwrap_or(id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a memory for good, with its relations.
    pub async fn delete(&self, scope: &Scope, id: Uuid) -> Result<(), StoreError> {
        // Deletes of two related memories cascade through their relations
        // in opposite orders: PostgreSQL may abort one to break the deadlock.
        retry_on_conflict(|| async move {
            let client = self.client().await?;
            match client.run(DELETE_SQL, &[&id, &scope.companion_id]).await? {
                0 => Err(StoreError::NotFound(id)),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Counts for the companion, or for one user of it.
    pub async fn stats(&self, scope: &Scope, user: Option<&str>) -> Result<Stats, StoreError> {
        let client = self.client().await?;
        let user_id = match user {
            Some(u) => match Store::find_user(&client, u).await? {
                Some(id) => Some(id),
                None => Some(Uuid::nil()),
            },
            None => None,
        };
        let row = client
            .one(STATS_TOTALS_SQL, &[&scope.companion_id, &user_id])
            .await?;
        let mut by_kind: std::collections::BTreeMap<String, i64> = Kind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), 0))
            .collect();
        for r in client
            .rows(STATS_KINDS_SQL, &[&scope.companion_id, &user_id])
            .await?
        {
            let kind: Kind = r.try_get("kind")?;
            by_kind.insert(kind.as_str().to_string(), r.try_get("n")?);
        }
        let relations: i64 = client
            .one(STATS_RELATIONS_SQL, &[&scope.companion_id, &user_id])
            .await?
            .try_get("n")?;
        Ok(Stats {
            total: row.try_get("total")?,
            by_kind,
            archived: row.try_get("archived")?,
            expired: row.try_get("expired")?,
            unembedded: row.try_get("unembedded")?,
            users: row.try_get("users")?,
            relations,
            oldest_occurred_at: row.try_get("oldest_occurred_at")?,
            newest_occurred_at: row.try_get("newest_occurred_at")?,
            oldest_created_at: row.try_get("oldest_created_at")?,
            newest_created_at: row.try_get("newest_created_at")?,
        })
    }

    /// Explains why a guarded update touched no row.
    async fn why_unchanged(
        &self,
        scope: &Scope,
        id: Uuid,
        expected: Option<DateTime<Utc>>,
    ) -> StoreError {
        let current = async {
            let client = self.client().await?;
            let row = client
                .opt(UPDATED_AT_SQL, &[&id, &scope.companion_id])
                .await?;
            row.map(|r| r.try_get::<_, DateTime<Utc>>("updated_at"))
                .transpose()
                .map_err(StoreError::from)
        }
        .await;
        match (current, expected) {
            (Ok(Some(actual)), Some(expected)) => StoreError::Stale {
                id,
                expected,
                actual,
            },
            (Ok(_), _) => StoreError::NotFound(id),
            (Err(e), _) => e,
        }
    }

    /// The live memory of the same user holding `content` (or `id`'s own
    /// content), other than `id`.
    async fn live_twin(
        &self,
        scope: &Scope,
        id: Uuid,
        content: Option<&str>,
    ) -> Result<Option<Uuid>, StoreError> {
        let client = self.client().await?;
        let hash = content.map(content_hash);
        Ok(client
            .opt(LIVE_TWIN_SQL, &[&id, &scope.companion_id, &hash])
            .await?
            .map(|r| r.try_get("id"))
            .transpose()?)
    }
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}
