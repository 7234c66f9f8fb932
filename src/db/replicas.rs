//! Read replicas (`--read-database-url`): a pool per streaming standby of
//! the primary, how fresh each one is, and which one may serve a read.
//!
//! Freshness is measured in WAL positions, on this process's clock only (no
//! clock of another machine is compared): each probe notes the instant `t`
//! it starts, then reads the primary's WAL insert position `p`. Every commit
//! visible on the primary before `t` lies at or before `p` (whatever
//! `synchronous_commit` says), so a standby that has replayed up to `p` holds
//! everything committed before `t`: it is *fresh as of* `t`. A standby is
//! asked for `pg_last_wal_replay_lsn()` and takes the newest such `t`.
//!
//! A read may go to a replica when:
//! - it answered the last probe as a standby and no read since failed on it
//!   for want of a connection (else it is *down*, or *not a standby*);
//! - it is fresh as of an instant at most `max_lag` ago (else *lagging*);
//! - read-your-writes: it is fresh as of an instant after the last write its
//!   companion made through this server ([`Replicas::wrote`]), so an agent
//!   always finds what it just stored. Until the next probe sees a replica
//!   catch up (at most one probe interval plus the replication delay),
//!   that companion's reads go to the primary.
//!
//! Otherwise the read goes to the primary; nothing fails because a replica
//! is down or behind. Skips are counted (metrics), logged once per change of
//! a replica's condition, and shown in `/readyz` ([`Replicas::status`]).

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres_types::PgLsn;
use serde::Serialize;
use uuid::Uuid;

use super::{Db, DbError, describe_target};
use crate::config::Config;

/// The probe runs this many times per `max_lag` (so a replica that keeps up
/// is always seen fresh), within [`PROBE_EVERY`].
const PROBES_PER_MAX_LAG: u32 = 4;
/// The fastest and slowest probe interval.
const PROBE_EVERY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// The read replicas of one server (none when `--read-database-url` is unset).
pub struct Replicas {
    members: Vec<Member>,
    max_lag: Duration,
    probe_every: Duration,
    /// The primary's WAL position at the start of each recent probe, oldest
    /// first; none older than `max_lag` plus a probe interval is kept.
    samples: Mutex<VecDeque<(Instant, PgLsn)>>,
    /// When each companion last wrote through this server; entries older
    /// than `max_lag` are dropped (no replica fresh enough to serve is
    /// older than them).
    writes: Mutex<HashMap<Uuid, Instant>>,
    /// Whether the last probe could read the primary's position (to log
    /// changes only).
    primary_ok: AtomicBool,
    /// Round-robin over the replicas that may serve.
    next: AtomicUsize,
}

/// One replica: its pool and what the probes and reads learned.
pub struct Member {
    pub db: Db,
    /// "1", "2", ... in the order configured (metrics, logs, `/readyz`).
    pub name: String,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Default)]
struct State {
    health: Health,
    /// Holds every commit visible on the primary before this instant.
    fresh_as_of: Option<Instant>,
    /// The condition last logged, so each change is logged once.
    logged: Option<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq)]
enum Health {
    /// Not probed yet.
    #[default]
    Starting,
    /// Answered the last probe as a standby.
    Standby,
    /// Not in recovery: a primary (perhaps a promoted standby), whose data
    /// may have left the primary's.
    NotStandby,
    /// The last probe or read could not reach it (the error, for `/readyz`).
    Down(String),
}

/// What a replica is fit for now, as `/readyz` and the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Starting,
    Serving,
    Lagging,
    Down,
    NotStandby,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::Starting => "starting",
            Condition::Serving => "serving",
            Condition::Lagging => "lagging",
            Condition::Down => "down",
            Condition::NotStandby => "not_standby",
        }
    }
}

/// Why a read passed a replica by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Unfit(Condition),
    /// Not yet known to hold the companion's last write.
    OwnWrite,
}

/// One replica as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub replica: String,
    /// Host, port, user and database ([`describe_target`]): never a password.
    pub target: String,
    pub condition: Condition,
    /// How long ago the replica was last known to hold every commit (a
    /// bound on its replay lag, to one probe interval).
    pub lag_ms: Option<u64>,
    pub error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain values stay usable even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// What the replica is fit for at `now`, reads lagging past `max_lag` aside.
    fn condition(&self, now: Instant, max_lag: Duration) -> Condition {
        match self.health {
            Health::Starting => Condition::Starting,
            Health::NotStandby => Condition::NotStandby,
            Health::Down(_) => Condition::Down,
            Health::Standby => match self.fresh_as_of {
                Some(at) if now.saturating_duration_since(at) <= max_lag => Condition::Serving,
                _ => Condition::Lagging,
            },
        }
    }

    /// Whether a read of a companion that last wrote at `last_write` may go
    /// here at `now`.
    fn admits(
        &self,
        now: Instant,
        max_lag: Duration,
        last_write: Option<Instant>,
    ) -> Result<(), Skip> {
        match self.condition(now, max_lag) {
            Condition::Serving => {}
            other => return Err(Skip::Unfit(other)),
        }
        match (last_write, self.fresh_as_of) {
            (Some(wrote), Some(fresh)) if fresh <= wrote => Err(Skip::OwnWrite),
            _ => Ok(()),
        }
    }
}

