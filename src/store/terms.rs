//! Term statistics for the keyword side of search: how many memories a
//! user has (the N of idf) and in how many of them each query lexeme occurs
//! (its document frequency, counted up to [`DF_CAP`]).
//!
//! Small scopes are counted exactly on every search: it is cheap and young
//! scopes change fast. From [`CACHE_FROM`] memories on, counts are kept per
//! scope for [`TTL`]: counting them costs more than the rest of a search
//! (about 5 ms per common lexeme at 100k memories), and idf barely moves
//! when a scope grows by a few percent in a minute.

use crate::db::statements::Statements;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Store, StoreError};

/// Document frequencies are counted up to this many rows: a lexeme in more
/// of the scope is common, and its idf (already small) is taken at the cap.
pub(crate) const DF_CAP: i64 = 500;
const CACHE_FROM: i64 = 5_000;
const TTL: Duration = Duration::from_secs(60);
/// Beyond this many cached lexemes the cache starts over (bounded memory).
const MAX_CACHED: usize = 100_000;

/// What the keyword side needs to rank: N, and each lexeme with its df.
#[derive(Debug, Default)]
pub(crate) struct TermStats {
    pub scope_size: i64,
    pub lexemes: Vec<String>,
    pub dfs: Vec<i64>,
}

/// A count and when it was taken.
type Stamped = (i64, Instant);
/// (companion, user, lexeme).
type LexemeKey = (Uuid, Uuid, String);

