//! What every MCP request passes before rmcp sees it: authentication
//! (bearer API keys, with failed look-ups limited per client address),
//! per-principal rate limiting, and the session check (a session id must be
//! live and belong to the caller).
//!
//! The limits are `governor`'s keyed GCRA limiters (lock-free per key); the
//! sessions checked lately sit in a `DashMap` (sharded locks; `governor`
//! already brings it), expiring by timestamp: an expiring cache (moka) would
//! add a dependency for what one comparison on read does here.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager as _};

use super::sessions::CALLER;
use crate::app::App;
use crate::auth::{Principal, hash_key};
use crate::store::sessions::SessionCheck;

/// Shared state of the guard.
pub struct Guard {
    pub app: Arc<App>,
    /// rmcp's in-memory sessions, to drop one whose row expired.
    pub sessions: Arc<LocalSessionManager>,
    pub session_ttl: Duration,
    limiter: Option<Limiter<String>>,
    /// Failed key look-ups per client address.
    failures: AuthFailures,
    checked: CheckedSessions,
}

/// How long a session found live stays trusted without asking the database
/// again (a tenth of the session TTL if that is shorter): a burst of calls
/// on one session then costs one check, where the check was half the SQL of
/// a `get_memory` call. A session ended through another replica stays
/// usable here for at most this long; ending it here (DELETE) is always
/// checked and forgotten at once.
const SESSION_FRESH: Duration = Duration::from_secs(2);
/// Beyond this many remembered sessions, the stale ones are dropped.
const SESSION_CACHE_MAX: usize = 10_000;

/// Sessions checked lately: id → (principal, when), trusted for `window`.
struct CheckedSessions {
    window: Duration,
    map: DashMap<String, (String, Instant)>,
}

impl CheckedSessions {
    fn new(window: Duration) -> Self {
        CheckedSessions {
            window,
            map: DashMap::new(),
        }
    }

    /// Checked for `principal` within the window.
    fn fresh(&self, id: &str, principal: &str) -> bool {
        self.map
            .get(id)
            .is_some_and(|e| e.0 == principal && e.1.elapsed() < self.window)
    }

    /// Runs once per session per window, so the length check (a read lock
    /// per shard) and the rare sweep stay off the hot path.
    fn remember(&self, id: &str, principal: &str) {
        if self.map.len() >= SESSION_CACHE_MAX {
            self.map.retain(|_, (_, at)| at.elapsed() < self.window);
        }
        if self.map.len() < SESSION_CACHE_MAX {
            self.map
                .insert(id.to_owned(), (principal.to_owned(), Instant::now()));
        }
    }

    fn forget(&self, id: &str) {
        self.map.remove(id);
    }
}

impl Guard {
    pub fn new(
        app: Arc<App>,
        sessions: Arc<LocalSessionManager>,
        session_ttl: Duration,
        per_minute: u32,
    ) -> Self {
        Guard {
            app,
            sessions,
            session_ttl,
            limiter: NonZeroU32::new(per_minute).map(|n| Limiter::new(Quota::per_minute(n))),
            failures: AuthFailures::new(),
            checked: CheckedSessions::new(SESSION_FRESH.min(session_ttl / 10)),
        }
    }
}

impl Guard {
    /// Whether `session` is live and `caller`'s: from the sessions checked
    /// lately, else from the database (which also slides its expiry).
    async fn check_session(
        &self,
        session: &str,
        caller: &str,
        ending: bool,
    ) -> Result<SessionCheck, crate::store::StoreError> {
        if ending {
            self.checked.forget(session);
        } else if self.checked.fresh(session, caller) {
            return Ok(SessionCheck::Ok);
        }
        let check = self
            .app
            .store
            .touch_session(session, caller, self.session_ttl)
            .await;
        match check {
            Ok(SessionCheck::Ok) if !ending => self.checked.remember(session, caller),
            Ok(SessionCheck::Unknown | SessionCheck::Forbidden) => self.checked.forget(session),
            _ => {}
        }
        check
    }
}

