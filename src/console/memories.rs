//! The Memories pages: a filtered, paged list of the companion's memories
//! (every user, or one; live, archived, expired), and the "Search
//! memories" box, which runs the `search_memories` tool's hybrid search
//! (`App::search`) and shows the time windows it read from the query.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query as UrlQuery, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, Nav};
use super::session::Signed;
use super::{Console, Reply};
use crate::store::console::{Browse, MemoryState};
use crate::store::search::{Query, SearchMode};
use crate::store::users::UserSummary;
use crate::store::{Kind, ListFilter, Memory};
use crate::tools::validate;

/// Memories per page of the list.
const PAGE: i64 = 25;
/// Results of one search.
const SEARCH_LIMIT: i64 = 25;

/// The list's filters as the URL carries them (empty means unset).
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    user: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    tags_match: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
    /// What the previous action did, for the notice.
    #[serde(default)]
    done: String,
}

fn set(text: &str) -> Option<&str> {
    let t = text.trim();
    (!t.is_empty()).then_some(t)
}

/// Field name → the tools' message for it.
type Errors = BTreeMap<&'static str, String>;

/// A kind by its name, with the message the tools give for a bad one.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        format!(
            "kind {text:?} is not one of: {}",
            Kind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Comma-separated tags, checked as the tools check a tag list.
pub fn parse_tags(field: &str, text: &str) -> Result<Vec<String>, String> {
    let tags: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    validate::tags(field, Some(tags)).map_err(|e| e.to_string())
}

fn browse(p: &ListParams) -> Result<Browse, Errors> {
    let mut errors = Errors::new();
    let mut filter = Browse::default();
    if let Some(u) = set(&p.user) {
        match validate::user(Some(u.to_string()), "") {
            Ok(u) => filter.user = Some(u),
            Err(e) => {
                errors.insert("user", e.to_string());
            }
        }
    }
    if let Some(k) = set(&p.kind) {
        match parse_kind(k) {
            Ok(k) => filter.kinds = Some(vec![k]),
            Err(e) => {
                errors.insert("kind", e);
            }
        }
    }
    if let Some(t) = set(&p.tags) {
        match parse_tags("tags", t) {
            Ok(tags) if p.tags_match == "all" => filter.tags_all = Some(tags),
            Ok(tags) => filter.tags_any = Some(tags),
            Err(e) => {
                errors.insert("tags", e);
            }
        }
    }
    match set(&p.state).map(MemoryState::parse) {
        None => {}
        Some(Some(s)) => filter.state = s,
        Some(None) => {
            errors.insert(
                "state",
                "state must be live, archived, expired or all".into(),
            );
        }
    }
    for (name, text, slot) in [
        ("since", &p.since, &mut filter.since),
        ("until", &p.until, &mut filter.until),
    ] {
        match validate::time(name, set(text)) {
            Ok(t) => *slot = t,
            Err(e) => {
                errors.insert(name, e.to_string());
            }
        }
    }
    if let (Some(s), Some(u)) = (filter.since, filter.until)
        && s >= u
    {
        errors.insert("until", format!("since ({s}) must be before until ({u})"));
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(errors)
    }
}

fn encode_cursor(m: &Memory) -> String {
    format!("{}_{}", m.created_at.timestamp_micros(), m.id)
}

fn decode_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)
        .filter(|at| chrono::Datelike::year(at) > -4712)?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// The user a search looks at when none is chosen: the filter's, else the
/// server's default user if it has memories, else the one with most.
fn search_user(console: &Console, users: &[UserSummary], chosen: &str) -> String {
    if let Some(u) = set(chosen) {
        return u.to_string();
    }
    let default = &console.app.default_user;
    if users.iter().any(|u| &u.user_id == default) || users.is_empty() {
        return default.clone();
    }
    users[0].user_id.clone()
}

/// The "Search memories" form.
fn search_form(
    users: &[UserSummary],
    q: &str,
    user: &str,
    mode: &str,
    error: Option<&str>,
) -> Markup {
    html! {
        form.search.card method="get" action="/console/search" role="search" {
            (layout::field("q", "Search memories", None, error, html! {
                input #q type="search" name="q" value=(q) maxlength="2048"
                    placeholder="e.g. what does Ana eat? or: in May 2023"
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[layout::described_by("q", false, error.is_some())];
            }))
            (layout::field("search-user", "User", None, None, user_select("search-user", users, user, false)))
            (layout::field("mode", "Ranking", None, None, html! {
                select #mode name="mode" {
                    @for (value, label) in [("hybrid", "Hybrid"), ("semantic", "Meaning only"), ("keyword", "Keywords only")] {
                        option value=(value) selected[mode == value] { (label) }
                    }
                }
            }))
            button type="submit" { "Search" }
        }
    }
}

