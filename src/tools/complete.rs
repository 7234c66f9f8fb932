//! `completion/complete` for prompt and resource-template arguments: memory
//! kinds, tags, user ids, memory ids and context ids, by prefix, confined to
//! the server's companion.

use rmcp::ErrorData;
use rmcp::model::{CompleteRequestParams, CompleteResult, CompletionInfo, Reference};

use super::MnemoServer;
use super::output::ToolError;
use super::resources::{CONTEXT_TEMPLATE, MEMORY_TEMPLATE, PROFILE_TEMPLATE};
use crate::store::Kind;
use crate::store::Scope;

/// Values per completion (the MCP maximum).
const MAX_VALUES: i64 = CompletionInfo::MAX_VALUES as i64;

/// What an argument completes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Kinds,
    Tags,
    Users,
    MemoryIds,
    ContextIds,
    Nothing,
}

fn source(reference: &Reference, argument: &str) -> Result<Source, ErrorData> {
    let unknown_argument = |what: &str| {
        ErrorData::invalid_params(format!("{what} has no argument {argument:?}"), None)
    };
    match reference {
        Reference::Prompt(p) => match (p.name.as_str(), argument) {
            ("recall", "kind") => Ok(Source::Kinds),
            ("recall", "tag") => Ok(Source::Tags),
            ("recall", "user_id") => Ok(Source::Users),
            ("recall", "topic") => Ok(Source::Nothing),
            ("summarize_context", "context_id") => Ok(Source::ContextIds),
            ("summarize_context", "since_version") => Ok(Source::Nothing),
            ("recall" | "summarize_context", _) => Err(unknown_argument(&p.name)),
            (name, _) => Err(ErrorData::invalid_params(
                format!("no prompt named {name:?}: the prompts are recall and summarize_context"),
                None,
            )),
        },
        Reference::Resource(r) => match (r.uri.as_str(), argument) {
            (MEMORY_TEMPLATE, "id") => Ok(Source::MemoryIds),
            (CONTEXT_TEMPLATE, "id") => Ok(Source::ContextIds),
            (PROFILE_TEMPLATE, "user_id") => Ok(Source::Users),
            (MEMORY_TEMPLATE | CONTEXT_TEMPLATE | PROFILE_TEMPLATE, _) => {
                Err(unknown_argument(&r.uri))
            }
            (uri, _) => Err(ErrorData::invalid_params(
                format!(
                    "no resource template {uri:?}: the templates are {MEMORY_TEMPLATE}, {CONTEXT_TEMPLATE} and {PROFILE_TEMPLATE}"
                ),
                None,
            )),
        },
        _ => Err(ErrorData::invalid_params(
            "completion works for prompts and resource templates only",
            None,
        )),
    }
}

impl MnemoServer {
    pub(crate) async fn completion(
        &self,
        scope: Scope,
        request: CompleteRequestParams,
    ) -> Result<CompleteResult, ErrorData> {
        let prefix = request.argument.value.as_str();
        let user = request
            .context
            .as_ref()
            .and_then(|c| c.get_argument("user_id"))
            .map(String::as_str)
            .filter(|u| !u.trim().is_empty());
        let app = self.app();
        let store = &app.store;
        let scope = &scope;
        // One more than allowed tells whether there are more.
        let limit = MAX_VALUES + 1;
        let values = match source(&request.r#ref, &request.argument.name)? {
            Source::Nothing => Ok(Vec::new()),
            Source::Kinds => Ok(Kind::ALL
                .iter()
                .map(|k| k.as_str())
                .filter(|k| k.starts_with(prefix.trim()))
                .map(String::from)
                .collect()),
            Source::Tags => store.complete_tags(scope, prefix, user, limit).await,
            Source::Users => store.complete_users(scope, prefix, limit).await,
            Source::MemoryIds => store.complete_memory_ids(scope, prefix, limit).await,
            Source::ContextIds => store.complete_context_ids(scope, prefix, limit).await,
        }
        .map_err(|e| ToolError::from(e).into_prompt_error("completion/complete"))?;
        let more = values.len() as i64 > MAX_VALUES;
        let mut values = values;
        values.truncate(MAX_VALUES as usize);
        let completion = CompletionInfo::with_pagination(values, None, more)
            .map_err(|e| ErrorData::internal_error(e, None))?;
        Ok(CompleteResult::new(completion))
    }
}
