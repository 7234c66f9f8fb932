//! MCP over Streamable HTTP at `/mcp`, and the operations endpoints
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! - `guard`: API keys, rate limits, session ownership;
//! - `body`: JSON-RPC framing checks (parse error, invalid request, body size)
//!   that rmcp would answer with the wrong status;
//! - `sessions`: rmcp's session store on PostgreSQL, so sessions survive
//!   restarts and move between replicas (no sticky sessions needed);
//! - Host and Origin validation against DNS rebinding (rmcp), CORS for
//!   browser clients (tower-http), a request id on every log line.

mod body;
mod guard;
mod listener;
mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::config::HttpConfig;
use crate::console;
use crate::tools::MnemoServer;
use guard::Guard;
use sessions::PgSessionStore;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "refusing to serve {0} without API keys: anyone who can reach it could read and change every \
         memory. Create a key with `mnemo token create --companion NAME`, or bind 127.0.0.1, or pass \
         --insecure-no-auth if something in front of mnemo authenticates"
    )]
    NoAuth(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// rmcp's default interval between SSE keep-alive comments.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long an idle session stays in rmcp's memory (its own default).
const IN_MEMORY_SESSION_IDLE: Duration = Duration::from_secs(300);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Origins of pages served from this machine: always allowed.
const LOOPBACK_ORIGINS: [&str; 6] = [
    "http://localhost:*",
    "http://127.0.0.1:*",
    "http://[::1]:*",
    "https://localhost:*",
    "https://127.0.0.1:*",
    "https://[::1]:*",
];

#[derive(Clone)]
struct Ops {
    app: Arc<App>,
    metrics: Option<PrometheusHandle>,
}

/// The router serving MCP and the operations endpoints for `app`.
pub fn router(
    app: Arc<App>,
    config: &HttpConfig,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> (Router, Arc<Guard>) {
    let server = MnemoServer::new(app.clone());
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(config.max_body_bytes)
        // A keep-alive comment well inside the idle timeout, so the listener
        // never takes a live event stream for an idle connection.
        .with_sse_keep_alive(Some(SSE_KEEP_ALIVE.min(config.idle_timeout / 2)))
        .with_allowed_origins(
            LOOPBACK_ORIGINS
                .iter()
                .map(|s| s.to_string())
                .chain(config.allowed_origins.iter().cloned()),
        );
    let hosts = AllowedHosts::new(&config.allowed_hosts);
    mcp_config = match &hosts.0 {
        None => mcp_config.disable_allowed_hosts(),
        Some(names) => mcp_config.with_allowed_hosts(names.iter().cloned()),
    };
    mcp_config.session_store = Some(Arc::new(PgSessionStore {
        app: app.clone(),
        ttl: config.session_ttl,
    }));
    let mut sessions = LocalSessionManager::default();
    // Memory holds only recently active sessions; the row in
    // `companion_sessions` keeps a session for its whole TTL, and one evicted
    // from memory is restored from its row on its next request, as after a
    // restart. Keeping every session in memory for the TTL (a week by
    // default) would let abandoned sessions pile up.
    sessions.session_config.keep_alive = Some(IN_MEMORY_SESSION_IDLE.min(config.session_ttl));
    let sessions = Arc::new(sessions);
    let mcp = StreamableHttpService::new(move || Ok(server.clone()), sessions.clone(), mcp_config);
    let guard = Arc::new(Guard::new(
        app.clone(),
        sessions,
        config.session_ttl,
        config.rate_limit,
    ));
    // The guard runs first (no body is read for a caller it turns away).
    let mcp = Router::new()
        .route_service("/mcp", mcp)
        .route_layer(axum::middleware::from_fn_with_state(
            body::BodyLimits {
                max_bytes: config.max_body_bytes,
                timeout: config.body_timeout,
            },
            body::check,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            guard::guard,
        ));
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            check_host,
        ))
        .with_state(Ops { app, metrics });
    let router = mcp
        .merge(ops)
        .merge(console::router(guard.app.clone(), config))
        .layer(cors(&config.allowed_origins))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %header("x-request-id"),
                    session_id = %header("mcp-session-id"),
                )
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    (router, guard)
}

