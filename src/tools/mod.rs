//! The MCP surface: [`MnemoServer`] and its tools, one file per family.
//!
//! - `store`: `store_memory`, `store_memories`
//! - `search`: `search_memories`, `list_memories`
//! - `lifecycle`: `get_memory`, `update_memory`, `archive_memory`, `restore_memory`, `delete_memory`
//! - `relations`: `relate_memories`, `related_memories`
//! - `stats`: `memory_stats`
//! - `contexts`: `append_messages`, `get_context`, `fork_context`, `list_contexts`,
//!   `delete_context`, `search_messages`
//! - `resources`, `prompts`, `complete`: MCP resources, prompts and argument completion
//!
//! Invariant: this layer validates arguments and shapes results; it never
//! writes SQL (that is the store's) and never decides the companion (that is
//! the transport's, through [`App::scope`]).

mod batch;
mod complete;
mod contexts;
mod cursor;
mod lifecycle;
mod logging;
pub mod output;
mod prompts;
mod relations;
pub mod resources;
mod search;
mod stats;
mod store;
pub mod validate;

use std::sync::Arc;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, Extensions,
    Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, prompt_handler, tool_handler};
use tracing::Instrument;

use crate::app::{App, SearchError};
use crate::auth::Principal;
use crate::store::Scope;
use output::ToolError;

pub use contexts::*;
pub use lifecycle::*;
pub use relations::*;
pub use search::*;
pub use stats::*;
pub use store::*;

/// A failed search or query embedding, as the tool reports it.
impl From<SearchError> for ToolError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Store(e) => e.into(),
            SearchError::EmbedderDown(_) | SearchError::NoVector => {
                ToolError::Unavailable(e.to_string())
            }
        }
    }
}

/// The tools that only read. A call of any other tool counts as a write of
/// its companion, whose reads then stay on the primary until a read replica
/// holds it (`App::wrote`); `get_memory` only counts an access in memory.
const READ_ONLY_TOOLS: &[&str] = &[
    "search_memories",
    "list_memories",
    "get_memory",
    "related_memories",
    "memory_stats",
    "get_context",
    "list_contexts",
    "search_messages",
];

/// Notes a write of its companion when dropped.
struct WriteMark<'a>(&'a App, Scope);

impl Drop for WriteMark<'_> {
    fn drop(&mut self) {
        self.0.wrote(&self.1);
    }
}

/// One MCP session's handler: cheap to clone, all state in [`App`].
#[derive(Clone)]
pub struct MnemoServer {
    app: Arc<App>,
    tool_router: ToolRouter<MnemoServer>,
    prompt_router: PromptRouter<MnemoServer>,
    /// What this session asked to hear (`logging/setLevel`).
    log_level: logging::SessionLevel,
}

impl MnemoServer {
    pub fn new(app: Arc<App>) -> Self {
        MnemoServer {
            app,
            tool_router: Self::store_router()
                + Self::search_router()
                + Self::lifecycle_router()
                + Self::relations_router()
                + Self::stats_router()
                + Self::contexts_router(),
            prompt_router: Self::prompts_router(),
            log_level: logging::SessionLevel::default(),
        }
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The companion a call acts for: the authenticated principal's over
    /// HTTP, the configured one otherwise.
    pub(crate) fn scope(&self, ext: &Extensions) -> Scope {
        ext.get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .map(|p| p.scope)
            .unwrap_or(self.app.scope)
    }
}

const INSTRUCTIONS: &str = "mnemo is your long-term memory about the people you talk to. \
Store one self-contained fact, preference, instruction, experience or reflection per memory with \
store_memory (identical content is stored once). Before answering something that may depend on \
the past, call search_memories with a natural-language query. Use update_memory to correct a \
memory (pass expected_updated_at from your last read to avoid overwriting someone else's change), \
archive_memory to hide one that no longer applies, relate_memories to link memories, and \
related_memories to follow those links. Keep conversations with append_messages (pass \
expected_version from your last read), read them back with get_context, branch them with fork_context \
and find past messages with search_messages. Times are RFC 3339; user_id names the person a memory is about.";

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for MnemoServer {
    /// Routes to the tool, recording its latency and outcome.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let started = std::time::Instant::now();
        // Over HTTP, the session and request ids go on every log line of the call.
        let header = |key: &str| {
            context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|p| p.headers.get(key))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let span = tracing::info_span!(
            "tool",
            tool = %name,
            session_id = %header("mcp-session-id"),
            request_id = %header("x-request-id"),
        );
        let peer = context.peer.clone();
        // Dropped when the call returns, or midway if it is cancelled (it
        // may have committed by then).
        let _write = (!READ_ONLY_TOOLS.contains(&name.as_str()))
            .then(|| WriteMark(&self.app, self.scope(&context.extensions)));
        let call = self
            .tool_router
            .call(ToolCallContext::new(self, request, context));
        let (result, notes) = logging::collecting(call.instrument(span)).await;
        logging::send(&peer, &self.log_level, &name, notes).await;
        let outcome = match &result {
            Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => "tool_error",
            Ok(_) => "ok",
            Err(_) => "protocol_error",
        };
        crate::metrics::tool_call(&name, outcome, started.elapsed());
        tracing::debug!(tool = %name, outcome, elapsed_ms = started.elapsed().as_millis() as u64, "tool call");
        result
    }

    #[allow(deprecated, reason = "MCP logging, see tools::logging")]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("mnemo", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.resources_page(
            self.scope(&context.extensions),
            request.and_then(|r| r.cursor),
        )
        .await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(Self::resource_templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(self
            .read(self.scope(&context.extensions), &request.uri)
            .await?
            .into())
    }

    /// `logging/setLevel`: the lowest level of `notifications/message` this
    /// session receives.
    #[allow(deprecated, reason = "MCP logging, see tools::logging")]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tracing::debug!(level = ?request.level, "client set its log level");
        self.log_level.set(request.level);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.completion(self.scope(&context.extensions), request)
            .await
    }
}
