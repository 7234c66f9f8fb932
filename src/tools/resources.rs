//! MCP resources: `memory://memories/{id}` and `memory://contexts/{id}`
//! (JSON), and `memory://users/{user_id}/profile` (Markdown: the user's
//! instructions and preferences, what an agent should always know).
//! `resources/list` pages through the profiles of users who have any, then
//! the live contexts; memories are reached through their template.
//!
//! Like the tools, every read is confined to the server's companion; an id
//! of another companion reads as "not found".

use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use serde::Serialize;

use super::output::ToolError;
use super::{MnemoServer, validate};
use crate::store::Scope;
use crate::store::catalog::{Listed, ListedKind};
use crate::store::contexts::{Context, Message, Window};

pub const MEMORY_TEMPLATE: &str = "memory://memories/{id}";
pub const CONTEXT_TEMPLATE: &str = "memory://contexts/{id}";
pub const PROFILE_TEMPLATE: &str = "memory://users/{user_id}/profile";

/// Resources per `resources/list` page.
const PAGE: i64 = 50;
/// Messages a context resource shows: the latest ones.
const CONTEXT_MESSAGES: i64 = 200;

/// A resource URI this server understands.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Memory(String),
    Context(String),
    Profile(String),
}

fn parse(uri: &str) -> Result<Target, ErrorData> {
    let bad = || {
        ErrorData::resource_not_found(
            format!(
                "no resource {}: mnemo serves {MEMORY_TEMPLATE}, {CONTEXT_TEMPLATE} and {PROFILE_TEMPLATE}",
                validate::shown(uri)
            ),
            None,
        )
    };
    let rest = uri.strip_prefix("memory://").ok_or_else(bad)?;
    if let Some(id) = rest.strip_prefix("memories/") {
        return Ok(Target::Memory(id.to_string()));
    }
    if let Some(id) = rest.strip_prefix("contexts/") {
        return Ok(Target::Context(id.to_string()));
    }
    if let Some(user) = rest
        .strip_prefix("users/")
        .and_then(|r| r.strip_suffix("/profile"))
    {
        return percent_decode(user).map(Target::Profile).ok_or_else(bad);
    }
    Err(bad())
}

/// The profile URI of `user`, its id percent-encoded (RFC 3986 unreserved kept).
pub fn profile_uri(user: &str) -> String {
    let mut out = String::from("memory://users/");
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("/profile");
    out
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl ToolError {
    /// The protocol error a resource read reports for this failure.
    pub(crate) fn into_resource_error(self, uri: &str) -> ErrorData {
        match self {
            ToolError::NotFound(m) => {
                ErrorData::resource_not_found(format!("{}: {m}", validate::shown(uri)), None)
            }
            ToolError::Invalid(m) => {
                ErrorData::invalid_params(format!("{}: {m}", validate::shown(uri)), None)
            }
            other => ErrorData::internal_error(other.to_string(), None),
        }
    }
}

/// What `memory://contexts/{id}` holds.
#[derive(Serialize)]
struct ContextResource {
    context: Context,
    /// The latest messages of the resolved log (a fork's inherited ones included), oldest first.
    messages: Vec<Message>,
    /// True when older messages exist: get_context pages through them.
    truncated: bool,
}

fn json(uri: &str, value: &impl Serialize) -> Result<ReadResourceResult, ErrorData> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ErrorData::internal_error(format!("cannot serialize {uri}: {e}"), None))?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type("application/json"),
    ]))
}

fn cursor_error(cursor: &str) -> ErrorData {
    ErrorData::invalid_params(
        format!(
            "cursor {} is not one this server gave out: pass nextCursor from the previous page unchanged",
            validate::shown(cursor)
        ),
        None,
    )
}

fn encode_cursor(l: &Listed) -> String {
    format!("{}_{}", l.kind as i16, l.key)
}

fn decode_cursor(cursor: &str) -> Result<(ListedKind, String), ErrorData> {
    let (kind, key) = match cursor.split_once('_') {
        Some(("0", key)) => (ListedKind::Profile, key),
        Some(("1", key)) => (ListedKind::Context, key),
        _ => return Err(cursor_error(cursor)),
    };
    // A key is a user id or a context id: a NUL would reach SQL as a
    // database error, a huge key would be compared for nothing.
    if key.chars().count() > validate::MAX_USER_CHARS || key.chars().any(char::is_control) {
        return Err(cursor_error(cursor));
    }
    Ok((kind, key.to_string()))
}

