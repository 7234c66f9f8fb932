//! Memory rows: store (deduplicated), get, list, update, archive, restore,
//! delete and statistics, all confined to a [`Scope`].

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::{Kind, MEMORY_COLUMNS, Memory, Scope, Store, StoreError, retry_on_conflict, to_vector};

/// A memory to store. Content is already validated and trimmed.
#[derive(Debug, Clone)]
pub struct NewMemory {
    pub user: String,
    pub content: String,
    pub kind: Kind,
    pub importance: i16,
    pub confidence: f32,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The result of a store: the id, and whether a new memory was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    pub id: Uuid,
    pub created: bool,
}

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

/// Filters shared by list and search.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub user: String,
    pub kinds: Option<Vec<Kind>>,
    pub tags_any: Option<Vec<String>>,
    pub tags_all: Option<Vec<String>>,
    pub min_importance: Option<i16>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub include_archived: bool,
}

/// The values of [`FILTER_SQL`]'s parameters $1..$9 for one statement.
pub(crate) struct FilterValues<'a> {
    filter: &'a ListFilter,
    companion: Uuid,
    user: Uuid,
    kinds: Option<Vec<&'static str>>,
}

impl FilterValues<'_> {
    /// $1..$9 followed by the statement's own parameters, `rest`.
    pub(crate) fn with<'b>(
        &'b self,
        rest: &[&'b (dyn ToSql + Sync)],
    ) -> Vec<&'b (dyn ToSql + Sync)> {
        let f = self.filter;
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![
            &self.companion,
            &self.user,
            &self.kinds,
            &f.tags_any,
            &f.tags_all,
            &f.min_importance,
            &f.since,
            &f.until,
            &f.include_archived,
        ];
        all.extend_from_slice(rest);
        all
    }
}

impl ListFilter {
    /// The filter's parameter values for `user` in `scope`.
    pub(crate) fn values(&self, scope: &Scope, user: Uuid) -> FilterValues<'_> {
        FilterValues {
            filter: self,
            companion: scope.companion_id,
            user,
            kinds: self
                .kinds
                .as_ref()
                .map(|k| k.iter().map(|k| k.as_str()).collect()),
        }
    }

    /// [`FILTER_SQL`] with only the clauses this filter uses (same
    /// parameters; prepare with [`FILTER_TYPES`], as unused ones go
    /// unmentioned). A generic plan sees plain scope equality when no filter
    /// is set, and so keeps the HNSW index: the `$n IS NULL OR ...` form
    /// makes the planner guess few rows match and pick a full scan.
    pub(crate) fn sql(&self) -> String {
        let mut sql = String::from("m.companion_id = $1 AND m.user_id = $2");
        let clauses = [
            (self.kinds.is_some(), " AND m.kind::text = ANY($3)"),
            (self.tags_any.is_some(), " AND m.tags && $4"),
            (self.tags_all.is_some(), " AND m.tags @> $5"),
            (self.min_importance.is_some(), " AND m.importance >= $6"),
            (self.since.is_some(), " AND m.occurred_at >= $7"),
            (self.until.is_some(), " AND m.occurred_at < $8"),
            (!self.include_archived, " AND m.archived_at IS NULL"),
        ];
        for (used, clause) in clauses {
            if used {
                sql.push_str(clause);
            }
        }
        sql.push_str(" AND (m.expires_at IS NULL OR m.expires_at > now())");
        sql
    }
}

/// The types of [`FILTER_SQL`]'s parameters $1..$9.
pub(crate) const FILTER_TYPES: [Type; 9] = [
    Type::UUID,
    Type::UUID,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::BOOL,
];

