//! Hybrid search: HNSW cosine candidates, full-text candidates and (when the
//! query names a time) the memories that happened then, fused by reciprocal
//! rank fusion (RRF) in one SQL statement, spread to neighbouring memories,
//! then weighted by importance and recency.
//!
//! score = (RRF + neighbour·RRF_neighbour) × importance factor × recency factor,
//! where RRF = Σ weight/(k + rank) over the lists a memory appears in
//! (the time list ranks the memories inside the query's time windows by
//! meaning; k, the weights and the neighbour share are a store's
//! [`Tuning`]), RRF_neighbour is the best RRF of the memories stored up to
//! two before or after it when both are experiences of the same user close
//! in time (the neighbouring turns of a conversation; 0 for other kinds), and
//! the factors (in [`search_sql`]) are a fraction of a percent: importance
//! scales linearly around 5, recency decays with a half-life of a month on
//! `occurred_at`. Neighbouring RRF ranks in the top 40 differ by at least
//! 1%, more than both factors together, so they only break ties between
//! equally ranked memories: relevance always comes first. Ties left after
//! that break on id, so equal inputs give equal orderings.

use crate::db::statements::Statements;
use pgvector::Vector;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::sync::LazyLock;

use super::filter::Shape;
use super::sql::{Builder, Cache, MEMORY_COLUMNS, Param, Slot, Statement};
use super::terms::DF_CAP;
use super::tuning::Tuning;
use super::{ListFilter, Memory, Plan, Scope, Store, StoreError, query_planned};
use crate::timeframe::TimeWindow;

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

/// Candidates taken from each list before fusion (and the largest limit),
/// for memories and messages alike: a literal in the statement so the
/// planner knows it (a `LIMIT $n` is planned as 10% of the table, which
/// rules out the HNSW index).
pub(crate) const CANDIDATES: i64 = 100;
/// Time windows holding more memories than this are not ranked as a list.
const WINDOW_CAP: i64 = 2000;

/// A condition that is always true, or a `bool` parameter's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Switch {
    Always,
    Param(Param),
}

impl std::fmt::Display for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Switch::Always => f.write_str("true"),
            Switch::Param(p) => p.fmt(f),
        }
    }
}

/// Where the keyword side finds its inputs: parameters.
pub(crate) struct KeywordParams {
    pub text: Param,
    pub use_text: Switch,
    /// The term statistics (`int8` N, `text[]` lexemes, `int8[]` their
    /// document frequencies) when the caller has them (see `terms`);
    /// otherwise they are counted in the statement.
    pub terms: Option<(Param, Param, Param)>,
    /// Match by reading the scope's rows instead of the full-text index:
    /// for a scope of at most [`SMALL_SCOPE`] rows (see there).
    pub scan_scope: bool,
}

/// Scopes of at most this many memories are matched row by row, not
/// through the full-text index. The GIN index holds every scope's rows: a
/// lexeme common across the table (a name in many conversations) makes its
/// bitmap cost the same however small the scope. Across 1,000 scopes of
/// 100 turns the keyword statement took 7-9 ms through the index and 2.3-2.8
/// ms reading the scope; in one scope of 1,000 it was the other way round
/// (2.5-4 against 9-10 ms): reading costs ~9 µs a row (docs/BENCHMARKS.md).
pub(crate) const SMALL_SCOPE: i64 = 250;

/// Where the fusion takes its full-text list from.
pub(crate) enum KeywordList {
    /// Ranked in the same statement.
    Inline(KeywordParams),
    /// Ranked earlier (see [`keyword_ctes`]): the ids (`uuid[]`), best
    /// first.
    Ranked(Param),
}

/// Where the fusion takes its vector list from.
pub(crate) enum SemanticList {
    /// The HNSW index, in the same statement.
    Inline,
    /// Ranked earlier (see [`nearest`]): the ids (`uuid[]`), best first.
    Ranked(Param),
}

