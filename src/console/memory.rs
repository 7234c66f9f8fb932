//! One memory: every field, its access statistics and its relations in and
//! out; the edit form (content, kind, importance, confidence, tags,
//! `occurred_at`, expiry) with `update_memory`'s optimistic concurrency
//! (the form carries the `updated_at` it was read at); archive, restore,
//! and delete after a confirmation page.
//!
//! A save validates every field with the tools' checks first and writes
//! nothing unless all pass; only the fields that changed are sent, so an
//! unchanged content is not re-embedded.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, Nav, Oops};
use super::memories::{parse_kind, parse_tags};
use super::session::Signed;
use super::{Console, Reply};
use crate::embed::Embedder;
use crate::store::relations::Reached;
use crate::store::{Kind, Memory, MemoryPatch, StoreError};
use crate::tools::validate;

/// Neighbours listed on the page (the graph page shows more hops).
const RELATIONS_LIMIT: i64 = 100;

/// The edit form's values, as typed (all text, so a bad one can be shown
/// back exactly as it was entered).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    content: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    importance: String,
    #[serde(default)]
    confidence: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    occurred_at: String,
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    expected_updated_at: String,
}

impl EditForm {
    fn of(m: &Memory) -> EditForm {
        EditForm {
            content: m.content.clone(),
            kind: m.kind.as_str().into(),
            importance: m.importance.to_string(),
            confidence: m.confidence.to_string(),
            tags: m.tags.join(", "),
            occurred_at: layout::exact(&m.occurred_at),
            expires_at: m.expires_at.as_ref().map(layout::exact).unwrap_or_default(),
            expected_updated_at: layout::exact(&m.updated_at),
        }
    }
}

type Errors = std::collections::BTreeMap<&'static str, String>;

/// The patch `form` asks for against `current`: only changed fields, each
/// checked as `update_memory` checks it. Any error means no patch.
fn patch(form: &EditForm, current: &Memory) -> Result<MemoryPatch, Errors> {
    let mut errors = Errors::new();
    let mut patch = MemoryPatch::default();
    match validate::content("content", &form.content) {
        Ok(c) if c != current.content => patch.content = Some(c),
        Ok(_) => {}
        Err(e) => {
            errors.insert("content", e.to_string());
        }
    }
    match parse_kind(form.kind.trim()) {
        Ok(k) if k != current.kind => patch.kind = Some(k),
        Ok(_) => {}
        Err(e) => {
            errors.insert("kind", e);
        }
    }
    let importance = form.importance.trim();
    match importance.parse::<i64>() {
        Ok(v) => match validate::importance("importance", Some(v), current.importance) {
            Ok(v) if v != current.importance => patch.importance = Some(v),
            Ok(_) => {}
            Err(e) => {
                errors.insert("importance", e.to_string());
            }
        },
        Err(_) => {
            errors.insert(
                "importance",
                format!("importance {importance:?} is not a whole number: use a whole number from 0 (trivial) to 10 (critical)"),
            );
        }
    }
    let confidence = form.confidence.trim();
    match confidence.parse::<f64>() {
        Ok(v) => match validate::unit("confidence", Some(v), current.confidence) {
            Ok(v) if v != current.confidence => patch.confidence = Some(v),
            Ok(_) => {}
            Err(e) => {
                errors.insert("confidence", e.to_string());
            }
        },
        Err(_) => {
            errors.insert(
                "confidence",
                format!("confidence {confidence:?} is not a number: use a number from 0 to 1"),
            );
        }
    }
    match parse_tags("tags", &form.tags) {
        Ok(t) if t != current.tags => patch.tags = Some(t),
        Ok(_) => {}
        Err(e) => {
            errors.insert("tags", e);
        }
    }
    match validate::time("occurred_at", Some(form.occurred_at.trim())) {
        Ok(Some(t)) if t != current.occurred_at => patch.occurred_at = Some(t),
        Ok(_) => {}
        Err(e) => {
            errors.insert("occurred_at", e.to_string());
        }
    }
    let expires = form.expires_at.trim();
    if expires.is_empty() {
        if current.expires_at.is_some() {
            patch.expires_at = Some(None);
        }
    } else {
        match validate::time("expires_at", Some(expires)) {
            Ok(t) if t == current.expires_at => {}
            Ok(_) => match validate::expiry(Some(expires), None, Utc::now()) {
                Ok(at) => patch.expires_at = Some(at),
                Err(e) => {
                    errors.insert("expires_at", e.to_string());
                }
            },
            Err(e) => {
                errors.insert("expires_at", e.to_string());
            }
        }
    }
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(errors)
    }
}