/// The newest sample instant whose position `replayed` has reached.
fn fresh_as_of(samples: &VecDeque<(Instant, PgLsn)>, replayed: PgLsn) -> Option<Instant> {
    samples
        .iter()
        .rev()
        .find(|(_, lsn)| *lsn <= replayed)
        .map(|(at, _)| *at)
}

/// How often the probe runs for a lag bound of `max_lag`.
pub fn probe_interval(max_lag: Duration) -> Duration {
    (max_lag / PROBES_PER_MAX_LAG).clamp(PROBE_EVERY.0, PROBE_EVERY.1)
}

impl Replicas {
    /// A pool per `--read-database-url` (none connects before its first use,
    /// so a replica that is down at start delays nothing).
    pub fn open(config: &Config) -> Result<Replicas, DbError> {
        let members = config
            .read_database_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let pg: tokio_postgres::Config =
                    url.parse().map_err(|e: tokio_postgres::Error| {
                        DbError::BadUrl(format!("READ_DATABASE_URL number {}: {e}", i + 1))
                    })?;
                let location = describe_target(&pg);
                let pool = super::pool(config, pg)?;
                Ok(Member {
                    db: Db {
                        pool,
                        location,
                        pool_wait: config.pool_wait,
                        connect_timeout: config.connect_timeout,
                    },
                    name: (i + 1).to_string(),
                    state: Mutex::new(State::default()),
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok(Replicas {
            members,
            max_lag: config.read_max_lag,
            probe_every: probe_interval(config.read_max_lag),
            samples: Mutex::default(),
            writes: Mutex::default(),
            primary_ok: AtomicBool::new(true),
            next: AtomicUsize::new(0),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// How often [`Replicas::probe`] should run.
    pub fn probe_every(&self) -> Duration {
        self.probe_every
    }

    /// Notes that companion `key` has just written (call it once the write
    /// has returned): its reads stay on the primary until a replica is
    /// fresh as of a later instant.
    pub fn wrote(&self, key: Uuid) {
        if self.members.is_empty() {
            return;
        }
        lock(&self.writes).insert(key, Instant::now());
    }

    /// The replica that may serve a read of companion `key` now (taking
    /// turns among those that may), or `None` for the primary.
    pub fn choose(&self, key: Uuid) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let now = Instant::now();
        let last_write = lock(&self.writes).get(&key).copied();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..n {
            let i = (start + offset) % n;
            let member = &self.members[i];
            let admitted = lock(&member.state).admits(now, self.max_lag, last_write);
            match admitted {
                Ok(()) => {
                    crate::metrics::replica_read(&member.name);
                    return Some(i);
                }
                Err(skip) => {
                    let reason = match skip {
                        Skip::Unfit(condition) => condition.as_str(),
                        Skip::OwnWrite => "own_write",
                    };
                    crate::metrics::replica_skipped(&member.name, reason);
                }
            }
        }
        None
    }

    /// A read on replica `i` failed with `error` and goes to the primary;
    /// a failure to reach the replica marks it down until a probe reaches
    /// it again.
    pub fn read_failed(&self, i: usize, error: &DbError) {
        let Some(member) = self.members.get(i) else {
            return;
        };
        crate::metrics::replica_fallback(&member.name, "error");
        if is_unreachable(error) {
            member.mark_down(error.to_string());
        } else {
            tracing::info!(replica = %member.name, error = %error, "a read failed on a read replica; ran it on the primary");
        }
    }

    /// A read on replica `i` found nothing where the primary may (a row
    /// written through another server, not replayed yet): it is asked again.
    pub fn read_missed(&self, i: usize) {
        if let Some(member) = self.members.get(i) {
            crate::metrics::replica_fallback(&member.name, "not_found");
        }
    }

    /// One probe round: the primary's WAL position, then each replica's
    /// replayed position (all at once, each within the connect timeout).
    pub async fn probe(&self, primary: &Db) {
        if self.members.is_empty() {
            return;
        }
        let started = Instant::now();
        match within(primary, sample_primary(primary)).await {
            Ok(lsn) => {
                let mut samples = lock(&self.samples);
                samples.push_back((started, lsn));
                let horizon = self.max_lag + self.probe_every;
                while samples
                    .front()
                    .is_some_and(|(at, _)| started.saturating_duration_since(*at) > horizon)
                {
                    samples.pop_front();
                }
                if !self.primary_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("reading the primary's WAL position works again");
                }
            }
            Err(e) => {
                if self.primary_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot read the primary's WAL position: read replicas count as lagging until it works");
                }
            }
        }
        futures::future::join_all(self.members.iter().map(|m| self.probe_member(m))).await;
        let forget_before = Instant::now().checked_sub(self.max_lag);
        if let Some(before) = forget_before {
            lock(&self.writes).retain(|_, at| *at >= before);
        }
    }

    async fn probe_member(&self, member: &Member) {
        match within(&member.db, replayed(&member.db)).await {
            Err(e) => member.mark_down(e.to_string()),
            Ok(None) => member.set_health(Health::NotStandby),
            Ok(Some(lsn)) => {
                let (found, seen_long) = {
                    let samples = lock(&self.samples);
                    let seen_long = samples
                        .front()
                        .is_some_and(|(at, _)| at.elapsed() >= self.max_lag);
                    (fresh_as_of(&samples, lsn), seen_long)
                };
                let mut state = lock(&member.state);
                // Replay only moves forward while the standby stays up.
                state.fresh_as_of = match (state.fresh_as_of, found) {
                    (Some(old), Some(new)) => Some(old.max(new)),
                    (old, new) => old.or(new),
                };
                // A standby not yet seen fresh is starting (catching up)
                // until the samples span the lag bound; then it is lagging.
                state.health = if state.fresh_as_of.is_some() || seen_long {
                    Health::Standby
                } else {
                    Health::Starting
                };
            }
        }
        let now = Instant::now();
        let mut state = lock(&member.state);
        let condition = state.condition(now, self.max_lag);
        if state.logged != Some(condition) {
            state.logged = Some(condition);
            log_condition(member, &state, condition, now, self.max_lag);
        }
        crate::metrics::replica_state(
            &member.name,
            condition == Condition::Serving,
            state
                .fresh_as_of
                .map(|at| now.saturating_duration_since(at)),
        );
    }

    /// Every replica as `/readyz` shows it.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        self.members
            .iter()
            .map(|m| {
                let state = lock(&m.state).clone();
                ReplicaStatus {
                    replica: m.name.clone(),
                    target: m.db.location.clone(),
                    condition: state.condition(now, self.max_lag),
                    lag_ms: state
                        .fresh_as_of
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    error: match state.health {
                        Health::Down(e) => Some(e),
                        _ => None,
                    },
                }
            })
            .collect()
    }
}

impl Member {
    /// Marks the replica down (logged once): its reads go to the primary
    /// until a probe reaches it again. What it had replayed is forgotten: a
    /// standby restarted after a crash may show an older state for a while.
    fn mark_down(&self, error: String) {
        let mut state = lock(&self.state);
        state.fresh_as_of = None;
        if state.logged != Some(Condition::Down) {
            tracing::warn!(replica = %self.name, target = %self.db.location, error = %error,
                "read replica is down: its reads go to the primary");
            state.logged = Some(Condition::Down);
            crate::metrics::replica_state(&self.name, false, None);
        }
        state.health = Health::Down(error);
    }

