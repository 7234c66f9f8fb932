//! Conversation contexts: append-only message logs per companion and user,
//! forks that share their parent's history without copying it, and hybrid
//! search over message content. All confined to a [`Scope`].
//!
//! Versions: a context's messages are numbered 1, 2, 3, ... A fork at
//! version v reads its ancestors' messages up to v and numbers its own
//! messages from v + 1, so the resolved log of any context is one strictly
//! increasing sequence of versions: `since_version` and `limit` page through
//! it directly, and it is read with one recursive query.
//!
//! Soft delete: a deleted context disappears from every read, list, search
//! and append, but its rows stay, so its forks keep reading the history they
//! share with it.

use crate::db::statements::Statements;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use pgvector::Vector;
use schemars::JsonSchema;
use serde::Serialize;
use uuid::Uuid;

use std::sync::LazyLock;

use super::search::{CANDIDATES, SearchMode};
use super::sql::{Builder, Cache, Slot, Statement};
use super::{Scope, Store, StoreError, to_vector};

labels! {
    /// Who wrote a message.
    pub enum Role as "message_role" {
        /// The person.
        User,
        /// The AI.
        Assistant,
        /// Instructions framing the conversation.
        System,
        /// A tool's result (needs tool_call_id).
        Tool,
    }
}

/// A message to append. Already validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
    pub token_count: i32,
    pub model: Option<String>,
}

/// Where an append goes.
#[derive(Debug, Clone)]
pub enum AppendTarget {
    Existing(Uuid),
    /// A new context for `user`, named `name`.
    New {
        user: String,
        name: String,
    },
}

/// A context as stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Context {
    pub id: Uuid,
    /// The user's external id.
    pub user_id: String,
    pub name: String,
    /// The context this one was forked from, if any.
    pub parent_id: Option<Uuid>,
    /// The parent's version this fork starts after.
    pub fork_version: Option<i64>,
    /// Messages in the log as read, inherited ones included.
    pub message_count: i64,
    /// Tokens in the log as read, inherited ones included.
    pub total_tokens: i64,
    /// The version of the last message (0 when empty); pass it as expected_version.
    pub latest_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns [`Context::from_row`] reads, of context `c` joined to its
/// user `u`.
macro_rules! context_columns {
    () => {
        "c.id, u.external_id AS user_id, c.name, c.parent_id, c.fork_version, \
         c.message_count, c.total_tokens, c.latest_version, c.created_at, c.updated_at"
    };
}

