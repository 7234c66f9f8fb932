//! Backups at the row level: every companion, user, memory and relation
//! streamed out of one consistent snapshot, and read back in batched
//! transactions that keep ids, so relations survive and importing the same
//! rows twice changes nothing.
//!
//! Unlike the rest of the store this is not scoped by companion: export and
//! import are administrative commands (`mnemo export`, `mnemo import`) over
//! the whole database, never reachable through MCP.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use futures::{StreamExt, pin_mut};
use pgvector::Vector;
use serde::{Deserialize, Serialize};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::memories::content_hash;
use super::{Kind, Relation, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompanionRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    pub id: Uuid,
    pub external_id: String,
    pub created_at: DateTime<Utc>,
}

/// A memory with everything needed to recreate it exactly. The companion and
/// user are named, not referenced by id, so a file can be merged into a
/// database that already knows them under other ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryRow {
    pub id: Uuid,
    pub companion: String,
    pub user: String,
    pub content: String,
    pub kind: Kind,
    pub importance: i16,
    pub confidence: f32,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Absent when exported without embeddings, or not embedded yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelationRow {
    pub id: Uuid,
    pub companion: String,
    pub from_id: Uuid,
    pub to_id: Uuid,
    pub relation: Relation,
    pub strength: f32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One exported row, in the order export writes them: companions, users,
/// memories, relations.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Companion(CompanionRow),
    User(UserRow),
    Memory(MemoryRow),
    Relation(RelationRow),
}

/// Rows of each table written or imported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub companions: u64,
    pub users: u64,
    pub memories: u64,
    pub relations: u64,
    /// Import only: rows already present (or whose relation ends are missing).
    pub skipped: u64,
    /// Memories without an embedding (the server's backfill job embeds them).
    pub unembedded: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.companions + self.users + self.memories + self.relations
    }

    pub fn add(&mut self, other: Counts) {
        self.companions += other.companions;
        self.users += other.users;
        self.memories += other.memories;
        self.relations += other.relations;
        self.skipped += other.skipped;
        self.unembedded += other.unembedded;
    }
}

fn params<'a>(
    p: &'a [&'a (dyn ToSql + Sync)],
) -> impl ExactSizeIterator<Item = &'a dyn ToSql> + 'a {
    p.iter().map(|p| *p as &dyn ToSql)
}

impl Store {
    /// Streams every row (or only `user`'s memories, the relations between
    /// them, and that user) into `sink`, from one repeatable-read snapshot.
    /// Rows are read as they are written, never all held in memory.
    pub async fn export(
        &self,
        user: Option<&str>,
        with_embeddings: bool,
        mut sink: impl FnMut(Row) -> std::io::Result<()>,
    ) -> Result<Counts, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // A slow reader of the export must not trip the statement timeout.
        tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
        let user_id: Option<Uuid> = match user {
            Some(name) => Some(
                Store::find_user(&tx, name)
                    .await?
                    .ok_or_else(|| StoreError::Constraint(format!("there is no user {name:?}")))?,
            ),
            None => None,
        };
        let mut counts = Counts::default();
        let write = |sink: &mut dyn FnMut(Row) -> std::io::Result<()>, row: Row| {
            sink(row).map_err(StoreError::Write)
        };

