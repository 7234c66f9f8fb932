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
mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

use crate::config::HttpConfig;
use crate::console;
use crate::tools::{App, MnemoServer};
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
    keys_required: bool,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> (Router, Arc<Guard>) {
    let server = MnemoServer::new(app.clone());
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_allowed_origins(
            LOOPBACK_ORIGINS
                .iter()
                .map(|s| s.to_string())
                .chain(config.allowed_origins.iter().cloned()),
        );
    if config.allowed_hosts.iter().any(|h| h == "*") {
        mcp_config = mcp_config.disable_allowed_hosts();
    } else {
        mcp_config = mcp_config.with_allowed_hosts(
            ["localhost", "127.0.0.1", "::1"]
                .into_iter()
                .map(String::from)
                .chain(config.allowed_hosts.iter().cloned()),
        );
    }
    mcp_config.session_store = Some(Arc::new(PgSessionStore {
        app: app.clone(),
        ttl: config.session_ttl,
    }));
    let sessions = Arc::new(LocalSessionManager::default());
    let mcp = StreamableHttpService::new(move || Ok(server.clone()), sessions.clone(), mcp_config);
    let guard = Arc::new(Guard::new(
        app.clone(),
        sessions,
        keys_required,
        config.session_ttl,
        config.rate_limit,
    ));
    // The guard runs first (no body is read for a caller it turns away).
    let mcp = Router::new()
        .route_service("/mcp", mcp)
        .route_layer(axum::middleware::from_fn_with_state(
            config.max_body_bytes,
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
        .with_state(Ops { app, metrics });
    let router = mcp
        .merge(ops)
        .merge(console::router(guard.app.clone(), config, keys_required))
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

/// Ready when the database answers and the embedding model is loaded
/// (migrations were applied before the server started listening).
async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let database = match ops.app.store.db().client().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let model = ops.app.embedder.is_loaded();
    let body = serde_json::json!({ "database": database, "migrations": true, "model": model });
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
    crate::metrics::sample(&ops.app).await;
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
    let keys_required = app.store.has_live_keys().await?;
    let loopback = addr.ip().is_loopback();
    if !loopback && !keys_required && !config.insecure_no_auth {
        return Err(HttpError::NoAuth(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    let metrics = crate::metrics::install();
    let (router, guard) = router(
        app.clone(),
        config,
        keys_required,
        metrics,
        shutdown.clone(),
    );
    spawn_upkeep(guard, shutdown.clone());
    tracing::info!(url = %format!("http://{local}/mcp"), keys_required, "listening");
    // Tests and scripts read this line to find the port when binding :0.
    eprintln!("mnemo: listening on http://{local}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Keeps `keys_required` current (a key created while the server runs
/// takes effect within seconds) and purges expired sessions.
fn spawn_upkeep(guard: Arc<Guard>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Once required, keys stay required: revoking the last key must
            // not silently open the server.
            if !guard.keys_required.load(Ordering::Relaxed)
                && let Ok(true) = guard.app.store.has_live_keys().await
            {
                guard.keys_required.store(true, Ordering::Relaxed);
                tracing::info!("API keys exist now: HTTP requests need one");
            }
            rounds += 1;
            if rounds % 60 == 1 {
                match guard.app.store.purge_sessions().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired sessions deleted"),
                    Err(e) => tracing::warn!(error = %e, "purging sessions failed"),
                }
            }
        }
    });
}