/// CORS for browser clients: the configured origins (and loopback) may call
/// `/mcp` and read the session id header.
fn cors(origins: &[String]) -> CorsLayer {
    let configured: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            configured.contains(origin) || is_loopback_origin(origin)
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::header::ACCEPT,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([HeaderName::from_static("mcp-session-id")])
        .max_age(Duration::from_secs(3600))
}

fn is_loopback_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let host = if rest.starts_with('[') {
        rest.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        rest.split(':').next().unwrap_or("").to_string()
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

/// Host names accepted (rmcp checks them on `/mcp`, [`check_host`] on the
/// operations endpoints); `None` accepts any.
struct AllowedHosts(Option<Vec<String>>);

impl AllowedHosts {
    fn new(configured: &[String]) -> Self {
        if configured.iter().any(|h| h == "*") {
            return AllowedHosts(None);
        }
        let loopback = ["localhost", "127.0.0.1", "::1"].map(String::from);
        AllowedHosts(Some(
            loopback
                .into_iter()
                .chain(configured.iter().cloned())
                .collect(),
        ))
    }

    /// A DNS-rebinding page always sends its own DNS name, so an IP literal
    /// (what Kubernetes probes send) and a missing Host are safe to accept.
    fn allows(&self, host: Option<&str>) -> bool {
        let (Some(names), Some(host)) = (&self.0, host) else {
            return true;
        };
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        name.parse::<std::net::IpAddr>().is_ok()
            || names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(host))
    }
}

/// The Host check on `/healthz`, `/readyz` and `/metrics`: without it a
/// DNS-rebinding page could read them (issue 16 item 9).
async fn check_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if hosts.allows(host) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "this Host is not allowed: add it to --allowed-hosts\n",
    )
        .into_response()
}

/// Ready when the database answers and the embedding model is loaded
/// (migrations were applied before the server started listening). Read
/// replicas are detail: their reads go to the primary when they cannot
/// serve, so their condition never makes the server unready.
async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let database = match ops.app.store.db().client().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let model = ops.app.embedder.is_loaded();
    let mut body = serde_json::json!({ "database": database, "migrations": true, "model": model });
    let replicas = ops.app.replica_status();
    if !replicas.is_empty() {
        body["replicas"] = serde_json::json!(replicas);
    }
    let status = if database && model {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics_text(State(ops): State<Ops>) -> impl IntoResponse {
    let Some(handle) = &ops.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled\n".to_string(),
        );
    };
    crate::metrics::sample(&ops.app.store, &ops.app.embedder).await;
    (StatusCode::OK, handle.render())
}

/// Binds `addr` and serves until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(
    app: Arc<App>,
    addr: SocketAddr,
    config: &HttpConfig,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let keys_required = app.keys_required();
    let loopback = addr.ip().is_loopback();
    if !loopback && !keys_required && !config.insecure_no_auth {
        return Err(HttpError::NoAuth(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    let metrics = crate::metrics::install();
    let (router, _guard) = router(app.clone(), config, metrics, shutdown.clone());
    tracing::info!(url = %format!("http://{local}/mcp"), keys_required, "listening");
    // Tests and scripts read this line to find the port when binding :0.
    eprintln!("mnemo: listening on http://{local}/mcp");
    let limits = listener::Limits {
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    listener::serve(listener, router, limits, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_hosts_are_loopback_listed_or_ip_literals() {
        let hosts = AllowedHosts::new(&["mnemo.example".to_string()]);
        for ok in [
            None,
            Some("localhost"),
            Some("LOCALHOST:8080"),
            Some("[::1]:80"),
            Some("10.0.0.7:8080"),
            Some("mnemo.example"),
            Some("mnemo.example:443"),
        ] {
            assert!(hosts.allows(ok), "{ok:?}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "localhost.evil",
        ] {
            assert!(!hosts.allows(Some(bad)), "{bad}");
        }
        assert!(AllowedHosts::new(&["*".to_string()]).allows(Some("any.where")));
    }
}