    fn set_health(&self, health: Health) {
        let mut state = lock(&self.state);
        state.fresh_as_of = None;
        state.health = health;
    }
}

fn log_condition(
    member: &Member,
    state: &State,
    condition: Condition,
    now: Instant,
    max_lag: Duration,
) {
    let (replica, target) = (&member.name, &member.db.location);
    match condition {
        Condition::Serving => tracing::info!(%replica, %target, "read replica serves reads"),
        Condition::Lagging => tracing::warn!(
            %replica, %target,
            lag_ms = state.fresh_as_of.map(|at| now.saturating_duration_since(at).as_millis() as u64),
            max_lag_ms = max_lag.as_millis() as u64,
            "read replica lags past --read-max-lag-ms: its reads go to the primary"
        ),
        Condition::NotStandby => tracing::warn!(
            %replica, %target,
            "READ_DATABASE_URL points at a server that is not a standby (pg_is_in_recovery() is false): not used for reads"
        ),
        // Down is logged where it is marked; starting says nothing yet.
        Condition::Down | Condition::Starting => {}
    }
}

/// A failure to reach the server (connection refused, closed, timed out, or
/// the server shutting down or starting up), as opposed to a failing
/// statement on a working server.
fn is_unreachable(error: &DbError) -> bool {
    match error {
        DbError::Connect(_) | DbError::PoolTimeout(_) => true,
        DbError::Postgres(e) => match e.code() {
            None => true,
            // 08: connection exception; 57P01-57P03: admin/crash shutdown,
            // cannot connect now.
            Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
        },
        _ => false,
    }
}

/// Runs `work`, giving up after the connect timeout plus a second (a probe
/// never waits longer on a server that stopped answering).
async fn within<T>(
    db: &Db,
    work: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    let limit = db.connect_timeout + Duration::from_secs(1);
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(DbError::Connect(format!("no answer within {limit:?}"))))
}