        let stmt = tx
            .prepare_cached(
                "SELECT c.id, c.name, c.created_at FROM companions c \
                 WHERE $1::uuid IS NULL OR EXISTS ( \
                    SELECT 1 FROM memories m WHERE m.companion_id = c.id AND m.user_id = $1) \
                 ORDER BY c.name",
            )
            .await?;
        let rows = tx.query_raw(&stmt, params(&[&user_id])).await?;
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r?;
            let row = Row::Companion(CompanionRow {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2),
            });
            write(&mut sink, row)?;
            counts.companions += 1;
        }

        let stmt = tx
            .prepare_cached(
                "SELECT id, external_id, created_at FROM users \
                 WHERE $1::uuid IS NULL OR id = $1 ORDER BY external_id",
            )
            .await?;
        let rows = tx.query_raw(&stmt, params(&[&user_id])).await?;
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r?;
            let row = Row::User(UserRow {
                id: r.get(0),
                external_id: r.get(1),
                created_at: r.get(2),
            });
            write(&mut sink, row)?;
            counts.users += 1;
        }

        let stmt = tx
            .prepare_cached(
                "SELECT m.id, c.name, u.external_id, m.content, m.kind, m.importance, m.confidence, \
                    m.tags, m.metadata, m.occurred_at, m.expires_at, m.archived_at, \
                    coalesce(a.access_count, 0), a.last_accessed_at, m.created_at, m.updated_at, \
                    CASE WHEN $2 THEN m.embedding END, CASE WHEN $2 THEN m.embedding_model END \
                 FROM memories m JOIN companions c ON c.id = m.companion_id \
                 JOIN users u ON u.id = m.user_id \
                 LEFT JOIN memory_access a ON a.memory_id = m.id \
                 WHERE $1::uuid IS NULL OR m.user_id = $1 \
                 ORDER BY m.created_at, m.id",
            )
            .await?;
        let rows = tx
            .query_raw(&stmt, params(&[&user_id, &with_embeddings]))
            .await?;
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r?;
            let embedding: Option<Vector> = r.get(16);
            let embedding = embedding.map(|v| v.to_vec());
            if embedding.is_none() {
                counts.unembedded += 1;
            }
            let row = Row::Memory(MemoryRow {
                id: r.get(0),
                companion: r.get(1),
                user: r.get(2),
                content: r.get(3),
                kind: r.get(4),
                importance: r.get(5),
                confidence: r.get(6),
                tags: r.get(7),
                metadata: r.get(8),
                occurred_at: r.get(9),
                expires_at: r.get(10),
                archived_at: r.get(11),
                access_count: r.get(12),
                last_accessed_at: r.get(13),
                created_at: r.get(14),
                updated_at: r.get(15),
                embedding,
                embedding_model: r.get(17),
            });
            write(&mut sink, row)?;
            counts.memories += 1;
        }

        let stmt = tx
            .prepare_cached(
                "SELECT r.id, c.name, r.from_id, r.to_id, r.relation, r.strength, r.created_at, \
                    r.updated_at \
                 FROM memory_relations r JOIN companions c ON c.id = r.companion_id \
                 JOIN memories f ON f.id = r.from_id JOIN memories t ON t.id = r.to_id \
                 WHERE $1::uuid IS NULL OR (f.user_id = $1 AND t.user_id = $1) \
                 ORDER BY r.created_at, r.id",
            )
            .await?;
        let rows = tx.query_raw(&stmt, params(&[&user_id])).await?;
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r?;
            let row = Row::Relation(RelationRow {
                id: r.get(0),
                companion: r.get(1),
                from_id: r.get(2),
                to_id: r.get(3),
                relation: r.get(4),
                strength: r.get(5),
                created_at: r.get(6),
                updated_at: r.get(7),
            });
            write(&mut sink, row)?;
            counts.relations += 1;
        }
        tx.commit().await?;
        Ok(counts)
    }
}

/// Imports rows batch by batch, remembering across batches which names map
/// to which ids.
pub struct Importer {
    dim: usize,
    companions: HashMap<String, Uuid>,
    users: HashMap<String, Uuid>,
    /// Memories of the file whose content was already live in the database
    /// under another id: relations are pointed at that memory instead.
    remapped: HashMap<Uuid, Uuid>,
}

impl Importer {
    /// An importer for a database with `dim`-dimensional embeddings;
    /// vectors of another size are dropped (and re-embedded by the server).
    pub fn new(dim: usize) -> Self {
        Importer {
            dim,
            companions: HashMap::new(),
            users: HashMap::new(),
            remapped: HashMap::new(),
        }
    }