/// The SQL filter over `m` for [`ListFilter`], with the parameters at $1..$9:
/// companion, user, kinds, tags_any, tags_all, min_importance, since, until,
/// include_archived. Expired memories never pass.
pub(crate) const FILTER_SQL: &str = "m.companion_id = $1 AND m.user_id = $2 \
     AND ($3::text[] IS NULL OR m.kind::text = ANY($3)) \
     AND ($4::text[] IS NULL OR m.tags && $4) \
     AND ($5::text[] IS NULL OR m.tags @> $5) \
     AND ($6::int2 IS NULL OR m.importance >= $6) \
     AND ($7::timestamptz IS NULL OR m.occurred_at >= $7) \
     AND ($8::timestamptz IS NULL OR m.occurred_at < $8) \
     AND ($9::bool OR m.archived_at IS NULL) \
     AND (m.expires_at IS NULL OR m.expires_at > now())";

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

pub fn content_hash(content: &str) -> Vec<u8> {
    Sha256::digest(content.as_bytes()).to_vec()
}

/// What an insert does when the user already has a live memory with this
/// content: nothing (the caller then reads the twin's id), unless the twin
/// has expired, which is revived with the new fields.
const ON_CONFLICT: &str = "ON CONFLICT (companion_id, user_id, content_hash) WHERE archived_at IS NULL DO UPDATE SET \
        kind = EXCLUDED.kind, importance = EXCLUDED.importance, confidence = EXCLUDED.confidence, \
        tags = EXCLUDED.tags, metadata = EXCLUDED.metadata, \
        embedding = coalesce(EXCLUDED.embedding, m.embedding), \
        embedding_model = coalesce(EXCLUDED.embedding_model, m.embedding_model), \
        occurred_at = EXCLUDED.occurred_at, expires_at = EXCLUDED.expires_at, created_at = now() \
     WHERE m.expires_at IS NOT NULL AND m.expires_at <= now()";

/// After an insert CTE `ins(id, ...)`: a revived memory starts its access
/// statistics afresh (a new one has none yet).
const RESET_ACCESS: &str =
    "reset AS (DELETE FROM memory_access a USING ins WHERE a.memory_id = ins.id)";

const INSERT_COLUMNS: &str = "INSERT INTO memories AS m (companion_id, user_id, content, content_hash, kind, \
        importance, confidence, tags, metadata, embedding, embedding_model, occurred_at, expires_at, seq) \
     OVERRIDING SYSTEM VALUE";

/// `$14` is the memory's place in insertion order (`seq`) when a batch has
/// reserved one, so a batch keeps its callers' order whatever order its rows
/// are written in.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ins AS ({INSERT_COLUMNS} \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, coalesce($12, now()), $13, \
            coalesce($14, nextval(pg_get_serial_sequence('memories', 'seq')))) \
         {ON_CONFLICT} RETURNING id), {RESET_ACCESS} SELECT id FROM ins"
    )
});

/// A batch's rows in one statement, one array per column ($2 the model,
/// for the rows with an embedding), written in array order. Tags travel as
/// JSON arrays: PostgreSQL has no array of arrays of different lengths.
/// Returns the key of each row written, new or revived.
static INSERT_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ins AS ({INSERT_COLUMNS} \
         SELECT $1, r.user_id, r.content, r.hash, r.kind, r.importance, r.confidence, \
            ARRAY(SELECT jsonb_array_elements_text(r.tags)), r.metadata, r.embedding, \
            CASE WHEN r.embedding IS NOT NULL THEN $2 END, coalesce(r.occurred_at, now()), \
            r.expires_at, r.seq \
         FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::memory_kind[], $7::int2[], \
                     $8::float4[], $9::jsonb[], $10::jsonb[], $11::vector[], $12::timestamptz[], \
                     $13::timestamptz[], $14::int8[]) WITH ORDINALITY \
            AS r(user_id, content, hash, kind, importance, confidence, tags, metadata, embedding, \
                 occurred_at, expires_at, seq, ord) \
         ORDER BY r.ord \
         {ON_CONFLICT} RETURNING id, user_id, content_hash), {RESET_ACCESS} \
         SELECT id, user_id, content_hash FROM ins"
    )
});

