//! Writing rows back, batch by batch, keeping their ids: a row already
//! present is skipped, so the same rows applied twice (or into the database
//! they came from) change nothing.

use crate::db::statements::Statements;
use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use pgvector::Vector;
use uuid::Uuid;

use super::{ContextRow, Counts, MemoryRow, MessageRow, RelationRow, Row};
use crate::store::memories::content_hash;
use crate::store::{Store, StoreError, upsert_id};

/// Imports rows batch by batch, remembering across batches which names map
/// to which ids.
pub struct Importer {
    dim: usize,
    known: Known,
}

/// What earlier rows taught: the ids of names, and memories of the file
/// that were already here under another id.
#[derive(Debug, Clone, Default)]
struct Known {
    companions: HashMap<String, Uuid>,
    users: HashMap<String, Uuid>,
    /// Memories whose content was already live in the database under
    /// another id: relations are pointed at that memory instead.
    remapped: HashMap<Uuid, Uuid>,
}

#[derive(Clone, Copy)]
enum Named {
    Companion,
    User,
}

impl Importer {
    /// An importer for a database with `dim`-dimensional embeddings;
    /// vectors of another size are dropped (and re-embedded by the server).
    pub fn new(dim: usize) -> Self {
        Importer {
            dim,
            known: Known::default(),
        }
    }

    /// Writes `rows` in one transaction, in their order (a row's companion,
    /// user, memories or context must come before it, as a snapshot hands
    /// them out). Rows already present are skipped.
    pub async fn apply(&mut self, store: &Store, rows: &[Row]) -> Result<Counts, StoreError> {
        let mut client = store.client().await?;
        let tx = client.transaction().await?;
        // What this batch learns counts only once it commits.
        let mut known = self.known.clone();
        let mut counts = Counts::default();
        for row in rows {
            match row {
                Row::Companion(c) => {
                    let (id, new) =
                        named_id(&tx, Named::Companion, c.id, &c.name, c.created_at).await?;
                    known.companions.insert(c.name.clone(), id);
                    count(&mut counts.companions, &mut counts.skipped, new);
                }
                Row::User(u) => {
                    let (id, new) =
                        named_id(&tx, Named::User, u.id, &u.external_id, u.created_at).await?;
                    known.users.insert(u.external_id.clone(), id);
                    count(&mut counts.users, &mut counts.skipped, new);
                }
                Row::Memory(m) => {
                    let companion = known.id(&tx, Named::Companion, &m.companion).await?;
                    let user = known.id(&tx, Named::User, &m.memory.user_id).await?;
                    let embedding = self.fitting(&m.embedding, &mut counts);
                    match insert_memory(&tx, m, companion, user, embedding).await? {
                        Placed::New => counts.memories += 1,
                        Placed::Present => counts.skipped += 1,
                        Placed::Twin(twin) => {
                            known.remapped.insert(m.memory.id, twin);
                            counts.skipped += 1;
                        }
                    }
                }
                Row::Relation(r) => {
                    let companion = known.id(&tx, Named::Companion, &r.companion).await?;
                    let end = |id: Uuid| *known.remapped.get(&id).unwrap_or(&id);
                    let (from, to) = (end(r.step.from_id), end(r.step.to_id));
                    let new = insert_relation(&tx, r, companion, from, to).await?;
                    count(&mut counts.relations, &mut counts.skipped, new);
                }
                Row::Context(c) => {
                    let companion = known.id(&tx, Named::Companion, &c.companion).await?;
                    let user = known.id(&tx, Named::User, &c.context.user_id).await?;
                    let new = insert_context(&tx, c, companion, user).await?;
                    count(&mut counts.contexts, &mut counts.skipped, new);
                }
                Row::Message(m) => {
                    let embedding = self.fitting(&m.embedding, &mut counts);
                    let new = insert_message(&tx, m, embedding).await?;
                    count(&mut counts.messages, &mut counts.skipped, new);
                }
            }
        }
        tx.commit().await?;
        self.known = known;
        Ok(counts)
    }

