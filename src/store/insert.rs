//! The write path of memories: storing one or a batch, deduplicated by
//! content per user. A content the user already has live returns that
//! memory (`created: false`) and keeps the later of the two expiries; an
//! expired twin is revived with the new fields.

use crate::db::statements::Statements;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Kind, Scope, Store, StoreError, retry_on_conflict, to_vector};

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

/// The result of a store: the id, whether a new memory was made, and when
/// the memory now expires (`None`: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    pub id: Uuid,
    pub created: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

pub fn content_hash(content: &str) -> Vec<u8> {
    Sha256::digest(content.as_bytes()).to_vec()
}

/// The expiry a memory keeps when the same content is stored again: the
/// later of the two, where `None` (never) is the latest. Storing a fact
/// again never shortens its life, and storing it without a time-to-live
/// makes it permanent.
pub(crate) fn later_expiry(
    a: Option<DateTime<Utc>>,
    b: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    Some(a?.max(b?))
}

/// What an insert does when the user already has a live memory with this
/// content: nothing (the caller then reads the twin, see [`TWIN_SQL`]),
/// unless the twin has expired, which is revived with the new fields.
macro_rules! on_conflict {
    () => {
        "ON CONFLICT (companion_id, user_id, content_hash) WHERE archived_at IS NULL DO UPDATE SET \
            kind = EXCLUDED.kind, importance = EXCLUDED.importance, confidence = EXCLUDED.confidence, \
            tags = EXCLUDED.tags, metadata = EXCLUDED.metadata, \
            embedding = coalesce(EXCLUDED.embedding, m.embedding), \
            embedding_model = coalesce(EXCLUDED.embedding_model, m.embedding_model), \
            occurred_at = EXCLUDED.occurred_at, expires_at = EXCLUDED.expires_at, created_at = now() \
         WHERE m.expires_at IS NOT NULL AND m.expires_at <= now()"
    };
}

/// After an insert CTE `ins(id, ...)` whose companion is `$1`: a revived
/// memory starts its access statistics afresh (a new one has none yet).
macro_rules! reset_access {
    () => {
        "reset AS (DELETE FROM memory_access a USING ins \
                   WHERE a.companion_id = $1 AND a.memory_id = ins.id)"
    };
}

macro_rules! insert_columns {
    () => {
        "INSERT INTO memories AS m (companion_id, user_id, content, content_hash, kind, \
            importance, confidence, tags, metadata, embedding, embedding_model, occurred_at, expires_at, seq) \
         OVERRIDING SYSTEM VALUE"
    };
}

/// `$14` is the memory's place in insertion order (`seq`) when a batch has
/// reserved one, so a batch keeps its callers' order whatever order its rows
/// are written in.
const INSERT_SQL: &str = concat!(
    "WITH ins AS (",
    insert_columns!(),
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, coalesce($12, now()), $13, \
        coalesce($14, nextval(pg_get_serial_sequence('memories', 'seq')))) ",
    on_conflict!(),
    " RETURNING id, expires_at), ",
    reset_access!(),
    " SELECT id, expires_at FROM ins"
);

/// A batch's rows in one statement, one array per column ($2 the model,
/// for the rows with an embedding), written in array order. Tags travel as
/// JSON arrays: PostgreSQL has no array of arrays of different lengths.
/// Returns the key and expiry of each row written, new or revived.
const INSERT_MANY_SQL: &str = concat!(
    "WITH ins AS (",
    insert_columns!(),
    " SELECT $1, r.user_id, r.content, r.hash, r.kind, r.importance, r.confidence, \
        ARRAY(SELECT jsonb_array_elements_text(r.tags)), r.metadata, r.embedding, \
        CASE WHEN r.embedding IS NOT NULL THEN $2 END, coalesce(r.occurred_at, now()), \
        r.expires_at, r.seq \
     FROM unnest($3::uuid[], $4::text[], $5::bytea[], $6::memory_kind[], $7::int2[], \
                 $8::float4[], $9::jsonb[], $10::jsonb[], $11::vector[], $12::timestamptz[], \
                 $13::timestamptz[], $14::int8[]) WITH ORDINALITY \
        AS r(user_id, content, hash, kind, importance, confidence, tags, metadata, embedding, \
             occurred_at, expires_at, seq, ord) \
     ORDER BY r.ord ",
    on_conflict!(),
    " RETURNING id, user_id, content_hash, expires_at), ",
    reset_access!(),
    " SELECT id, user_id, content_hash, expires_at FROM ins"
);