/// Where a hybrid search finds its inputs: parameters.
pub(crate) struct FusionParams {
    /// The query vector: the inline vector list and the time list rank by it.
    pub vector: Param,
    /// The embeddings' dimension (the index holds `halfvec(dim)`).
    pub dim: usize,
    pub use_vector: Switch,
    pub semantic: SemanticList,
    pub keyword: KeywordList,
    /// The starts and ends (`timestamptz[]`) of the time windows the query
    /// names, when the table has `occurred_at`.
    pub windows: Option<(Param, Param)>,
    pub tuning: Tuning,
}

/// At most this many keyword matches are ranked.
const MATCH_CAP: i64 = 5_000;

/// The CTEs of the full-text side of a search over `table` (aliased `m`,
/// with a `search_tsv` column), ending in `kw(id, rank)`: the best
/// full-text candidates under `filter`.
///
/// It matches any of the query's lexemes and ranks BM25-style: the sum over
/// matched lexemes of idf × `ts_rank` (term frequency, no length
/// normalisation), with idf = ln(1 + (N − df + 0.5)/(df + 0.5)) counted over
/// the searched scope, so a name in half the memories weighs less than a rare
/// word. On LoCoMo this beat plain `ts_rank` (R@5 0.611 → 0.640) and cover
/// density (`ts_rank_cd`).
///
/// Its cost is bounded in large scopes: document frequencies are counted up
/// to [`DF_CAP`], rows are pulled in by the lexemes rarer than that (or by
/// all of the query's lexemes together), and at most [`MATCH_CAP`] of them
/// are ranked. A scope where no lexeme reaches the cap ranks exactly as
/// above; at 100k memories this took the keyword side from ~300 ms to a few
/// ms (docs/BENCHMARKS.md). The idf is float arithmetic computed once per
/// lexeme: as `numeric`, per matched row, it was half the statement.
pub(crate) fn keyword_ctes(table: &str, filter: &str, p: &KeywordParams) -> String {
    let KeywordParams {
        text,
        use_text,
        terms,
        scan_scope,
    } = p;
    let candidates = CANDIDATES;
    let (total, df) = match terms {
        Some((n, lexemes, dfs)) => (
            format!("SELECT greatest({n}::int8, 1) AS n"),
            format!(
                "SELECT to_tsquery('simple', quote_literal(l)) AS lq, d AS df \
                 FROM unnest({lexemes}::text[], {dfs}::int8[]) t(l, d)"
            ),
        ),
        None => (
            format!(
                "SELECT greatest(count(*), 1) AS n FROM {table} m WHERE {use_text}::bool AND {filter}"
            ),
            format!(
                "SELECT lex.lq, c.n AS df FROM ( \
                    SELECT DISTINCT to_tsquery('simple', quote_literal(l)) AS lq \
                    FROM unnest(tsvector_to_array(to_tsvector('english', {text}))) l) lex \
                 CROSS JOIN LATERAL ( \
                    SELECT count(*) AS n FROM ( \
                        SELECT 1 FROM {table} m \
                        WHERE {use_text}::bool AND m.search_tsv @@ lex.lq AND {filter} LIMIT {DF_CAP}) x \
                 ) c"
            ),
        ),
    };
    // OFFSET 0 keeps the planner from pushing the match into the scan.
    let matched = if *scan_scope {
        format!(
            "SELECT m.id, m.search_tsv FROM ( \
                SELECT m.id, m.search_tsv FROM {table} m WHERE {use_text}::bool AND {filter} OFFSET 0) m, q \
             WHERE m.search_tsv @@ q.query LIMIT {MATCH_CAP}"
        )
    } else {
        format!(
            "SELECT m.id, m.search_tsv FROM {table} m, q \
             WHERE {use_text}::bool AND m.search_tsv @@ q.query AND {filter} LIMIT {MATCH_CAP}"
        )
    };
    format!(
        "df AS MATERIALIZED ( \
            {df} \
         ), q AS ( \
            SELECT coalesce((SELECT string_agg(lq::text, ' | ') FROM df WHERE df < {DF_CAP})::tsquery \
                                || plainto_tsquery('english', {text}), \
                            plainto_tsquery('english', {text})) AS query \
         ), matched AS ( \
            {matched} \
         ), total AS ( \
            {total} \
         ), idf AS MATERIALIZED ( \
            SELECT df.lq, ln(1 + (greatest(total.n, df.df) - df.df + 0.5)::float8 / (df.df + 0.5)::float8) AS idf \
            FROM df CROSS JOIN total \
         ), kw AS ( \
            SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS rank FROM ( \
                SELECT mt.id, sum(idf.idf * ts_rank(mt.search_tsv, idf.lq)) AS rank \
                FROM matched mt JOIN idf ON mt.search_tsv @@ idf.lq \
                GROUP BY mt.id ORDER BY 2 DESC LIMIT {candidates}) k \
         )"
    )
}