    /// Writes `rows` in one transaction. Rows already present are skipped,
    /// so applying the same rows again changes nothing.
    pub async fn apply(&mut self, store: &Store, rows: &[Row]) -> Result<Counts, StoreError> {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        // Names learned in this batch count only once it commits.
        let mut companions = HashMap::new();
        let mut users = HashMap::new();
        let mut remapped = HashMap::new();
        let mut counts = Counts::default();
        for row in rows {
            match row {
                Row::Companion(c) => {
                    let (id, new) = named_id(
                        &tx,
                        Named::Companion,
                        Some(c.id),
                        &c.name,
                        Some(c.created_at),
                    )
                    .await?;
                    companions.insert(c.name.clone(), id);
                    count(&mut counts.companions, &mut counts.skipped, new);
                }
                Row::User(u) => {
                    let (id, new) = named_id(
                        &tx,
                        Named::User,
                        Some(u.id),
                        &u.external_id,
                        Some(u.created_at),
                    )
                    .await?;
                    users.insert(u.external_id.clone(), id);
                    count(&mut counts.users, &mut counts.skipped, new);
                }
                Row::Memory(m) => {
                    let companion_id = match companions
                        .get(&m.companion)
                        .or(self.companions.get(&m.companion))
                    {
                        Some(id) => *id,
                        None => {
                            let (id, _) =
                                named_id(&tx, Named::Companion, None, &m.companion, None).await?;
                            companions.insert(m.companion.clone(), id);
                            id
                        }
                    };
                    let user_id = match users.get(&m.user).or(self.users.get(&m.user)) {
                        Some(id) => *id,
                        None => {
                            let (id, _) = named_id(&tx, Named::User, None, &m.user, None).await?;
                            users.insert(m.user.clone(), id);
                            id
                        }
                    };
                    let embedding = m.embedding.clone().filter(|v| v.len() == self.dim);
                    if embedding.is_none() {
                        counts.unembedded += 1;
                    }
                    match insert_memory(&tx, m, companion_id, user_id, embedding).await? {
                        Placed::New => counts.memories += 1,
                        Placed::Present => counts.skipped += 1,
                        Placed::Twin(twin) => {
                            remapped.insert(m.id, twin);
                            counts.skipped += 1;
                        }
                    }
                }
                Row::Relation(r) => {
                    let companion_id = match companions
                        .get(&r.companion)
                        .or(self.companions.get(&r.companion))
                    {
                        Some(id) => *id,
                        None => {
                            let (id, _) =
                                named_id(&tx, Named::Companion, None, &r.companion, None).await?;
                            companions.insert(r.companion.clone(), id);
                            id
                        }
                    };
                    let from = *remapped
                        .get(&r.from_id)
                        .or(self.remapped.get(&r.from_id))
                        .unwrap_or(&r.from_id);
                    let to = *remapped
                        .get(&r.to_id)
                        .or(self.remapped.get(&r.to_id))
                        .unwrap_or(&r.to_id);
                    let new = insert_relation(&tx, r, companion_id, from, to).await?;
                    count(&mut counts.relations, &mut counts.skipped, new);
                }
            }
        }
        tx.commit().await?;
        self.companions.extend(companions);
        self.users.extend(users);
        self.remapped.extend(remapped);
        Ok(counts)
    }
}

fn count(inserted: &mut u64, skipped: &mut u64, new: bool) {
    if new {
        *inserted += 1;
    } else {
        *skipped += 1;
    }
}

#[derive(Clone, Copy)]
enum Named {
    Companion,
    User,
}

/// The id of the companion or user called `name`: the file's `id` when it
/// is new here, else the one this database already has. True when created.
async fn named_id(
    tx: &impl GenericClient,
    table: Named,
    id: Option<Uuid>,
    name: &str,
    created_at: Option<DateTime<Utc>>,
) -> Result<(Uuid, bool), StoreError> {
    let (insert, select) = match table {
        Named::Companion => (
            "INSERT INTO companions (id, name, created_at) \
             VALUES (coalesce($1, gen_random_uuid()), $2, coalesce($3, now())) \
             ON CONFLICT DO NOTHING RETURNING id",
            "SELECT id FROM companions WHERE name = $1",
        ),
        Named::User => (
            "INSERT INTO users (id, external_id, created_at) \
             VALUES (coalesce($1, gen_random_uuid()), $2, coalesce($3, now())) \
             ON CONFLICT DO NOTHING RETURNING id",
            "SELECT id FROM users WHERE external_id = $1",
        ),
    };
    let insert = tx.prepare_cached(insert).await?;
    if let Some(row) = tx.query_opt(&insert, &[&id, &name, &created_at]).await? {
        return Ok((row.get(0), true));
    }
    let select = tx.prepare_cached(select).await?;
    if let Some(row) = tx.query_opt(&select, &[&name]).await? {
        return Ok((row.get(0), false));
    }
    // The file's id belongs to another name here: take a fresh one.
    let row = tx
        .query_one(&insert, &[&None::<Uuid>, &name, &created_at])
        .await?;
    Ok((row.get(0), true))
}

