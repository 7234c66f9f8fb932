//! Reading every table (or one user's share of it) out of one consistent
//! snapshot, as a stream of rows that are never all held in memory.

use crate::db::statements::Statements;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use deadpool_postgres::GenericClient;
use futures::{Stream, StreamExt, pin_mut};
use pgvector::Vector;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row as PgRow};
use uuid::Uuid;

use super::{CompanionRow, ContextRow, MemoryRow, MessageRow, RelationRow, Row, UserRow};
use crate::store::contexts::{Context, Message};
use crate::store::relations::Step;
use crate::store::{Memory, Store, StoreError};

/// Rows read ahead of a slow consumer (a pipe, a disk): enough to keep the
/// connection busy, few enough that memory stays flat (a row with a
/// 384-dimensional vector is about 2 KB).
const READ_AHEAD: usize = 256;

/// One table's statement, its parameters and how its rows read.
type Table<'a> = (
    &'static str,
    &'a [&'a (dyn ToSql + Sync)],
    fn(&PgRow) -> Result<Row, StoreError>,
);

/// Which rows a snapshot holds.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this user's memories, the relations between them, their
    /// contexts and messages, this user, and the companions they live in.
    pub user: Option<String>,
    /// Read the embedding vectors (else every row comes without one).
    pub embeddings: bool,
}

/// The rows of one snapshot, in [`Row`]'s order. The snapshot is read by a
/// task of its own (its transaction borrows the connection it holds);
/// dropping the stream ends that task and rolls the read-only transaction
/// back. A read error ends the stream with that error.
pub struct Rows {
    rx: mpsc::Receiver<Result<Row, StoreError>>,
    reader: JoinHandle<()>,
}

impl Stream for Rows {
    type Item = Result<Row, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => {
                // Every sender is gone: the reader finished, or panicked,
                // which must not pass for the end of a complete snapshot.
                match Pin::new(&mut self.reader).poll(cx) {
                    Poll::Ready(Err(e)) if e.is_panic() => {
                        std::panic::resume_unwind(e.into_panic())
                    }
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
            other => other,
        }
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        // Closing the channel stops the reader at its next row.
        self.rx.close();
    }
}

impl Store {
    /// Every row `selection` names, from one REPEATABLE READ, read-only
    /// transaction: what a concurrent writer does meanwhile is either wholly
    /// in it or not at all.
    pub fn snapshot(&self, selection: Selection) -> Rows {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let store = self.clone();
        let reader = tokio::spawn(async move {
            if let Err(e) = read(&store, &selection, &tx).await {
                // Nobody may be listening any more; then there is no one to tell.
                let _ = tx.send(Err(e)).await;
            }
        });
        Rows { rx, reader }
    }
}