/// The `candidates` rows of `table` (aliased `m`) under `filter` nearest to
/// `vector`, as `(id, dist)`: an HNSW index scan in a large scope.
fn nearest(table: &str, filter: &str, vector: Param, dim: usize, use_vector: Switch) -> String {
    let candidates = CANDIDATES;
    let distance = crate::db::halfvec_distance("m.embedding", &vector.to_string(), dim);
    format!(
        "SELECT m.id, {distance} AS dist FROM {table} m \
         WHERE {use_vector}::bool AND m.embedding IS NOT NULL AND {filter} \
         ORDER BY {distance} LIMIT {candidates}"
    )
}

/// The CTEs of a hybrid search over `table` (aliased `m`, with `embedding`
/// and `search_tsv` columns), ending in `fused(id, rrf)`: the best vector
/// candidates under `filter`, the full-text list (see [`keyword_ctes`]) and,
/// for memories, the time list, fused by weighted RRF. Memories and messages
/// rank the same way.
pub(crate) fn fusion_ctes(table: &str, filter: &str, p: &FusionParams) -> String {
    let FusionParams {
        vector,
        dim,
        use_vector,
        semantic,
        keyword,
        windows,
        tuning,
    } = p;
    let Tuning {
        rrf_k,
        w_semantic,
        w_keyword,
        w_time,
        ..
    } = tuning;
    let candidates = CANDIDATES;
    let sem = match semantic {
        SemanticList::Inline => format!(
            "SELECT id, row_number() OVER (ORDER BY dist, id) AS rank FROM ({}) s",
            nearest(table, filter, *vector, *dim, *use_vector)
        ),
        SemanticList::Ranked(ids) => {
            format!("SELECT id, rank FROM unnest({ids}::uuid[]) WITH ORDINALITY s(id, rank)")
        }
    };
    let kw = match keyword {
        KeywordList::Inline(k) => keyword_ctes(table, filter, k),
        KeywordList::Ranked(ids) => {
            format!(
                "kw AS (SELECT id, rank FROM unnest({ids}::uuid[]) WITH ORDINALITY k(id, rank))"
            )
        }
    };
    let distance = crate::db::halfvec_distance("m.embedding", &vector.to_string(), *dim);
    // Memories that happened in a window the query names, ranked by meaning:
    // a third list. Skipped when the windows hold more than WINDOW_CAP
    // memories: a window that wide says little, and ranking it costs a scan.
    let (time_list, time_join, time_rrf) = match windows {
        Some((starts, ends)) => (
            format!(
                ", inwin AS ( \
                    SELECT DISTINCT x.id FROM unnest({starts}::timestamptz[], {ends}::timestamptz[]) w(lo, hi) \
                    CROSS JOIN LATERAL ( \
                        SELECT m.id FROM {table} m \
                        WHERE m.occurred_at >= w.lo AND m.occurred_at < w.hi \
                          AND {use_vector}::bool AND m.embedding IS NOT NULL AND {filter} \
                        LIMIT {WINDOW_CAP} + 1) x \
                    LIMIT {WINDOW_CAP} + 1 \
                 ), tw AS ( \
                    SELECT i.id, row_number() OVER (ORDER BY {distance}, i.id) AS rank \
                    FROM inwin i JOIN {table} m ON m.id = i.id \
                    WHERE (SELECT count(*) FROM inwin) <= {WINDOW_CAP} \
                    ORDER BY {distance}, i.id LIMIT {candidates} \
                 )"
            ),
            " FULL JOIN tw ON tw.id = coalesce(sem.id, kw.id)",
            format!(" + coalesce({w_time:?} / ({rrf_k:?} + tw.rank), 0)"),
        ),
        None => (String::new(), "", String::new()),
    };
    let id = if windows.is_some() {
        "coalesce(sem.id, kw.id, tw.id)"
    } else {
        "coalesce(sem.id, kw.id)"
    };
    format!(
        "sem AS ({sem}), {kw}{time_list}, fused AS ( \
            SELECT {id} AS id, \
                   coalesce({w_semantic:?} / ({rrf_k:?} + sem.rank), 0) \
                 + coalesce({w_keyword:?} / ({rrf_k:?} + kw.rank), 0){time_rrf} AS rrf \
            FROM sem FULL JOIN kw ON sem.id = kw.id{time_join} \
         )"
    )
}