/// A select of the companion's users (with "All users" when `any`).
pub fn user_select(id: &str, users: &[UserSummary], chosen: &str, any: bool) -> Markup {
    let listed = users.iter().any(|u| u.user_id == chosen);
    html! {
        select id=(id) name="user" {
            @if any { option value="" selected[chosen.is_empty()] { "All users" } }
            @if !chosen.is_empty() && !listed { option value=(chosen) selected { (chosen) } }
            @for u in users {
                option value=(u.user_id) selected[u.user_id == chosen] {
                    (u.user_id) " (" (u.memories) ")"
                }
            }
        }
    }
}

fn filter_form(users: &[UserSummary], p: &ListParams, errors: &Errors) -> Markup {
    let err = |name: &str| errors.get(name).map(String::as_str);
    let text = |id: &'static str, label: &'static str, value: &str, hint: &'static str| {
        let error = err(id);
        layout::field(
            id,
            label,
            Some(hint),
            error,
            html! {
                input type="text" id=(id) name=(id) value=(value)
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[layout::described_by(id, true, error.is_some())];
            },
        )
    };
    html! {
        form.filters.card method="get" action="/console/memories" aria-label="Filters" {
            (layout::field("user", "User", None, err("user"), user_select("user", users, &p.user, true)))
            (layout::field("kind", "Kind", None, err("kind"), html! {
                select #kind name="kind" {
                    option value="" { "Any kind" }
                    @for k in Kind::ALL {
                        option value=(k.as_str()) selected[p.kind == k.as_str()] { (k.as_str()) }
                    }
                }
            }))
            (text("tags", "Tags", &p.tags, "comma-separated"))
            (layout::field("tags_match", "Tags match", None, None, html! {
                select #tags_match name="tags_match" {
                    option value="any" selected[p.tags_match != "all"] { "any tag" }
                    option value="all" selected[p.tags_match == "all"] { "every tag" }
                }
            }))
            (layout::field("state", "State", None, err("state"), html! {
                select #state name="state" {
                    @for s in MemoryState::ALL {
                        option value=(s.as_str()) selected[p.state == s.as_str() || (p.state.is_empty() && s == MemoryState::Live)] { (s.as_str()) }
                    }
                }
            }))
            (text("since", "Occurred since", &p.since, "a date or RFC 3339"))
            (text("until", "Occurred before", &p.until, "a date or RFC 3339"))
            div.buttons {
                button type="submit" { "Apply" }
                a.button.secondary href="/console/memories" { "Clear" }
            }
        }
    }
}

/// `/console/memories`: the list, its filters and paging.
pub async fn list(
    State(console): State<Arc<Console>>,
    signed: Signed,
    UrlQuery(p): UrlQuery<ListParams>,
) -> Reply {
    let store = &console.app.store;
    let users = store.users(&signed.scope).await?;
    let (status, listing) = match browse(&p) {
        Err(errors) => (StatusCode::UNPROCESSABLE_ENTITY, Err(errors)),
        Ok(filter) => {
            let cursor = set(&p.cursor).and_then(decode_cursor);
            let mut rows = store
                .browse_memories(&signed.scope, &filter, cursor, PAGE + 1)
                .await?;
            let more = rows.len() as i64 > PAGE;
            rows.truncate(PAGE as usize);
            let next = more.then(|| rows.last().map(encode_cursor)).flatten();
            (StatusCode::OK, Ok((rows, next)))
        }
    };
    let no_errors = Errors::new();
    let errors = listing.as_ref().err().unwrap_or(&no_errors);
    let user = search_user(&console, &users, &p.user);
    let body = html! {
        @if p.done == "deleted" { (layout::notice("Deleted for good, with its relations.", false)) }
        (search_form(&users, "", &user, "hybrid", None))
        (filter_form(&users, &p, errors))
        @match &listing {
            Err(_) => (layout::notice("Some filters are not valid: see the messages next to them.", true)),
            Ok((rows, next)) => {
                @if rows.is_empty() {
                    (layout::empty("No memories match these filters."))
                } @else {
                    ul.memories aria-label="Memories" { @for m in rows { (layout::memory_row(m, None)) } }
                }
                div.pager {
                    @if set(&p.cursor).is_some() { a href=(page_url(&p, "")) { "First page" } }
                    @if let Some(n) = next { a href=(page_url(&p, n)) { "Next page" } }
                }
            }
        }
    };
    Ok(layout::reply(
        status,
        layout::page("Memories", Nav::Memories, Some(&signed), body),
    ))
}

