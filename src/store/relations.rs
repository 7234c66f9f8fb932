//! Typed, weighted links between memories of one companion, and their
//! traversal (both directions, up to three hops) in one recursive query.

use crate::db::statements::Statements;
use serde::Serialize;
use uuid::Uuid;

use super::{Memory, Relation, Scope, Store, StoreError, read_rows, retry_on_conflict};

/// The relation, if `$2 -$4-> $3` already exists with strength $5.
const SAME_SQL: &str = "SELECT id FROM memory_relations WHERE companion_id = $1 AND from_id = $2 \
     AND to_id = $3 AND relation = $4 AND strength = $5";

/// Relates $2 to $3 as $4 with strength $5 when both are memories of $1;
/// `created` tells a new relation from an updated one.
const RELATE_SQL: &str = "INSERT INTO memory_relations AS r (companion_id, from_id, to_id, relation, strength) \
     SELECT $1, f.id, t.id, $4, $5 FROM memories f, memories t \
     WHERE f.id = $2 AND t.id = $3 AND f.companion_id = $1 AND t.companion_id = $1 \
     ON CONFLICT (from_id, to_id, relation) DO UPDATE SET strength = EXCLUDED.strength \
     RETURNING r.id, r.xmax = 0 AS created";

/// The memories within $3 hops of $1 (companion $2) through relations of
/// the types $4 (NULL: all), nearest first, at most $5, each with its
/// depth and path.
const RELATED_SQL: &str = concat!(
    "WITH RECURSIVE walk(id, depth, visited, steps) AS ( \
        SELECT $1::uuid, 0, ARRAY[$1::uuid], ARRAY[]::uuid[] \
        UNION ALL \
        SELECT nxt.id, w.depth + 1, w.visited || nxt.id, w.steps || nxt.rel_id \
        FROM walk w CROSS JOIN LATERAL ( \
            SELECT r.to_id AS id, r.id AS rel_id FROM memory_relations r \
            WHERE r.from_id = w.id AND r.companion_id = $2 \
              AND ($4::text[] IS NULL OR r.relation::text = ANY($4)) \
            UNION ALL \
            SELECT r.from_id, r.id FROM memory_relations r \
            WHERE r.to_id = w.id AND r.companion_id = $2 \
              AND ($4::text[] IS NULL OR r.relation::text = ANY($4)) \
        ) nxt \
        WHERE w.depth < $3 AND NOT nxt.id = ANY(w.visited) \
     ), nearest AS ( \
        SELECT DISTINCT ON (id) id, depth, steps FROM walk WHERE depth > 0 \
        ORDER BY id, depth, steps \
     ) \
     SELECT ",
    memory_columns!(),
    ", n.depth, \
        (SELECT coalesce(jsonb_agg(jsonb_build_object('from_id', r.from_id, 'relation', r.relation, \
                'to_id', r.to_id, 'strength', r.strength) ORDER BY s.ord), '[]'::jsonb) \
         FROM unnest(n.steps) WITH ORDINALITY AS s(rel_id, ord) JOIN memory_relations r ON r.id = s.rel_id) AS path \
     FROM nearest n JOIN memories m ON m.id = n.id JOIN users u ON u.id = m.user_id \
     WHERE m.companion_id = $2 AND ",
    not_expired!(),
    " ORDER BY n.depth, m.id LIMIT $5"
);

/// Which of the ids $1 are memories of companion $2, not expired.
const FOUND_SQL: &str = concat!(
    "SELECT m.id FROM memories m WHERE m.id = ANY($1) AND m.companion_id = $2 AND ",
    not_expired!()
);

/// One hop of a traversal path.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Step {
    pub from_id: Uuid,
    pub relation: Relation,
    pub to_id: Uuid,
    pub strength: f32,
}