/// The live twins of the keys `k(user_id, hash, expires_at)`, each given
/// the later expiry ([`later_expiry`]; the UPDATE rechecks it on the row's
/// latest version, so a concurrent extension is kept), as `(id, user_id,
/// content_hash, expires_at)`. Rows whose expiry stays are not rewritten.
macro_rules! twins {
    ($keys:literal) => {
        concat!(
            "WITH k AS (",
            $keys,
            "), extended AS ( \
                UPDATE memories m SET expires_at = k.expires_at FROM k \
                WHERE m.companion_id = $1 AND m.user_id = k.user_id AND m.content_hash = k.hash \
                  AND ",
            live!(),
            " AND m.expires_at IS NOT NULL AND (k.expires_at IS NULL OR m.expires_at < k.expires_at) \
                RETURNING m.id, m.user_id, m.content_hash, m.expires_at \
             ) \
             SELECT id, user_id, content_hash, expires_at FROM extended \
             UNION ALL \
             SELECT m.id, m.user_id, m.content_hash, m.expires_at FROM memories m \
             JOIN k ON m.user_id = k.user_id AND m.content_hash = k.hash \
             WHERE m.companion_id = $1 AND ",
            live!(),
            " AND m.id NOT IN (SELECT id FROM extended)"
        )
    };
}

/// [`twins!`] of one key: $2 user, $3 hash, $4 expiry.
const TWIN_SQL: &str =
    twins!("SELECT $2::uuid AS user_id, $3::bytea AS hash, $4::timestamptz AS expires_at");

/// [`twins!`] of many keys: $2 users, $3 hashes, $4 expiries.
const TWINS_SQL: &str = twins!(
    "SELECT * FROM unnest($2::uuid[], $3::bytea[], $4::timestamptz[]) k(user_id, hash, expires_at)"
);

/// Reserves `$1` values of `seq`.
const RESERVE_SEQ_SQL: &str = "SELECT nextval(pg_get_serial_sequence('memories', 'seq')) AS seq \
     FROM generate_series(1, $1::int8)";

impl Store {
    /// Stores one memory. Identical content already live for the same user
    /// returns that memory (`created: false`) with the later expiry of the
    /// two; an expired twin is revived.
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
                expires_at: memory.expires_at,
            };
            insert_one(&client, scope, user_id, new, model).await
        })
        .await
    }

    /// Stores many memories in one transaction: all or none. A batch that
    /// makes most of a scope refreshes the planner's statistics before it
    /// returns (see [`Store::refresh_statistics_after`]).
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
        let written = retry_on_conflict(|| async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Rows are written in lock order (user, hash) so concurrent
            // batches cannot deadlock, but numbered in the caller's order:
            // search relies on `seq` to find neighbouring memories.
            let mut seqs = tx
                .rows(RESERVE_SEQ_SQL, &[&(memories.len() as i64)])
                .await?
                .iter()
                .map(|r| r.try_get("seq"))
                .collect::<Result<Vec<i64>, _>>()?;
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
                        expires_at: memories[i].expires_at,
                    },
                })
                .collect();
            let out = insert_many(&tx, scope, rows, model).await?;
            tx.commit().await?;
            Ok((out, user_ids))
        })
        .await?;
        let (out, user_ids) = written;
        let mut created: HashMap<Uuid, i64> = HashMap::new();
        for (outcome, user) in out.iter().zip(&user_ids) {
            if outcome.created {
                *created.entry(*user).or_default() += 1;
            }
        }
        // The batch is written: statistics that could not be refreshed
        // are only slower plans until autovacuum's next look.
        if let Err(e) = self.refresh_statistics_after(scope, &created).await {
            tracing::warn!(error = %e, "refreshing the statistics of memories after a batch failed");
        }
        Ok(out)
    }
}

