//! What the MCP surface lists and completes, confined to a [`Scope`]: the
//! resource listing (user profiles, then contexts), a user's profile (the
//! preferences and instructions an agent should always know), and
//! completion candidates (users, tags, memory and context ids).

use super::{Memory, Scope, Store, StoreError, read_rows};
use crate::db::statements::Statements;

/// A page of the listing after ($2 rank, $3 key), $4 entries.
const LISTED_SQL: &str = concat!(
    "SELECT rank, key, label, detail FROM ( \
        SELECT 0::int2 AS rank, u.external_id AS key, u.external_id AS label, \
               count(*) || ' preferences and instructions' AS detail \
        FROM memories m JOIN users u ON u.id = m.user_id \
        WHERE m.companion_id = $1 AND m.kind IN ('preference', 'instruction') AND ",
    live!(),
    " GROUP BY u.external_id \
      UNION ALL \
        SELECT 1::int2, c.id::text, c.name, \
               'with ' || u.external_id || ', ' || c.message_count || ' messages' \
        FROM contexts c JOIN users u ON u.id = c.user_id \
        WHERE c.companion_id = $1 AND c.deleted_at IS NULL \
     ) r \
     WHERE $2::int2 IS NULL OR (r.rank, r.key COLLATE \"C\") > ($2, $3::text COLLATE \"C\") \
     ORDER BY r.rank, r.key COLLATE \"C\" LIMIT $4"
);

/// User $2's profile: live instructions, then preferences, at most $3.
const PROFILE_SQL: &str = concat!(
    "SELECT ",
    memory_columns!(),
    " FROM memories m JOIN users u ON u.id = m.user_id \
     WHERE m.companion_id = $1 AND u.external_id = $2 \
       AND m.kind IN ('instruction', 'preference') AND ",
    live!(),
    " ORDER BY m.kind = 'instruction' DESC, m.importance DESC, m.created_at DESC, m.id \
     LIMIT $3"
);

/// Completion statements: $1 companion, $2 prefix, $3 limit, each
/// selecting the candidates as `value`.
const USERS_SQL: &str = "SELECT u.external_id AS value FROM users u \
     WHERE starts_with(u.external_id, $2) AND ( \
        EXISTS (SELECT 1 FROM memories m WHERE m.user_id = u.id AND m.companion_id = $1) \
        OR EXISTS (SELECT 1 FROM contexts c WHERE c.user_id = u.id AND c.companion_id = $1 \
                   AND c.deleted_at IS NULL)) \
     ORDER BY u.external_id LIMIT $3";

/// $4: only this user's tags, when given.
const TAGS_SQL: &str = concat!(
    "SELECT DISTINCT t AS value FROM memories m CROSS JOIN unnest(m.tags) t \
     WHERE m.companion_id = $1 AND starts_with(t, $2) AND ",
    live!(),
    " AND ($4::text IS NULL OR m.user_id = (SELECT id FROM users WHERE external_id = $4)) \
     ORDER BY t LIMIT $3"
);

const CONTEXT_IDS_SQL: &str = "SELECT c.id::text AS value FROM contexts c \
     WHERE c.companion_id = $1 AND c.deleted_at IS NULL \
       AND (starts_with(c.id::text, lower($2)) OR starts_with(lower(c.name), lower($2))) \
     ORDER BY c.updated_at DESC, c.id LIMIT $3";

const MEMORY_IDS_SQL: &str = concat!(
    "SELECT m.id::text AS value FROM memories m \
     WHERE m.companion_id = $1 AND starts_with(m.id::text, lower($2)) AND ",
    not_expired!(),
    " ORDER BY m.created_at DESC, m.id LIMIT $3"
);

/// One entry of the resource listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub kind: ListedKind,
    /// The user's external id, or the context's id.
    pub key: String,
    /// A context's name, or the user's id.
    pub label: String,
    /// A context's user and size, or a profile's number of memories.
    pub detail: String,
}

/// The kinds of listed resources, in listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedKind {
    Profile = 0,
    Context = 1,
}

/// At most this many memories in a profile.
pub const PROFILE_LIMIT: i64 = 200;

impl Store {
    /// A page of the resource listing: profiles of users with live
    /// preferences or instructions, then live contexts, each in key order,
    /// after `after` (the kind and key of the previous page's last entry).
    pub async fn list_listed(
        &self,
        scope: &Scope,
        after: Option<(ListedKind, String)>,
        limit: i64,
    ) -> Result<Vec<Listed>, StoreError> {
        let client = self.client().await?;
        let (rank, key) = match after {
            Some((kind, key)) => (Some(kind as i16), Some(key)),
            None => (None, None),
        };
        let rows = client
            .rows(LISTED_SQL, &[&scope.companion_id, &rank, &key, &limit])
            .await?;
        read_rows(&rows, |r| {
            Ok(Listed {
                kind: if r.try_get::<_, i16>("rank")? == ListedKind::Profile as i16 {
                    ListedKind::Profile
                } else {
                    ListedKind::Context
                },
                key: r.try_get("key")?,
                label: r.try_get("label")?,
                detail: r.try_get("detail")?,
            })
        })
    }

    /// `user`'s live instructions, then preferences, most important first
    /// (at most [`PROFILE_LIMIT`]). Reading a profile counts no access.
    pub async fn profile(&self, scope: &Scope, user: &str) -> Result<Vec<Memory>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .rows(PROFILE_SQL, &[&scope.companion_id, &user, &PROFILE_LIMIT])
            .await?;
        read_rows(&rows, Memory::from_row)
    }

    /// External ids of users with memories or contexts here, starting with `prefix`.
    pub async fn complete_users(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(USERS_SQL, &[&scope.companion_id, &prefix, &limit])
            .await
    }

    /// Tags on live memories (of `user`, if given) starting with `prefix`.
    pub async fn complete_tags(
        &self,
        scope: &Scope,
        prefix: &str,
        user: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(TAGS_SQL, &[&scope.companion_id, &prefix, &limit, &user])
            .await
    }

    /// Ids of live contexts whose id or name starts with `prefix`, most recently used first.
    pub async fn complete_context_ids(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(CONTEXT_IDS_SQL, &[&scope.companion_id, &prefix, &limit])
            .await
    }

    /// Ids of live memories starting with `prefix`, newest first.
    pub async fn complete_memory_ids(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(MEMORY_IDS_SQL, &[&scope.companion_id, &prefix, &limit])
            .await
    }

    /// Runs a completion query ($1 companion, $2 prefix, $3 limit, ...)
    /// selecting `value`.
    async fn complete(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client.rows(sql, params).await?;
        read_rows(&rows, |r| Ok(r.try_get("value")?))
    }
}