/// The one text value of `sql`'s first row (simple protocol: no prepared
/// statement, fine behind any pooler).
async fn one_value(db: &Db, sql: &str) -> Result<Vec<Option<String>>, DbError> {
    let client = db.client().await?;
    let messages = client.simple_query(sql).await?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| DbError::Connect(format!("{sql} returned no row")))?;
    Ok((0..row.len())
        .map(|i| row.get(i).map(str::to_string))
        .collect())
}

fn parse_lsn(text: &str) -> Result<PgLsn, DbError> {
    PgLsn::from_str(text).map_err(|_| DbError::Connect(format!("not a WAL position: {text:?}")))
}

/// The primary's WAL insert position.
async fn sample_primary(primary: &Db) -> Result<PgLsn, DbError> {
    let values = one_value(primary, "SELECT pg_current_wal_insert_lsn()").await?;
    match values.first() {
        Some(Some(text)) => parse_lsn(text),
        _ => Err(DbError::Connect("no WAL position".into())),
    }
}

/// How far a standby has replayed, or `None` when it is not a standby.
async fn replayed(replica: &Db) -> Result<Option<PgLsn>, DbError> {
    let values = one_value(
        replica,
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()",
    )
    .await?;
    match values.as_slice() {
        [Some(standby), Some(lsn)] if standby == "t" => parse_lsn(lsn).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_millis(1000);

    fn standby(fresh_as_of: Option<Instant>) -> State {
        State {
            health: Health::Standby,
            fresh_as_of,
            logged: None,
        }
    }

    #[test]
    fn a_replica_is_fresh_as_of_the_newest_sample_it_has_replayed() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let samples: VecDeque<_> = [
            (at(0), PgLsn::from(100)),
            (at(250), PgLsn::from(200)),
            (at(500), PgLsn::from(200)),
            (at(750), PgLsn::from(300)),
        ]
        .into();
        assert_eq!(fresh_as_of(&samples, PgLsn::from(50)), None);
        assert_eq!(fresh_as_of(&samples, PgLsn::from(100)), Some(at(0)));
        // An idle primary: the later sample at the same position counts.
        assert_eq!(fresh_as_of(&samples, PgLsn::from(299)), Some(at(500)));
        assert_eq!(fresh_as_of(&samples, PgLsn::from(300)), Some(at(750)));
    }

    #[test]
    fn a_read_after_the_companions_write_waits_for_a_fresher_probe() {
        let now = Instant::now();
        let probe = now - Duration::from_millis(100);
        let state = standby(Some(probe));
        assert_eq!(state.admits(now, LAG, None), Ok(()));
        // Wrote before the probe started: the replica holds it.
        let before = probe - Duration::from_millis(1);
        assert_eq!(state.admits(now, LAG, Some(before)), Ok(()));
        // Wrote after (or as) the probe started: not known to hold it.
        let after = probe + Duration::from_millis(1);
        assert_eq!(state.admits(now, LAG, Some(after)), Err(Skip::OwnWrite));
        assert_eq!(state.admits(now, LAG, Some(probe)), Err(Skip::OwnWrite));
    }

    #[test]
    fn a_replica_behind_the_bound_or_down_serves_nothing() {
        let now = Instant::now();
        let old = now - LAG - Duration::from_millis(1);
        assert_eq!(
            standby(Some(old)).admits(now, LAG, None),
            Err(Skip::Unfit(Condition::Lagging))
        );
        assert_eq!(
            standby(None).admits(now, LAG, None),
            Err(Skip::Unfit(Condition::Lagging))
        );
        let down = State {
            health: Health::Down("refused".into()),
            fresh_as_of: Some(now),
            logged: None,
        };
        assert_eq!(
            down.admits(now, LAG, None),
            Err(Skip::Unfit(Condition::Down))
        );
        assert_eq!(
            State::default().admits(now, LAG, None),
            Err(Skip::Unfit(Condition::Starting))
        );
    }

    #[test]
    fn the_probe_runs_several_times_per_lag_bound() {
        assert_eq!(probe_interval(LAG), Duration::from_millis(250));
        assert_eq!(
            probe_interval(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        assert_eq!(
            probe_interval(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }
}