/// One memory to write, with what the batch computed for it.
struct NewRow<'a> {
    memory: &'a NewMemory,
    hash: &'a [u8],
    embedding: Option<Vec<f32>>,
    /// A reserved `seq`; `None` takes the next one.
    seq: Option<i64>,
    /// The expiry to write: the memory's, or the later one of a content
    /// repeated within a batch.
    expires_at: Option<DateTime<Utc>>,
}

/// Inserts `new.memory` for user `user_id`; a live twin returns its id.
async fn insert_one(
    client: &(impl GenericClient + Statements),
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
        expires_at,
    } = new;
    let model = embedding.is_some().then_some(model);
    let vector = to_vector(embedding);
    // The live twin that made the insert a no-op can be archived or deleted
    // before we read its id: then the insert is simply tried again.
    for _ in 0..3 {
        let row = super::timed(
            "store_memory",
            client.opt(
                INSERT_SQL,
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
                    &expires_at,
                    &seq,
                ],
            ),
        )
        .await?;
        if let Some(row) = row {
            return Ok(StoreOutcome {
                id: row.try_get("id")?,
                created: true,
                expires_at: row.try_get("expires_at")?,
            });
        }
        if let Some(row) = client
            .opt(
                TWIN_SQL,
                &[&scope.companion_id, &user_id, &hash, &expires_at],
            )
            .await?
        {
            return Ok(StoreOutcome {
                id: row.try_get("id")?,
                created: false,
                expires_at: row.try_get("expires_at")?,
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
/// conflict with it), with the later expiry of its repeats, and its
/// repeats return the first.
async fn insert_many(
    client: &(impl GenericClient + Statements),
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
            Some(&at) => {
                let kept = &mut written[at].new.expires_at;
                *kept = later_expiry(*kept, row.new.expires_at);
                repeats.push((row.index, written[at].index));
            }
            None => {
                first.insert(key, written.len());
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
    let returned = super::timed(
        "store_memories",
        client.rows(
            INSERT_MANY_SQL,
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
                &column(&written, |r| r.new.expires_at),
                &column(&written, |r| r.new.seq),
            ],
        ),
    )
    .await?;
    let mut ids: HashMap<Key, (Uuid, bool, Option<DateTime<Utc>>)> = HashMap::new();
    for r in &returned {
        let key = (r.try_get("user_id")?, r.try_get("content_hash")?);
        ids.insert(key, (r.try_get("id")?, true, r.try_get("expires_at")?));
    }
    let missing: Vec<&BatchRow> = written
        .iter()
        .filter(|r| !ids.contains_key(&(r.user_id, r.new.hash.to_vec())))
        .collect();
    if !missing.is_empty() {
        // The rest met a live twin: return it, as a single store does.
        let users: Vec<Uuid> = missing.iter().map(|r| r.user_id).collect();
        let hashes: Vec<&[u8]> = missing.iter().map(|r| r.new.hash).collect();
        let expiries: Vec<Option<DateTime<Utc>>> =
            missing.iter().map(|r| r.new.expires_at).collect();
        for r in client
            .rows(
                TWINS_SQL,
                &[&scope.companion_id, &users, &hashes, &expiries],
            )
            .await?
        {
            let key = (r.try_get("user_id")?, r.try_get("content_hash")?);
            let twin = (r.try_get("id")?, false, r.try_get("expires_at")?);
            ids.entry(key).or_insert(twin);
        }
    }
    for row in written {
        let found = ids.get(&(row.user_id, row.new.hash.to_vec())).copied();
        out[row.index] = Some(match found {
            Some((id, created, expires_at)) => StoreOutcome {
                id,
                created,
                expires_at,
            },
            // The twin was archived or deleted in between: try this one alone.
            None => insert_one(client, scope, row.user_id, row.new, model).await?,
        });
    }
    for (index, original) in repeats {
        out[index] = out[original].map(|o| StoreOutcome {
            created: false,
            ..o
        });
    }
    out.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
        StoreError::Constraint(
            "a memory of the batch was neither written nor found: try again".into(),
        )
    })
}
