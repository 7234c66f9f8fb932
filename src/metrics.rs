//! Prometheus metrics: names, the recorder, and what is sampled at scrape
//! time. Recording is a no-op until [`install`] runs (the HTTP server does),
//! so stdio servers pay nothing.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::embed::LazyEmbedder;
use crate::store::Store;

pub const TOOL_CALLS: &str = "mnemo_tool_calls_total";
pub const TOOL_SECONDS: &str = "mnemo_tool_duration_seconds";
pub const EMBED_SECONDS: &str = "mnemo_embedding_duration_seconds";
pub const DB_SECONDS: &str = "mnemo_db_statement_duration_seconds";
pub const HTTP_REQUESTS: &str = "mnemo_http_requests_total";
pub const RATE_LIMITED: &str = "mnemo_http_rate_limited_total";
pub const QUERY_CACHE: &str = "mnemo_query_cache_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the global recorder; `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .ok()?
        .install_recorder()
        .ok()
}

/// Records one tool call.
pub fn tool_call(tool: &str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(TOOL_CALLS, "tool" => tool.to_string(), "outcome" => outcome).increment(1);
    metrics::histogram!(TOOL_SECONDS, "tool" => tool.to_string()).record(elapsed.as_secs_f64());
}

/// Records one embedding call of `texts` texts.
pub fn embedding(texts: usize, elapsed: Duration) {
    metrics::histogram!(EMBED_SECONDS).record(elapsed.as_secs_f64());
    metrics::counter!("mnemo_embedded_texts_total").increment(texts as u64);
}

/// Records one lookup in the cache of query vectors.
pub fn query_cache(hit: bool) {
    let outcome = if hit { "hit" } else { "miss" };
    metrics::counter!(QUERY_CACHE, "outcome" => outcome).increment(1);
}

/// Records one timed SQL statement (the names `db::note_duration` gets).
pub fn statement(name: &str, elapsed: Duration) {
    metrics::histogram!(DB_SECONDS, "statement" => name.to_string()).record(elapsed.as_secs_f64());
}

/// Samples gauges that are cheaper to read than to track: pool usage,
/// sessions, model state.
pub async fn sample(store: &Store, embedder: &LazyEmbedder) {
    let status = store.db().pool.status();
    metrics::gauge!("mnemo_db_pool_size").set(status.size as f64);
    metrics::gauge!("mnemo_db_pool_available").set(status.available as f64);
    metrics::gauge!("mnemo_db_pool_waiting").set(status.waiting as f64);
    metrics::gauge!("mnemo_db_pool_max_size").set(status.max_size as f64);
    if let Ok(n) = store.count_sessions().await {
        metrics::gauge!("mnemo_sessions").set(n as f64);
    }
    metrics::gauge!("mnemo_embedding_model_loaded").set(if embedder.is_loaded() {
        1.0
    } else {
        0.0
    });
}

pub const REPLICA_READS: &str = "mnemo_replica_reads_total";
pub const REPLICA_SKIPPED: &str = "mnemo_replica_skipped_total";
pub const REPLICA_FALLBACKS: &str = "mnemo_replica_fallbacks_total";
pub const REPLICA_UP: &str = "mnemo_replica_serving";
pub const REPLICA_LAG: &str = "mnemo_replica_lag_seconds";

/// A read sent to read replica `replica` (see `db::replicas`).
pub fn replica_read(replica: &str) {
    metrics::counter!(REPLICA_READS, "replica" => replica.to_string()).increment(1);
}

/// A read that passed replica `replica` by, and why (`down`, `lagging`,
/// `starting`, `not_standby`, `own_write`).
pub fn replica_skipped(replica: &str, reason: &'static str) {
    metrics::counter!(REPLICA_SKIPPED, "replica" => replica.to_string(), "reason" => reason)
        .increment(1);
}

/// A read that failed on replica `replica` (`error`) or found nothing there
/// (`not_found`), run again on the primary.
pub fn replica_fallback(replica: &str, reason: &'static str) {
    metrics::counter!(REPLICA_FALLBACKS, "replica" => replica.to_string(), "reason" => reason)
        .increment(1);
}

/// Whether replica `replica` serves reads, and how far behind it was last
/// seen (a bound, to one probe interval).
pub fn replica_state(replica: &str, serving: bool, lag: Option<Duration>) {
    metrics::gauge!(REPLICA_UP, "replica" => replica.to_string()).set(if serving {
        1.0
    } else {
        0.0
    });
    if let Some(lag) = lag {
        metrics::gauge!(REPLICA_LAG, "replica" => replica.to_string()).set(lag.as_secs_f64());
    }
}