const EXISTING_SQL: &str = "SELECT id FROM memories \
     WHERE companion_id = $1 AND user_id = $2 AND content_hash = $3 AND archived_at IS NULL";

impl Store {
    /// Stores one memory. Identical content already live for the same user
    /// returns that memory (`created: false`); an expired twin is revived.
    pub async fn insert(
        &self,
        scope: &Scope,
        memory: &NewMemory,
        embedding: Option<Vec<f32>>,
        model: &str,
    ) -> Result<StoreOutcome, StoreError> {
        let embedding = &embedding;
        let hash = &content_hash(&memory.content);
        retry_on_conflict(|| async move {
            let client = self.client().await?;
            let user_id = Store::user_id(&client, &memory.user).await?;
            let new = NewRow {
                memory,
                hash,
                embedding: embedding.clone(),
                seq: None,
            };
            insert_one(&client, scope, user_id, new, model).await
        })
        .await
    }

    /// Stores many memories in one transaction: all or none.
    ///
    /// Rows are written in (user, content hash) order, whatever the input
    /// order, so concurrent batches sharing contents lock them in the same
    /// order instead of deadlocking; results come back in input order.
    pub async fn insert_batch(
        &self,
        scope: &Scope,
        memories: &[NewMemory],
        embeddings: Vec<Option<Vec<f32>>>,
        model: &str,
    ) -> Result<Vec<StoreOutcome>, StoreError> {
        let mut order: Vec<usize> = (0..memories.len()).collect();
        let hashes: Vec<Vec<u8>> = memories.iter().map(|m| content_hash(&m.content)).collect();
        order.sort_by(|&a, &b| {
            (&memories[a].user, &hashes[a]).cmp(&(&memories[b].user, &hashes[b]))
        });
        let (order, embeddings, hashes) = (&order, &embeddings, &hashes);
        retry_on_conflict(|| async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Rows are written in lock order (user, hash) so concurrent
            // batches cannot deadlock, but numbered in the caller's order:
            // search relies on `seq` to find neighbouring memories.
            let reserve = tx
                .prepare_cached(
                    "SELECT nextval(pg_get_serial_sequence('memories', 'seq')) \
                     FROM generate_series(1, $1::int8)",
                )
                .await?;
            let mut seqs: Vec<i64> = tx
                .query(&reserve, &[&(memories.len() as i64)])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            seqs.sort_unstable();
            // Sorted by user: each user is looked up once per batch.
            let mut user_ids = vec![Uuid::nil(); memories.len()];
            let mut user: Option<(&str, Uuid)> = None;
            for &i in order {
                let memory = &memories[i];
                user_ids[i] = match user {
                    Some((name, id)) if name == memory.user => id,
                    _ => {
                        let id = Store::user_id(&tx, &memory.user).await?;
                        user = Some((&memory.user, id));
                        id
                    }
                };
            }
            let rows: Vec<BatchRow> = order
                .iter()
                .map(|&i| BatchRow {
                    index: i,
                    user_id: user_ids[i],
                    new: NewRow {
                        memory: &memories[i],
                        hash: &hashes[i],
                        embedding: embeddings.get(i).cloned().flatten(),
                        seq: seqs.get(i).copied(),
                    },
                })
                .collect();
            let out = insert_many(&tx, scope, rows, model).await?;
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// One memory by id; counts an access (written later, see `access`).
    pub async fn get(&self, scope: &Scope, id: Uuid) -> Result<Memory, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.id = m.user_id \
             WHERE m.id = $1 AND m.companion_id = $2 \
             AND (m.expires_at IS NULL OR m.expires_at > now())"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = super::timed(
            "get_memory",
            client.query_opt(&stmt, &[&id, &scope.companion_id]),
        )
        .await?
        .ok_or(StoreError::NotFound(id))?;
        let mut memory = Memory::from_row(&row);
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
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.id = m.user_id \
             WHERE {FILTER_SQL} \
             AND ($10::timestamptz IS NULL OR (m.created_at, m.id) < ($10, $11::uuid)) \
             ORDER BY m.created_at DESC, m.id DESC LIMIT $12"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let (cursor_at, cursor_id) = match cursor {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let values = filter.values(scope, user_id);
        let rows = super::timed(
            "list_memories",
            client.query(&stmt, &values.with(&[&cursor_at, &cursor_id, &limit])),
        )
        .await?;
        Ok(rows.iter().map(Memory::from_row).collect())
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
        retry_on_conflict(|| {
            self.update_once(
                scope,
                id,
                patch,
                embedding.clone(),
                model,
                expected_updated_at,
            )
        })
        .await
    }