#[derive(Default)]
pub(crate) struct TermCache {
    sizes: Mutex<HashMap<(Uuid, Uuid), Stamped>>,
    dfs: Mutex<HashMap<LexemeKey, Stamped>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps stay usable even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The count of lexeme `l`'s rows in the scope ($1 companion, $2 user),
/// capped at [`DF_CAP`] (the literal below: `concat!` takes no constants;
/// a test checks they agree).
macro_rules! df {
    () => {
        "SELECT count(*) FROM ( \
            SELECT 1 FROM memories m WHERE m.companion_id = $1 AND m.user_id = $2 \
            AND m.archived_at IS NULL \
            AND m.search_tsv @@ to_tsquery('simple', quote_literal(l)) \
            LIMIT 500) x"
    };
}

/// N: the scope's size ($1 companion, $2 user).
const SIZE_SQL: &str = "SELECT count(*) AS n FROM memories \
     WHERE companion_id = $1 AND user_id = $2 AND archived_at IS NULL";

/// The lexemes of $3 and their document frequencies, through the full-text
/// index.
const STATS_SQL: &str = concat!(
    "WITH lex AS ( \
        SELECT DISTINCT l FROM unnest(tsvector_to_array(to_tsvector('english', $3))) l) \
     SELECT coalesce(array_agg(l ORDER BY l), '{}') AS lexemes, \
            coalesce(array_agg(c.df ORDER BY l), '{}') AS dfs \
     FROM lex CROSS JOIN LATERAL (",
    df!(),
    ") c(df)"
);

/// The same as [`STATS_SQL`] for a scope of at most
/// [`super::search::SMALL_SCOPE`] rows, counted over the scope's own rows
/// read once: through the index, a lexeme common across the table cost
/// 5.5-6.3 ms per search in a scope of 100 (the bitmap of every scope's
/// matches), 3.0-3.7 ms this way.
const SMALL_STATS_SQL: &str = "WITH lex AS ( \
        SELECT DISTINCT l FROM unnest(tsvector_to_array(to_tsvector('english', $3))) l), \
     scope AS MATERIALIZED ( \
        SELECT search_tsv FROM memories \
        WHERE companion_id = $1 AND user_id = $2 AND archived_at IS NULL) \
     SELECT coalesce(array_agg(l ORDER BY l), '{}') AS lexemes, \
            coalesce(array_agg(c.df ORDER BY l), '{}') AS dfs \
     FROM lex CROSS JOIN LATERAL ( \
        SELECT count(*) FROM ( \
            SELECT 1 FROM scope s WHERE s.search_tsv @@ to_tsquery('simple', quote_literal(l)) \
            LIMIT 500) x) c(df)";

/// The distinct lexemes of $1.
const LEXEMES_SQL: &str = "SELECT coalesce(array_agg(DISTINCT l), '{}') AS lexemes \
     FROM unnest(tsvector_to_array(to_tsvector('english', $1))) l";

/// The document frequencies of the lexemes $3.
const DFS_SQL: &str = concat!("SELECT l, (", df!(), ") AS df FROM unnest($3::text[]) l");

impl Store {
    /// N and the document frequencies of `text`'s lexemes in the scope: two
    /// statements for a small scope (its size, then the counts, over its
    /// rows when it is at most `SMALL_SCOPE`), cached counts (and one
    /// statement for lexemes not seen lately) for a large one.
    pub(crate) async fn term_stats(
        &self,
        client: &deadpool_postgres::Client,
        companion: Uuid,
        user: Uuid,
        text: &str,
    ) -> Result<TermStats, StoreError> {
        let cache = &self.terms;
        let key = (companion, user);
        let fresh = |entry: Option<Stamped>| entry.filter(|(_, at)| at.elapsed() < TTL);
        let cached_size = fresh(lock(&cache.sizes).get(&key).copied())
            .map(|(n, _)| n)
            .filter(|n| *n >= CACHE_FROM);
        let Some(scope_size) = cached_size else {
            let n: i64 = client
                .one(SIZE_SQL, &[&companion, &user])
                .await?
                .try_get("n")?;
            let sql = if n <= super::search::SMALL_SCOPE {
                SMALL_STATS_SQL
            } else {
                STATS_SQL
            };
            let row = client.one(sql, &[&companion, &user, &text]).await?;
            let stats = TermStats {
                scope_size: n,
                lexemes: row.try_get("lexemes")?,
                dfs: row.try_get("dfs")?,
            };
            lock(&cache.sizes).insert(key, (stats.scope_size, Instant::now()));
            if stats.scope_size >= CACHE_FROM {
                remember(cache, key, &stats.lexemes, &stats.dfs);
            }
            return Ok(stats);
        };
        let lexemes: Vec<String> = client
            .one(LEXEMES_SQL, &[&text])
            .await?
            .try_get("lexemes")?;
        let mut dfs: Vec<Option<i64>> = {
            let map = lock(&cache.dfs);
            lexemes
                .iter()
                .map(|l| fresh(map.get(&(companion, user, l.clone())).copied()).map(|(d, _)| d))
                .collect()
        };
        let missing: Vec<String> = lexemes
            .iter()
            .zip(&dfs)
            .filter(|(_, d)| d.is_none())
            .map(|(l, _)| l.clone())
            .collect();
        if !missing.is_empty() {
            let rows = client.rows(DFS_SQL, &[&companion, &user, &missing]).await?;
            let pairs = super::read_rows(&rows, |r| {
                Ok((r.try_get::<_, String>("l")?, r.try_get::<_, i64>("df")?))
            })?;
            let (names, counts): (Vec<String>, Vec<i64>) = pairs.into_iter().unzip();
            remember(cache, key, &names, &counts);
            let counted: HashMap<&String, i64> = names.iter().zip(counts).collect();
            for (d, l) in dfs.iter_mut().zip(&lexemes) {
                if d.is_none() {
                    *d = counted.get(l).copied();
                }
            }
        }
        Ok(TermStats {
            scope_size,
            dfs: dfs.into_iter().map(|d| d.unwrap_or(0)).collect(),
            lexemes,
        })
    }
}

fn remember(cache: &TermCache, (companion, user): (Uuid, Uuid), lexemes: &[String], dfs: &[i64]) {
    let mut map = lock(&cache.dfs);
    if map.len() > MAX_CACHED {
        map.clear();
    }
    let now = Instant::now();
    for (l, d) in lexemes.iter().zip(dfs) {
        map.insert((companion, user, l.clone()), (*d, now));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_frequency_statement_caps_at_df_cap() {
        for sql in [super::DFS_SQL, super::STATS_SQL, super::SMALL_STATS_SQL] {
            assert!(
                sql.contains(&format!("LIMIT {}) x", super::DF_CAP)),
                "{sql}"
            );
        }
    }
}
