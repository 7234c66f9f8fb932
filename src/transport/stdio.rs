//! MCP over stdin/stdout: one client, for Claude Desktop, Claude Code and
//! other local hosts. Nothing else in mnemo may write to stdout.

use std::sync::Arc;

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::tools::MnemoServer;

/// Serves until the client closes stdin or `shutdown` is cancelled.
pub async fn serve(app: Arc<App>, shutdown: CancellationToken) -> std::io::Result<()> {
    let service = MnemoServer::new(app)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(format!("MCP handshake over stdio failed: {e}")))?;
    let cancel = service.cancellation_token();
    tokio::select! {
        result = service.waiting() => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "stdio session ended with an error");
            }
        }
        _ = shutdown.cancelled() => cancel.cancel(),
    }
    Ok(())
}