/// The keyword statement of a memory search: the full-text candidates' ids,
/// best first, for the query text and its term statistics. It needs no
/// embedding, so it runs while the query is embedded.
pub(super) fn keyword_sql(shape: Shape, scan_scope: bool) -> Statement {
    let mut b = Builder::default();
    let filter = shape.sql(&mut b);
    let params = KeywordParams {
        text: b.param(Slot::Text),
        use_text: Switch::Always,
        terms: Some((
            b.param(Slot::ScopeSize),
            b.param(Slot::Lexemes),
            b.param(Slot::Dfs),
        )),
        scan_scope,
    };
    let ctes = keyword_ctes("memories", &filter, &params);
    b.finish(format!(
        "WITH {ctes} SELECT coalesce(array_agg(id ORDER BY rank), '{{}}') AS ids FROM kw"
    ))
}

/// The vector statement of a memory search: the ids of the memories nearest
/// to the query vector, best first (ties on id). Its plan depends on the
/// scope's size (the HNSW index for a large scope, an exact scan of a small
/// one), so it is planned per call; it is simple enough that planning
/// costs ~0.1 ms.
pub(super) fn semantic_sql(shape: Shape, dim: usize) -> Statement {
    let mut b = Builder::default();
    let filter = shape.sql(&mut b);
    let vector = b.param(Slot::Vector);
    b.finish(format!(
        "SELECT coalesce(array_agg(id ORDER BY dist, id), '{{}}') AS ids FROM ({}) s",
        nearest("memories", &filter, vector, dim, Switch::Always)
    ))
}