impl Context {
    fn from_row(row: &tokio_postgres::Row) -> Result<Context, StoreError> {
        Ok(Context {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            parent_id: row.try_get("parent_id")?,
            fork_version: row.try_get("fork_version")?,
            message_count: row.try_get("message_count")?,
            total_tokens: row.try_get("total_tokens")?,
            latest_version: row.try_get("latest_version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A message as stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Message {
    pub id: Uuid,
    /// The context that wrote it: an ancestor's id for inherited messages.
    pub context_id: Uuid,
    pub version: i64,
    pub role: Role,
    pub content: String,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
    pub token_count: i32,
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The columns [`Message::from_row`] reads, of message `m`; `message_id`
/// and `message_created_at` do not collide with a context's columns in the
/// same row.
macro_rules! message_columns {
    () => {
        "m.id AS message_id, m.context_id, m.version, m.role, m.content, m.tool_call_id, \
         m.tool_name, m.token_count, m.model, m.created_at AS message_created_at"
    };
}
const MESSAGE_COLUMNS: &str = message_columns!();

impl Message {
    /// `None` when the row carries no message (the outer side of a LEFT
    /// JOIN).
    fn from_row(row: &tokio_postgres::Row) -> Result<Option<Message>, StoreError> {
        let Some(id) = row.try_get::<_, Option<Uuid>>("message_id")? else {
            return Ok(None);
        };
        Ok(Some(Message {
            id,
            context_id: row.try_get("context_id")?,
            version: row.try_get("version")?,
            role: row.try_get("role")?,
            content: row.try_get("content")?,
            tool_call_id: row.try_get("tool_call_id")?,
            tool_name: row.try_get("tool_name")?,
            token_count: row.try_get("token_count")?,
            model: row.try_get("model")?,
            created_at: row.try_get("message_created_at")?,
        }))
    }
}

/// What an append did.
#[derive(Debug, Clone)]
pub struct Appended {
    pub context: Context,
    /// The versions given to the messages, in order.
    pub versions: Vec<i64>,
    /// True when the append started a new context.
    pub created: bool,
}

/// Which part of a resolved log to read.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Only messages after this version.
    pub since_version: i64,
    pub limit: i64,
    /// The last `limit` messages instead of the first (still returned oldest first).
    pub newest: bool,
}

/// A scored message search hit.
#[derive(Debug, Clone)]
pub struct MessageHit {
    pub message: Message,
    pub context_name: String,
    pub user_id: String,
    pub score: f64,
}

/// Filters for [`Store::search_messages`].
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// The user whose live contexts to search (ignored with `context`).
    pub user: String,
    /// Search this context's resolved log only (inherited messages included).
    pub context: Option<Uuid>,
    pub roles: Option<Vec<Role>>,
}

/// The ancestry of context $1 (live, of companion $2) with, for each
/// member, the last version of it that the log shows (`upto`, NULL for no
/// bound; `$upto` bounds the first member itself). A parent is read up to
/// the child's fork point, and never further than any bound below it.
/// Ancestors may be soft-deleted: forks keep what they inherited.
macro_rules! chain {
    ($upto:literal) => {
        concat!(
            "chain AS ( \
                SELECT c.id, c.parent_id, c.fork_version, ",
            $upto,
            "::bigint AS upto, 0 AS depth \
                FROM contexts c WHERE c.id = $1 AND c.companion_id = $2 AND c.deleted_at IS NULL \
              UNION ALL \
                SELECT p.id, p.parent_id, p.fork_version, least(ch.upto, ch.fork_version), ch.depth + 1 \
                FROM chain ch JOIN contexts p ON p.id = ch.parent_id AND p.companion_id = $2 \
                WHERE ch.depth < 10000 \
             )"
        )
    };
}

/// The messages of `chain` that the resolved log shows, as `m`. Versions
/// grow strictly along the chain (an ancestor contributes only versions up
/// to the fork point, the fork only later ones), so ordering by version is
/// ordering by (depth from the root, version).
macro_rules! chain_messages {
    () => {
        "chain ch JOIN messages m ON m.context_id = ch.id \
         AND (ch.upto IS NULL OR m.version <= ch.upto) AND m.deleted_at IS NULL"
    };
}

const NEW_CONTEXT_SQL: &str =
    "INSERT INTO contexts (companion_id, user_id, name) VALUES ($1, $2, $3) RETURNING id";

/// Bumps a live context's counts for an append of $3 messages and $4
/// tokens, if its latest version is still $5 (when given).
const BUMP_SQL: &str = concat!(
    "UPDATE contexts AS c SET latest_version = c.latest_version + $3, \
        message_count = c.message_count + $3, total_tokens = c.total_tokens + $4, \
        updated_at = now() \
     FROM users u \
     WHERE u.id = c.user_id AND c.id = $1 AND c.companion_id = $2 AND c.deleted_at IS NULL \
       AND ($5::bigint IS NULL OR c.latest_version = $5) \
     RETURNING ",
    context_columns!()
);

const INSERT_MESSAGE_SQL: &str = "INSERT INTO messages (context_id, companion_id, version, role, content, tool_call_id, \
        tool_name, token_count, model, embedding, embedding_model) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

const LIST_CONTEXTS_SQL: &str = concat!(
    "SELECT ",
    context_columns!(),
    " FROM contexts c JOIN users u ON u.id = c.user_id \
     WHERE c.companion_id = $1 AND c.user_id = $2 AND c.deleted_at IS NULL \
       AND ($3::uuid IS NULL OR c.parent_id = $3) \
       AND ($4::timestamptz IS NULL OR (c.created_at, c.id) < ($4, $5::uuid)) \
     ORDER BY c.created_at DESC, c.id DESC LIMIT $6"
);

/// A live context ($1 of companion $2) and a window of its resolved log:
/// after version $3, at most $4 messages, the newest ones when $5.
const GET_CONTEXT_SQL: &str = concat!(
    "WITH RECURSIVE ",
    chain!("NULL"),
    " SELECT ",
    context_columns!(),
    ", msg.* \
     FROM contexts c JOIN users u ON u.id = c.user_id \
     LEFT JOIN LATERAL ( \
        SELECT ",
    message_columns!(),
    " FROM ",
    chain_messages!(),
    " WHERE m.companion_id = $2 AND m.version > $3 \
        ORDER BY CASE WHEN $5 THEN -m.version ELSE m.version END LIMIT $4 \
     ) msg ON true \
     WHERE c.id = $1 AND c.companion_id = $2 AND c.deleted_at IS NULL \
     ORDER BY msg.version"
);

/// A fork of live context $1 (of companion $2) at version $3 (NULL: its
/// latest), named $4 (NULL: after its parent).
const FORK_SQL: &str = concat!(
    "WITH RECURSIVE parent AS ( \
        SELECT p.*, coalesce($3::bigint, p.latest_version) AS at FROM contexts p \
        WHERE p.id = $1 AND p.companion_id = $2 AND p.deleted_at IS NULL \
          AND coalesce($3::bigint, p.latest_version) <= p.latest_version \
     ), ",
    chain!("(SELECT at FROM parent)"),
    ", totals AS ( \
        SELECT count(*) AS n, coalesce(sum(m.token_count), 0)::bigint AS tokens \
        FROM ",
    chain_messages!(),
    " WHERE m.companion_id = $2 \
     ), c AS ( \
        INSERT INTO contexts (companion_id, user_id, name, parent_id, fork_version, \
            latest_version, message_count, total_tokens) \
        SELECT p.companion_id, p.user_id, \
            coalesce($4, left(p.name, 200) || ' (fork at ' || p.at || ')'), \
            p.id, p.at, p.at, t.n, t.tokens \
        FROM parent p, totals t \
        RETURNING * \
     ) \
     SELECT ",
    context_columns!(),
    " FROM c JOIN users u ON u.id = c.user_id"
);

const DELETE_CONTEXT_SQL: &str = "UPDATE contexts SET deleted_at = now() \
     WHERE id = $1 AND companion_id = $2 AND deleted_at IS NULL";

const LATEST_VERSION_SQL: &str = "SELECT latest_version FROM contexts \
     WHERE id = $1 AND companion_id = $2 AND deleted_at IS NULL";

impl Store {
    /// Appends `messages` in order (with their `embeddings`, `None` where
    /// deferred) as one transaction. With `expected_version`, appends only
    /// if the context's latest version is still that; otherwise nothing is
    /// written and [`StoreError::VersionConflict`] names the current one.
    /// Concurrent appends to one context serialise on its row lock, so
    /// versions never collide or interleave within one append.
    pub async fn append_messages(
        &self,
        scope: &Scope,
        target: &AppendTarget,
        messages: &[NewMessage],
        embeddings: Vec<Option<Vec<f32>>>,
        model: &str,
        expected_version: Option<i64>,
    ) -> Result<Appended, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (id, created) = match target {
            AppendTarget::Existing(id) => (*id, false),
            AppendTarget::New { user, name } => {
                let user_id = Store::user_id(&tx, user).await?;
                let row = tx
                    .one(NEW_CONTEXT_SQL, &[&scope.companion_id, &user_id, name])
                    .await?;
                (row.try_get("id")?, true)
            }
        };
        let n = messages.len() as i64;
        let tokens: i64 = messages.iter().map(|m| i64::from(m.token_count)).sum();
        let row = tx
            .opt(
                BUMP_SQL,
                &[&id, &scope.companion_id, &n, &tokens, &expected_version],
            )
            .await?;
        let Some(row) = row else {
            let current = latest_version(&tx, scope, id).await?;
            return Err(match (current, expected_version) {
                (Some(actual), Some(expected)) => StoreError::VersionConflict {
                    id,
                    expected,
                    actual,
                },
                _ => StoreError::ContextNotFound(id),
            });
        };
        let context = Context::from_row(&row)?;
        let first = context.latest_version - n + 1;
        let mut versions = Vec::with_capacity(messages.len());
        for (i, (message, embedding)) in messages.iter().zip(embeddings).enumerate() {
            let version = first + i as i64;
            let embedding_model = embedding.is_some().then_some(model);
            tx.run(
                INSERT_MESSAGE_SQL,
                &[
                    &id,
                    &scope.companion_id,
                    &version,
                    &message.role,
                    &message.content,
                    &message.tool_call_id,
                    &message.tool_name,
                    &message.token_count,
                    &message.model,
                    &to_vector(embedding),
                    &embedding_model,
                ],
            )
            .await?;
            versions.push(version);
        }
        tx.commit().await?;
        Ok(Appended {
            context,
            versions,
            created,
        })
    }

    /// A live context and a window of its resolved log (forks include their
    /// ancestors' messages up to the fork point), in one statement. Returns
    /// up to `window.limit` messages, oldest first.
    pub async fn get_context(
        &self,
        scope: &Scope,
        id: Uuid,
        window: Window,
    ) -> Result<(Context, Vec<Message>), StoreError> {
        let client = self.client().await?;
        let started = std::time::Instant::now();
        let rows = client
            .rows(
                GET_CONTEXT_SQL,
                &[
                    &id,
                    &scope.companion_id,
                    &window.since_version,
                    &window.limit,
                    &window.newest,
                ],
            )
            .await?;
        crate::db::note_duration("get_context", started);
        let first = rows.first().ok_or(StoreError::ContextNotFound(id))?;
        let context = Context::from_row(first)?;
        let messages = super::read_rows(&rows, Message::from_row)?;
        Ok((context, messages.into_iter().flatten().collect()))
    }

    /// Forks live context `id` at `version` (default: its latest): the fork
    /// shows the parent's log up to `version` and continues from there. No
    /// message is copied; the fork's counts start at the inherited ones.
    pub async fn fork_context(
        &self,
        scope: &Scope,
        id: Uuid,
        version: Option<i64>,
        name: Option<&str>,
    ) -> Result<Context, StoreError> {
        let client = self.client().await?;
        if let Some(row) = client
            .opt(FORK_SQL, &[&id, &scope.companion_id, &version, &name])
            .await?
        {
            return Context::from_row(&row);
        }
        match (latest_version(&client, scope, id).await?, version) {
            (Some(latest), Some(version)) => Err(StoreError::VersionOutOfRange {
                id,
                version,
                latest,
            }),
            _ => Err(StoreError::ContextNotFound(id)),
        }
    }

    /// Live contexts of `user`, newest first, `limit` per page after
    /// `cursor` (the `(created_at, id)` of the previous page's last row);
    /// with `parent`, only the forks of that context.
    pub async fn list_contexts(
        &self,
        scope: &Scope,
        user: &str,
        parent: Option<Uuid>,
        cursor: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Context>, StoreError> {
        let client = self.client().await?;
        let Some(user_id) = Store::find_user(&client, user).await? else {
            return Ok(Vec::new());
        };
        let (at, after) = match cursor {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let rows = client
            .rows(
                LIST_CONTEXTS_SQL,
                &[&scope.companion_id, &user_id, &parent, &at, &after, &limit],
            )
            .await?;
        super::read_rows(&rows, Context::from_row)
    }

    /// Soft-deletes a live context: it disappears from every read, list,
    /// search and append; its forks keep the history they share with it.
    pub async fn delete_context(&self, scope: &Scope, id: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        match client
            .run(DELETE_CONTEXT_SQL, &[&id, &scope.companion_id])
            .await?
        {
            0 => Err(StoreError::ContextNotFound(id)),
            _ => Ok(()),
        }
    }

    /// The best `limit` messages for `text` (and its embedding, needed
    /// unless `mode` is keyword): vector and full-text candidates fused by
    /// reciprocal rank, as for memories, without importance or recency.
    /// Searches the user's live contexts (each message under the context
    /// that wrote it), or one context's resolved log.
    pub async fn search_messages(
        &self,
        scope: &Scope,
        filter: &MessageFilter,
        text: &str,
        embedding: Option<Vec<f32>>,
        mode: SearchMode,
        limit: i64,
    ) -> Result<Vec<MessageHit>, StoreError> {
        let client = self.client().await?;
        let user_id = match filter.context {
            Some(id) => {
                if latest_version(&client, scope, id).await?.is_none() {
                    return Err(StoreError::ContextNotFound(id));
                }
                None
            }
            None => match Store::find_user(&client, &filter.user).await? {
                Some(u) => Some(u),
                None => return Ok(Vec::new()),
            },
        };
        let use_vectors = mode != SearchMode::Keyword && embedding.is_some();
        let use_text = mode != SearchMode::Semantic;
        // A placeholder keeps the parameter types fixed when vectors are off.
        let vector = Vector::from(embedding.unwrap_or_else(|| vec![0.0; self.embedding_dim()]));
        let roles: Option<Vec<&str>> = filter
            .roles
            .as_ref()
            .map(|r| r.iter().map(|r| r.as_str()).collect());
        // The statement's HNSW-or-exact choice depends on the scope's size,
        // so it is planned per call (a cached generic plan would serve a
        // small scope through an index scan tuned for a large one), in a
        // read-only transaction that keeps the setting to itself.
        let mut client = client;
        let started = std::time::Instant::now();
        let tx = client.build_transaction().read_only(true).start().await?;
        let dim = self.embedding_dim();
        let search = SEARCH.get(dim, || search_sql(dim));
        let limit = limit.min(CANDIDATES);
        let params = search.values(|slot| {
            Some(match slot {
                Slot::Context => &filter.context,
                Slot::Companion => &scope.companion_id,
                Slot::User => &user_id,
                Slot::Roles => &roles,
                Slot::Vector => &vector,
                Slot::Text => &text,
                Slot::UseVector => &use_vectors,
                Slot::UseText => &use_text,
                Slot::Limit => &limit,
                _ => return None,
            })
        })?;
        let rows = super::query_planned(&tx, super::Plan::PerCall, &search.sql, &params).await?;
        crate::db::note_duration("search_messages", started);
        let hits = super::read_rows(&rows, |row| {
            let Some(message) = Message::from_row(row)? else {
                return Ok(None);
            };
            Ok(Some(MessageHit {
                message,
                context_name: row.try_get("context_name")?,
                user_id: row.try_get("user_id")?,
                score: row.try_get("score")?,
            }))
        })?;
        Ok(hits.into_iter().flatten().collect())
    }
}

/// The message search statement: the context to search ($1, or NULL for
/// all of the user's), the companion ($2; [`chain!`] names them so, so they
/// are numbered first), the user, the roles (or NULL), the query vector and
/// text, whether to use each, and the limit.
pub(super) fn search_sql(dim: usize) -> Statement {
    use super::search::{FusionParams, KeywordList, KeywordParams, SemanticList, Switch};
    let mut b = Builder::default();
    let context = b.param(Slot::Context);
    let companion = b.param(Slot::Companion);
    let user = b.param(Slot::User);
    let roles = b.param(Slot::Roles);
    let vector = b.param(Slot::Vector);
    let text = b.param(Slot::Text);
    let use_vector = Switch::Param(b.param(Slot::UseVector));
    let use_text = Switch::Param(b.param(Slot::UseText));
    let limit = b.param(Slot::Limit);
    let filter = format!(
        "m.companion_id = {companion} AND m.deleted_at IS NULL \
         AND ({roles}::text[] IS NULL OR m.role::text = ANY({roles})) \
         AND EXISTS (SELECT 1 FROM searched s WHERE s.id = m.context_id \
                     AND (s.upto IS NULL OR m.version <= s.upto))"
    );
    let fusion = super::search::fusion_ctes(
        "messages",
        &filter,
        &FusionParams {
            vector,
            dim,
            use_vector,
            semantic: SemanticList::Inline,
            keyword: KeywordList::Inline(KeywordParams {
                text,
                use_text,
                terms: None,
                scan_scope: false,
            }),
            windows: None,
            tuning: super::tuning::Tuning::DEFAULT,
        },
    );
    b.finish(format!(
        "WITH RECURSIVE {chain}, searched AS ( \
            SELECT id, upto FROM chain \
            UNION ALL \
            SELECT c.id, NULL::bigint FROM contexts c \
            WHERE {context}::uuid IS NULL AND c.companion_id = {companion} AND c.user_id = {user} AND c.deleted_at IS NULL \
         ), {fusion} \
         SELECT {MESSAGE_COLUMNS}, c.name AS context_name, u.external_id AS user_id, f.rrf::float8 AS score \
         FROM fused f JOIN messages m ON m.id = f.id \
         JOIN contexts c ON c.id = m.context_id JOIN users u ON u.id = c.user_id \
         ORDER BY score DESC, m.created_at DESC, m.id LIMIT {limit}",
        chain = chain!("NULL"),
    ))
}

/// [`search_sql`] by embedding dimension, built once.
static SEARCH: LazyLock<Cache<usize>> = LazyLock::new(Cache::default);

/// The latest version of live context `id`, if it exists in `scope`.
async fn latest_version(
    client: &(impl GenericClient + Statements),
    scope: &Scope,
    id: Uuid,
) -> Result<Option<i64>, StoreError> {
    let row = client
        .opt(LATEST_VERSION_SQL, &[&id, &scope.companion_id])
        .await?;
    Ok(row.map(|r| r.try_get("latest_version")).transpose()?)
}