    /// The vector if it has this database's dimension, else None (counted:
    /// the server's backfill job embeds the row).
    fn fitting(&self, embedding: &Option<Vec<f32>>, counts: &mut Counts) -> Option<Vector> {
        let fits = embedding.as_ref().filter(|v| v.len() == self.dim);
        if fits.is_none() {
            counts.unembedded += 1;
        }
        fits.map(|v| Vector::from(v.clone()))
    }
}

impl Known {
    /// The id of the companion or user `name` refers to, created when a row
    /// names one the file did not list (a hand-made or filtered file).
    async fn id(
        &mut self,
        tx: &(impl GenericClient + Statements),
        table: Named,
        name: &str,
    ) -> Result<Uuid, StoreError> {
        let map = match table {
            Named::Companion => &mut self.companions,
            Named::User => &mut self.users,
        };
        if let Some(id) = map.get(name) {
            return Ok(*id);
        }
        let (insert, select) = fresh(table);
        let id = upsert_id(tx, insert, select, name).await?;
        map.insert(name.to_string(), id);
        Ok(id)
    }
}

/// Insert-by-name (with a fresh id) and select-by-name for `table`.
fn fresh(table: Named) -> (&'static str, &'static str) {
    match table {
        Named::Companion => (
            "INSERT INTO companions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
            "SELECT id FROM companions WHERE name = $1",
        ),
        Named::User => (
            "INSERT INTO users (external_id) VALUES ($1) ON CONFLICT (external_id) DO NOTHING RETURNING id",
            "SELECT id FROM users WHERE external_id = $1",
        ),
    }
}

fn count(inserted: &mut u64, skipped: &mut u64, new: bool) {
    if new {
        *inserted += 1;
    } else {
        *skipped += 1;
    }
}

/// The id of the companion or user called `name`: the file's `id` when both
/// are new here (true), else the one this database already has for the
/// name, or a fresh one when the id belongs to another name (false).
async fn named_id(
    tx: &(impl GenericClient + Statements),
    table: Named,
    id: Uuid,
    name: &str,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Result<(Uuid, bool), StoreError> {
    let keep = match table {
        Named::Companion => {
            "INSERT INTO companions (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING RETURNING id"
        }
        Named::User => {
            "INSERT INTO users (id, external_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING RETURNING id"
        }
    };
    if let Some(row) = tx.opt(keep, &[&id, &name, &created_at]).await? {
        return Ok((row.try_get("id")?, true));
    }
    let (insert, select) = fresh(table);
    Ok((upsert_id(tx, insert, select, name).await?, false))
}

/// A database error about row `what`, in words: a CHECK or a missing
/// reference (a fork whose parent is not here) becomes an invalid value.
fn about(what: String) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| {
        let missing = e
            .as_db_error()
            .is_some_and(|db| db.code() == &tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION);
        match StoreError::from(e) {
            StoreError::Constraint(c) => StoreError::Constraint(format!("{what}: {c}")),
            StoreError::Db(db) if missing => StoreError::Constraint(format!(
                "{what} refers to a row that is neither in this database nor earlier in the file: {db}"
            )),
            other => other,
        }
    }
}

enum Placed {
    New,
    /// This very memory (same id) is already here.
    Present,
    /// The same content is live here under another id.
    Twin(Uuid),
}

