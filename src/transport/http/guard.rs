//! What every MCP request passes before rmcp sees it: authentication
//! (bearer API keys), per-principal rate limiting, and the session check
//! (a session id must be live and belong to the caller).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager as _};
use tokio::sync::Mutex;

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
    limiter: Option<Limiter>,
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
    map: std::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl CheckedSessions {
    fn new(window: Duration) -> Self {
        CheckedSessions {
            window,
            map: Default::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        // A plain map stays usable even if a holder panicked.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checked for `principal` within the window.
    fn fresh(&self, id: &str, principal: &str) -> bool {
        self.map()
            .get(id)
            .is_some_and(|(p, at)| p == principal && at.elapsed() < self.window)
    }

    fn remember(&self, id: &str, principal: &str) {
        let mut map = self.map();
        if map.len() >= SESSION_CACHE_MAX {
            map.retain(|_, (_, at)| at.elapsed() < self.window);
        }
        if map.len() < SESSION_CACHE_MAX {
            map.insert(id.to_owned(), (principal.to_owned(), Instant::now()));
        }
    }

    fn forget(&self, id: &str) {
        self.map().remove(id);
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
            limiter: (per_minute > 0).then(|| Limiter::new(per_minute)),
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
    let principal = match authenticate(&guard, authorization).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if let Some(limiter) = &guard.limiter
        && let Err(retry_after) = limiter.take(&principal.id()).await
    {
        metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
        let secs = retry_after.as_secs().max(1);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("rate limit exceeded: retry in {secs} s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
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

async fn authenticate(guard: &Guard, header: Option<String>) -> Result<Principal, Response> {
    if !guard.app.keys_required() && header.is_none() {
        return Ok(Principal {
            key_id: None,
            scope: guard.app.scope,
        });
    }
    let Some(key) = header
        .as_deref()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return Err(unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ));
    };
    match guard.app.store.find_key(&hash_key(key)).await {
        Ok(Some((key_id, scope))) => Ok(Principal {
            key_id: Some(key_id),
            scope,
        }),
        Ok(None) => Err(unauthorized("invalid, expired or revoked API key")),
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            ))
        }
    }
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

/// Token buckets per principal: `per_minute` requests a minute, bursts up
/// to the same number.
struct Limiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    fn new(per_minute: u32) -> Self {
        Limiter {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token, or says how long until one is free.
    async fn take(&self, who: &str) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().await;
        if buckets.len() > 10_000 {
            // Forget idle principals so the map stays bounded.
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(120));
        }
        let (tokens, at) = buckets
            .entry(who.to_string())
            .or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limiter_allows_a_burst_then_refuses_with_a_wait() {
        let limiter = Limiter::new(3);
        for _ in 0..3 {
            assert!(limiter.take("a").await.is_ok());
        }
        let wait = limiter.take("a").await.unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limiter.take("b").await.is_ok(), "buckets are per principal");
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