    async fn update_once(
        &self,
        scope: &Scope,
        id: Uuid,
        patch: &MemoryPatch,
        embedding: Option<Vec<f32>>,
        model: &str,
        expected_updated_at: Option<DateTime<Utc>>,
    ) -> Result<Memory, StoreError> {
        let client = self.client().await?;
        let sql = format!(
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
             WHERE u.id = m.user_id AND m.id = $1 AND m.companion_id = $2 \
               AND (m.expires_at IS NULL OR m.expires_at > now()) \
               AND ($15::timestamptz IS NULL OR m.updated_at = $15) \
             RETURNING {MEMORY_COLUMNS}"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let hash = patch.content.as_deref().map(content_hash);
        let (set_expiry, expiry) = match patch.expires_at {
            Some(e) => (true, e),
            None => (false, None),
        };
        let has_embedding = embedding.is_some();
        let result = super::timed(
            "update_memory",
            client.query_opt(
                &stmt,
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
                    &to_vector(embedding),
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
            Some(row) => Ok(Memory::from_row(&row)),
            None => Err(self.why_unchanged(scope, id, expected_updated_at).await),
        }
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
        let sql = format!(
            "UPDATE memories AS m SET archived_at = CASE WHEN $3 THEN coalesce(m.archived_at, now()) ELSE NULL END \
             FROM users u WHERE u.id = m.user_id AND m.id = $1 AND m.companion_id = $2 \
             AND (m.expires_at IS NULL OR m.expires_at > now()) RETURNING {MEMORY_COLUMNS}"
        );
        let stmt = client.prepare_cached(&sql).await?;
        match client
            .query_opt(&stmt, &[&id, &scope.companion_id, &archived])
            .await
        {
            Ok(Some(row)) => Ok(Memory::from_row(&row)),
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
            let stmt = client
                .prepare_cached("DELETE FROM memories WHERE id = $1 AND companion_id = $2")
                .await?;
            match client.execute(&stmt, &[&id, &scope.companion_id]).await? {
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
        let totals = client
            .prepare_cached(
                "SELECT count(*), \
                    count(*) FILTER (WHERE archived_at IS NOT NULL), \
                    count(*) FILTER (WHERE expires_at <= now()), \
                    count(*) FILTER (WHERE embedding IS NULL), \
                    count(DISTINCT user_id), \
                    min(occurred_at), max(occurred_at), min(created_at), max(created_at) \
                 FROM memories WHERE companion_id = $1 AND ($2::uuid IS NULL OR user_id = $2)",
            )
            .await?;
        let row = client
            .query_one(&totals, &[&scope.companion_id, &user_id])
            .await?;
        let kinds = client
            .prepare_cached(
                "SELECT kind::text, count(*) FROM memories \
                 WHERE companion_id = $1 AND ($2::uuid IS NULL OR user_id = $2) \
                   AND archived_at IS NULL AND (expires_at IS NULL OR expires_at > now()) \
                 GROUP BY kind",
            )
            .await?;
        let mut by_kind: std::collections::BTreeMap<String, i64> = Kind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), 0))
            .collect();
        for r in client
            .query(&kinds, &[&scope.companion_id, &user_id])
            .await?
        {
            by_kind.insert(r.get(0), r.get(1));
        }
        let relations = client
            .prepare_cached(
                "SELECT count(*) FROM memory_relations r JOIN memories f ON f.id = r.from_id \
                 WHERE r.companion_id = $1 AND ($2::uuid IS NULL OR f.user_id = $2)",
            )
            .await?;
        let relations: i64 = client
            .query_one(&relations, &[&scope.companion_id, &user_id])
            .await?
            .get(0);
        Ok(Stats {
            total: row.get(0),
            by_kind,
            archived: row.get(1),
            expired: row.get(2),
            unembedded: row.get(3),
            users: row.get(4),
            relations,
            oldest_occurred_at: row.get(5),
            newest_occurred_at: row.get(6),
            oldest_created_at: row.get(7),
            newest_created_at: row.get(8),
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
            let stmt = client
                .prepare_cached(
                    "SELECT updated_at FROM memories WHERE id = $1 AND companion_id = $2 \
                     AND (expires_at IS NULL OR expires_at > now())",
                )
                .await?;
            Ok::<_, StoreError>(
                client
                    .query_opt(&stmt, &[&id, &scope.companion_id])
                    .await?
                    .map(|r| r.get::<_, DateTime<Utc>>(0)),
            )
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
        let stmt = client
            .prepare_cached(
                "SELECT t.id FROM memories s JOIN memories t \
                   ON t.companion_id = s.companion_id AND t.user_id = s.user_id \
                  AND t.content_hash = coalesce($3, s.content_hash) AND t.archived_at IS NULL AND t.id <> s.id \
                 WHERE s.id = $1 AND s.companion_id = $2",
            )
            .await?;
        let hash = content.map(content_hash);
        Ok(client
            .query_opt(&stmt, &[&id, &scope.companion_id, &hash])
            .await?
            .map(|r| r.get(0)))
    }
}

/// One memory to write, with what the batch computed for it.
struct NewRow<'a> {
    memory: &'a NewMemory,
    hash: &'a [u8],
    embedding: Option<Vec<f32>>,
    /// A reserved `seq`; `None` takes the next one.
    seq: Option<i64>,
}

/// Inserts `new.memory` for user `user_id`; a live twin returns its id.
async fn insert_one(
    client: &impl GenericClient,
    scope: &Scope,
    user_id: Uuid,
    new: NewRow<'_>,
    model: &str,
) -> Result<StoreOutcome, StoreError> {
    let NewRow {
        memory,
        hash,
        embedding,
        seq,
    } = new;
    let model = embedding.is_some().then_some(model);
    let vector = to_vector(embedding);
    let insert = client.prepare_cached(&INSERT_SQL).await?;
    let existing = client.prepare_cached(EXISTING_SQL).await?;
    // The live twin that made the insert a no-op can be archived or deleted
    // before we read its id: then the insert is simply tried again.
    for _ in 0..3 {
        let row = super::timed(
            "store_memory",
            client.query_opt(
                &insert,
                &[
                    &scope.companion_id,
                    &user_id,
                    &memory.content,
                    &hash,
                    &memory.kind,
                    &memory.importance,
                    &memory.confidence,
                    &memory.tags,
                    &memory.metadata,
                    &vector,
                    &model,
                    &memory.occurred_at,
                    &memory.expires_at,
                    &seq,
                ],
            ),
        )
        .await?;
        if let Some(row) = row {
            return Ok(StoreOutcome {
                id: row.get(0),
                created: true,
            });
        }
        if let Some(row) = client
            .query_opt(&existing, &[&scope.companion_id, &user_id, &hash])
            .await?
        {
            return Ok(StoreOutcome {
                id: row.get(0),
                created: false,
            });
        }
    }
    Err(StoreError::Constraint(
        "the memory with this content kept changing while storing: try again".into(),
    ))
}

/// A batch row: its place in the caller's list, whose it is, what to write.
struct BatchRow<'a> {
    index: usize,
    user_id: Uuid,
    new: NewRow<'a>,
}

/// Writes a batch's `rows` (in lock order) with one INSERT and returns the
/// outcomes in the caller's order: one round trip instead of one per row,
/// which matters when the database is across a network (on one machine the
/// HNSW insert, 1.5-2 ms a row at 100k, dominates either way; see
/// docs/BENCHMARKS.md). As in [`insert_one`], a content the user
/// already has live returns that memory; a content repeated within the
/// batch is written once (one statement cannot insert a row and then
/// conflict with it) and its repeats return the first.
async fn insert_many(
    client: &impl GenericClient,
    scope: &Scope,
    rows: Vec<BatchRow<'_>>,
    model: &str,
) -> Result<Vec<StoreOutcome>, StoreError> {
    type Key = (Uuid, Vec<u8>);
    let mut out: Vec<Option<StoreOutcome>> = vec![None; rows.len()];
    let mut first: HashMap<Key, usize> = HashMap::new();
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut written: Vec<BatchRow> = Vec::new();
    for row in rows {
        let key = (row.user_id, row.new.hash.to_vec());
        match first.get(&key) {
            Some(&original) => repeats.push((row.index, original)),
            None => {
                first.insert(key, row.index);
                written.push(row);
            }
        }
    }
    // One array per column, in `written`'s order.
    fn column<'r, T>(rows: &'r [BatchRow], f: impl Fn(&'r BatchRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let user_ids = column(&written, |r| r.user_id);
    let hashes = column(&written, |r| r.new.hash);
    let tags = column(&written, |r| {
        serde_json::Value::from(r.new.memory.tags.clone())
    });
    let stmt = client.prepare_cached(&INSERT_MANY_SQL).await?;
    let returned = super::timed(
        "store_memories",
        client.query(
            &stmt,
            &[
                &scope.companion_id,
                &model,
                &user_ids,
                &column(&written, |r| r.new.memory.content.as_str()),
                &hashes,
                &column(&written, |r| r.new.memory.kind),
                &column(&written, |r| r.new.memory.importance),
                &column(&written, |r| r.new.memory.confidence),
                &tags,
                &column(&written, |r| &r.new.memory.metadata),
                &column(&written, |r| to_vector(r.new.embedding.clone())),
                &column(&written, |r| r.new.memory.occurred_at),
                &column(&written, |r| r.new.memory.expires_at),
                &column(&written, |r| r.new.seq),
            ],
        ),
    )
    .await?;
    let mut ids: HashMap<Key, (Uuid, bool)> = returned
        .iter()
        .map(|r| ((r.get(1), r.get(2)), (r.get(0), true)))
        .collect();
    if ids.len() < written.len() {
        // The rest met a live twin: return it, as a single store does.
        let stmt = client
            .prepare_cached(
                "SELECT m.id, m.user_id, m.content_hash FROM memories m \
                 JOIN unnest($2::uuid[], $3::bytea[]) k(user_id, hash) \
                   ON m.user_id = k.user_id AND m.content_hash = k.hash \
                 WHERE m.companion_id = $1 AND m.archived_at IS NULL",
            )
            .await?;
        for r in client
            .query(&stmt, &[&scope.companion_id, &user_ids, &hashes])
            .await?
        {
            ids.entry((r.get(1), r.get(2))).or_insert((r.get(0), false));
        }
    }
    for row in written {
        let found = ids.get(&(row.user_id, row.new.hash.to_vec())).copied();
        out[row.index] = Some(match found {
            Some((id, created)) => StoreOutcome { id, created },
            // The twin was archived or deleted in between: try this one alone.
            None => insert_one(client, scope, row.user_id, row.new, model).await?,
        });
    }
    for (index, original) in repeats {
        out[index] = out[original].map(|o| StoreOutcome {
            id: o.id,
            created: false,
        });
    }
    out.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
        StoreError::Constraint(
            "a memory of the batch was neither written nor found: try again".into(),
        )
    })
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}
