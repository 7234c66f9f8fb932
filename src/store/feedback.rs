//! The feedback list of a memory search (a second hop, for questions whose
//! answer shares few words and little meaning with the question itself):
//! the memories nearest to the query vector plus the mean vector of the
//! first candidates, fused as one more RRF list with weight
//! [`super::tuning::Tuning::feedback`] (pseudo-relevance feedback; off when
//! that is 0). See docs/BENCHMARKS.md, "Cross-validated recall", for its
//! measured gain and cost.

use std::sync::LazyLock;

use uuid::Uuid;

use super::filter::Shape;
use super::sql::{Builder, Cache, Slot, Statement};

/// The feedback statement, built once per combination of filters.
pub(super) static FEEDBACK: LazyLock<Cache<(Shape, usize)>> = LazyLock::new(Cache::default);

/// The feedback statement of a memory search (a second hop, for questions
/// whose answer shares little with their words): the ids of the memories
/// nearest to the query vector plus the mean of the seeds' vectors (the
/// first vector and full-text candidates), best first. Planned per call,
/// like `search::semantic_sql`.
pub(super) fn feedback_sql(shape: Shape, dim: usize) -> Statement {
    let mut b = Builder::default();
    let filter = shape.sql(&mut b);
    let vector = b.param(Slot::Vector);
    let seeds = b.param(Slot::Seeds);
    let target = format!(
        "(SELECT {vector}::vector + avg(s.embedding) FROM memories s \
          WHERE s.id = ANY({seeds}::uuid[]) AND s.embedding IS NOT NULL)"
    );
    b.finish(format!(
        "SELECT coalesce(array_agg(id ORDER BY dist, id), '{{}}') AS ids FROM ({}) s",
        super::search::nearest("memories", &filter, target, dim, super::search::Switch::Always)
    ))
}


/// The first `n` of the vector and full-text candidates, alternating
/// (vector first), each once: what seeds the feedback list.
pub(super) fn seeds(semantic: &[Uuid], keyword: &[Uuid], n: i64) -> Vec<Uuid> {
    let n = usize::try_from(n).unwrap_or(0);
    let mut out: Vec<Uuid> = Vec::with_capacity(n);
    let pairs = semantic.iter().map(Some).chain(std::iter::repeat(None));
    for (s, k) in pairs.zip(keyword.iter().map(Some).chain(std::iter::repeat(None))) {
        if out.len() >= n || (s.is_none() && k.is_none()) {
            break;
        }
        for id in [s, k].into_iter().flatten() {
            if out.len() < n && !out.contains(id) {
                out.push(*id);
            }
        }
    }
    out
}
