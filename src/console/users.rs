//! The Users pages: everyone the companion keeps something about; one
//! user's profile (instructions and preferences, as the profile resource
//! shows them), memories and conversations; and "forget this user", which
//! deletes all of it after the person types the user's id to confirm.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;

use super::layout::{self, Nav, Oops};
use super::session::Signed;
use super::{Console, Reply};
use crate::store::console::{Browse, MemoryState};
use crate::tools::validate;

/// Memories and conversations shown on a user's page.
const USER_PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct UserParam {
    #[serde(default)]
    id: String,
    #[serde(default)]
    done: String,
}

/// `/console/users`.
pub async fn list(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Query(p): Query<UserParam>,
) -> Reply {
    let users = console.app.store.users(&signed.scope).await?;
    let body = html! {
        @if p.done == "forgotten" {
            (layout::notice("Forgotten: every memory, relation and conversation about that user is gone.", false))
        }
        @if users.is_empty() {
            (layout::empty("No users yet: memories stored through MCP appear here."))
        } @else {
            table.wide {
                thead { tr { th { "User" } th.num { "Memories" } th.num { "Conversations" } th { "Last stored" } } }
                tbody {
                    @for u in &users {
                        tr {
                            td { a href=(layout::user_url(&u.user_id)) { (u.user_id) } }
                            td.num { (u.memories) }
                            td.num { (u.contexts) }
                            td { @if let Some(t) = &u.last_seen_at { (layout::time(t)) } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page("Users", Nav::Users, Some(&signed), body),
    ))
}

fn user_id(text: &str) -> Result<String, Oops> {
    validate::user(Some(text.to_string()), "").map_err(|_| Oops::NotFound)
}

/// `/console/user?id=...`.
pub async fn page(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Query(p): Query<UserParam>,
) -> Reply {
    let user = user_id(&p.id)?;
    let store = &console.app.store;
    let profile = store.profile(&signed.scope, &user).await?;
    let filter = Browse {
        user: Some(user.clone()),
        state: MemoryState::All,
        ..Browse::default()
    };
    let memories = store
        .browse_memories(&signed.scope, &filter, None, USER_PAGE)
        .await?;
    let contexts = store
        .list_contexts(&signed.scope, &user, None, None, USER_PAGE)
        .await?;
    if memories.is_empty() && contexts.is_empty() {
        return Err(Oops::NotFound);
    }
    let (instructions, preferences): (Vec<_>, Vec<_>) = profile
        .iter()
        .partition(|m| m.kind == crate::store::Kind::Instruction);
    let body = html! {
        div.columns {
            section aria-labelledby="instr-h" {
                h2 #instr-h { "Instructions" }
                @if instructions.is_empty() { (layout::empty("None.")) }
                ul.memories { @for m in &instructions { (layout::memory_row(m, None)) } }
            }
            section aria-labelledby="pref-h" {
                h2 #pref-h { "Preferences" }
                @if preferences.is_empty() { (layout::empty("None.")) }
                ul.memories { @for m in &preferences { (layout::memory_row(m, None)) } }
            }
        }
        section aria-labelledby="mem-h" {
            h2 #mem-h { "Memories" }
            p { a href=(format!("/console/memories?user={}&state=all", layout::encode(&user))) { "Filter and page through all of them" } }
            @if memories.is_empty() { (layout::empty("None.")) }
            ul.memories { @for m in &memories { (layout::memory_row(m, None)) } }
        }
        section aria-labelledby="conv-h" {
            h2 #conv-h { "Conversations" }
            @if contexts.is_empty() { (layout::empty("None.")) }
            ul {
                @for c in &contexts {
                    li {
                        a href=(format!("/console/conversations/{}", c.id)) { (c.name) }
                        " — " (c.message_count) " messages, " (layout::time(&c.updated_at))
                    }
                }
            }
        }
        section aria-labelledby="forget-h" {
            h2 #forget-h { "Forget this user" }
            p { "Deletes every memory, relation, conversation and message this companion keeps about "
                strong { (user) } ". It cannot be undone." }
            a.button.danger href=(format!("/console/user/forget?id={}", layout::encode(&user))) { "Forget this user…" }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page(&format!("User {user}"), Nav::Users, Some(&signed), body),
    ))
}

fn forget_page(
    signed: &Signed,
    user: &str,
    typed: &str,
    error: Option<&str>,
    status: StatusCode,
) -> axum::response::Response {
    let body = html! {
        p { "This deletes everything this companion keeps about " strong { (user) } ": memories, their \
             relations, conversations and their messages. It cannot be undone." }
        form.card method="post" action="/console/user/forget" {
            (layout::csrf(signed))
            input type="hidden" name="id" value=(user);
            (layout::field("confirm", "Type the user id to confirm", Some(user), error, html! {
                input #confirm type="text" name="confirm" value=(typed) autocomplete="off" spellcheck="false" required
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[layout::described_by("confirm", true, error.is_some())];
            }))
            div.actions {
                button.danger type="submit" { "Forget this user" }
                a.button.secondary href=(layout::user_url(user)) { "Cancel" }
            }
        }
    };
    layout::reply(
        status,
        layout::page(&format!("Forget {user}?"), Nav::Users, Some(signed), body),
    )
}

/// `GET /console/user/forget?id=...`: the typed confirmation.
pub async fn confirm_forget(signed: Signed, Query(p): Query<UserParam>) -> Reply {
    let user = user_id(&p.id)?;
    Ok(forget_page(&signed, &user, "", None, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
pub struct ForgetForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /console/user/forget`: only when the typed id matches.
pub async fn forget(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Form(f): Form<ForgetForm>,
) -> Reply {
    let user = user_id(&f.id)?;
    if f.confirm.trim() != user {
        return Ok(forget_page(
            &signed,
            &user,
            &f.confirm,
            Some(&format!(
                "type {user:?} exactly to confirm; nothing was deleted"
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        ));
    }
    let gone = console.app.store.forget_user(&signed.scope, &user).await?;
    tracing::info!(
        memories = gone.memories,
        relations = gone.relations,
        contexts = gone.contexts,
        messages = gone.messages,
        "console: user forgotten"
    );
    Ok(Redirect::to("/console/users?done=forgotten").into_response())
}
