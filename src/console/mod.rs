//! The web console at `/console`: server-rendered HTML for the people who
//! run mnemo (and the people memories are about) to see what is kept, fix
//! it and delete it. Served by `mnemo serve --http` on the same port.
//!
//! - `session`: sign-in with an API key (decides the companion as for MCP),
//!   cookie sessions in PostgreSQL, CSRF tokens, sign-out;
//! - `layout`: the one page layout and shared bits of markup (`maud`,
//!   which escapes every value it interpolates);
//! - `assets`: the stylesheet, embedded, served under a content hash;
//! - `memories` (list, filters, search), `memory` (one memory: edit,
//!   archive, restore, delete), `users` (profile, forget a user), `graph`
//!   (a memory's neighbourhood as SVG), `conversations` (contexts and
//!   transcripts), `overview` (counts, growth chart, health).
//!
//! Invariants: every page acts for the session's companion only (its
//! `Scope`), like an MCP request for its key; every POST carries the
//! session's CSRF token and a same-site Origin; forms validate with the
//! tools' own checks (`tools::validate`) and save nothing unless all pass;
//! no inline script or style (the CSP forbids them); the key never appears
//! in a URL, a page or a log.

mod assets;
mod conversations;
mod graph;
mod layout;
mod memories;
mod memory;
mod overview;
mod session;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The one place the console names where `App` lives.
pub(crate) use crate::app::App;
use crate::config::HttpConfig;
use crate::store::StoreError;

/// Shared state of the console's handlers.
pub struct Console {
    pub(crate) app: Arc<App>,
    /// Allowed `Host` names (`None`: any), as for `/mcp`.
    hosts: Option<Vec<String>>,
    /// Origins allowed besides the console's own and loopback ones.
    origins: Vec<String>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl Console {
    /// Whether signing in needs a key: the same flag the MCP guard reads
    /// (`App::keys_required`: once any key was created, across restarts;
    /// the jobs' key watch sets it within seconds of the first key).
    pub(crate) async fn keys_required(&self) -> Result<bool, StoreError> {
        Ok(self.app.keys_required())
    }

    /// Takes one request from `who`'s rate limit (the MCP limit, per
    /// minute); false when it is used up.
    pub(crate) fn allow(&self, who: &str) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if limiter.len() > 10_000 {
            // Forget idle principals so the map stays bounded.
            limiter.retain_recent();
        }
        if limiter.check_key(&who.to_string()).is_ok() {
            return true;
        }
        metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
        false
    }
}

/// The console's routes, to merge into the HTTP server's router.
pub fn router(app: Arc<App>, config: &HttpConfig) -> Router {
    let hosts = (!config.allowed_hosts.iter().any(|h| h == "*")).then(|| {
        ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(String::from)
            .chain(config.allowed_hosts.iter().cloned())
            .collect()
    });
    let limiter = std::num::NonZeroU32::new(config.rate_limit)
        .map(|n| RateLimiter::keyed(Quota::per_minute(n)));
    let console = Arc::new(Console {
        app,
        hosts,
        origins: config.allowed_origins.clone(),
        limiter,
    });
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/", get(overview::page))
        .route(
            "/console/signin",
            get(session::signin_form).post(session::signin),
        )
        .route("/console/signout", post(session::signout))
        .route("/console/memories", get(memories::list))
        .route("/console/search", get(memories::search))
        .route(
            "/console/memories/{id}",
            get(memory::page).post(memory::edit),
        )
        .route("/console/memories/{id}/archive", post(memory::archive))
        .route("/console/memories/{id}/restore", post(memory::restore))
        .route(
            "/console/memories/{id}/delete",
            get(memory::confirm_delete).post(memory::delete),
        )
        .route("/console/memories/{id}/graph", get(graph::page))
        .route("/console/users", get(users::list))
        .route("/console/user", get(users::page))
        .route(
            "/console/user/forget",
            get(users::confirm_forget).post(users::forget),
        )
        .route("/console/conversations", get(conversations::list))
        .route("/console/conversations/{id}", get(conversations::page))
        .route("/console/assets/{name}", get(assets::serve))
        // Not a fallback: the server's other routes keep their own 404.
        .route(
            "/console/{*rest}",
            get(|| async { layout::Oops::NotFound.into_response() }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            session::attach,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            protect,
        ))
        .with_state(console)
}