/// The fusion statement for filters of `shape` (the text is the
/// prepared-statement cache key: one statement per combination of filters
/// in use). It takes the query vector, whether to use it, the limit, the
/// time windows' starts and ends, and the keyword and vector candidates'
/// ids, best first. Its plan does not depend on the values (the lists come
/// in as ids; the rest are index lookups by id or within a time window), so
/// one generic plan serves every call: planning it per call cost 1.3-3 ms.
///
/// The score is float arithmetic: as `numeric` (what `extract` and decimal
/// literals give), `power` over 250 candidates took a third of the statement.
/// Ages beyond 1,000 half-lives are taken as 1,000: 2^-1000 is already
/// nothing, and a float8 `power` errors on underflow. Only the final page
/// is read in full (content, access statistics).
pub(super) fn search_sql(shape: Shape, dim: usize, tuning: &Tuning) -> Statement {
    let mut b = Builder::default();
    let filter = shape.sql(&mut b);
    let vector = b.param(Slot::Vector);
    let use_vector = Switch::Param(b.param(Slot::UseVector));
    let limit = b.param(Slot::Limit);
    let windows = Some((b.param(Slot::WindowStarts), b.param(Slot::WindowEnds)));
    let keyword = KeywordList::Ranked(b.param(Slot::KeywordIds));
    let semantic = SemanticList::Ranked(b.param(Slot::VectorIds));
    let fusion = fusion_ctes(
        "memories",
        &filter,
        &FusionParams {
            vector,
            dim,
            use_vector,
            semantic,
            keyword,
            windows,
            tuning: *tuning,
        },
    );
    let Tuning {
        neighbour,
        neighbour_pool: pool,
        neighbour_reach: reach,
        neighbour_falloff: falloff,
        ..
    } = *tuning;
    // The share a neighbour d steps away receives: `neighbour` for the
    // adjacent ones, times `falloff` for each step beyond.
    let (step, share) = if reach == 1 {
        (String::new(), format!("{neighbour:?}::float8"))
    } else {
        (
            ", row_number() OVER (ORDER BY p.seq DESC) AS d".to_string(),
            format!("{neighbour:?}::float8 * power({falloff:?}::float8, (n.d - 1)::float8)"),
        )
    };
    let step_next = step.replace("DESC", "");
    b.finish(format!(
        "WITH {fusion}, top AS ( \
            SELECT id, rrf FROM fused ORDER BY rrf DESC, id LIMIT {pool} \
         ), spread AS ( \
            SELECT n.id, t.rrf * {share} AS near FROM top t JOIN memories c ON c.id = t.id \
            CROSS JOIN LATERAL ( \
                (SELECT p.id, p.occurred_at, p.kind{step} FROM memories p \
                 WHERE p.companion_id = c.companion_id AND p.user_id = c.user_id AND p.seq < c.seq \
                 ORDER BY p.seq DESC LIMIT {reach}) \
                UNION ALL \
                (SELECT p.id, p.occurred_at, p.kind{step_next} FROM memories p \
                 WHERE p.companion_id = c.companion_id AND p.user_id = c.user_id AND p.seq > c.seq \
                 ORDER BY p.seq LIMIT {reach}) \
            ) n \
            WHERE c.kind = 'experience' AND n.kind = 'experience' \
              AND n.occurred_at BETWEEN c.occurred_at - interval '6 hours' AND c.occurred_at + interval '6 hours' \
         ), scored AS ( \
            SELECT id, max(own) AS own, max(near) AS near FROM ( \
                SELECT id, rrf AS own, 0::float8 AS near FROM fused \
                UNION ALL SELECT id, 0::float8, near FROM spread \
            ) x GROUP BY id \
         ), ranked AS ( \
            SELECT m.id, \
               (s.own + s.near) * (1 + 0.001::float8 * (m.importance - 5)) \
                   * (1 + 0.003::float8 * power(2::float8, \
                       -least(greatest(date_part('epoch', now() - m.occurred_at), 0) / 2592000, 1000))) AS score \
            FROM scored s JOIN memories m ON m.id = s.id \
            WHERE {filter} \
            ORDER BY score DESC, m.id LIMIT {limit} \
         ) \
         SELECT {MEMORY_COLUMNS}, r.score \
         FROM ranked r JOIN memories m ON m.id = r.id JOIN users u ON u.id = m.user_id \
         ORDER BY r.score DESC, m.id"
    ))
}

/// The search statements, built once per combination of filters (and
/// embedding dimension).
static KEYWORD: LazyLock<Cache<(Shape, bool)>> = LazyLock::new(Cache::default);
static SEMANTIC: LazyLock<Cache<(Shape, usize)>> = LazyLock::new(Cache::default);
static FUSION: LazyLock<Cache<(Shape, usize, [u64; 8])>> = LazyLock::new(Cache::default);

/// What to search for.
#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub mode: SearchMode,
    /// Times the text talks about: memories that happened then rank higher.
    pub windows: Vec<TimeWindow>,
    pub limit: i64,
}