fn changes_nothing(p: &MemoryPatch) -> bool {
    p.content.is_none()
        && p.kind.is_none()
        && p.importance.is_none()
        && p.confidence.is_none()
        && p.tags.is_none()
        && p.occurred_at.is_none()
        && p.expires_at.is_none()
}

fn parse_id(text: &str) -> Result<Uuid, Oops> {
    Uuid::parse_str(text).map_err(|_| Oops::NotFound)
}

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
}

/// `GET /console/memories/{id}`.
pub async fn page(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Reply {
    let id = parse_id(&id)?;
    let memory = console.app.store.peek_memory(&signed.scope, id).await?;
    let notice = match done.done.as_str() {
        "saved" => Some(("Saved.", false)),
        "unchanged" => Some(("Nothing changed: the form had the stored values.", false)),
        "archived" => Some((
            "Archived: search and lists skip it until it is restored.",
            false,
        )),
        "restored" => Some(("Restored.", false)),
        _ => None,
    };
    let form = EditForm::of(&memory);
    let body = view(&console, &signed, &memory, &form, &Errors::new(), notice).await?;
    Ok(layout::reply(StatusCode::OK, body))
}

/// The page for `memory`, with the edit form holding `form`.
async fn view(
    console: &Console,
    signed: &Signed,
    memory: &Memory,
    form: &EditForm,
    errors: &Errors,
    notice: Option<(&str, bool)>,
) -> Result<Markup, Oops> {
    let related = match console
        .app
        .store
        .related(&signed.scope, memory.id, 1, None, RELATIONS_LIMIT)
        .await
    {
        Ok(r) => r,
        // Expired memories have no traversable neighbourhood.
        Err(StoreError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let (outgoing, incoming): (Vec<&Reached>, Vec<&Reached>) = related
        .iter()
        .partition(|r| r.path.first().is_some_and(|s| s.from_id == memory.id));
    let m = memory;
    let body = html! {
        @if let Some((text, bad)) = notice { (layout::notice(text, bad)) }
        @if !errors.is_empty() {
            (layout::notice("Nothing was saved: correct the fields marked below.", true))
        }
        section.card aria-labelledby="content-h" {
            h2 #content-h { "Content" }
            p.content-full { (m.content) }
            (layout::state_badge(m))
        }
        div.columns {
            section aria-labelledby="fields-h" {
                h2 #fields-h { "Fields" }
                dl.fields.card {
                    dt { "Id" } dd { code { (m.id) } }
                    dt { "User" } dd { a href=(layout::user_url(&m.user_id)) { (m.user_id) } }
                    dt { "Kind" } dd { (m.kind.as_str()) }
                    dt { "Importance" } dd { (m.importance) " of 10" }
                    dt { "Confidence" } dd { (m.confidence) }
                    dt { "Tags" } dd { @if m.tags.is_empty() { "none" } @else { (m.tags.join(", ")) } }
                    dt { "Metadata" } dd { pre.json { (serde_json::to_string_pretty(&m.metadata).unwrap_or_default()) } }
                    dt { "Occurred" } dd { (layout::time(&m.occurred_at)) }
                    dt { "Stored" } dd { (layout::time(&m.created_at)) }
                    dt { "Updated" } dd { (layout::time(&m.updated_at)) }
                    dt { "Expires" } dd { @match &m.expires_at { Some(e) => (layout::time(e)), None => "never" } }
                    dt { "Archived" } dd { @match &m.archived_at { Some(a) => (layout::time(a)), None => "no" } }
                    dt { "Embedded" } dd { @if m.embedded { "yes" } @else { "waiting for the embedding job" } }
                    dt { "Reads" } dd { (m.access_count) }
                    dt { "Last read" } dd { @match &m.last_accessed_at { Some(a) => (layout::time(a)), None => "never" } }
                }
            }
            section aria-labelledby="rel-h" {
                h2 #rel-h { "Relations" }
                p { a href=(format!("/console/memories/{}/graph", m.id)) { "Show the neighbourhood as a picture" } }
                h3 { "Out (this memory → other)" }
                (relation_list(&outgoing))
                h3 { "In (other → this memory)" }
                (relation_list(&incoming))
            }
        }
        section aria-labelledby="edit-h" {
            h2 #edit-h { "Edit" }
            (edit_form(signed, m, form, errors))
        }
        section aria-labelledby="actions-h" {
            h2 #actions-h { "Archive or delete" }
            div.actions {
                @if m.archived_at.is_some() {
                    form method="post" action=(format!("/console/memories/{}/restore", m.id)) {
                        (layout::csrf(signed)) button type="submit" { "Restore" }
                    }
                } @else {
                    form method="post" action=(format!("/console/memories/{}/archive", m.id)) {
                        (layout::csrf(signed)) button.secondary type="submit" { "Archive" }
                    }
                }
                a.button.danger href=(format!("/console/memories/{}/delete", m.id)) { "Delete…" }
            }
        }
    };
    Ok(layout::page("Memory", Nav::Memories, Some(signed), body))
}

fn relation_list(reached: &[&Reached]) -> Markup {
    html! {
        @if reached.is_empty() { (layout::empty("None.")) }
        @else {
            ul {
                @for r in reached {
                    li {
                        @if let Some(step) = r.path.first() {
                            strong { (step.relation.as_str()) } " (strength " (step.strength) "): "
                        }
                        a href=(format!("/console/memories/{}", r.memory.id)) { (layout::shorten(&r.memory.content, 120)) }
                    }
                }
            }
        }
    }
}

fn edit_form(signed: &Signed, m: &Memory, f: &EditForm, errors: &Errors) -> Markup {
    let err = |name: &str| errors.get(name).map(String::as_str);
    let input = |id: &'static str,
                 label: &'static str,
                 value: &str,
                 hint: &'static str,
                 kind: &'static str| {
        let error = err(id);
        layout::field(
            id,
            label,
            Some(hint),
            error,
            html! {
                input type=(kind) id=(id) name=(id) value=(value)
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[layout::described_by(id, true, error.is_some())];
            },
        )
    };
    html! {
        form.card method="post" action=(format!("/console/memories/{}", m.id)) {
            (layout::csrf(signed))
            input type="hidden" name="expected_updated_at" value=(f.expected_updated_at);
            (layout::field("content", "Content", Some("1 to 32768 characters; a change is re-embedded"), err("content"), html! {
                textarea #content name="content" rows="5"
                    aria-invalid=[err("content").map(|_| "true")]
                    aria-describedby=[layout::described_by("content", true, err("content").is_some())] { (f.content) }
            }))
            (layout::field("kind", "Kind", None, err("kind"), html! {
                select #kind name="kind" aria-invalid=[err("kind").map(|_| "true")] {
                    @for k in Kind::ALL { option value=(k.as_str()) selected[f.kind == k.as_str()] { (k.as_str()) } }
                }
            }))
            (input("importance", "Importance", &f.importance, "a whole number from 0 (trivial) to 10 (critical)", "text"))
            (input("confidence", "Confidence", &f.confidence, "a number from 0 to 1", "text"))
            (input("tags", "Tags", &f.tags, "comma-separated", "text"))
            (input("occurred_at", "Occurred at", &f.occurred_at, "RFC 3339 (2024-05-08T13:56:00Z) or a date", "text"))
            (input("expires_at", "Expires at", &f.expires_at, "a future time or date; empty keeps it forever", "text"))
            button type="submit" { "Save changes" }
        }
    }
}

/// `POST /console/memories/{id}`: validate everything, then one
/// `update_memory`-equivalent write guarded by `expected_updated_at`.
pub async fn edit(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<EditForm>,
) -> Reply {
    let id = parse_id(&id)?;
    let app = &console.app;
    let current = app.store.peek_memory(&signed.scope, id).await?;
    let refuse = |status: StatusCode, errors: Errors, notice: Option<String>| {
        let console = console.clone();
        let signed = signed.clone();
        let current = current.clone();
        let form = form.clone();
        async move {
            let notice = notice.as_deref().map(|n| (n, true));
            let body = view(&console, &signed, &current, &form, &errors, notice).await?;
            Ok::<_, Oops>(layout::reply(status, body))
        }
    };
    let expected =
        match validate::time("expected_updated_at", Some(form.expected_updated_at.trim())) {
            Ok(t) => t,
            Err(e) => {
                return refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Errors::new(),
                    Some(e.to_string()),
                )
                .await;
            }
        };
    let patch = match patch(&form, &current) {
        Ok(p) => p,
        Err(errors) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, errors, None).await,
    };
    if changes_nothing(&patch) {
        return Ok(Redirect::to(&format!("/console/memories/{id}?done=unchanged")).into_response());
    }
    let embedding = match &patch.content {
        Some(c) => app
            .embed_or_defer(vec![c.clone()])
            .await
            .and_then(|mut v| v.pop()),
        None => None,
    };
    let saved = app
        .store
        .update(
            &signed.scope,
            id,
            &patch,
            embedding,
            app.embedder.model_id(),
            expected,
        )
        .await;
    match saved {
        Ok(_) => Ok(Redirect::to(&format!("/console/memories/{id}?done=saved")).into_response()),
        Err(e @ (StoreError::Stale { .. } | StoreError::DuplicateContent(_))) => {
            refuse(StatusCode::CONFLICT, Errors::new(), Some(e.to_string())).await
        }
        Err(e @ StoreError::Constraint(_)) => {
            refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                Errors::new(),
                Some(e.to_string()),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

async fn set_archived(console: &Console, signed: &Signed, id: &str, archive: bool) -> Reply {
    let id = parse_id(id)?;
    let store = &console.app.store;
    let result = if archive {
        store.archive(&signed.scope, id).await
    } else {
        store.restore(&signed.scope, id).await
    };
    match result {
        Ok(_) => {
            let done = if archive { "archived" } else { "restored" };
            Ok(Redirect::to(&format!("/console/memories/{id}?done={done}")).into_response())
        }
        Err(e @ StoreError::DuplicateContent(_)) => {
            let memory = store.peek_memory(&signed.scope, id).await?;
            let text = e.to_string();
            let body = view(
                console,
                signed,
                &memory,
                &EditForm::of(&memory),
                &Errors::new(),
                Some((&text, true)),
            )
            .await?;
            Ok(layout::reply(StatusCode::CONFLICT, body))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/memories/{id}/archive`.
pub async fn archive(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Reply {
    set_archived(&console, &signed, &id, true).await
}

/// `POST /console/memories/{id}/restore`.
pub async fn restore(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Reply {
    set_archived(&console, &signed, &id, false).await
}

/// `GET /console/memories/{id}/delete`: asks before deleting.
pub async fn confirm_delete(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Reply {
    let id = parse_id(&id)?;
    let m = console.app.store.peek_memory(&signed.scope, id).await?;
    let body = html! {
        p { "This deletes the memory and every relation to or from it, for good. \
             Archiving keeps it, hidden from search, in case it matters again." }
        blockquote.card.content-full { (m.content) }
        form.actions method="post" action=(format!("/console/memories/{id}/delete")) {
            (layout::csrf(&signed))
            button.danger type="submit" { "Delete for good" }
            a.button.secondary href=(format!("/console/memories/{id}")) { "Cancel" }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page("Delete this memory?", Nav::Memories, Some(&signed), body),
    ))
}

/// `POST /console/memories/{id}/delete`.
pub async fn delete(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Reply {
    let id = parse_id(&id)?;
    console.app.store.delete(&signed.scope, id).await?;
    Ok(Redirect::to("/console/memories?done=deleted").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Memory {
        // Microseconds, as PostgreSQL stores and the form shows them.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        Memory {
            id: Uuid::new_v4(),
            user_id: "ana".into(),
            content: "Ana is vegetarian".into(),
            kind: Kind::Fact,
            importance: 5,
            confidence: 1.0,
            tags: vec!["food".into()],
            metadata: serde_json::json!({}),
            occurred_at: now,
            expires_at: None,
            archived_at: None,
            access_count: 0,
            last_accessed_at: None,
            created_at: now,
            updated_at: now,
            embedded: true,
        }
    }

    #[test]
    fn an_unchanged_form_patches_nothing() {
        let m = memory();
        let p = patch(&EditForm::of(&m), &m).unwrap();
        assert!(changes_nothing(&p), "{p:?}");
    }

    #[test]
    fn bad_fields_get_the_tools_messages_and_no_patch() {
        let m = memory();
        let mut f = EditForm::of(&m);
        f.importance = "11".into();
        f.confidence = "high".into();
        f.content = "   ".into();
        f.expires_at = "2001-01-01".into();
        let errors = patch(&f, &m).unwrap_err();
        assert!(
            errors["importance"].starts_with("importance is 11: use a whole number from 0"),
            "{errors:?}"
        );
        assert!(errors["confidence"].contains("from 0 to 1"));
        assert!(errors["content"].starts_with("content is empty"));
        assert!(errors["expires_at"].contains("in the past"));
    }

    #[test]
    fn only_changed_fields_are_sent() {
        let m = memory();
        let mut f = EditForm::of(&m);
        f.importance = "8".into();
        f.tags = "food, home".into();
        let p = patch(&f, &m).unwrap();
        assert_eq!(p.importance, Some(8));
        assert_eq!(p.tags, Some(vec!["food".to_string(), "home".to_string()]));
        assert!(p.content.is_none() && p.kind.is_none() && p.expires_at.is_none());
    }
}
