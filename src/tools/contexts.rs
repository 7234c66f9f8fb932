//! Conversation contexts: `append_messages` (optimistic concurrency via
//! `expected_version`, progress and cancellation for large appends),
//! `get_context` (the resolved log of a fork included), `fork_context`,
//! `list_contexts`, `delete_context` (soft) and `search_messages`.
//!
//! Token counts: a message without `token_count` is estimated at one token
//! per four characters, rounded up ([`estimate_tokens`]), the usual rule of
//! thumb for English with GPT-style tokenizers; clients that know the real
//! count should send it.

use chrono::Utc;
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
use crate::store::contexts::{
    AppendTarget, Context, Message, MessageFilter, NewMessage, Role, Window,
};
use crate::store::search::SearchMode;

/// Tokens for `content` when the client gives no count: ceil(chars / 4).
pub fn estimate_tokens(content: &str) -> i32 {
    let chars = content.chars().count();
    i32::try_from(chars.div_ceil(4)).unwrap_or(i32::MAX)
}

#[derive(Debug, Deserialize, JsonSchema)]
// Args checks top-level names only; a misspelt field of a message is an error too.
#[serde(deny_unknown_fields)]
pub struct MessageArgs {
    /// user, assistant, system or tool.
    pub role: Role,
    /// The message text (1 to 65536 characters), stored exactly as given.
    pub content: String,
    /// For assistant tool calls and tool results: the call's id. Required for role "tool".
    pub tool_call_id: Option<String>,
    /// For assistant tool calls and tool results: the tool's name.
    pub tool_name: Option<String>,
    /// Tokens in the message, if you know them. Default: an estimate of one token per 4 characters.
    #[schemars(range(min = 0, max = 10_000_000))]
    pub token_count: Option<i64>,
    /// The model that wrote it (assistant messages), e.g. "claude-sonnet-4".
    pub model: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AppendArgs {
    /// The context to append to. Leave out to start a new context (its id comes back as context_id).
    pub context_id: Option<String>,
    /// Name of the new context (1 to 256 characters); only without context_id. Default: "conversation" and the time.
    pub name: Option<String>,
    /// The user the new context is with; only without context_id. Default: the server's default user.
    pub user_id: Option<String>,
    /// The messages, oldest first (1 to 500). They get consecutive versions.
    pub messages: Vec<MessageArgs>,
    /// The latest_version you last saw (0 for an empty context). If someone appended since,
    /// nothing is appended and the conflict error names the current version.
    #[schemars(range(min = 0))]
    pub expected_version: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AppendResult {
    pub context_id: Uuid,
    /// True when this call started the context.
    pub created: bool,
    /// The versions given to the messages, in order.
    pub versions: Vec<i64>,
    /// The context's version after the append: pass it as expected_version next time.
    pub latest_version: i64,
    pub message_count: i64,
    pub total_tokens: i64,
    /// False when the embedding model was unavailable: search_messages finds the messages by
    /// keyword at once and by meaning once the background job embeds them.
    pub embedded: bool,
}

impl Render for AppendResult {
    fn render(&self) -> String {
        let verb = if self.created {
            "Started"
        } else {
            "Appended to"
        };
        let (first, last) = (
            self.versions.first().copied().unwrap_or_default(),
            self.versions.last().copied().unwrap_or_default(),
        );
        let mut s = format!(
            "{verb} context {}: versions {first} to {last}; now at version {} ({} messages, {} tokens).",
            self.context_id, self.latest_version, self.message_count, self.total_tokens
        );
        if !self.embedded {
            s.push_str(" Embedding deferred: semantic search will find them shortly.");
        }
        s
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetContextArgs {
    /// The context's id.
    pub id: String,
    /// Only messages after this version (exclusive). Default: 0, from the start.
    #[schemars(range(min = 0))]
    pub since_version: Option<i64>,
    /// At most this many messages, 1 to 500. Default: 100.
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ContextResult {
    pub context: Context,
    /// Oldest first. A fork shows its ancestors' messages up to the fork point (their
    /// context_id is the ancestor's), then its own.
    pub messages: Vec<Message>,
    /// Pass this as since_version to read on; absent when there is nothing more.
    pub next_since_version: Option<i64>,
}

impl Render for ContextResult {
    fn render(&self) -> String {
        let c = &self.context;
        let mut out = format!(
            "Context {} \"{}\" with {} at version {} ({} messages, {} tokens)",
            c.id, c.name, c.user_id, c.latest_version, c.message_count, c.total_tokens
        );
        if let (Some(parent), Some(at)) = (c.parent_id, c.fork_version) {
            out.push_str(&format!(", forked from {parent} at version {at}"));
        }
        out.push_str(":\n");
        out.push_str(&transcript(&self.messages));
        if let Some(next) = self.next_since_version {
            out.push_str(&format!("More: pass since_version {next}.\n"));
        }
        out
    }
}

/// Messages as "[version] role: content" lines.
pub(crate) fn transcript(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        let tool = match (&m.tool_name, &m.tool_call_id) {
            (Some(name), Some(id)) => format!(" ({name}, call {id})"),
            (Some(name), None) => format!(" ({name})"),
            (None, Some(id)) => format!(" (call {id})"),
            (None, None) => String::new(),
        };
        out.push_str(&format!(
            "[{}] {}{tool}: {}\n",
            m.version,
            m.role.as_str(),
            m.content
        ));
    }
    out
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ForkArgs {
    /// The context to fork.
    pub id: String,
    /// Fork after this version: the fork shares the messages up to it and continues from
    /// version + 1. 0 forks before the first message. Default: the latest version.
    #[schemars(range(min = 0))]
    pub version: Option<i64>,
    /// The fork's name (1 to 256 characters). Default: the parent's name and the fork point.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ForkResult {
    pub context: Context,
}

impl Render for ForkResult {
    fn render(&self) -> String {
        let c = &self.context;
        format!(
            "Forked context {} \"{}\" from {} at version {}; its next message will be version {}.",
            c.id,
            c.name,
            c.parent_id.map(|p| p.to_string()).unwrap_or_default(),
            c.fork_version.unwrap_or_default(),
            c.latest_version + 1
        )
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListContextsArgs {
    /// Whose contexts. Default: the server's default user.
    pub user_id: Option<String>,
    /// Only the forks of this context.
    pub parent_id: Option<String>,
    /// Page size, 1 to 100. Default: 20.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// The next_cursor of the previous page; leave out for the first page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListContextsResult {
    /// Newest first.
    pub contexts: Vec<Context>,
    /// Pass this as cursor to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl Render for ListContextsResult {
    fn render(&self) -> String {
        let mut out = format!("{} contexts, newest first:\n", self.contexts.len());
        for c in &self.contexts {
            out.push_str(&format!(
                "- [{}] \"{}\" ({} messages, version {}, created {})\n",
                c.id,
                c.name,
                c.message_count,
                c.latest_version,
                c.created_at.format("%Y-%m-%d %H:%M")
            ));
        }
        if let Some(c) = &self.next_cursor {
            out.push_str(&format!("More: pass cursor {c:?}.\n"));
        }
        out
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteContextArgs {
    /// The context's id.
    pub id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteContextResult {
    pub id: Uuid,
    pub deleted: bool,
}

impl Render for DeleteContextResult {
    fn render(&self) -> String {
        format!(
            "Deleted context {}. Its forks keep the history they share with it.",
            self.id
        )
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchMessagesArgs {
    /// What to look for, in natural language (1 to 2048 characters).
    pub query: String,
    /// Whose conversations to search. Default: the server's default user. Ignored with context_id.
    pub user_id: Option<String>,
    /// Search only this context (a fork's inherited messages included).
    pub context_id: Option<String>,
    /// Only messages with these roles.
    pub roles: Option<Vec<Role>>,
    /// "hybrid" (default: meaning and keywords), "semantic" or "keyword".
    pub mode: Option<SearchMode>,
    /// How many results, 1 to 100. Default: 10.
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MessageSearchHit {
    pub message: Message,
    /// The name of the context that wrote the message.
    pub context_name: String,
    pub user_id: String,
    /// Relevance: higher is better. Comparable within one result list only.
    pub score: f64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SearchMessagesResult {
    /// Best first.
    pub results: Vec<MessageSearchHit>,
}

impl Render for SearchMessagesResult {
    fn render(&self) -> String {
        if self.results.is_empty() {
            return "No matching messages.".into();
        }
        let mut out = format!("{} messages, best first:\n", self.results.len());
        for (i, h) in self.results.iter().enumerate() {
            out.push_str(&format!(
                "{}. [context {} \"{}\", version {}] {}: {}\n",
                i + 1,
                h.message.context_id,
                h.context_name,
                h.message.version,
                h.message.role.as_str(),
                h.message.content
            ));
        }
        out
    }
}

fn new_message(field: &str, a: MessageArgs) -> Result<NewMessage, ToolError> {
    let content = validate::message_content(&format!("{field}content"), a.content)?;
    let optional = |name: &str, v: Option<String>| {
        v.map(|v| validate::label(&format!("{field}{name}"), &v))
            .transpose()
    };
    let tool_call_id = optional("tool_call_id", a.tool_call_id)?;
    let tool_name = optional("tool_name", a.tool_name)?;
    let model = optional("model", a.model)?;
    match a.role {
        Role::Tool if tool_call_id.is_none() => {
            return Err(ToolError::invalid(format!(
                "{field}tool_call_id is missing: a message with role \"tool\" must say which call it answers"
            )));
        }
        Role::User | Role::System if tool_call_id.is_some() || tool_name.is_some() => {
            return Err(ToolError::invalid(format!(
                "{field}role is \"{}\": tool_call_id and tool_name belong to assistant and tool messages only",
                a.role.as_str()
            )));
        }
        _ => {}
    }
    let token_count = match a.token_count {
        None => estimate_tokens(&content),
        Some(n @ 0..=validate::MAX_TOKEN_COUNT) => n as i32,
        Some(n) => {
            return Err(ToolError::invalid(format!(
                "{field}token_count is {n}: use 0 to {}, or leave it out for an estimate",
                validate::MAX_TOKEN_COUNT
            )));
        }
    };
    Ok(NewMessage {
        role: a.role,
        content,
        tool_call_id,
        tool_name,
        token_count,
        model,
    })
}

#[tool_router(router = contexts_router, vis = "pub(crate)")]
impl MnemoServer {
    /// Append one or more messages to a conversation context, or start a new context by leaving
    /// out context_id. Returns the versions given to the messages. Pass expected_version (the
    /// latest_version you last saw) so that a concurrent writer cannot interleave silently: on a
    /// mismatch nothing is appended. Sends progress notifications for large appends.
    #[tool(
        output_schema = schema_for_output::<AppendResult>(),
        annotations(title = "Append messages", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    pub async fn append_messages(
        &self,
        Parameters(args): Parameters<Args<AppendArgs>>,
        ext: Extensions,
        context: RequestContext<RoleServer>,
    ) -> ToolResult<AppendResult> {
        let a = args.get("append_messages")?;
        let n = a.messages.len();
        if n == 0 || n > validate::MAX_BATCH {
            return Err(ToolError::invalid(format!(
                "messages has {n} entries: give 1 to {} (split longer transcripts into several calls)",
                validate::MAX_BATCH
            )));
        }
        let expected = validate::version("expected_version", a.expected_version)?;
        let app = self.app();
        let target = match a.context_id {
            Some(id) => {
                if a.name.is_some() || a.user_id.is_some() {
                    return Err(ToolError::invalid(
                        "name and user_id are for starting a new context: leave them out when appending to context_id",
                    ));
                }
                AppendTarget::Existing(validate::context_id("context_id", &id)?)
            }
            None => {
                if expected.is_some_and(|v| v != 0) {
                    return Err(ToolError::invalid(
                        "expected_version must be 0 (or left out) when starting a new context",
                    ));
                }
                AppendTarget::New {
                    user: validate::user(a.user_id, &app.default_user)?,
                    name: match a.name {
                        Some(name) => validate::label("name", &name)?,
                        None => format!("conversation {}", Utc::now().format("%Y-%m-%d %H:%M")),
                    },
                }
            }
        };
        let messages = a
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| new_message(&format!("messages[{i}]."), m))
            .collect::<Result<Vec<_>, _>>()?;
        let texts = messages.iter().map(|m| m.content.clone()).collect();
        let embeddings = self
            .embed_with_progress(texts, &context, "appended")
            .await?;
        let embedded = embeddings.iter().all(Option::is_some);
        // Dropping the store future on cancellation rolls its transaction back.
        let scope = self.scope(&ext);
        let appended = tokio::select! {
            biased;
            _ = context.ct.cancelled() => return Err(super::batch::cancelled("appended")),
            r = app.store.append_messages(
                &scope,
                &target,
                &messages,
                embeddings,
                app.embedder.model_id(),
                expected,
            ) => r?,
        };
        let c = appended.context;
        Ok(Out(AppendResult {
            context_id: c.id,
            created: appended.created,
            versions: appended.versions,
            latest_version: c.latest_version,
            message_count: c.message_count,
            total_tokens: c.total_tokens,
            embedded,
        }))
    }

    /// Read a conversation context and its messages in version order. A fork shows its parent's
    /// messages up to the fork point, then its own; versions keep increasing across the fork, so
    /// since_version and limit page through the whole log.
    #[tool(
        output_schema = schema_for_output::<ContextResult>(),
        annotations(title = "Get a context", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn get_context(
        &self,
        Parameters(args): Parameters<Args<GetContextArgs>>,
        ext: Extensions,
    ) -> ToolResult<ContextResult> {
        let a = args.get("get_context")?;
        let id = validate::context_id("id", &a.id)?;
        let since = validate::version("since_version", a.since_version)?.unwrap_or(0);
        let limit = match a.limit {
            None => 100,
            Some(v) if (1..=validate::MAX_MESSAGE_PAGE).contains(&v) => v,
            Some(v) => {
                return Err(ToolError::invalid(format!(
                    "limit is {v}: use 1 to {}",
                    validate::MAX_MESSAGE_PAGE
                )));
            }
        };
        let app = self.app();
        let window = Window {
            since_version: since,
            limit,
            newest: false,
        };
        let scope = self.scope(&ext);
        let (context, messages) = app
            .read(&scope, |s| s.get_context(&scope, id, window))
            .await?;
        let next_since_version = messages
            .last()
            .map(|m| m.version)
            .filter(|v| *v < context.latest_version && messages.len() as i64 == limit);
        Ok(Out(ContextResult {
            context,
            messages,
            next_since_version,
        }))
    }

    /// Fork a context at a version: the fork shares the messages up to that version (nothing is
    /// copied) and goes its own way from there, numbering its messages from version + 1. The
    /// parent is unchanged.
    #[tool(
        output_schema = schema_for_output::<ForkResult>(),
        annotations(title = "Fork a context", read_only_hint = false, destructive_hint = false, idempotent_hint = false, open_world_hint = false)
    )]
    pub async fn fork_context(
        &self,
        Parameters(args): Parameters<Args<ForkArgs>>,
        ext: Extensions,
    ) -> ToolResult<ForkResult> {
        let a = args.get("fork_context")?;
        let id = validate::context_id("id", &a.id)?;
        let version = validate::version("version", a.version)?;
        let name = a.name.map(|n| validate::label("name", &n)).transpose()?;
        let app = self.app();
        let context = app
            .store
            .fork_context(&self.scope(&ext), id, version, name.as_deref())
            .await?;
        Ok(Out(ForkResult { context }))
    }

    /// List a user's conversation contexts, newest first, one page at a time: pass next_cursor
    /// back as cursor for the next page. With parent_id, only that context's forks.
    #[tool(
        output_schema = schema_for_output::<ListContextsResult>(),
        annotations(title = "List contexts", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn list_contexts(
        &self,
        Parameters(args): Parameters<Args<ListContextsArgs>>,
        ext: Extensions,
    ) -> ToolResult<ListContextsResult> {
        let a = args.get("list_contexts")?;
        let limit = validate::limit(a.limit, 20)?;
        let cursor = a.cursor.as_deref().map(super::cursor::decode).transpose()?;
        let parent = a
            .parent_id
            .map(|p| validate::context_id("parent_id", &p))
            .transpose()?;
        let app = self.app();
        let user = validate::user(a.user_id, &app.default_user)?;
        let scope = self.scope(&ext);
        let mut contexts = app
            .read(&scope, |s| {
                s.list_contexts(&scope, &user, parent, cursor, limit + 1)
            })
            .await?;
        let more = contexts.len() as i64 > limit;
        contexts.truncate(limit as usize);
        let next_cursor = if more {
            contexts
                .last()
                .map(|c| super::cursor::encode(c.created_at, c.id))
        } else {
            None
        };
        Ok(Out(ListContextsResult {
            contexts,
            next_cursor,
        }))
    }

    /// Delete a conversation context. It disappears from reads, lists, search and appends; forks
    /// made from it keep the history they share with it.
    #[tool(
        output_schema = schema_for_output::<DeleteContextResult>(),
        annotations(title = "Delete a context", read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn delete_context(
        &self,
        Parameters(args): Parameters<Args<DeleteContextArgs>>,
        ext: Extensions,
    ) -> ToolResult<DeleteContextResult> {
        let id = validate::context_id("id", &args.get("delete_context")?.id)?;
        let app = self.app();
        app.store.delete_context(&self.scope(&ext), id).await?;
        Ok(Out(DeleteContextResult { id, deleted: true }))
    }

    /// Find messages in a user's conversations relevant to a question, best first, by meaning and
    /// keywords (hybrid, the default), meaning only or keywords only. With context_id, searches
    /// that context's log only (a fork's inherited messages included).
    #[tool(
        output_schema = schema_for_output::<SearchMessagesResult>(),
        annotations(title = "Search messages", read_only_hint = true, open_world_hint = false)
    )]
    pub async fn search_messages(
        &self,
        Parameters(args): Parameters<Args<SearchMessagesArgs>>,
        ext: Extensions,
    ) -> ToolResult<SearchMessagesResult> {
        let a = args.get("search_messages")?;
        let query = validate::query(&a.query)?;
        let limit = validate::limit(a.limit, 10)?;
        let mode = a.mode.unwrap_or_default();
        let app = self.app();
        let filter = MessageFilter {
            user: validate::user(a.user_id, &app.default_user)?,
            context: a
                .context_id
                .map(|c| validate::context_id("context_id", &c))
                .transpose()?,
            roles: a.roles.filter(|r| !r.is_empty()),
        };
        let embedding = match mode {
            SearchMode::Keyword => None,
            _ => Some(app.embed_query(&query).await?),
        };
        let scope = self.scope(&ext);
        let hits = app
            .read(&scope, |s| {
                s.search_messages(&scope, &filter, &query, embedding.clone(), mode, limit)
            })
            .await?;
        Ok(Out(SearchMessagesResult {
            results: hits
                .into_iter()
                .map(|h| MessageSearchHit {
                    message: h.message,
                    context_name: h.context_name,
                    user_id: h.user_id,
                    score: h.score,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_estimated_at_four_characters_each() {
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("héllo wörld!"), 3);
    }
}
