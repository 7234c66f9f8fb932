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

/// Declares an enum that crosses every boundary under one spelling: each
/// variant's lowercase name is its label in the database enum `$pg`, its
/// JSON value and its `as_str`.
macro_rules! labels {
    ($(#[$meta:meta])* pub enum $name:ident as $pg:tt {
        $($(#[$vmeta:meta])* $variant:ident,)*
    }) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            serde::Serialize,
            serde::Deserialize,
            schemars::JsonSchema,
            postgres_types::ToSql,
            postgres_types::FromSql,
            strum::IntoStaticStr,
            strum::VariantArray,
        )]
        #[serde(rename_all = "lowercase")]
        #[strum(serialize_all = "lowercase")]
        #[postgres(name = $pg, rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    };
}

/// The liveness rule of [`not_expired!`], for generated statements.
pub(crate) const NOT_EXPIRED: &str = not_expired!();
/// [`memory_columns!`] for generated statements.
pub(crate) const MEMORY_COLUMNS: &str = memory_columns!();

/// What a parameter of a generated statement stands for. A statement
/// numbers its parameters itself ([`Builder::param`]) and takes its values
/// by slot ([`Statement::values`]), so no placeholder is written by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    // The memory filter's (see `filter`).
    Companion,
    User,
    Kinds,
    TagsAny,
    TagsAll,
    MinImportance,
    Since,
    Until,
    // A list page's.
    CursorAt,
    CursorId,
    Limit,
    // A search's.
    Text,
    ScopeSize,
    Lexemes,
    Dfs,
    Vector,
    UseVector,
    UseText,
    WindowStarts,
    WindowEnds,
    KeywordIds,
    VectorIds,
    // A message search's.
    Context,
    Roles,
}

/// A placeholder, `$n`, as [`Builder::param`] numbered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Param(usize);

impl std::fmt::Display for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// Numbers the parameters of a statement being generated.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    slots: Vec<Slot>,
}

impl Builder {
    /// The placeholder for `slot`: the next number on first use, the same
    /// one after.
    pub(crate) fn param(&mut self, slot: Slot) -> Param {
        match self.slots.iter().position(|s| *s == slot) {
            Some(i) => Param(i + 1),
            None => {
                self.slots.push(slot);
                Param(self.slots.len())
            }
        }
    }

    pub(crate) fn finish(self, sql: String) -> Statement {
        Statement {
            sql,
            slots: self.slots,
        }
    }
}

/// A generated statement: its text (the prepared-statement cache key) and
/// which value each of its parameters takes.
#[derive(Debug)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    slots: Vec<Slot>,
}

/// A parameter value.
pub(crate) type Value<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

impl Statement {
    /// What each parameter stands for, `$1` first.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The values of a call in parameter order, `value` giving each slot's.
    pub(crate) fn values<'a>(
        &self,
        value: impl Fn(Slot) -> Option<Value<'a>>,
    ) -> Result<Vec<Value<'a>>, super::StoreError> {
        self.slots
            .iter()
            .map(|&slot| {
                value(slot).ok_or_else(|| {
                    super::StoreError::Constraint(format!(
                        "internal error: no value for the statement's {slot:?} parameter"
                    ))
                })
            })
            .collect()
    }
}

/// Generated statements by what decides their text (the filters in use,
/// the embedding dimension), each built once.
pub(crate) struct Cache<K>(
    std::sync::Mutex<std::collections::HashMap<K, std::sync::Arc<Statement>>>,
);

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Cache(Default::default())
    }
}

impl<K: std::hash::Hash + Eq> Cache<K> {
    /// The statement for `key`, built by `build` the first time.
    pub(crate) fn get(
        &self,
        key: K,
        build: impl FnOnce() -> Statement,
    ) -> std::sync::Arc<Statement> {
        // A plain map stays usable even if a holder panicked.
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| std::sync::Arc::new(build()))
            .clone()
    }
}