enum Placed {
    New,
    /// This very memory (same id) is already here.
    Present,
    /// The same content is live here under another id.
    Twin(Uuid),
}

async fn insert_memory(
    tx: &impl GenericClient,
    m: &MemoryRow,
    companion_id: Uuid,
    user_id: Uuid,
    embedding: Option<Vec<f32>>,
) -> Result<Placed, StoreError> {
    let insert = tx
        .prepare_cached(
            "WITH ins AS ( \
                INSERT INTO memories (id, companion_id, user_id, content, content_hash, kind, importance, \
                    confidence, tags, metadata, embedding, embedding_model, occurred_at, expires_at, \
                    archived_at, created_at, updated_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $18, $19) \
                ON CONFLICT DO NOTHING RETURNING id), \
             access AS ( \
                INSERT INTO memory_access (memory_id, access_count, last_accessed_at) \
                SELECT id, $16::int8, $17::timestamptz FROM ins \
                WHERE $16::int8 > 0 OR $17::timestamptz IS NOT NULL) \
             SELECT id FROM ins",
        )
        .await?;
    let hash = content_hash(&m.content);
    let model = embedding.as_ref().and(m.embedding_model.as_deref());
    let inserted = tx
        .query_opt(
            &insert,
            &[
                &m.id,
                &companion_id,
                &user_id,
                &m.content,
                &hash,
                &m.kind,
                &m.importance,
                &m.confidence,
                &m.tags,
                &m.metadata,
                &embedding.map(Vector::from),
                &model,
                &m.occurred_at,
                &m.expires_at,
                &m.archived_at,
                &m.access_count,
                &m.last_accessed_at,
                &m.created_at,
                &m.updated_at,
            ],
        )
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Constraint(c) => StoreError::Constraint(format!("memory {}: {c}", m.id)),
            other => other,
        })?;
    if inserted.is_some() {
        return Ok(Placed::New);
    }
    let present = tx
        .prepare_cached("SELECT 1 FROM memories WHERE id = $1")
        .await?;
    if tx.query_opt(&present, &[&m.id]).await?.is_some() {
        return Ok(Placed::Present);
    }
    let twin = tx
        .prepare_cached(
            "SELECT id FROM memories WHERE companion_id = $1 AND user_id = $2 AND content_hash = $3 \
             AND archived_at IS NULL",
        )
        .await?;
    match tx
        .query_opt(&twin, &[&companion_id, &user_id, &hash])
        .await?
    {
        Some(row) => Ok(Placed::Twin(row.get(0))),
        None => Err(StoreError::Constraint(format!(
            "memory {} conflicts with a row that vanished during the import: run it again",
            m.id
        ))),
    }
}

/// True when inserted; false when present already or an end is missing.
async fn insert_relation(
    tx: &impl GenericClient,
    r: &RelationRow,
    companion_id: Uuid,
    from: Uuid,
    to: Uuid,
) -> Result<bool, StoreError> {
    let insert = tx
        .prepare_cached(
            "INSERT INTO memory_relations (id, companion_id, from_id, to_id, relation, strength, \
                created_at, updated_at) \
             SELECT $1::uuid, $2::uuid, $3::uuid, $4::uuid, $5::relation_kind, $6::real, \
                $7::timestamptz, $8::timestamptz \
             WHERE $3::uuid <> $4::uuid \
               AND EXISTS (SELECT 1 FROM memories WHERE id = $3::uuid AND companion_id = $2::uuid) \
               AND EXISTS (SELECT 1 FROM memories WHERE id = $4::uuid AND companion_id = $2::uuid) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .await?;
    let row = tx
        .query_opt(
            &insert,
            &[
                &r.id,
                &companion_id,
                &from,
                &to,
                &r.relation,
                &r.strength,
                &r.created_at,
                &r.updated_at,
            ],
        )
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Constraint(c) => StoreError::Constraint(format!("relation {}: {c}", r.id)),
            other => other,
        })?;
    Ok(row.is_some())
}
