//! The memory store: typed rows and every SQL statement mnemo runs against
//! its tables. It knows nothing about MCP.
//!
//! Invariant: every method takes a [`Scope`] (the companion) and every
//! statement filters on it, so no id, however obtained, reaches another
//! companion's rows.
//!
//! - `insert`: storing one memory or a batch, deduplicated by content
//! - `memories`: get, list, update, archive/restore, delete, stats
//! - `filter`: the one filter `list` and `search` share
//! - `sql`: the shared SQL fragments (memory columns, the liveness rule)
//! - `search`: hybrid (vector + full-text, fused by reciprocal rank) search
//! - `terms` and `access`: term statistics for search, read counts
//! - `keys` and `sessions`: API keys, MCP sessions
//! - `relations`: typed links between memories and graph traversal
//! - `upkeep`: the SQL of background upkeep (expired memories, rows left without a vector)
//! - `contexts`: conversation logs (append, read, fork, delete) and message search
//! - `catalog`: resource listing, user profiles and completion candidates
//! - `bulk`: whole tables for backups (a snapshot's rows out, id-keeping batches in)
//! - `users`: users with what is kept about them; forgetting one
//! - `console`: the web console's sessions and read-only views

use crate::db::statements::Statements;
#[macro_use]
mod sql;
mod access;
pub mod bulk;
pub mod catalog;
pub mod console;
pub mod contexts;
mod filter;
mod insert;
pub mod keys;
pub mod memories;
pub mod relations;
pub mod search;
pub mod sessions;
#[cfg(test)]
mod sql_tests;
mod terms;
pub mod tuning;
pub mod upkeep;
pub mod users;

use chrono::{DateTime, Utc};
use pgvector::Vector;
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use crate::db::{Db, DbError};

pub use filter::ListFilter;
pub use insert::{NewMemory, StoreOutcome};
pub use memories::MemoryPatch;

/// What went wrong in the store, in terms a tool can pass on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no memory with id {0} (it may have been deleted, or expired, or belong to another companion)"
    )]
    NotFound(Uuid),
    #[error(
        "memory {id} was changed at {actual} since you read it (expected_updated_at {expected}): \
         read it again and reapply your change"
    )]
    Stale {
        id: Uuid,
        expected: DateTime<Utc>,
        actual: DateTime<Utc>,
    },
    #[error("a live memory with the same content already exists: {0}")]
    DuplicateContent(Uuid),
    #[error(
        "no context with id {0} (it may have been deleted, or belong to another companion): \
         list_contexts shows yours"
    )]
    ContextNotFound(Uuid),
    #[error(
        "context {id} is at version {actual}, not the expected_version {expected}: someone appended \
         since you read it; read it again (get_context with since_version {expected}) and append \
         with expected_version {actual}"
    )]
    VersionConflict {
        id: Uuid,
        expected: i64,
        actual: i64,
    },
    #[error(
        "context {id} has no version {version}: its versions run from 0 (before the first message) \
         to {latest}"
    )]
    VersionOutOfRange { id: Uuid, version: i64, latest: i64 },
    #[error("invalid value: {0}")]
    Constraint(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl StoreError {
    /// PostgreSQL aborted the transaction to break a deadlock (or a
    /// serialization conflict): nothing it did remains, so it may run again.
    fn is_aborted_by_conflict(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Db(DbError::Postgres(e)) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
            ),
            _ => false,
        }
    }
}

/// How often a write is tried when PostgreSQL keeps aborting it to break deadlocks.
const CONFLICT_ATTEMPTS: u32 = 4;

/// Runs `op` again when PostgreSQL aborted it to break a deadlock. Two
/// deletes cascading through the same relations, or a batch store racing an
/// update for the same content, can lock rows in opposite orders; PostgreSQL
/// then rolls one of them back, and the caller should not see that.
pub(crate) async fn retry_on_conflict<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < CONFLICT_ATTEMPTS && e.is_aborted_by_conflict() => {
                tracing::info!(error = %e, attempt, "transaction aborted by a lock conflict; running it again");
                // A little jitter so the two sides do not collide again in lockstep.
                let pause = rand::random_range(5..50u64) * u64::from(attempt);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            // A CHECK the tool layer did not catch: report it, do not hide it.
            if db.code() == &tokio_postgres::error::SqlState::CHECK_VIOLATION
                || db.code() == &tokio_postgres::error::SqlState::NOT_NULL_VIOLATION
            {
                return StoreError::Constraint(db.message().to_string());
            }
        }
        StoreError::Db(DbError::Postgres(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Db(DbError::from(e))
    }
}

