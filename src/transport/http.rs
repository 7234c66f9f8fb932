//! MCP over Streamable HTTP at `/mcp`, plus `/healthz`. Host-header
//! validation guards loopback servers against DNS rebinding.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::tools::{App, MnemoServer};

/// Largest accepted request body: a full `store_memories` batch fits.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The axum router serving MCP for `app`.
pub fn router(app: Arc<App>, addr: SocketAddr, shutdown: CancellationToken) -> Router {
    let server = MnemoServer::new(app);
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .with_max_request_body_bytes(MAX_BODY_BYTES);
    if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
        config = config.with_allowed_hosts([
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            addr.ip().to_string(),
            addr.to_string(),
        ]);
    }
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/mcp", mcp)
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Binds `addr` and serves until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(
    app: Arc<App>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    // Tests and scripts read this line to find the port when binding :0.
    tracing::info!(url = %format!("http://{local}/mcp"), "listening");
    eprintln!("mnemo: listening on http://{local}/mcp");
    let router = router(app, local, shutdown.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