impl Query {
    /// A query for `text`, reading the times it names relative to now.
    /// Keyword searches ignore time (the time list is ranked by meaning).
    pub fn new(text: String, mode: SearchMode, limit: i64) -> Self {
        let windows = match mode {
            SearchMode::Keyword => Vec::new(),
            _ => crate::timeframe::windows(&text, chrono::Utc::now()),
        };
        Query {
            text,
            mode,
            windows,
            limit,
        }
    }

    /// Whether the query's embedding is needed.
    pub fn wants_embedding(&self) -> bool {
        self.mode != SearchMode::Keyword
    }
}

/// The half of a search that needs no embedding: whose memories, and the
/// full-text candidates. See [`Store::search_keywords`].
#[derive(Debug, Default)]
pub struct KeywordHits {
    /// `None` when the user has no memories here at all.
    user_id: Option<Uuid>,
    /// Best first.
    ids: Vec<Uuid>,
}

impl Store {
    /// The user and the full-text candidates of `query` (none in semantic
    /// mode). It needs no embedding, so callers run it while the query is
    /// embedded and pass the result to [`Store::search`]: on two cores the
    /// keyword statement then costs almost nothing (docs/BENCHMARKS.md).
    pub async fn search_keywords(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        query: &Query,
    ) -> Result<KeywordHits, StoreError> {
        let client = self.client().await?;
        let Some(user_id) = Store::find_user(&client, &filter.user).await? else {
            return Ok(KeywordHits::default());
        };
        if query.mode == SearchMode::Semantic {
            return Ok(KeywordHits {
                user_id: Some(user_id),
                ids: Vec::new(),
            });
        }
        let rows = super::timed(
            "search_keywords",
            self.keyword_rows(&client, scope, filter, user_id, &query.text, ""),
        )
        .await?;
        // One row always (an aggregate); none would mean no candidates.
        let ids = match rows.first() {
            Some(row) => row.try_get("ids")?,
            None => Vec::new(),
        };
        Ok(KeywordHits {
            user_id: Some(user_id),
            ids,
        })
    }

    /// The keyword statement for `text` in `user_id`'s scope under `filter`
    /// (term statistics first), run with `prefix` (e.g. `EXPLAIN`) before it.
    async fn keyword_rows(
        &self,
        client: &deadpool_postgres::Client,
        scope: &Scope,
        filter: &ListFilter,
        user_id: Uuid,
        text: &String,
        prefix: &str,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let terms = self
            .term_stats(client, scope.companion_id, user_id, text)
            .await?;
        let shape = filter.shape();
        let small = terms.scope_size <= SMALL_SCOPE;
        let keyword = KEYWORD.get((shape, small), || keyword_sql(shape, small));
        let values = filter.values(scope, user_id);
        let params = keyword.values(|slot| match slot {
            Slot::Text => Some(text),
            Slot::ScopeSize => Some(&terms.scope_size),
            Slot::Lexemes => Some(&terms.lexemes),
            Slot::Dfs => Some(&terms.dfs),
            filter => values.get(filter),
        })?;
        let sql = format!("{prefix} {}", keyword.sql);
        Ok(client.rows(sql.trim_start(), &params).await?)
    }

    /// The plan PostgreSQL chooses for the keyword statement of a search of
    /// `text` under `filter`, with that search's term statistics: what
    /// `tests/store.rs` checks reads a small scope's own rows.
    #[doc(hidden)]
    pub async fn explain_keyword_search(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        text: &str,
    ) -> Result<String, StoreError> {
        let client = self.client().await?;
        let Some(user_id) = Store::find_user(&client, &filter.user).await? else {
            return Ok(String::new());
        };
        let text = text.to_string();
        let rows = self
            .keyword_rows(&client, scope, filter, user_id, &text, "EXPLAIN")
            .await?;
        let lines = super::read_rows(&rows, |r| Ok(r.try_get::<_, String>("QUERY PLAN")?))?;
        Ok(lines.join("\n"))
    }

