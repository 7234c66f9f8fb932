//! Hybrid search: HNSW cosine candidates and full-text candidates, fused by
//! reciprocal rank fusion (RRF) in one SQL statement, then weighted by
//! importance and recency.
//!
//! score = RRF × (1 + 0.005·(importance − 5)/5) × (1 + 0.003·2^(−age_days/30))
//! where RRF = Σ 1/(60 + rank) over the lists a memory appears in and age is
//! measured on `occurred_at`. Neighbouring RRF ranks in the top 40 differ by
//! at least 1%, so importance (±0.5%) and recency (up to +0.3%) only break
//! ties between equally ranked memories: relevance always comes first. Ties
//! left after that break on id, so equal inputs give equal orderings.

use pgvector::Vector;
use serde::{Deserialize, Serialize};

use super::memories::FILTER_SQL;
use super::{ListFilter, MEMORY_COLUMNS, Memory, Scope, Store, StoreError};

/// Which candidate lists feed the ranking.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Vector and full-text candidates fused (the default).
    #[default]
    Hybrid,
    /// Vector similarity only.
    Semantic,
    /// Full-text (keyword) match only.
    Keyword,
}

/// A scored search hit.
#[derive(Debug, Clone)]
pub struct Hit {
    pub memory: Memory,
    pub score: f64,
}

/// Candidates taken from each list before fusion.
const CANDIDATES: i64 = 100;
/// The RRF constant k from Cormack et al.
const RRF_K: f64 = 60.0;

fn search_sql() -> String {
    format!(
        "WITH sem AS ( \
            SELECT id, row_number() OVER (ORDER BY dist, id) AS rank FROM ( \
                SELECT m.id, m.embedding <=> $10 AS dist FROM memories m \
                WHERE $12::bool AND m.embedding IS NOT NULL AND {FILTER_SQL} \
                ORDER BY m.embedding <=> $10 LIMIT $14) s \
         ), q AS ( \
            SELECT replace(plainto_tsquery('english', $11)::text, ' & ', ' | ')::tsquery AS query \
         ), kw AS ( \
            SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS rank FROM ( \
                SELECT m.id, ts_rank_cd(m.search_tsv, q.query, 1) AS rank FROM memories m, q \
                WHERE $13::bool AND m.search_tsv @@ q.query AND {FILTER_SQL} \
                ORDER BY 2 DESC LIMIT $14) k \
         ), fused AS ( \
            SELECT coalesce(sem.id, kw.id) AS id, \
                   coalesce(1.0 / ({RRF_K} + sem.rank), 0) + coalesce(1.0 / ({RRF_K} + kw.rank), 0) AS rrf \
            FROM sem FULL JOIN kw ON sem.id = kw.id \
         ) \
         SELECT {MEMORY_COLUMNS}, \
            (f.rrf * (1 + 0.005 * (m.importance - 5) / 5.0) \
                   * (1 + 0.003 * power(2, -greatest(extract(epoch FROM now() - m.occurred_at), 0) / 2592000.0)) \
            )::float8 AS score \
         FROM fused f JOIN memories m ON m.id = f.id JOIN users u ON u.id = m.user_id \
         ORDER BY score DESC, m.id LIMIT $15"
    )
}

impl Store {
    /// The best `limit` memories for `text` (and its embedding, needed
    /// unless `mode` is keyword) under `filter`.
    pub async fn search(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        text: &str,
        embedding: Option<Vec<f32>>,
        mode: SearchMode,
        limit: i64,
    ) -> Result<Vec<Hit>, StoreError> {
        let client = self.client().await?;
        let Some(user_id) = Store::find_user(&client, &filter.user).await? else {
            return Ok(Vec::new());
        };
        let use_vectors = mode != SearchMode::Keyword && embedding.is_some();
        let use_text = mode != SearchMode::Semantic;
        // A placeholder vector keeps the statement's parameter types fixed
        // when the semantic side is switched off.
        let dim = self.embedding_dim();
        let vector = Vector::from(embedding.unwrap_or_else(|| vec![0.0; dim]));
        let stmt = client.prepare_cached(&search_sql()).await?;
        let started = std::time::Instant::now();
        let rows = client
            .query(
                &stmt,
                &[
                    &scope.companion_id,
                    &user_id,
                    &filter.kind_names(),
                    &filter.tags_any,
                    &filter.tags_all,
                    &filter.min_importance,
                    &filter.since,
                    &filter.until,
                    &filter.include_archived,
                    &vector,
                    &text,
                    &use_vectors,
                    &use_text,
                    &CANDIDATES.max(limit),
                    &limit,
                ],
            )
            .await?;
        crate::db::note_duration("search_memories", started);
        Ok(rows
            .iter()
            .map(|row| Hit {
                memory: Memory::from_row(row),
                score: row.get(16),
            })
            .collect())
    }
}
