//! The one filter over memories that `list` and `search` share: which user,
//! kinds, tags, importance and time range, archived or not. Expired
//! memories never pass.
//!
//! The statement names only the clauses in use (one prepared statement per
//! combination), with the parameters always at $1..$9 (prepared with
//! [`FILTER_TYPES`], so unused ones may go unmentioned). A generic plan then
//! sees plain scope equality when no filter is set and keeps the HNSW
//! index: the `$n IS NULL OR ...` form makes the planner guess few rows
//! match and pick a full scan.

use chrono::{DateTime, Utc};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::sql::NOT_EXPIRED;
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

/// How many parameters the filter takes: a statement's own start at
/// `$FILTER_PARAMS + 1`.
pub(crate) const FILTER_PARAMS: usize = 9;

/// The types of the filter's parameters $1..$9: companion, user, kinds,
/// tags_any, tags_all, min_importance, since, until, include_archived.
pub(crate) const FILTER_TYPES: [Type; FILTER_PARAMS] = [
    Type::UUID,
    Type::UUID,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT2,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::BOOL,
];

/// The values of the filter's parameters $1..$9 for one statement.
pub(crate) struct FilterValues<'a> {
    filter: &'a ListFilter,
    companion: Uuid,
    user: Uuid,
    kinds: Option<Vec<&'static str>>,
}

impl FilterValues<'_> {
    /// $1..$9 followed by the statement's own parameters, `rest`.
    pub(crate) fn with<'b>(
        &'b self,
        rest: &[&'b (dyn ToSql + Sync)],
    ) -> Vec<&'b (dyn ToSql + Sync)> {
        let f = self.filter;
        let mut all: Vec<&(dyn ToSql + Sync)> = vec![
            &self.companion,
            &self.user,
            &self.kinds,
            &f.tags_any,
            &f.tags_all,
            &f.min_importance,
            &f.since,
            &f.until,
            &f.include_archived,
        ];
        all.extend_from_slice(rest);
        all
    }
}

impl ListFilter {
    /// The filter's parameter values for `user` in `scope`.
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

    /// The filter over `m`, with only the clauses this filter uses.
    pub(crate) fn sql(&self) -> String {
        let mut sql = String::from("m.companion_id = $1 AND m.user_id = $2");
        let clauses = [
            (self.kinds.is_some(), " AND m.kind::text = ANY($3)"),
            (self.tags_any.is_some(), " AND m.tags && $4"),
            (self.tags_all.is_some(), " AND m.tags @> $5"),
            (self.min_importance.is_some(), " AND m.importance >= $6"),
            (self.since.is_some(), " AND m.occurred_at >= $7"),
            (self.until.is_some(), " AND m.occurred_at < $8"),
            (!self.include_archived, " AND m.archived_at IS NULL"),
        ];
        for (used, clause) in clauses {
            if used {
                sql.push_str(clause);
            }
        }
        sql.push_str(" AND ");
        sql.push_str(NOT_EXPIRED);
        sql
    }
}