    /// The best `query.limit` memories for `query` under `filter`, given
    /// its embedding (`None` in keyword mode, or when the model is down) and
    /// its keyword side from [`Store::search_keywords`].
    pub async fn search(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        query: &Query,
        embedding: Option<Vec<f32>>,
        keywords: KeywordHits,
    ) -> Result<Vec<Hit>, StoreError> {
        let Some(user_id) = keywords.user_id else {
            return Ok(Vec::new());
        };
        let starts: Vec<_> = query.windows.iter().map(|w| w.start).collect();
        let ends: Vec<_> = query.windows.iter().map(|w| w.end).collect();
        let use_vectors = query.mode != SearchMode::Keyword && embedding.is_some();
        // A placeholder vector keeps the statement's parameter types fixed
        // when the semantic side is switched off.
        let dim = self.embedding_dim();
        let vector = Vector::from(embedding.unwrap_or_else(|| vec![0.0; dim]));
        let shape = filter.shape();
        let values = filter.values(scope, user_id);
        let limit = query.limit.min(CANDIDATES);
        let tuning = self.tuning();
        let mut client = self.client().await?;
        // Two statements, each planned as it needs (`query_planned`), in one
        // read-only transaction (one snapshot for both) that ends with a
        // ROLLBACK queued when it is dropped: up to two round trips more than
        // a single statement (BEGIN, and the second statement), against
        // 1.3-3 ms of planning.
        let rows = super::timed("search_memories", async {
            let tx = client
                .build_transaction()
                .read_only(true)
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .start()
                .await?;
            let semantic: Vec<Uuid> = if use_vectors {
                let nearest = SEMANTIC.get((shape, dim), || semantic_sql(shape, dim));
                let params = nearest.values(|slot| match slot {
                    Slot::Vector => Some(&vector),
                    filter => values.get(filter),
                })?;
                let rows = query_planned(&tx, Plan::PerCall, &nearest.sql, &params).await?;
                match rows.first() {
                    Some(row) => row.try_get("ids")?,
                    None => Vec::new(),
                }
            } else {
                Vec::new()
            };
            let fusion = FUSION.get((shape, dim, tuning.key()), || {
                search_sql(shape, dim, &tuning)
            });
            let params = fusion.values(|slot| match slot {
                Slot::Vector => Some(&vector),
                Slot::UseVector => Some(&use_vectors),
                Slot::Limit => Some(&limit),
                Slot::WindowStarts => Some(&starts),
                Slot::WindowEnds => Some(&ends),
                Slot::KeywordIds => Some(&keywords.ids),
                Slot::VectorIds => Some(&semantic),
                filter => values.get(filter),
            })?;
            query_planned(&tx, Plan::Cached, &fusion.sql, &params).await
        })
        .await?;
        super::read_rows(&rows, |row| {
            Ok(Hit {
                memory: Memory::from_row(row)?,
                score: row.try_get("score")?,
            })
        })
    }

    /// The plan PostgreSQL chooses for the vector statement of a search of
    /// `embedding` under `filter`, planned per call as [`Store::search`]
    /// plans it: what `tests/store.rs` checks keeps the HNSW index.
    #[doc(hidden)]
    pub async fn explain_vector_search(
        &self,
        scope: &Scope,
        filter: &ListFilter,
        embedding: Vec<f32>,
    ) -> Result<String, StoreError> {
        let mut client = self.client().await?;
        let Some(user_id) = Store::find_user(&client, &filter.user).await? else {
            return Ok(String::new());
        };
        let tx = client.build_transaction().read_only(true).start().await?;
        let nearest = semantic_sql(filter.shape(), self.embedding_dim());
        let explain = format!("EXPLAIN {}", nearest.sql);
        let values = filter.values(scope, user_id);
        let vector = Vector::from(embedding);
        let params = nearest.values(|slot| match slot {
            Slot::Vector => Some(&vector),
            filter => values.get(filter),
        })?;
        let rows = query_planned(&tx, Plan::PerCall, &explain, &params).await?;
        let lines = super::read_rows(&rows, |r| Ok(r.try_get::<_, String>("QUERY PLAN")?))?;
        Ok(lines.join("\n"))
    }
}
