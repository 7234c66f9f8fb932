//! The Conversations pages: each user's conversation contexts, and one
//! context's transcript, numbered by version, with where it was forked
//! from (messages inherited from an ancestor are marked) and its forks.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, Nav, Oops};
use super::memories::user_select;
use super::session::Signed;
use super::{Console, Reply};
use crate::store::contexts::Window;

/// Contexts listed per user.
const CONTEXTS: i64 = 100;
/// Messages shown of one transcript (the newest, if it is longer).
const MESSAGES: i64 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct UserParam {
    #[serde(default)]
    user: String,
}

/// `/console/conversations?user=...`.
pub async fn list(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Query(p): Query<UserParam>,
) -> Reply {
    let store = &console.app.store;
    let users: Vec<_> = store
        .users(&signed.scope)
        .await?
        .into_iter()
        .filter(|u| u.contexts > 0)
        .collect();
    let user = match p.user.trim() {
        "" => users.first().map(|u| u.user_id.clone()).unwrap_or_default(),
        u => u.to_string(),
    };
    let contexts = if user.is_empty() {
        Vec::new()
    } else {
        store
            .list_contexts(&signed.scope, &user, None, None, CONTEXTS)
            .await?
    };
    let body = html! {
        @if users.is_empty() {
            (layout::empty("No conversations yet: append_messages records them."))
        } @else {
            form.filters.card method="get" action="/console/conversations" aria-label="User" {
                (layout::field("user", "User", None, None, user_select("user", &users, &user, false)))
                div.buttons { button type="submit" { "Show" } }
            }
            @if contexts.is_empty() {
                (layout::empty("This user has no conversations."))
            } @else {
                table.wide {
                    thead { tr { th { "Conversation" } th.num { "Messages" } th.num { "Tokens" } th { "Forked from" } th { "Last change" } } }
                    tbody {
                        @for c in &contexts {
                            tr {
                                td { a href=(format!("/console/conversations/{}", c.id)) { (c.name) } }
                                td.num { (c.message_count) }
                                td.num { (c.total_tokens) }
                                td {
                                    @if let (Some(parent), Some(v)) = (c.parent_id, c.fork_version) {
                                        a href=(format!("/console/conversations/{parent}")) { "a parent" } " at version " (v)
                                    }
                                }
                                td { (layout::time(&c.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page("Conversations", Nav::Conversations, Some(&signed), body),
    ))
}

/// `/console/conversations/{id}`: the transcript as the context reads it.
pub async fn page(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Reply {
    let id = Uuid::parse_str(&id).map_err(|_| Oops::NotFound)?;
    let store = &console.app.store;
    let window = Window {
        since_version: 0,
        limit: MESSAGES,
        newest: true,
    };
    let (context, messages) = store.get_context(&signed.scope, id, window).await?;
    let forks = store
        .list_contexts(&signed.scope, &context.user_id, Some(id), None, CONTEXTS)
        .await?;
    let body = html! {
        dl.fields.card {
            dt { "User" } dd { a href=(layout::user_url(&context.user_id)) { (context.user_id) } }
            dt { "Messages" } dd { (context.message_count) " (latest version " (context.latest_version) ")" }
            dt { "Tokens" } dd { (context.total_tokens) }
            dt { "Started" } dd { (layout::time(&context.created_at)) }
            @if let (Some(parent), Some(v)) = (context.parent_id, context.fork_version) {
                dt { "Forked from" } dd { a href=(format!("/console/conversations/{parent}")) { "its parent" } " after version " (v) }
            }
            dt { "Forks" } dd {
                @if forks.is_empty() { "none" }
                @for (i, f) in forks.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(format!("/console/conversations/{}", f.id)) { (f.name) }
                    " (at " (f.fork_version.unwrap_or(0)) ")"
                }
            }
        }
        h2 { "Transcript" }
        @if context.message_count > MESSAGES {
            p.legend { "The newest " (MESSAGES) " messages." }
        }
        @if messages.is_empty() { (layout::empty("No messages yet.")) }
        ol.transcript {
            @for m in &messages {
                li class=(format!("{}{}", m.role.as_str(), if m.context_id == id { "" } else { " inherited" })) {
                    div.meta {
                        "v" (m.version) " · " strong { (m.role.as_str()) }
                        @if let Some(t) = &m.tool_name { " · tool " (t) }
                        @if let Some(model) = &m.model { " · " (model) }
                        " · " (m.token_count) " tokens · " (layout::time(&m.created_at))
                        @if m.context_id != id { " · inherited from an ancestor" }
                    }
                    p.text { (m.content) }
                }
            }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page(&context.name, Nav::Conversations, Some(&signed), body),
    ))
}
