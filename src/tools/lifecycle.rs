//! One memory at a time: `get_memory`, `update_memory` (optimistic
//! concurrency), `archive_memory`, `restore_memory`, `delete_memory`.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::output::{Args, Out, Render, ToolError, ToolResult};
use super::{MnemoServer, validate};
use crate::embed::Embedder;
use crate::store::{Kind, Memory, MemoryPatch};

#[derive(Debug, Deserialize, JsonSchema)]
pub struct IdArgs {
    /// The memory's id, as returned by store_memory, search_memories or list_memories.
    pub id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MemoryResult {
    pub memory: Memory,
}

impl Render for MemoryResult {
    fn render(&self) -> String {
        let m = &self.memory;
        let mut s = format!(
            "[{}] {} (kind {}, importance {}, confidence {}, user {}, occurred {}, updated_at {})",
            m.id,
            m.content,
            m.kind.as_str(),
            m.importance,
            m.confidence,
            m.user_id,
            m.occurred_at.to_rfc3339(),
            m.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        if !m.tags.is_empty() {
            s.push_str(&format!(" tags: {}", m.tags.join(", ")));
        }
        if m.archived_at.is_some() {
            s.push_str(" [archived]");
        }
        s
    }
}

// The fields of `StoreMemoryArgs` again, on purpose: they are two tools'
// contracts, and each field's description says what that tool does with it
// (a default when storing, "only when given" or "replaces" when updating).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct UpdateArgs {
    /// The memory's id.
    pub id: String,
    /// New content (1 to 32768 characters); the memory is re-embedded.
    pub content: Option<String>,
    pub kind: Option<Kind>,
    /// 0 to 10.
    #[schemars(range(min = 0, max = 10))]
    pub importance: Option<i64>,
    /// 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: Option<f64>,
    /// Replaces all tags.
    pub tags: Option<Vec<String>>,
    /// Replaces the metadata object.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// RFC 3339 or a date.
    pub occurred_at: Option<String>,
    /// New expiry (RFC 3339 or a date in the future). Use this, ttl_hours or clear_expiry.
    pub expires_at: Option<String>,
    /// New expiry, this many hours from now.
    pub ttl_hours: Option<f64>,
    /// True to keep the memory forever.
    pub clear_expiry: Option<bool>,
    /// The updated_at you last read. If the memory changed since, the update is refused
    /// (conflict) instead of overwriting the other change.
    pub expected_updated_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteResult {
    pub id: Uuid,
    pub deleted: bool,
}

impl Render for DeleteResult {
    fn render(&self) -> String {
        format!("Deleted memory {} and its relations.", self.id)
    }
}

#[tool_router(router = lifecycle_router, vis = "pub(crate)")]
impl MnemoServer {
    /// Read one memory by id, with all its fields (including updated_at for update_memory).
    /// Counts as an access in the memory's statistics.
    #[tool(
        output_schema = schema_for_output::<MemoryResult>(),
        annotations(title = "Get a memory", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    pub async fn get_memory(
        &self,
        Parameters(args): Parameters<Args<IdArgs>>,
        ext: Extensions,
    ) -> ToolResult<MemoryResult> {
        let id = validate::id("id", &args.get("get_memory")?.id)?;
        let app = self.app();
        let scope = self.scope(&ext);
        let memory = app.read(&scope, |s| s.get(&scope, id)).await?;
        Ok(Out(MemoryResult { memory }))
    }

    /// Change a memory. Only the fields given change; new content is re-embedded. Pass
    /// expected_updated_at to refuse the update if someone changed the memory since you read it.
    #[tool(
        output_schema = schema_for_output::<MemoryResult>(),
        annotations(title = "Update a memory", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn update_memory(
        &self,
        Parameters(args): Parameters<Args<UpdateArgs>>,
        ext: Extensions,
    ) -> ToolResult<MemoryResult> {
        let a = args.get("update_memory")?;
        let id = validate::id("id", &a.id)?;
        let content = a
            .content
            .as_deref()
            .map(|c| validate::content("content", c))
            .transpose()?;
        let expires_at = match (a.clear_expiry.unwrap_or(false), &a.expires_at, a.ttl_hours) {
            (true, None, None) => Some(None),
            (true, _, _) => {
                return Err(ToolError::invalid(
                    "clear_expiry cannot be combined with expires_at or ttl_hours",
                ));
            }
            (false, None, None) => None,
            (false, at, ttl) => Some(validate::expiry(at.as_deref(), ttl, chrono::Utc::now())?),
        };
        let patch = MemoryPatch {
            content,
            kind: a.kind,
            importance: a
                .importance
                .map(|v| validate::importance("importance", Some(v), 5))
                .transpose()?,
            confidence: a
                .confidence
                .map(|v| validate::unit("confidence", Some(v), 1.0))
                .transpose()?,
            tags: a
                .tags
                .map(|t| validate::tags("tags", Some(t)))
                .transpose()?,
            metadata: a
                .metadata
                .map(|m| validate::metadata("metadata", Some(serde_json::Value::Object(m))))
                .transpose()?,
            occurred_at: validate::time("occurred_at", a.occurred_at.as_deref())?,
            expires_at,
        };
        let expected = validate::time("expected_updated_at", a.expected_updated_at.as_deref())?;
        let app = self.app();
        let embedding = match &patch.content {
            Some(c) => {
                let embedding = app
                    .embed_or_defer(vec![c.clone()])
                    .await
                    .and_then(|mut v| v.pop());
                if embedding.is_none() {
                    super::logging::embedding_deferred();
                }
                embedding
            }
            None => None,
        };
        let memory = app
            .store
            .update(
                &self.scope(&ext),
                id,
                &patch,
                embedding,
                app.embedder.model_id(),
                expected,
            )
            .await?;
        Ok(Out(MemoryResult { memory }))
    }

    /// Archive a memory that no longer applies: it is kept, but search and list skip it unless
    /// include_archived is true. restore_memory brings it back.
    #[tool(
        output_schema = schema_for_output::<MemoryResult>(),
        annotations(title = "Archive a memory", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn archive_memory(
        &self,
        Parameters(args): Parameters<Args<IdArgs>>,
        ext: Extensions,
    ) -> ToolResult<MemoryResult> {
        let id = validate::id("id", &args.get("archive_memory")?.id)?;
        let app = self.app();
        let memory = app.store.archive(&self.scope(&ext), id).await?;
        Ok(Out(MemoryResult { memory }))
    }

    /// Bring an archived memory back into search and list results.
    #[tool(
        output_schema = schema_for_output::<MemoryResult>(),
        annotations(title = "Restore a memory", read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn restore_memory(
        &self,
        Parameters(args): Parameters<Args<IdArgs>>,
        ext: Extensions,
    ) -> ToolResult<MemoryResult> {
        let id = validate::id("id", &args.get("restore_memory")?.id)?;
        let app = self.app();
        let memory = app.store.restore(&self.scope(&ext), id).await?;
        Ok(Out(MemoryResult { memory }))
    }

    /// Delete a memory for good, with every relation to or from it. Cannot be undone; prefer
    /// archive_memory when the memory might matter again.
    #[tool(
        output_schema = schema_for_output::<DeleteResult>(),
        annotations(title = "Delete a memory", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn delete_memory(
        &self,
        Parameters(args): Parameters<Args<IdArgs>>,
        ext: Extensions,
    ) -> ToolResult<DeleteResult> {
        let id = validate::id("id", &args.get("delete_memory")?.id)?;
        let app = self.app();
        app.store.delete(&self.scope(&ext), id).await?;
        Ok(Out(DeleteResult { id, deleted: true }))
    }
}