impl MnemoServer {
    /// One page of `resources/list`.
    pub(crate) async fn resources_page(
        &self,
        scope: Scope,
        cursor: Option<String>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let after = cursor.as_deref().map(decode_cursor).transpose()?;
        let app = self.app();
        let mut listed = app
            .read(&scope, |s| s.list_listed(&scope, after.clone(), PAGE + 1))
            .await
            .map_err(|e| ToolError::from(e).into_resource_error("resources/list"))?;
        let more = listed.len() as i64 > PAGE;
        listed.truncate(PAGE as usize);
        let next_cursor = if more {
            listed.last().map(encode_cursor)
        } else {
            None
        };
        let resources = listed
            .into_iter()
            .map(|l| match l.kind {
                ListedKind::Profile => {
                    Resource::new(profile_uri(&l.key), format!("{} profile", l.label))
                        .with_title(format!("What to always know about {}", l.label))
                        .with_description(format!(
                            "{}'s instructions and preferences ({})",
                            l.label, l.detail
                        ))
                        .with_mime_type("text/markdown")
                }
                ListedKind::Context => {
                    Resource::new(format!("memory://contexts/{}", l.key), l.label.clone())
                        .with_title(format!("Conversation \"{}\"", l.label))
                        .with_description(format!("Conversation context {}", l.detail))
                        .with_mime_type("application/json")
                }
            })
            .collect();
        let mut result = ListResourcesResult::with_all_items(resources);
        result.next_cursor = next_cursor;
        Ok(result)
    }

    pub(crate) fn resource_templates() -> ListResourceTemplatesResult {
        ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(MEMORY_TEMPLATE, "memory")
                .with_title("A memory")
                .with_description("One memory by id, with all its fields (reading it counts as an access).")
                .with_mime_type("application/json"),
            ResourceTemplate::new(CONTEXT_TEMPLATE, "context")
                .with_title("A conversation context")
                .with_description(format!(
                    "A conversation context and its latest {CONTEXT_MESSAGES} messages (a fork's inherited ones included)."
                ))
                .with_mime_type("application/json"),
            ResourceTemplate::new(PROFILE_TEMPLATE, "profile")
                .with_title("A user's profile")
                .with_description(
                    "The user's standing instructions and preferences: the memories an agent should always know.",
                )
                .with_mime_type("text/markdown"),
        ])
    }

    /// `resources/read`.
    pub(crate) async fn read(
        &self,
        scope: Scope,
        uri: &str,
    ) -> Result<ReadResourceResult, ErrorData> {
        let app = self.app();
        match parse(uri)? {
            Target::Memory(id) => {
                let id = validate::id("id", &id).map_err(|e| not_found(uri, e))?;
                let memory = app
                    .read(&scope, |s| s.get(&scope, id))
                    .await
                    .map_err(|e| ToolError::from(e).into_resource_error(uri))?;
                json(uri, &memory)
            }
            Target::Context(id) => {
                let id = validate::context_id("id", &id).map_err(|e| not_found(uri, e))?;
                let window = Window {
                    since_version: 0,
                    limit: CONTEXT_MESSAGES,
                    newest: true,
                };
                let (context, messages) = app
                    .read(&scope, |s| s.get_context(&scope, id, window))
                    .await
                    .map_err(|e| ToolError::from(e).into_resource_error(uri))?;
                let truncated = (messages.len() as i64) < context.message_count;
                json(
                    uri,
                    &ContextResource {
                        context,
                        messages,
                        truncated,
                    },
                )
            }
            Target::Profile(user) => {
                let user =
                    validate::user(Some(user), &app.default_user).map_err(|e| not_found(uri, e))?;
                let memories = app
                    .read(&scope, |s| s.profile(&scope, &user))
                    .await
                    .map_err(|e| ToolError::from(e).into_resource_error(uri))?;
                let mut text = format!("# What to always know about {user}\n");
                for (kind, heading) in [
                    (crate::store::Kind::Instruction, "Instructions"),
                    (crate::store::Kind::Preference, "Preferences"),
                ] {
                    text.push_str(&format!("\n## {heading}\n\n"));
                    let mut any = false;
                    for m in memories.iter().filter(|m| m.kind == kind) {
                        text.push_str(&format!(
                            "- {} (importance {}, id {})\n",
                            m.content, m.importance, m.id
                        ));
                        any = true;
                    }
                    if !any {
                        text.push_str("None stored.\n");
                    }
                }
                Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(text, uri).with_mime_type("text/markdown"),
                ]))
            }
        }
    }
}

/// A malformed id in a URI names no resource.
fn not_found(uri: &str, e: ToolError) -> ErrorData {
    ErrorData::resource_not_found(format!("no resource {}: {e}", validate::shown(uri)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let uri = profile_uri("ana maría/1");
        assert_eq!(uri, "memory://users/ana%20mar%C3%ADa%2F1/profile");
        assert_eq!(parse(&uri).unwrap(), Target::Profile("ana maría/1".into()));
        assert_eq!(
            parse("memory://contexts/abc").unwrap(),
            Target::Context("abc".into())
        );
        assert!(parse("file:///etc/passwd").is_err());
        assert!(parse("memory://users/%zz/profile").is_err());
    }

    #[test]
    fn listing_cursors_with_keys_sql_cannot_take_are_refused() {
        assert_eq!(
            decode_cursor("0_ana maría").unwrap(),
            (ListedKind::Profile, "ana maría".to_string())
        );
        for bad in [
            "0_a\0",
            "1_\u{7}",
            &format!("0_{}", "x".repeat(257)),
            "2_x",
            "junk",
        ] {
            let e = decode_cursor(bad).unwrap_err();
            assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS, "{bad:?}");
            assert!(e.message.len() < 300, "{}", e.message);
        }
    }
}