/// The axum middleware in front of `/mcp`.
pub async fn guard(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = match authenticate(&guard, authorization, client).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if let Some(limiter) = &guard.limiter
        && let Err(retry_after) = limiter.take(&principal.id())
    {
        return too_many("key", retry_after, "rate limit exceeded: retry in {secs} s");
    }
    if let Some(session) = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        let ending = request.method() == axum::http::Method::DELETE;
        let check = guard.check_session(&session, &principal.id(), ending).await;
        match check {
            Ok(SessionCheck::Ok) => {}
            Ok(SessionCheck::Unknown) => {
                // An expired session may still live in this process: end it
                // too, or it would linger until rmcp's idle timeout.
                let sessions = guard.sessions.clone();
                let id = SessionId::from(session.as_str());
                tokio::spawn(async move {
                    let _ = sessions.close_session(&id).await;
                });
                return error(
                    StatusCode::NOT_FOUND,
                    "session not found or expired: send initialize to start a new one",
                );
            }
            Ok(SessionCheck::Forbidden) => {
                return error(
                    StatusCode::FORBIDDEN,
                    "this session belongs to another API key",
                );
            }
            // The database is down. Refusing a POST here would make clients see
            // a transport failure and drop their session; passing it on lets
            // its tool call fail as a tool error (`unavailable`) and the session
            // carry on once PostgreSQL is back. Skipping the ownership check
            // there gives nothing away: the companion comes from the
            // authenticated principal, and a POST's answer goes only to its
            // sender. A GET (the session's own event stream) is refused.
            Err(e) if request.method() == axum::http::Method::POST => {
                tracing::warn!(error = %e, "session check skipped: the database is unavailable");
            }
            Err(e) => {
                tracing::error!(error = %e, "session check failed");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable",
                );
            }
        }
    }
    request.extensions_mut().insert(principal.clone());
    CALLER.scope(principal, next.run(request)).await
}

async fn authenticate(
    guard: &Guard,
    header: Option<String>,
    client: Option<IpAddr>,
) -> Result<Principal, Response> {
    if !guard.app.keys_required() && header.is_none() {
        return Ok(Principal {
            key_id: None,
            scope: guard.app.scope,
        });
    }
    let Some(key) = header.as_deref().and_then(bearer_token) else {
        return Err(unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ));
    };
    // Refused before the database is asked: a flood of bad keys must not
    // slow real callers (748 failed look-ups/s raised their p50 8 -> 64 ms).
    if let Some(wait) = client.and_then(|ip| guard.failures.blocked(ip)) {
        return Err(too_many(
            "auth_failures",
            wait,
            "too many failed API key attempts from this address: retry in {secs} s",
        ));
    }
    match guard.app.store.find_key(&hash_key(key)).await {
        Ok(Some((key_id, scope))) => Ok(Principal {
            key_id: Some(key_id),
            scope,
        }),
        Ok(None) => {
            if let Some(ip) = client {
                guard.failures.failed(ip);
            }
            Err(unauthorized("invalid, expired or revoked API key"))
        }
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            ))
        }
    }
}

/// The credentials of `Authorization: Bearer <token>`; the scheme name is
/// case-insensitive (RFC 7235 section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 429 with Retry-After; `message` names the wait as `{secs}`.
fn too_many(reason: &'static str, wait: Duration, message: &str) -> Response {
    metrics::counter!(crate::metrics::RATE_LIMITED, "reason" => reason).increment(1);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        &message.replace("{secs}", &secs.to_string()),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mnemo\""),
    );
    response
}

/// A JSON-RPC error body with an HTTP status, as MCP clients expect.
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": -32000 - i64::from(status.as_u16() / 100), "message": message },
    });
    let mut response = (status, Body::from(body.to_string())).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Keys tracked by a limiter before idle ones are forgotten.
const LIMITER_KEYS_MAX: usize = 10_000;
/// How many checks pass between two looks at the limiter's size.
const LIMITER_SWEEP_EVERY: u64 = 4096;

