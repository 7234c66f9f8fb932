//! `store_memory` and `store_memories`: validation, embedding (deferred to
//! the backfill job when the embedder is down), progress for batches.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use rmcp::{RoleServer, service::RequestContext, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::output::{Args, Out, Render, ToolError, ToolResult};
use super::{MnemoServer, validate};
use crate::embed::Embedder;
use crate::store::{Kind, NewMemory};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StoreMemoryArgs {
    /// The memory, in plain words and self-contained (1 to 32768 characters), e.g.
    /// "Ana is allergic to peanuts". Store one fact or event per memory.
    pub content: String,
    /// What kind of memory this is. Default: fact.
    pub kind: Option<Kind>,
    /// How much it matters, 0 (trivial) to 10 (critical). Default: 5.
    #[schemars(range(min = 0, max = 10))]
    pub importance: Option<i64>,
    /// How sure you are that it is true, 0 to 1. Default: 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: Option<f64>,
    /// Short labels for filtering, e.g. ["health", "food"] (at most 32, each at most 64 characters).
    pub tags: Option<Vec<String>>,
    /// Any extra structured context as a JSON object (at most 16 KiB).
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The external id of the user this memory is about. Default: the server's default user.
    pub user_id: Option<String>,
    /// When the remembered thing happened: RFC 3339 (2024-05-08T13:56:00Z) or a date (2024-05-08). Default: now.
    pub occurred_at: Option<String>,
    /// When to forget it: RFC 3339 or a date in the future. Use this or ttl_hours.
    pub expires_at: Option<String>,
    /// Forget it after this many hours. Use this or expires_at.
    pub ttl_hours: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StoreMemoryResult {
    /// The memory's id (a UUID).
    pub id: Uuid,
    /// False when identical content was already stored for this user: `id` is that memory.
    pub created: bool,
    /// When the memory will be forgotten (null: never). Storing identical content again keeps
    /// the later of the two expiries, where none is the latest.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// False when the embedding model was unavailable; the memory is kept, keyword search finds
    /// it at once and vector search once the background job embeds it.
    pub embedded: bool,
}

impl Render for StoreMemoryResult {
    fn render(&self) -> String {
        let mut s = if self.created {
            format!("Stored memory {}.", self.id)
        } else {
            format!("Already remembered as {} (identical content).", self.id)
        };
        if !self.embedded {
            s.push_str(" Embedding deferred: vector search will find it shortly.");
        }
        s
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StoreMemoriesArgs {
    /// The memories to store (1 to 500), all or none in one transaction.
    pub memories: Vec<StoreMemoryArgs>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StoreMemoriesResult {
    /// One entry per input memory, in input order.
    pub results: Vec<StoreMemoryResult>,
    /// How many new memories were made.
    pub created: usize,
    /// How many were already stored (identical content).
    pub existing: usize,
}

impl Render for StoreMemoriesResult {
    fn render(&self) -> String {
        let ids: Vec<String> = self.results.iter().map(|r| r.id.to_string()).collect();
        format!(
            "Stored {} memories ({} new, {} already remembered): {}",
            self.results.len(),
            self.created,
            self.existing,
            ids.join(", ")
        )
    }
}

impl MnemoServer {
    fn new_memory(&self, field: &str, a: StoreMemoryArgs) -> Result<NewMemory, ToolError> {
        let now = chrono::Utc::now();
        Ok(NewMemory {
            user: validate::user(a.user_id, &self.app().default_user)?,
            content: validate::content(&format!("{field}content"), &a.content)?,
            kind: a.kind.unwrap_or(Kind::Fact),
            importance: validate::importance(&format!("{field}importance"), a.importance, 5)?,
            confidence: validate::unit(&format!("{field}confidence"), a.confidence, 1.0)?,
            tags: validate::tags(&format!("{field}tags"), a.tags)?,
            metadata: validate::metadata(
                &format!("{field}metadata"),
                a.metadata.map(serde_json::Value::Object),
            )?,
            occurred_at: validate::time(&format!("{field}occurred_at"), a.occurred_at.as_deref())?,
            expires_at: validate::expiry(a.expires_at.as_deref(), a.ttl_hours, now)
                .map_err(|e| ToolError::invalid(format!("{field}{e}")))?,
        })
    }
}

#[tool_router(router = store_router, vis = "pub(crate)")]
impl MnemoServer {
    /// Remember something about a user for later conversations. Identical content already stored
    /// for the same user is not duplicated: its id comes back with created=false.
    #[tool(
        output_schema = schema_for_output::<StoreMemoryResult>(),
        annotations(title = "Store a memory", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn store_memory(
        &self,
        Parameters(args): Parameters<Args<StoreMemoryArgs>>,
        ext: Extensions,
    ) -> ToolResult<StoreMemoryResult> {
        let memory = self.new_memory("", args.get("store_memory")?)?;
        let app = self.app();
        let embedding = app
            .embed_or_defer(vec![memory.content.clone()])
            .await
            .and_then(|mut v| v.pop());
        let embedded = embedding.is_some();
        if !embedded {
            super::logging::embedding_deferred();
        }
        let outcome = app
            .store
            .insert(
                &self.scope(&ext),
                &memory,
                embedding,
                app.embedder.model_id(),
            )
            .await?;
        Ok(Out(StoreMemoryResult {
            id: outcome.id,
            created: outcome.created,
            expires_at: outcome.expires_at,
            embedded,
        }))
    }

    /// Store up to 500 memories at once, in one transaction (all or none). Sends progress
    /// notifications while embedding when the request carries a progress token.
    #[tool(
        output_schema = schema_for_output::<StoreMemoriesResult>(),
        annotations(title = "Store many memories", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn store_memories(
        &self,
        Parameters(args): Parameters<Args<StoreMemoriesArgs>>,
        ext: Extensions,
        context: RequestContext<RoleServer>,
    ) -> ToolResult<StoreMemoriesResult> {
        let args = args.get("store_memories")?;
        let n = args.memories.len();
        if n == 0 || n > validate::MAX_BATCH {
            return Err(ToolError::invalid(format!(
                "memories has {n} entries: give 1 to {} (split larger imports into several calls)",
                validate::MAX_BATCH
            )));
        }
        let memories = args
            .memories
            .into_iter()
            .enumerate()
            .map(|(i, a)| self.new_memory(&format!("memories[{i}]."), a))
            .collect::<Result<Vec<_>, _>>()?;
        let app = self.app();
        let texts = memories.iter().map(|m| m.content.clone()).collect();
        let embeddings = self.embed_with_progress(texts, &context, "stored").await?;
        let embedded: Vec<bool> = embeddings.iter().map(Option::is_some).collect();
        let outcomes = app
            .store
            .insert_batch(
                &self.scope(&ext),
                &memories,
                embeddings,
                app.embedder.model_id(),
            )
            .await?;
        let created = outcomes.iter().filter(|o| o.created).count();
        Ok(Out(StoreMemoriesResult {
            results: outcomes
                .iter()
                .zip(embedded)
                .map(|(o, embedded)| StoreMemoryResult {
                    id: o.id,
                    created: o.created,
                    expires_at: o.expires_at,
                    embedded,
                })
                .collect(),
            created,
            existing: n - created,
        }))
    }
}