/// The companion every query is confined to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub companion_id: Uuid,
}

labels! {
    /// What a memory is.
    pub enum Kind as "memory_kind" {
        /// Something true about the user or the world ("Ana is vegetarian").
        Fact,
        /// Something that happened ("we debugged the VPN together on Monday").
        Experience,
        /// A like or dislike ("prefers short answers").
        Preference,
        /// A standing instruction ("always answer in Spanish").
        Instruction,
        /// The companion's own conclusion or insight.
        Reflection,
    }
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: &[Kind] = <Kind as strum::VariantArray>::VARIANTS;
}

labels! {
    /// How two memories are linked.
    pub enum Relation as "relation_kind" {
        /// `to` happened after `from`, or continues it.
        Follows,
        /// The two cannot both be true.
        Contradicts,
        /// `from` adds detail to `to`.
        Elaborates,
        /// `from` corrects `to`.
        Corrects,
        /// `from` mentions `to`.
        References,
        /// `from` caused `to`.
        Causes,
    }
}

/// A memory as stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Memory {
    pub id: Uuid,
    /// The user's external id.
    pub user_id: String,
    pub content: String,
    pub kind: Kind,
    pub importance: i16,
    pub confidence: f32,
    pub tags: Vec<String>,
    // Always a JSON object (a CHECK in the table): say so in the schema.
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub metadata: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// False while the vector is still waiting for the embedding job.
    pub embedded: bool,
}

impl Memory {
    /// A row selecting [`sql::memory_columns!`].
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Memory, StoreError> {
        Ok(Memory {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            content: row.try_get("content")?,
            kind: row.try_get("kind")?,
            importance: row.try_get("importance")?,
            confidence: row.try_get("confidence")?,
            tags: row.try_get("tags")?,
            metadata: row.try_get("metadata")?,
            occurred_at: row.try_get("occurred_at")?,
            expires_at: row.try_get("expires_at")?,
            archived_at: row.try_get("archived_at")?,
            access_count: row.try_get("access_count")?,
            last_accessed_at: row.try_get("last_accessed_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            embedded: row.try_get("embedded")?,
        })
    }
}

/// Reads every row with `f`, stopping at the first column that does not
/// read.
pub(crate) fn read_rows<T>(
    rows: &[tokio_postgres::Row],
    f: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}

/// Access to mnemo's tables through the pool.
#[derive(Clone)]
pub struct Store {
    db: Db,
    dim: usize,
    access: std::sync::Arc<access::AccessLog>,
    terms: std::sync::Arc<terms::TermCache>,
    tuning: std::sync::Arc<std::sync::RwLock<tuning::Tuning>>,
}

impl Store {
    /// A store over `db`, whose embeddings have `dim` dimensions.
    pub fn new(db: Db, dim: usize) -> Self {
        Store {
            db,
            dim,
            access: Default::default(),
            terms: Default::default(),
            tuning: Default::default(),
        }
    }

    /// How memory searches rank: [`tuning::Tuning::DEFAULT`] unless an
    /// experiment changed it.
    pub fn tuning(&self) -> tuning::Tuning {
        // A plain value stays usable even if a writer panicked.
        *self.tuning.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how this store's memory searches rank (the LoCoMo
    /// benchmark's parameter grid); values that are not
    /// [`tuning::Tuning::is_valid`] are refused.
    #[doc(hidden)]
    pub fn set_tuning(&self, tuning: tuning::Tuning) -> Result<(), StoreError> {
        if !tuning.is_valid() {
            return Err(StoreError::Constraint(format!(
                "search tuning out of range: {tuning:?}"
            )));
        }
        *self.tuning.write().unwrap_or_else(|e| e.into_inner()) = tuning;
        Ok(())
    }

    /// This store over another pool (a read replica's): the counted reads
    /// and term statistics stay shared, so accesses read there are written
    /// by the primary's flush.
    pub fn with_db(&self, db: Db) -> Self {
        Store { db, ..self.clone() }
    }

    pub fn embedding_dim(&self) -> usize {
        self.dim
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.db.client().await?)
    }