async fn insert_memory(
    tx: &(impl GenericClient + Statements),
    row: &MemoryRow,
    companion_id: Uuid,
    user_id: Uuid,
    embedding: Option<Vector>,
) -> Result<Placed, StoreError> {
    let m = &row.memory;
    let hash = content_hash(&m.content);
    let model = embedding.as_ref().and(row.embedding_model.as_deref());
    let inserted = tx
        .opt("WITH ins AS ( \
                INSERT INTO memories (id, companion_id, user_id, content, content_hash, kind, importance, \
                    confidence, tags, metadata, embedding, embedding_model, occurred_at, expires_at, \
                    archived_at, created_at, updated_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $18, $19) \
                ON CONFLICT DO NOTHING RETURNING id), \
             access AS ( \
                INSERT INTO memory_access (companion_id, memory_id, access_count, last_accessed_at) \
                SELECT $2, id, $16::int8, $17::timestamptz FROM ins \
                WHERE $16::int8 > 0 OR $17::timestamptz IS NOT NULL) \
             SELECT id FROM ins",
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
                &embedding,
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
        .map_err(about(format!("memory {}", m.id)))?;
    if inserted.is_some() {
        return Ok(Placed::New);
    }
    if tx
        .opt("SELECT 1 FROM memories WHERE id = $1", &[&m.id])
        .await?
        .is_some()
    {
        return Ok(Placed::Present);
    }
    match tx
        .opt("SELECT id FROM memories WHERE companion_id = $1 AND user_id = $2 AND content_hash = $3 \
             AND archived_at IS NULL", &[&companion_id, &user_id, &hash])
        .await?
    {
        Some(row) => Ok(Placed::Twin(row.try_get("id")?)),
        None => Err(StoreError::Constraint(format!(
            "memory {} conflicts with a row that vanished during the import: run it again",
            m.id
        ))),
    }
}

/// True when inserted; false when present already or an end is missing.
async fn insert_relation(
    tx: &(impl GenericClient + Statements),
    r: &RelationRow,
    companion_id: Uuid,
    from: Uuid,
    to: Uuid,
) -> Result<bool, StoreError> {
    let row = tx
        .opt(
            "INSERT INTO memory_relations (id, companion_id, from_id, to_id, relation, strength, \
                created_at, updated_at) \
             SELECT $1::uuid, $2::uuid, $3::uuid, $4::uuid, $5::relation_kind, $6::real, \
                $7::timestamptz, $8::timestamptz \
             WHERE $3::uuid <> $4::uuid \
               AND EXISTS (SELECT 1 FROM memories WHERE id = $3::uuid AND companion_id = $2::uuid) \
               AND EXISTS (SELECT 1 FROM memories WHERE id = $4::uuid AND companion_id = $2::uuid) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &r.id,
                &companion_id,
                &from,
                &to,
                &r.step.relation,
                &r.step.strength,
                &r.created_at,
                &r.updated_at,
            ],
        )
        .await
        .map_err(about(format!("relation {}", r.id)))?;
    Ok(row.is_some())
}

/// True when inserted; false when present already. A fork's parent must be
/// here already (a snapshot hands parents out first).
async fn insert_context(
    tx: &(impl GenericClient + Statements),
    row: &ContextRow,
    companion_id: Uuid,
    user_id: Uuid,
) -> Result<bool, StoreError> {
    let c = &row.context;
    let inserted = tx
        .opt(
            "INSERT INTO contexts (id, companion_id, user_id, name, parent_id, fork_version, \
                message_count, total_tokens, latest_version, created_at, updated_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &c.id,
                &companion_id,
                &user_id,
                &c.name,
                &c.parent_id,
                &c.fork_version,
                &c.message_count,
                &c.total_tokens,
                &c.latest_version,
                &c.created_at,
                &c.updated_at,
                &row.deleted_at,
            ],
        )
        .await
        .map_err(about(format!("context {}", c.id)))?;
    Ok(inserted.is_some())
}

/// True when inserted; false when present already (this id, or this
/// version of the context) or the context is missing.
async fn insert_message(
    tx: &(impl GenericClient + Statements),
    row: &MessageRow,
    embedding: Option<Vector>,
) -> Result<bool, StoreError> {
    let m = &row.message;
    // The companion is the context's, as every append copies it.
    let model = embedding.as_ref().and(row.embedding_model.as_deref());
    let inserted = tx
        .opt(
            "INSERT INTO messages (id, context_id, companion_id, version, role, content, \
                tool_call_id, tool_name, token_count, model, embedding, embedding_model, \
                created_at, deleted_at) \
             SELECT $1::uuid, x.id, x.companion_id, $3::int8, $4::message_role, $5::text, \
                $6::text, $7::text, $8::int4, $9::text, $10::vector, $11::text, \
                $12::timestamptz, $13::timestamptz \
             FROM contexts x WHERE x.id = $2::uuid \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &m.id,
                &m.context_id,
                &m.version,
                &m.role,
                &m.content,
                &m.tool_call_id,
                &m.tool_name,
                &m.token_count,
                &m.model,
                &embedding,
                &model,
                &m.created_at,
                &row.deleted_at,
            ],
        )
        .await
        .map_err(about(format!("message {}", m.id)))?;
    Ok(inserted.is_some())
}
