//! MCP prompts: `recall` (the memories relevant to a topic, filled in) and
//! `summarize_context` (a context's transcript with instructions to
//! summarise it and keep what lasts). Prompt arguments are strings, per MCP.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::Extensions;
use rmcp::model::{GetPromptResult, PromptMessage, Role as PromptRole};
use rmcp::{ErrorData, prompt, prompt_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::output::{Args, ToolError};
use super::{MnemoServer, validate};
use crate::store::Scope;
use crate::store::contexts::Window;
use crate::store::search::{Query, SearchMode};
use crate::store::{Kind, ListFilter};

/// Memories `recall` fills in.
const RECALL_LIMIT: i64 = 10;
/// Messages `summarize_context` includes per call.
const SUMMARY_MESSAGES: i64 = 500;

impl ToolError {
    /// The protocol error a prompt reports for this failure: a bad or
    /// unknown argument is invalid params, anything else internal.
    pub(crate) fn into_prompt_error(self, prompt: &str) -> ErrorData {
        match self {
            ToolError::Invalid(m) | ToolError::NotFound(m) => {
                ErrorData::invalid_params(format!("{prompt}: {m}"), None)
            }
            other => ErrorData::internal_error(format!("{prompt}: {other}"), None),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RecallArgs {
    /// What the conversation is about, e.g. "Ana's trip to Japan" (1 to 2048 characters).
    pub topic: String,
    /// Whose memories. Default: the server's default user.
    pub user_id: Option<String>,
    /// Only this kind of memory: fact, experience, preference, instruction or reflection.
    pub kind: Option<String>,
    /// Only memories with this tag.
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SummarizeArgs {
    /// The context to summarise.
    pub context_id: String,
    /// Summarise only messages after this version. Default: 0, the whole conversation.
    pub since_version: Option<String>,
}

/// A kind named in a string argument.
pub(crate) fn parse_kind(field: &str, value: &str) -> Result<Kind, ToolError> {
    Kind::ALL
        .iter()
        .copied()
        .find(|k| k.as_str() == value.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            ToolError::invalid(format!(
                "{field} {} is not a kind of memory: use one of {}",
                validate::shown(value),
                names.join(", ")
            ))
        })
}

impl MnemoServer {
    async fn recall_prompt(
        &self,
        scope: Scope,
        a: RecallArgs,
    ) -> Result<GetPromptResult, ToolError> {
        let topic = validate::query(&a.topic).map_err(|_| {
            ToolError::invalid(format!(
                "topic must be 1 to {} characters without NUL",
                validate::MAX_QUERY_CHARS
            ))
        })?;
        let app = self.app();
        let user = validate::user(a.user_id, &app.default_user)?;
        let kinds = a
            .kind
            .filter(|k| !k.trim().is_empty())
            .map(|k| parse_kind("kind", &k).map(|k| vec![k]))
            .transpose()?;
        let tags_any = a
            .tag
            .filter(|t| !t.trim().is_empty())
            .map(|t| validate::tags("tag", Some(vec![t])))
            .transpose()?;
        let filter = ListFilter {
            user: user.clone(),
            kinds,
            tags_any,
            ..ListFilter::default()
        };
        // A prompt should still work while the model loads or is down:
        // keywords alone then.
        let query = Query::new(topic.clone(), SearchMode::Hybrid, RECALL_LIMIT);
        let hits = app.search(&scope, &filter, &query, true).await?;
        let text = if hits.is_empty() {
            format!(
                "You have no memories about {user} that match \"{topic}\". If the conversation \
                 reveals something worth keeping, store it with store_memory."
            )
        } else {
            let mut text = format!(
                "Here is what you remember about {user} that bears on \"{topic}\", most relevant first:\n\n"
            );
            for (i, h) in hits.iter().enumerate() {
                let m = &h.memory;
                text.push_str(&format!(
                    "{}. ({}, {}, importance {}) {} [memory {}]\n",
                    i + 1,
                    m.kind.as_str(),
                    m.occurred_at.format("%Y-%m-%d"),
                    m.importance,
                    m.content,
                    m.id
                ));
            }
            text.push_str(
                "\nUse these memories in your answer where they help. Correct any that turn out \
                 wrong with update_memory; search_memories finds more.",
            );
            text
        };
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(PromptRole::User, text)])
                .with_description(format!("Memories about {user} relevant to \"{topic}\"")),
        )
    }

    async fn summarize_prompt(
        &self,
        scope: Scope,
        a: SummarizeArgs,
    ) -> Result<GetPromptResult, ToolError> {
        let id = validate::context_id("context_id", &a.context_id)?;
        let since = match a.since_version.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(v) => v.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                ToolError::invalid(format!(
                    "since_version {} is not a version: use a whole number, 0 or more",
                    validate::shown(v)
                ))
            })?,
        };
        let app = self.app();
        let window = Window {
            since_version: since,
            limit: SUMMARY_MESSAGES,
            newest: false,
        };
        let (context, messages) = app
            .read(&scope, |s| s.get_context(&scope, id, window))
            .await?;
        let mut text = format!(
            "Summarise the conversation \"{}\" with {} below (versions {} to {}). Keep the decisions, \
             facts learned about {}, open questions and commitments; drop small talk. Then store each \
             lasting fact, preference or instruction with store_memory (user_id \"{}\").\n\n",
            context.name,
            context.user_id,
            messages.first().map_or(since, |m| m.version),
            messages.last().map_or(since, |m| m.version),
            context.user_id,
            context.user_id,
        );
        if messages.is_empty() {
            text.push_str("(No messages in this range.)\n");
        }
        text.push_str(&super::contexts::transcript(&messages));
        if let Some(last) = messages.last()
            && last.version < context.latest_version
        {
            text.push_str(&format!(
                "\n(The conversation goes on after version {}: summarise the rest with since_version {}.)\n",
                last.version, last.version
            ));
        }
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(PromptRole::User, text)])
                .with_description(format!("Summarise conversation \"{}\"", context.name)),
        )
    }
}

#[prompt_router(router = "prompts_router", vis = "pub(crate)")]
impl MnemoServer {
    /// Recall what you know about a user that bears on a topic: fills in the most relevant
    /// memories (hybrid search), ready to answer with.
    #[prompt(name = "recall", title = "Recall memories about a topic")]
    pub async fn recall(
        &self,
        Parameters(args): Parameters<Args<RecallArgs>>,
        ext: Extensions,
    ) -> Result<GetPromptResult, ErrorData> {
        let args = args
            .get("recall")
            .map_err(|e| e.into_prompt_error("recall"))?;
        self.recall_prompt(self.scope(&ext), args)
            .await
            .map_err(|e| e.into_prompt_error("recall"))
    }

    /// Summarise a conversation context: its transcript (a fork's inherited messages included)
    /// with instructions to summarise it and store what lasts as memories.
    #[prompt(name = "summarize_context", title = "Summarise a conversation")]
    pub async fn summarize_context(
        &self,
        Parameters(args): Parameters<Args<SummarizeArgs>>,
        ext: Extensions,
    ) -> Result<GetPromptResult, ErrorData> {
        let args = args
            .get("summarize_context")
            .map_err(|e| e.into_prompt_error("summarize_context"))?;
        self.summarize_prompt(self.scope(&ext), args)
            .await
            .map_err(|e| e.into_prompt_error("summarize_context"))
    }
}
