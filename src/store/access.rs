//! Access statistics (`access_count`, `last_accessed_at`): counted in memory
//! when a memory is read and written in batches by a background job, so a
//! `get_memory` is a plain read with no commit of its own to wait for
//! (measured: one write per read halved `get_memory` throughput). They are
//! written to `memory_access`, not to the memory's own (wide, heavily
//! indexed) row. A memory deleted before its counts are written loses them:
//! a flush that races the delete fails on the foreign key and is retried
//! without it.
//!
//! A read reports the stored count plus the accesses not yet written, so
//! callers see every access at once. A crash loses at most one flush
//! interval of counts: they are statistics, not content.

use crate::db::statements::Statements;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, retry_on_conflict};

#[derive(Default)]
pub(crate) struct AccessLog {
    counts: Mutex<Counts>,
    /// One flush at a time: the background job's and the final one at
    /// shutdown must not interleave their in-flight sets.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Counts {
    /// Accesses not yet handed to a flush: count and latest time.
    pending: HashMap<Uuid, (i64, DateTime<Utc>)>,
    /// Accesses a running flush is writing.
    in_flight: HashMap<Uuid, (i64, DateTime<Utc>)>,
}

impl AccessLog {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // The map stays consistent even if a holder panicked: keep counting.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one access to `id` at `at`; returns the accesses to it not yet
    /// written (this one included).
    pub(crate) fn record(&self, id: Uuid, at: DateTime<Utc>) -> i64 {
        let mut c = self.lock();
        let entry = c.pending.entry(id).or_insert((0, at));
        entry.0 += 1;
        entry.1 = entry.1.max(at);
        let pending = entry.0;
        pending + c.in_flight.get(&id).map_or(0, |e| e.0)
    }

    /// Moves the pending accesses to a flush, ordered by id (rows are then
    /// locked in the same order as other batch writes).
    fn take(&self) -> Vec<(Uuid, i64, DateTime<Utc>)> {
        let mut c = self.lock();
        let taken = std::mem::take(&mut c.pending);
        let mut batch: Vec<_> = taken.iter().map(|(id, (n, at))| (*id, *n, *at)).collect();
        c.in_flight = taken;
        batch.sort_unstable_by_key(|(id, _, _)| *id);
        batch
    }

    /// Ends a flush: written, or put back to be tried again.
    fn finish(&self, written: bool) {
        let mut c = self.lock();
        let in_flight = std::mem::take(&mut c.in_flight);
        if !written {
            for (id, (n, at)) in in_flight {
                let entry = c.pending.entry(id).or_insert((0, at));
                entry.0 += n;
                entry.1 = entry.1.max(at);
            }
        }
    }
}

impl Store {
    /// Writes the accesses counted since the last flush; returns how many
    /// memories' statistics changed.
    pub async fn flush_access(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = self.access.flushing.lock().await;
        let batch = self.access.take();
        if batch.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = batch.iter().map(|b| b.0).collect();
        let counts: Vec<i64> = batch.iter().map(|b| b.1).collect();
        let times: Vec<DateTime<Utc>> = batch.iter().map(|b| b.2).collect();
        let result = retry_on_conflict(|| async {
            let client = self.client().await?;
            Ok(client
                .run(
                    "INSERT INTO memory_access AS x (companion_id, memory_id, access_count, last_accessed_at) \
                     SELECT m.companion_id, a.id, a.n, a.at \
                     FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[]) AS a(id, n, at) \
                     JOIN memories m ON m.id = a.id \
                     ON CONFLICT (companion_id, memory_id) DO UPDATE SET \
                        access_count = x.access_count + EXCLUDED.access_count, \
                        last_accessed_at = greatest(x.last_accessed_at, EXCLUDED.last_accessed_at)",
                    &[&ids, &counts, &times],
                )
                .await?)
        })
        .await;
        self.access.finish(result.is_ok());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_failed_flush_and_include_in_flight_ones() {
        let log = AccessLog::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Utc::now();
        assert_eq!(log.record(a, t0), 1);
        assert_eq!(log.record(a, t0), 2);
        assert_eq!(log.record(b, t0), 1);
        let batch = log.take();
        assert_eq!(batch.len(), 2);
        // While a flush runs, a read still counts what it is writing.
        assert_eq!(log.record(a, t0), 3);
        log.finish(false);
        let mut again = log.take();
        again.sort();
        let a_count = again.iter().find(|x| x.0 == a).map(|x| x.1);
        assert_eq!(a_count, Some(3), "failed flush put its counts back");
        log.finish(true);
        assert!(log.take().is_empty(), "a written flush is forgotten");
        log.finish(true);
        assert_eq!(log.record(a, t0), 1);
    }
}