/// A `governor` limiter per key (GCRA: the quota's burst, refilled at its
/// rate), bounded: idle keys are dropped once there are too many.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(quota: Quota) -> Self {
        Limiter {
            limiter: RateLimiter::keyed(quota),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one cell for `key`, or says how long until one is free.
    fn take(&self, key: &K) -> Result<(), Duration> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(LIMITER_SWEEP_EVERY)
            && self.limiter.len() > LIMITER_KEYS_MAX
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Failed key look-ups allowed per client address: a burst of this many,
/// then one more every `AUTH_FAILURE_PERIOD`. A client past it is refused
/// with 429 before its key is looked up, whatever key it sends.
const AUTH_FAILURES_BURST: u32 = 20;
const AUTH_FAILURE_PERIOD: Duration = Duration::from_secs(3);

/// Failed look-ups per address, and the addresses refused until a time.
struct AuthFailures {
    limiter: Limiter<IpAddr>,
    refused: DashMap<IpAddr, Instant>,
}

impl AuthFailures {
    fn new() -> Self {
        let quota = Quota::with_period(AUTH_FAILURE_PERIOD)
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(AUTH_FAILURES_BURST).unwrap_or(NonZeroU32::MIN));
        AuthFailures {
            limiter: Limiter::new(quota),
            refused: DashMap::new(),
        }
    }

    /// How long `ip` is still refused, if it is.
    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let until = *self.refused.get(&ip)?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.refused.remove_if(&ip, |_, u| *u == until);
            return None;
        }
        Some(left)
    }

    fn failed(&self, ip: IpAddr) {
        if let Err(wait) = self.limiter.take(&ip) {
            if self.refused.len() >= LIMITER_KEYS_MAX {
                let now = Instant::now();
                self.refused.retain(|_, until| *until > now);
            }
            self.refused.insert(ip, Instant::now() + wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_refuses_with_a_wait() {
        let limiter = Limiter::new(Quota::per_minute(NonZeroU32::new(3).unwrap()));
        for _ in 0..3 {
            assert!(limiter.take(&"a".to_string()).is_ok());
        }
        let wait = limiter.take(&"a".to_string()).unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            limiter.take(&"b".to_string()).is_ok(),
            "buckets are per principal"
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer k1"), Some("k1"));
        assert_eq!(bearer_token("BEARER k1"), Some("k1"));
        assert_eq!(bearer_token("bEaReR   k1 "), Some("k1"));
        assert_eq!(bearer_token("Basic k1"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerk1"), None);
    }

    #[test]
    fn an_address_is_refused_after_a_burst_of_failures() {
        let failures = AuthFailures::new();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..AUTH_FAILURES_BURST {
            assert_eq!(failures.blocked(ip), None);
            failures.failed(ip);
        }
        assert_eq!(failures.blocked(ip), None, "the burst itself passes");
        failures.failed(ip);
        let wait = failures.blocked(ip).expect("refused past the burst");
        assert!(wait <= AUTH_FAILURE_PERIOD, "{wait:?}");
        assert_eq!(failures.blocked([10, 0, 0, 2].into()), None, "per address");
    }

    #[test]
    fn a_checked_session_is_trusted_briefly_and_only_for_its_principal() {
        let window = Duration::from_millis(50);
        let checked = CheckedSessions::new(window);
        assert!(!checked.fresh("s1", "key:a"), "never checked");
        checked.remember("s1", "key:a");
        assert!(checked.fresh("s1", "key:a"));
        assert!(!checked.fresh("s1", "key:b"), "another caller");
        assert!(!checked.fresh("s2", "key:a"), "another session");
        std::thread::sleep(window);
        assert!(!checked.fresh("s1", "key:a"), "stale after the window");
        checked.remember("s1", "key:a");
        checked.forget("s1");
        assert!(!checked.fresh("s1", "key:a"), "forgotten when ended");
    }
}
