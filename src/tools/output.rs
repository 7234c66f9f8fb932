//! How tool calls answer: [`Out`] (structured content plus a short text
//! rendering), [`ToolError`] (an MCP tool error, `isError: true`, whose text
//! says what was wrong and what is allowed) and [`Args`] (argument decoding
//! that reports bad JSON as a tool error instead of failing the request).

use std::borrow::Cow;

use rmcp::handler::server::tool::IntoCallToolResult;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::store::StoreError;

/// A result a person (or model) can read as text and a program as JSON.
pub trait Render {
    fn render(&self) -> String;
}

/// A successful tool result.
pub struct Out<T>(pub T);

impl<T: Serialize + Render> IntoCallToolResult for Out<T> {
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        let value = serde_json::to_value(&self.0).map_err(|e| {
            rmcp::ErrorData::internal_error(format!("cannot serialize result: {e}"), None)
        })?;
        let mut result = CallToolResult::success(vec![ContentBlock::text(self.0.render())]);
        result.structured_content = Some(value);
        Ok(result.into())
    }
}

/// What a tool reports when it cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments are wrong; the message says how to fix them.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// Someone else changed the data first; re-read and retry.
    #[error("{0}")]
    Conflict(String),
    /// A dependency (database, embedder) is down; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
}

pub type ToolResult<T> = Result<Out<T>, ToolError>;

impl ToolError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ToolError::Invalid(message.into())
    }

    fn code(&self) -> &'static str {
        match self {
            ToolError::Invalid(_) => "invalid_argument",
            ToolError::NotFound(_) => "not_found",
            ToolError::Conflict(_) => "conflict",
            ToolError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, rmcp::ErrorData> {
        let text = format!("{}: {}", self.code(), self);
        // A dependency down is news to the client beyond this one call.
        if let ToolError::Unavailable(_) = self {
            #[allow(deprecated, reason = "MCP logging, see tools::logging")]
            super::logging::note(rmcp::model::LoggingLevel::Error, text.clone());
        }
        Ok(CallToolResult::error(vec![ContentBlock::text(text)]).into())
    }
}

impl From<StoreError> for ToolError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) | StoreError::ContextNotFound(_) => {
                ToolError::NotFound(e.to_string())
            }
            StoreError::Stale { .. }
            | StoreError::DuplicateContent(_)
            | StoreError::VersionConflict { .. } => ToolError::Conflict(e.to_string()),
            StoreError::Constraint(_) | StoreError::VersionOutOfRange { .. } => {
                ToolError::Invalid(e.to_string())
            }
            StoreError::Db(db) => {
                tracing::error!(error = %db, "database error in a tool call");
                ToolError::Unavailable(format!("the database is unavailable: {db}"))
            }
        }
    }
}

/// Tool arguments that always decode: a JSON shape error becomes a
/// [`ToolError`] the caller sees, not a JSON-RPC protocol error. The schema
/// is `T`'s.
pub struct Args<T>(pub Result<T, String>);

impl<T> Args<T> {
    /// The decoded arguments, or the error for `tool`.
    pub fn get(self, tool: &str) -> Result<T, ToolError> {
        self.0
            .map_err(|e| ToolError::Invalid(format!("invalid arguments for {tool}: {e}")))
    }
}

impl<'de, T: DeserializeOwned + JsonSchema + 'static> Deserialize<'de> for Args<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if let Some(unknown) = unknown_argument::<T>(&value) {
            return Ok(Args(Err(unknown)));
        }
        Ok(Args(
            serde_json::from_value(value).map_err(|e| e.to_string()),
        ))
    }
}

/// A misspelt argument is an error, not silently ignored: the allowed names
/// come from `T`'s schema (which also covers flattened fields).
fn unknown_argument<T: JsonSchema + 'static>(value: &serde_json::Value) -> Option<String> {
    let object = value.as_object()?;
    let schema = rmcp::handler::server::tool::schema_for_type::<T>();
    let allowed = schema.get("properties")?.as_object()?;
    let unknown = object.keys().find(|k| !allowed.contains_key(*k))?;
    let mut names: Vec<&str> = allowed.keys().map(String::as_str).collect();
    names.sort_unstable();
    Some(format!(
        "unknown argument `{unknown}`; the arguments are: {}",
        names.join(", ")
    ))
}

impl<T: JsonSchema> JsonSchema for Args<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
