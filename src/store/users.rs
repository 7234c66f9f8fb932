//! The people a companion remembers: who they are with how much is kept
//! about each, and forgetting one of them (every memory, relation,
//! conversation and message the companion holds about them) in one
//! transaction.

use crate::db::statements::Statements;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Scope, Store, StoreError, retry_on_conflict};

/// A user as the console lists them: what this companion keeps about them.
#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    /// The user's external id.
    pub user_id: String,
    /// Memories of every state (live, archived, expired but not yet purged).
    pub memories: i64,
    /// Live (not deleted) conversation contexts.
    pub contexts: i64,
    /// When the newest memory or context about them was made.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// What forgetting a user removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    pub memories: i64,
    pub relations: i64,
    pub contexts: i64,
    pub messages: i64,
    /// True when the user row went too (no other companion knows the user).
    pub user_row: bool,
}

/// At most this many users in one listing.
pub const USER_LIST_LIMIT: i64 = 1000;

impl Store {
    /// The users this companion keeps memories or conversations about,
    /// most memories first.
    pub async fn users(&self, scope: &Scope) -> Result<Vec<UserSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .rows(
                "WITH m AS ( \
                    SELECT user_id, count(*) AS n, max(created_at) AS last FROM memories \
                    WHERE companion_id = $1 GROUP BY user_id \
                 ), c AS ( \
                    SELECT user_id, count(*) FILTER (WHERE deleted_at IS NULL) AS n, \
                           max(created_at) AS last FROM contexts \
                    WHERE companion_id = $1 GROUP BY user_id \
                 ) \
                 SELECT u.external_id, coalesce(m.n, 0) AS memories, coalesce(c.n, 0) AS contexts, \
                        greatest(m.last, c.last) AS last_seen_at \
                 FROM users u LEFT JOIN m ON m.user_id = u.id LEFT JOIN c ON c.user_id = u.id \
                 WHERE m.user_id IS NOT NULL OR c.user_id IS NOT NULL \
                 ORDER BY coalesce(m.n, 0) DESC, u.external_id LIMIT $2",
                &[&scope.companion_id, &USER_LIST_LIMIT],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| UserSummary {
                user_id: r.get("external_id"),
                memories: r.get("memories"),
                contexts: r.get("contexts"),
                last_seen_at: r.get("last_seen_at"),
            })
            .collect())
    }

    /// Deletes everything this companion keeps about `user`: memories (and
    /// so their relations and access statistics), conversation contexts
    /// (soft-deleted ones too, and so their forks and messages), and the
    /// user row itself once no other companion refers to it. One
    /// transaction: it all goes, or nothing does.
    pub async fn forget_user(&self, scope: &Scope, user: &str) -> Result<Forgotten, StoreError> {
        // Deleting memories cascades through relations that a concurrent
        // delete may lock in the other order (see `retry_on_conflict`).
        retry_on_conflict(|| self.forget_user_once(scope, user)).await
    }

    async fn forget_user_once(&self, scope: &Scope, user: &str) -> Result<Forgotten, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(user_id) = Store::find_user(&tx, user).await? else {
            return Ok(Forgotten::default());
        };
        // Counted first: the cascades below do not report what they remove.
        let row = tx
            .one("SELECT \
                    (SELECT count(*) FROM memory_relations r WHERE r.companion_id = $1 AND EXISTS ( \
                        SELECT 1 FROM memories m WHERE m.user_id = $2 AND m.companion_id = $1 \
                        AND (m.id = r.from_id OR m.id = r.to_id))) AS relations, \
                    (SELECT count(*) FROM messages g JOIN contexts c ON c.id = g.context_id \
                     WHERE c.companion_id = $1 AND c.user_id = $2) AS messages", &[&scope.companion_id, &user_id])
            .await?;
        let mut gone = Forgotten {
            relations: row.get("relations"),
            messages: row.get("messages"),
            ..Forgotten::default()
        };
        gone.memories = tx
            .run(
                "DELETE FROM memories WHERE companion_id = $1 AND user_id = $2",
                &[&scope.companion_id, &user_id],
            )
            .await? as i64;
        // A fork belongs to its parent's user, so deleting the user's
        // contexts takes every fork (and message) with them.
        gone.contexts = tx
            .run(
                "DELETE FROM contexts WHERE companion_id = $1 AND user_id = $2",
                &[&scope.companion_id, &user_id],
            )
            .await? as i64;
        gone.user_row = tx
            .run(
                "DELETE FROM users u WHERE u.id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.user_id = u.id) \
                 AND NOT EXISTS (SELECT 1 FROM contexts c WHERE c.user_id = u.id)",
                &[&user_id],
            )
            .await?
            > 0;
        tx.commit().await?;
        Ok(gone)
    }
}