fn page_url(p: &ListParams, cursor: &str) -> String {
    let mut url = String::from("/console/memories?");
    for (k, v) in [
        ("user", &p.user),
        ("kind", &p.kind),
        ("tags", &p.tags),
        ("tags_match", &p.tags_match),
        ("state", &p.state),
        ("since", &p.since),
        ("until", &p.until),
    ] {
        if !v.is_empty() {
            url.push_str(&format!("{k}={}&", layout::encode(v)));
        }
    }
    url.push_str(&format!("cursor={}", layout::encode(cursor)));
    url
}

#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    mode: String,
}

/// `/console/search`: the same hybrid search as `search_memories`.
pub async fn search(
    State(console): State<Arc<Console>>,
    signed: Signed,
    UrlQuery(p): UrlQuery<SearchParams>,
) -> Reply {
    let users = console.app.store.users(&signed.scope).await?;
    let user = search_user(&console, &users, &p.user);
    let mode = if p.mode.is_empty() {
        "hybrid"
    } else {
        p.mode.as_str()
    };
    let outcome = run_search(&console, &signed, &p.q, &user, mode).await;
    let (status, results) = match outcome {
        Ok(r) => (StatusCode::OK, Ok(r)),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Err(e)),
    };
    let error = results.as_ref().err().map(String::as_str);
    let body = html! {
        (search_form(&users, &p.q, &user, mode, error))
        @if let Ok((hits, windows)) = &results {
            p.windows {
                @if windows.is_empty() {
                    "The query names no time, so no time window was read."
                } @else {
                    "Time windows read from the query (memories that happened then rank higher): "
                    @for (i, w) in windows.iter().enumerate() {
                        @if i > 0 { ", " }
                        (layout::time(&w.start)) " – " (layout::time(&w.end))
                    }
                }
            }
            @if hits.is_empty() {
                (layout::empty("No matching memories."))
            } @else {
                ul.memories aria-label="Search results" {
                    @for (m, score) in hits { (layout::memory_row(m, Some(*score))) }
                }
            }
        }
    };
    Ok(layout::reply(
        status,
        layout::page("Search memories", Nav::Memories, Some(&signed), body),
    ))
}

type Found = (Vec<(Memory, f64)>, Vec<crate::timeframe::TimeWindow>);

async fn run_search(
    console: &Console,
    signed: &Signed,
    q: &str,
    user: &str,
    mode: &str,
) -> Result<Found, String> {
    let text = validate::query(q).map_err(|e| e.to_string())?;
    let user = validate::user(Some(user.to_string()), "").map_err(|e| e.to_string())?;
    let mode: SearchMode = serde_json::from_value(serde_json::Value::String(mode.to_string()))
        .map_err(|_| format!("mode {mode:?} is not one of: hybrid, semantic, keyword"))?;
    let query = Query::new(text, mode, SEARCH_LIMIT);
    let filter = ListFilter {
        user,
        ..ListFilter::default()
    };
    let hits = console
        .app
        .search(&signed.scope, &filter, &query, false)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        hits.into_iter().map(|h| (h.memory, h.score)).collect(),
        query.windows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_give_the_tools_messages_per_field() {
        let p = ListParams {
            kind: "gossip".into(),
            since: "yesterday-ish".into(),
            tags: " a , b ,a".into(),
            ..ListParams::default()
        };
        let errors = browse(&p).unwrap_err();
        assert!(errors["kind"].contains("fact, experience"), "{errors:?}");
        assert!(errors["since"].contains("RFC 3339"), "{errors:?}");
        assert!(!errors.contains_key("tags"));
        let ok = browse(&ListParams {
            tags: " a , b ,a".into(),
            tags_match: "all".into(),
            state: "expired".into(),
            ..ListParams::default()
        })
        .unwrap();
        assert_eq!(ok.tags_all, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(ok.state, MemoryState::Expired);
    }

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(
            decode_cursor(&format!("{}_{id}", at.timestamp_micros())),
            Some((at, id))
        );
        assert_eq!(decode_cursor("nope"), None);
    }
}