async fn read(
    store: &Store,
    selection: &Selection,
    out: &mpsc::Sender<Result<Row, StoreError>>,
) -> Result<(), StoreError> {
    let mut client = store.client().await?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // A slow reader of the export must not trip the statement timeout.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    let user_id: Option<Uuid> = match &selection.user {
        Some(name) => Some(
            Store::find_user(&tx, name)
                .await?
                .ok_or_else(|| StoreError::Constraint(format!("there is no user {name:?}")))?,
        ),
        None => None,
    };
    let user = [&user_id as &(dyn ToSql + Sync)];
    let with_vectors = [&user_id as &(dyn ToSql + Sync), &selection.embeddings];
    let tables: [Table<'_>; 6] = [
        (COMPANIONS, &user, companion),
        (USERS, &user, user_row),
        (MEMORIES, &with_vectors, memory),
        (RELATIONS, &user, relation),
        (CONTEXTS, &user, context),
        (MESSAGES, &with_vectors, message),
    ];
    for (sql, params, to_row) in tables {
        let rows = tx.stream(sql, params).await?;
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let row = to_row(&r?)?;
            if out.send(Ok(row)).await.is_err() {
                // The consumer dropped the stream: stop reading, quietly.
                return Ok(());
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

const COMPANIONS: &str = "SELECT c.id, c.name, c.created_at FROM companions c \
     WHERE $1::uuid IS NULL \
        OR EXISTS (SELECT 1 FROM memories m WHERE m.companion_id = c.id AND m.user_id = $1) \
        OR EXISTS (SELECT 1 FROM contexts x WHERE x.companion_id = c.id AND x.user_id = $1) \
     ORDER BY c.name";

const USERS: &str = "SELECT id, external_id, created_at FROM users \
     WHERE $1::uuid IS NULL OR id = $1 ORDER BY external_id";

const MEMORIES: &str = "SELECT m.id, c.name AS companion, u.external_id AS user_name, m.content, \
        m.kind, m.importance, m.confidence, m.tags, m.metadata, m.occurred_at, m.expires_at, \
        m.archived_at, coalesce(a.access_count, 0) AS access_count, a.last_accessed_at, \
        m.created_at, m.updated_at, m.embedding IS NOT NULL AS embedded, \
        CASE WHEN $2 THEN m.embedding END AS embedding, \
        CASE WHEN $2 THEN m.embedding_model END AS embedding_model \
     FROM memories m JOIN companions c ON c.id = m.companion_id \
     JOIN users u ON u.id = m.user_id \
     LEFT JOIN memory_access a ON a.companion_id = m.companion_id AND a.memory_id = m.id \
     WHERE $1::uuid IS NULL OR m.user_id = $1 \
     ORDER BY m.created_at, m.id";

const RELATIONS: &str = "SELECT r.id, c.name AS companion, r.from_id, r.to_id, r.relation, \
        r.strength, r.created_at, r.updated_at \
     FROM memory_relations r JOIN companions c ON c.id = r.companion_id \
     JOIN memories f ON f.id = r.from_id JOIN memories t ON t.id = r.to_id \
     WHERE $1::uuid IS NULL OR (f.user_id = $1 AND t.user_id = $1) \
     ORDER BY r.created_at, r.id";

/// Roots first, then each fork after its parent (its depth in the fork
/// tree), so an import in this order always finds the parent. A fork keeps
/// its parent's user, so one user's contexts are whole trees.
const CONTEXTS: &str = "WITH RECURSIVE tree AS ( \
        SELECT id, 0 AS depth FROM contexts WHERE parent_id IS NULL \
        UNION ALL \
        SELECT k.id, t.depth + 1 FROM contexts k JOIN tree t ON k.parent_id = t.id) \
     SELECT x.id, c.name AS companion, u.external_id AS user_name, x.name, x.parent_id, \
        x.fork_version, x.message_count, x.total_tokens, x.latest_version, x.created_at, \
        x.updated_at, x.deleted_at \
     FROM contexts x JOIN tree t ON t.id = x.id \
     JOIN companions c ON c.id = x.companion_id JOIN users u ON u.id = x.user_id \
     WHERE $1::uuid IS NULL OR x.user_id = $1 \
     ORDER BY t.depth, x.created_at, x.id";

const MESSAGES: &str = "SELECT m.id, m.context_id, m.version, m.role, m.content, m.tool_call_id, \
        m.tool_name, m.token_count, m.model, m.created_at, m.deleted_at, \
        CASE WHEN $2 THEN m.embedding END AS embedding, \
        CASE WHEN $2 THEN m.embedding_model END AS embedding_model \
     FROM messages m JOIN contexts x ON x.id = m.context_id \
     WHERE $1::uuid IS NULL OR x.user_id = $1 \
     ORDER BY m.context_id, m.version";

fn vector(r: &PgRow) -> Result<Option<Vec<f32>>, StoreError> {
    Ok(r.try_get::<_, Option<Vector>>("embedding")?
        .map(|v| v.to_vec()))
}

fn companion(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row::Companion(CompanionRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
    }))
}

fn user_row(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row::User(UserRow {
        id: r.try_get("id")?,
        external_id: r.try_get("external_id")?,
        created_at: r.try_get("created_at")?,
    }))
}

fn memory(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row::Memory(MemoryRow {
        companion: r.try_get("companion")?,
        memory: Memory {
            id: r.try_get("id")?,
            user_id: r.try_get("user_name")?,
            content: r.try_get("content")?,
            kind: r.try_get("kind")?,
            importance: r.try_get("importance")?,
            confidence: r.try_get("confidence")?,
            tags: r.try_get("tags")?,
            metadata: r.try_get("metadata")?,
            occurred_at: r.try_get("occurred_at")?,
            expires_at: r.try_get("expires_at")?,
            archived_at: r.try_get("archived_at")?,
            access_count: r.try_get("access_count")?,
            last_accessed_at: r.try_get("last_accessed_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            embedded: r.try_get("embedded")?,
        },
        embedding: vector(r)?,
        embedding_model: r.try_get("embedding_model")?,
    }))
}

fn relation(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row::Relation(RelationRow {
        id: r.try_get("id")?,
        companion: r.try_get("companion")?,
        step: Step {
            from_id: r.try_get("from_id")?,
            relation: r.try_get("relation")?,
            to_id: r.try_get("to_id")?,
            strength: r.try_get("strength")?,
        },
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    }))
}

fn context(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row::Context(ContextRow {
        companion: r.try_get("companion")?,
        context: Context {
            id: r.try_get("id")?,
            user_id: r.try_get("user_name")?,
            name: r.try_get("name")?,
            parent_id: r.try_get("parent_id")?,
            fork_version: r.try_get("fork_version")?,
            message_count: r.try_get("message_count")?,
            total_tokens: r.try_get("total_tokens")?,
            latest_version: r.try_get("latest_version")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        },
        deleted_at: r.try_get("deleted_at")?,
    }))
}

fn message(r: &PgRow) -> Result<Row, StoreError> {
    Ok(Row::Message(MessageRow {
        message: Message {
            id: r.try_get("id")?,
            context_id: r.try_get("context_id")?,
            version: r.try_get("version")?,
            role: r.try_get("role")?,
            content: r.try_get("content")?,
            tool_call_id: r.try_get("tool_call_id")?,
            tool_name: r.try_get("tool_name")?,
            token_count: r.try_get("token_count")?,
            model: r.try_get("model")?,
            created_at: r.try_get("created_at")?,
        },
        embedding: vector(r)?,
        embedding_model: r.try_get("embedding_model")?,
        deleted_at: r.try_get("deleted_at")?,
    }))
}
