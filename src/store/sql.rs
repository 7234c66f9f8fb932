//! The SQL fragments several statements share: the memory columns every
//! memory query selects and the liveness rule (not archived, not expired).
//!
//! One style for statements across the store: a static statement is a named
//! `const`, built with `concat!` from these macros where it shares a
//! fragment; a generated one (the filters of `list` and `search`) comes from
//! [`super::filter::ListFilter::sql`] and the search builders, whose text is
//! the prepared-statement cache key. Rows are read by column name, so the
//! statements name (alias) every column they return.

/// A memory `m` not past its expiry: the rule every read applies, archived
/// or not.
macro_rules! not_expired {
    () => {
        "(m.expires_at IS NULL OR m.expires_at > now())"
    };
}

/// A memory `m` that searches, lists and profiles show: not archived and
/// not expired.
macro_rules! live {
    () => {
        concat!("m.archived_at IS NULL AND ", not_expired!())
    };
}

/// The columns [`super::Memory::from_row`] reads, of memory `m` joined to
/// its user `u`. Access statistics live in `memory_access` (migration 0005),
/// a row only for memories read at least once; select this over few rows (a
/// page, a result).
macro_rules! memory_columns {
    () => {
        "m.id, u.external_id AS user_id, m.content, m.kind, m.importance, m.confidence, \
         m.tags, m.metadata, m.occurred_at, m.expires_at, m.archived_at, \
         coalesce((SELECT a.access_count FROM memory_access a WHERE a.memory_id = m.id), 0) AS access_count, \
         (SELECT a.last_accessed_at FROM memory_access a WHERE a.memory_id = m.id) AS last_accessed_at, \
         m.created_at, m.updated_at, m.embedding IS NOT NULL AS embedded"
    };
}


/// The liveness rule of [`not_expired!`], for generated statements.
pub(crate) const NOT_EXPIRED: &str = not_expired!();
/// [`memory_columns!`] for generated statements.
pub(crate) const MEMORY_COLUMNS: &str = memory_columns!();