/// In front of every console route: the same Host check as `/mcp` (DNS
/// rebinding), a same-site Origin on anything but GET, and the security
/// headers on every answer (the rate limit follows in `session::attach`,
/// once the principal is known).
async fn protect(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    let mut response = match check(&console, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    };
    secure_headers(response.headers_mut());
    response
}

fn check(console: &Console, request: &Request) -> Result<(), layout::Oops> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    if let Some(allowed) = &console.hosts
        && !host_allowed(host, allowed)
    {
        return Err(layout::Oops::Forbidden("this Host is not allowed".into()));
    }
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !origin_allowed(headers, host, &console.origins)
    {
        return Err(layout::Oops::Forbidden(
            "cross-site request refused (Origin does not match this console)".into(),
        ));
    }
    Ok(())
}

/// `host` (a Host header, maybe with a port) against the allowed names; an
/// allowed entry with a port matches that port only, as rmcp does for /mcp.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    let name = authority
        .host()
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    allowed.iter().any(|entry| {
        let (entry_host, entry_port) = match entry.parse::<http::uri::Authority>() {
            Ok(a) => (a.host().to_string(), a.port_u16()),
            Err(_) => (entry.clone(), None),
        };
        entry_host
            .trim_matches(['[', ']'])
            .eq_ignore_ascii_case(&name)
            && entry_port.is_none_or(|p| authority.port_u16() == Some(p))
    })
}

/// Whether a state-changing request may come from where its Origin says:
/// the console's own origin, a loopback page, or a configured origin. No
/// Origin at all (not a browser) passes: the CSRF token still has to match.
fn origin_allowed(headers: &HeaderMap, host: &str, configured: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let scheme = if session::is_https(headers) {
        "https"
    } else {
        "http"
    };
    let own = format!("{scheme}://{host}");
    if origin.eq_ignore_ascii_case(&own) || configured.iter().any(|o| o == origin) {
        return true;
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let name = if rest.starts_with('[') {
        rest.split_inclusive(']').next().unwrap_or("")
    } else {
        rest.split(':').next().unwrap_or("")
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
        && host_allowed(
            host,
            &["localhost".into(), "127.0.0.1".into(), "::1".into()],
        )
}

/// Headers on every console answer: a CSP without inline script or style,
/// no framing, no sniffing, no referrer to other sites (URLs carry memory
/// ids; `no-referrer` would also make Chromium send `Origin: null` on the
/// console's own form posts, which the Origin check must refuse), and no
/// caching of pages about people (assets set their own).
fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// The answer to a request the console could not complete.
pub(crate) type Reply = Result<Response, layout::Oops>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_like_mcp() {
        let allowed: Vec<String> = vec![
            "localhost".into(),
            "::1".into(),
            "mnemo.example:8443".into(),
        ];
        assert!(host_allowed("localhost:8080", &allowed));
        assert!(host_allowed("LOCALHOST", &allowed));
        assert!(host_allowed("[::1]:80", &allowed));
        assert!(host_allowed("mnemo.example:8443", &allowed));
        assert!(!host_allowed("mnemo.example:9000", &allowed), "port pinned");
        assert!(!host_allowed("evil.example", &allowed));
        assert!(!host_allowed("", &allowed));
    }

    #[test]
    fn origins_must_be_this_console_or_loopback_or_configured() {
        let mut headers = HeaderMap::new();
        assert!(origin_allowed(&headers, "127.0.0.1:3000", &[]), "no Origin");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:3000"),
        );
        assert!(origin_allowed(&headers, "127.0.0.1:3000", &[]));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&headers, "127.0.0.1:3000", &[]));
        assert!(origin_allowed(
            &headers,
            "127.0.0.1:3000",
            &["https://evil.example".into()]
        ));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_allowed(&headers, "127.0.0.1:3000", &[]));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://localhost:5173"),
        );
        assert!(origin_allowed(&headers, "127.0.0.1:3000", &[]));
        assert!(
            !origin_allowed(&headers, "mnemo.example", &[]),
            "a loopback page may not post to a public console"
        );
    }
}