    /// The scope for companion `name`, creating the companion on first use.
    /// Every way of naming a companion (the configuration, `mnemo token
    /// create --companion`) comes through here, so the name is checked here
    /// (see [`check_companion_name`]).
    pub async fn companion(&self, name: &str) -> Result<Scope, StoreError> {
        check_companion_name(name)?;
        let client = self.client().await?;
        let id = upsert_id(&client, NEW_COMPANION_SQL, COMPANION_SQL, name).await?;
        Ok(Scope { companion_id: id })
    }

    /// The internal id of user `external_id`, creating the user on first use.
    pub(crate) async fn user_id(
        client: &(impl deadpool_postgres::GenericClient + Statements),
        external_id: &str,
    ) -> Result<Uuid, StoreError> {
        upsert_id(client, NEW_USER_SQL, USER_SQL, external_id).await
    }

    /// The internal id of user `external_id`, if the user exists.
    pub(crate) async fn find_user(
        client: &(impl deadpool_postgres::GenericClient + Statements),
        external_id: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let row = client.opt(USER_SQL, &[&external_id]).await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }
}

const NEW_COMPANION_SQL: &str =
    "INSERT INTO companions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id";
const COMPANION_SQL: &str = "SELECT id FROM companions WHERE name = $1";
const NEW_USER_SQL: &str =
    "INSERT INTO users (external_id) VALUES ($1) ON CONFLICT (external_id) DO NOTHING RETURNING id";
const USER_SQL: &str = "SELECT id FROM users WHERE external_id = $1";

/// The longest companion name, in characters.
pub const MAX_COMPANION_NAME: usize = 128;

/// A companion name is shown in logs, key listings and messages: it must be
/// 1 to [`MAX_COMPANION_NAME`] characters, none of them a control character
/// (which would let a name rewrite a terminal line or a log entry).
pub fn check_companion_name(name: &str) -> Result<(), StoreError> {
    let problem = if name.trim().is_empty() {
        "is empty (or only spaces)".to_string()
    } else if name.chars().count() > MAX_COMPANION_NAME {
        format!("has {} characters", name.chars().count())
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("contains the control character U+{:04X}", u32::from(c))
    } else {
        return Ok(());
    };
    Err(StoreError::Constraint(format!(
        "companion name {name:?} {problem}: a companion name is 1 to {MAX_COMPANION_NAME} \
         printable characters"
    )))
}

/// Insert-or-select by a unique name. A concurrent insert can hide the row
/// from this statement's snapshot, so the select runs separately.
async fn upsert_id(
    client: &(impl deadpool_postgres::GenericClient + Statements),
    insert: &str,
    select: &str,
    key: &str,
) -> Result<Uuid, StoreError> {
    if let Some(row) = client.opt(insert, &[&key]).await? {
        return Ok(row.try_get("id")?);
    }
    let row = client.one(select, &[&key]).await?;
    Ok(row.try_get("id")?)
}

/// How PostgreSQL plans a prepared statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Plan {
    /// For the values of each call: a plan whose best shape depends on them
    /// (an HNSW or an exact scan, by the scope's size).
    PerCall,
    /// Once per connection, then cached: a plan that does not.
    Cached,
}

/// Runs `sql` in transaction `tx` planned as `plan` says, a setting that
/// lasts until the transaction ends. The SET is sent just ahead of the
/// statement (requests are pipelined in the order they are polled), so it
/// costs no round trip of its own. Behind a pooler the vector search's
/// settings ride along, since no session keeps them there.
pub(crate) async fn query_planned(
    tx: &deadpool_postgres::Transaction<'_>,
    plan: Plan,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let mode = match plan {
        Plan::PerCall => "SET LOCAL plan_cache_mode = force_custom_plan",
        Plan::Cached => "SET LOCAL plan_cache_mode = force_generic_plan",
    };
    let mode = match crate::db::statements::pooled() {
        true => std::borrow::Cow::Owned(format!("{mode}; {}", crate::db::SEARCH_SETTINGS_LOCAL)),
        false => std::borrow::Cow::Borrowed(mode),
    };
    let (set, rows) = tokio::join!(biased; tx.batch_execute(&mode), tx.rows(sql, params));
    set?;
    Ok(rows?)
}

/// Awaits one statement, logging it as slow (with `name`) past
/// [`crate::db::SLOW_QUERY`].
pub(crate) async fn timed<T>(name: &str, statement: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = statement.await;
    crate::db::note_duration(name, started);
    out
}

/// A vector for pgvector, or NULL.
pub(crate) fn to_vector(v: Option<Vec<f32>>) -> Option<Vector> {
    v.map(Vector::from)
}
