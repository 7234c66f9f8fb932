//! What the MCP surface lists and completes, confined to a [`Scope`]: the
//! resource listing (user profiles, then contexts), a user's profile (the
//! preferences and instructions an agent should always know), and
//! completion candidates (users, tags, memory and context ids).

use super::{MEMORY_COLUMNS, Memory, Scope, Store, StoreError};

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
        let stmt = client
            .prepare_cached(
                "SELECT rank, key, label, detail FROM ( \
                    SELECT 0::int2 AS rank, u.external_id AS key, u.external_id AS label, \
                           count(*) || ' preferences and instructions' AS detail \
                    FROM memories m JOIN users u ON u.id = m.user_id \
                    WHERE m.companion_id = $1 AND m.kind IN ('preference', 'instruction') \
                      AND m.archived_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > now()) \
                    GROUP BY u.external_id \
                  UNION ALL \
                    SELECT 1::int2, c.id::text, c.name, \
                           'with ' || u.external_id || ', ' || c.message_count || ' messages' \
                    FROM contexts c JOIN users u ON u.id = c.user_id \
                    WHERE c.companion_id = $1 AND c.deleted_at IS NULL \
                 ) r \
                 WHERE $2::int2 IS NULL OR (r.rank, r.key COLLATE \"C\") > ($2, $3::text COLLATE \"C\") \
                 ORDER BY r.rank, r.key COLLATE \"C\" LIMIT $4",
            )
            .await?;
        let (rank, key) = match after {
            Some((kind, key)) => (Some(kind as i16), Some(key)),
            None => (None, None),
        };
        let rows = client
            .query(&stmt, &[&scope.companion_id, &rank, &key, &limit])
            .await?;
        Ok(rows
            .iter()
            .map(|r| Listed {
                kind: if r.get::<_, i16>(0) == 0 {
                    ListedKind::Profile
                } else {
                    ListedKind::Context
                },
                key: r.get(1),
                label: r.get(2),
                detail: r.get(3),
            })
            .collect())
    }

    /// `user`'s live instructions, then preferences, most important first
    /// (at most [`PROFILE_LIMIT`]). Reading a profile counts no access.
    pub async fn profile(&self, scope: &Scope, user: &str) -> Result<Vec<Memory>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {MEMORY_COLUMNS} FROM memories m JOIN users u ON u.id = m.user_id \
             WHERE m.companion_id = $1 AND u.external_id = $2 \
               AND m.kind IN ('instruction', 'preference') AND m.archived_at IS NULL \
               AND (m.expires_at IS NULL OR m.expires_at > now()) \
             ORDER BY m.kind = 'instruction' DESC, m.importance DESC, m.created_at DESC, m.id \
             LIMIT $3"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client
            .query(&stmt, &[&scope.companion_id, &user, &PROFILE_LIMIT])
            .await?;
        Ok(rows.iter().map(Memory::from_row).collect())
    }

    /// External ids of users with memories or contexts here, starting with `prefix`.
    pub async fn complete_users(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(
            "SELECT u.external_id FROM users u \
             WHERE starts_with(u.external_id, $2) AND ( \
                EXISTS (SELECT 1 FROM memories m WHERE m.user_id = u.id AND m.companion_id = $1) \
                OR EXISTS (SELECT 1 FROM contexts c WHERE c.user_id = u.id AND c.companion_id = $1 \
                           AND c.deleted_at IS NULL)) \
             ORDER BY u.external_id LIMIT $3",
            &[&scope.companion_id, &prefix, &limit],
        )
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
        self.complete(
            "SELECT DISTINCT t FROM memories m CROSS JOIN unnest(m.tags) t \
             WHERE m.companion_id = $1 AND starts_with(t, $2) AND m.archived_at IS NULL \
               AND (m.expires_at IS NULL OR m.expires_at > now()) \
               AND ($4::text IS NULL OR m.user_id = (SELECT id FROM users WHERE external_id = $4)) \
             ORDER BY t LIMIT $3",
            &[&scope.companion_id, &prefix, &limit, &user],
        )
        .await
    }

    /// Ids of live contexts whose id or name starts with `prefix`, most recently used first.
    pub async fn complete_context_ids(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(
            "SELECT c.id::text FROM contexts c \
             WHERE c.companion_id = $1 AND c.deleted_at IS NULL \
               AND (starts_with(c.id::text, lower($2)) OR starts_with(lower(c.name), lower($2))) \
             ORDER BY c.updated_at DESC, c.id LIMIT $3",
            &[&scope.companion_id, &prefix, &limit],
        )
        .await
    }

    /// Ids of live memories starting with `prefix`, newest first.
    pub async fn complete_memory_ids(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.complete(
            "SELECT m.id::text FROM memories m \
             WHERE m.companion_id = $1 AND starts_with(m.id::text, lower($2)) \
               AND (m.expires_at IS NULL OR m.expires_at > now()) \
             ORDER BY m.created_at DESC, m.id LIMIT $3",
            &[&scope.companion_id, &prefix, &limit],
        )
        .await
    }

    /// Runs a completion query ($1 companion, $2 prefix, $3 limit, ...).
    async fn complete(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let rows = client.query(&stmt, params).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
