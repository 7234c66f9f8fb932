//! `completion/complete` for prompt and resource-template arguments: memory
//! kinds, tags, user ids, memory ids and context ids, by prefix, confined to
//! the server's companion.
//!
//! The value typed so far, and the `user_id` of `context.arguments`, are
//! checked like the arguments they belong to before any query: a control
//! character (NUL among them) or a value longer than the argument can be is
//! invalid params (-32602, as MCP 2025-11-25 lists for bad completion
//! requests), never a database error.

use rmcp::ErrorData;
use rmcp::model::{CompleteRequestParams, CompleteResult, CompletionInfo, Reference};

use super::MnemoServer;
use super::output::ToolError;
use super::resources::{CONTEXT_TEMPLATE, MEMORY_TEMPLATE, PROFILE_TEMPLATE};
use super::validate::{self, shown};
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

impl Source {
    /// The longest value the argument takes, in characters, and whether it
    /// may hold control characters (a topic may hold a line break, not a NUL).
    fn limit(self) -> (usize, bool) {
        match self {
            Source::Kinds | Source::Tags => (validate::MAX_TAG_CHARS, false),
            Source::Users => (validate::MAX_USER_CHARS, false),
            // Memory ids are UUIDs; context ids complete by name too.
            Source::MemoryIds => (36, false),
            Source::ContextIds => (validate::MAX_LABEL_CHARS, false),
            Source::Nothing => (validate::MAX_QUERY_CHARS, true),
        }
    }
}

/// `value` of `what` as a (prefix of a) value of an argument of `source`.
fn check(what: &str, value: &str, source: Source) -> Result<(), ErrorData> {
    let (max, controls) = source.limit();
    let chars = value.chars().count();
    let bad = if value.contains('\0') || (!controls && value.chars().any(char::is_control)) {
        "holds a control character"
    } else if chars > max {
        "is too long"
    } else {
        return Ok(());
    };
    Err(ErrorData::invalid_params(
        format!(
            "completion/complete: {what} {} {bad}: the argument takes at most {max} {}characters",
            shown(value),
            if controls { "non-NUL " } else { "printable " }
        ),
        None,
    ))
}

fn source(reference: &Reference, argument: &str) -> Result<Source, ErrorData> {
    let unknown_argument = |what: &str| {
        ErrorData::invalid_params(
            format!("{} has no argument {}", shown(what), shown(argument)),
            None,
        )
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
                format!(
                    "no prompt named {}: the prompts are recall and summarize_context",
                    shown(name)
                ),
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
                    "no resource template {}: the templates are {MEMORY_TEMPLATE}, {CONTEXT_TEMPLATE} and {PROFILE_TEMPLATE}",
                    shown(uri)
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
        let source = source(&request.r#ref, &request.argument.name)?;
        check("value", prefix, source)?;
        let user = request
            .context
            .as_ref()
            .and_then(|c| c.get_argument("user_id"))
            .map(String::as_str)
            .filter(|u| !u.trim().is_empty());
        if let Some(user) = user {
            check("context argument user_id", user, Source::Users)?;
        }
        let app = self.app();
        let store = &app.store;
        let scope = &scope;
        // One more than allowed tells whether there are more.
        let limit = MAX_VALUES + 1;
        let values = match source {
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