/// A memory reached from the start, with how it was reached.
#[derive(Debug, Clone)]
pub struct Reached {
    pub memory: Memory,
    pub depth: i32,
    /// The hops from the start memory to this one, in order. A hop may run
    /// against a relation's direction; `from_id`/`to_id` always show the
    /// relation as stored.
    pub path: Vec<Step>,
}

/// The outcome of relating two memories.
#[derive(Debug, Clone, Copy)]
pub struct Related {
    pub id: Uuid,
    pub created: bool,
}

impl Store {
    /// Links `from` to `to`; relating an already related pair with the same
    /// relation updates its strength.
    pub async fn relate(
        &self,
        scope: &Scope,
        from: Uuid,
        to: Uuid,
        relation: Relation,
        strength: f32,
    ) -> Result<Related, StoreError> {
        retry_on_conflict(|| async move {
            let client = self.client().await?;
            // Relating again with the same strength changes nothing, not even
            // updated_at (the update trigger would touch it): re-imports and
            // retried calls stay idempotent.
            if let Some(row) = client
                .opt(
                    SAME_SQL,
                    &[&scope.companion_id, &from, &to, &relation, &strength],
                )
                .await?
            {
                return Ok(Related {
                    id: row.try_get("id")?,
                    created: false,
                });
            }
            let row = match client
                .opt(
                    RELATE_SQL,
                    &[&scope.companion_id, &from, &to, &relation, &strength],
                )
                .await
            {
                Ok(row) => row,
                // One of the two was deleted between our read and the foreign-key check.
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
                {
                    None
                }
                Err(e) => return Err(e.into()),
            };
            match row {
                Some(row) => Ok(Related {
                    id: row.try_get("id")?,
                    created: row.try_get("created")?,
                }),
                None => {
                    let missing = self.first_missing(scope, &[from, to]).await?;
                    Err(StoreError::NotFound(missing.unwrap_or(from)))
                }
            }
        })
        .await
    }

    /// Memories linked to `start` within `depth` hops, nearest first; with
    /// `relations`, only through those relation types.
    pub async fn related(
        &self,
        scope: &Scope,
        start: Uuid,
        depth: i32,
        relations: Option<Vec<Relation>>,
        limit: i64,
    ) -> Result<Vec<Reached>, StoreError> {
        if let Some(missing) = self.first_missing(scope, &[start]).await? {
            return Err(StoreError::NotFound(missing));
        }
        let client = self.client().await?;
        let names: Option<Vec<&str>> = relations
            .as_ref()
            .map(|r| r.iter().map(|r| r.as_str()).collect());
        let rows = client
            .rows(
                RELATED_SQL,
                &[&start, &scope.companion_id, &depth, &names, &limit],
            )
            .await?;
        read_rows(&rows, |row| {
            let path: serde_json::Value = row.try_get("path")?;
            let path: Vec<StepRow> = serde_json::from_value(path)
                .map_err(|e| StoreError::Constraint(format!("bad traversal path: {e}")))?;
            Ok(Reached {
                memory: Memory::from_row(row)?,
                depth: row.try_get("depth")?,
                path: path.into_iter().map(StepRow::into_step).collect(),
            })
        })
    }

    /// The first of `ids` that is not a live memory of this companion.
    async fn first_missing(&self, scope: &Scope, ids: &[Uuid]) -> Result<Option<Uuid>, StoreError> {
        let client = self.client().await?;
        let rows = client.rows(FOUND_SQL, &[&ids, &scope.companion_id]).await?;
        let found: Vec<Uuid> = read_rows(&rows, |r| Ok(r.try_get("id")?))?;
        Ok(ids.iter().find(|id| !found.contains(id)).copied())
    }
}

#[derive(serde::Deserialize)]
struct StepRow {
    from_id: Uuid,
    relation: Relation,
    to_id: Uuid,
    strength: f32,
}

impl StepRow {
    fn into_step(self) -> Step {
        Step {
            from_id: self.from_id,
            relation: self.relation,
            to_id: self.to_id,
            strength: self.strength,
        }
    }
}
