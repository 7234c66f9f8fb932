//! The one filter over memories that `list` and `search` share: which user,
//! kinds, tags, importance and time range, archived or not. Expired
//! memories never pass.
//!
//! A statement names only the clauses in use (its [`Shape`]: one prepared
//! statement per combination), so a generic plan sees plain scope equality
//! when no filter is set and keeps the HNSW index: the `$n IS NULL OR ...`
//! form makes the planner guess few rows match and pick a full scan.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sql::{Builder, NOT_EXPIRED, Slot, Value};
use super::{Kind, Scope};

/// Filters shared by list and search.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub user: String,
    pub kinds: Option<Vec<Kind>>,
    pub tags_any: Option<Vec<String>>,
    pub tags_all: Option<Vec<String>>,
    pub min_importance: Option<i16>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub include_archived: bool,
}

/// Which of a filter's clauses are in use: what decides the text of its
/// statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    kinds: bool,
    tags_any: bool,
    tags_all: bool,
    min_importance: bool,
    since: bool,
    until: bool,
    include_archived: bool,
}

impl Shape {
    /// The filter over `m`, with only the clauses in use, its parameters
    /// numbered by `b`.
    pub(crate) fn sql(self, b: &mut Builder) -> String {
        let mut sql = format!(
            "m.companion_id = {} AND m.user_id = {}",
            b.param(Slot::Companion),
            b.param(Slot::User)
        );
        let clauses = [
            (self.kinds, "m.kind::text = ANY(", Slot::Kinds, ")"),
            (self.tags_any, "m.tags && ", Slot::TagsAny, ""),
            (self.tags_all, "m.tags @> ", Slot::TagsAll, ""),
            (
                self.min_importance,
                "m.importance >= ",
                Slot::MinImportance,
                "",
            ),
            (self.since, "m.occurred_at >= ", Slot::Since, ""),
            (self.until, "m.occurred_at < ", Slot::Until, ""),
        ];
        for (used, before, slot, after) in clauses {
            if used {
                sql.push_str(&format!(" AND {before}{}{after}", b.param(slot)));
            }
        }
        if !self.include_archived {
            sql.push_str(" AND m.archived_at IS NULL");
        }
        sql.push_str(" AND ");
        sql.push_str(NOT_EXPIRED);
        sql
    }
}

/// A filter's values for one call.
pub(crate) struct FilterValues<'a> {
    filter: &'a ListFilter,
    companion: Uuid,
    user: Uuid,
    kinds: Option<Vec<&'static str>>,
}

impl FilterValues<'_> {
    /// The value of a filter slot; `None` for the statement's own.
    pub(crate) fn get(&self, slot: Slot) -> Option<Value<'_>> {
        let f = self.filter;
        Some(match slot {
            Slot::Companion => &self.companion,
            Slot::User => &self.user,
            Slot::Kinds => &self.kinds,
            Slot::TagsAny => &f.tags_any,
            Slot::TagsAll => &f.tags_all,
            Slot::MinImportance => &f.min_importance,
            Slot::Since => &f.since,
            Slot::Until => &f.until,
            _ => return None,
        })
    }
}

impl ListFilter {
    /// Which clauses this filter uses.
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            kinds: self.kinds.is_some(),
            tags_any: self.tags_any.is_some(),
            tags_all: self.tags_all.is_some(),
            min_importance: self.min_importance.is_some(),
            since: self.since.is_some(),
            until: self.until.is_some(),
            include_archived: self.include_archived,
        }
    }

    /// The filter's values for `user` in `scope`.
    pub(crate) fn values(&self, scope: &Scope, user: Uuid) -> FilterValues<'_> {
        FilterValues {
            filter: self,
            companion: scope.companion_id,
            user,
            kinds: self
                .kinds
                .as_ref()
                .map(|k| k.iter().map(|k| k.as_str()).collect()),
        }
    }
}
