//! The console's one page layout (header, navigation, sign-out, main) and
//! the markup pieces pages share: labelled fields with their validation
//! message, times, badges, and the error page ([`Oops`]). Everything is
//! `maud`, which escapes each interpolated value: memory content can hold
//! `<script>` and shows as text.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::session::Signed;
use crate::store::{Memory, StoreError};

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Memories,
    Users,
    Conversations,
    None,
}

const SECTIONS: [(Nav, &str, &str); 4] = [
    (Nav::Overview, "/console", "Overview"),
    (Nav::Memories, "/console/memories", "Memories"),
    (Nav::Users, "/console/users", "Users"),
    (
        Nav::Conversations,
        "/console/conversations",
        "Conversations",
    ),
];

/// A whole page: `title` in the tab and as the heading, `body` in main.
pub fn page(title: &str, nav: Nav, signed: Option<&Signed>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mnemo console" }
                link rel="stylesheet" href=(assets::stylesheet_url());
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "mnemo" span { " console" } }
                    @if signed.is_some() {
                        nav aria-label="Sections" {
                            ul {
                                @for (section, href, label) in SECTIONS {
                                    li {
                                        @if section == nav {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(s) = signed.filter(|s| s.with_key) {
                        form.signout method="post" action="/console/signout" {
                            (csrf(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The session's CSRF token as the hidden field every form carries.
pub fn csrf(signed: &Signed) -> Markup {
    html! { input type="hidden" name="csrf" value=(signed.csrf); }
}

/// A labelled control with its hint and, after a refused save, the
/// tools' validation message (tied to the control for screen readers).
pub fn field(
    id: &str,
    label: &str,
    hint: Option<&str>,
    error: Option<&str>,
    control: Markup,
) -> Markup {
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            (control)
            @if let Some(h) = hint { small id=(format!("{id}-hint")) { (h) } }
            @if let Some(e) = error {
                p.error id=(format!("{id}-error")) role="alert" { (e) }
            }
        }
    }
}

/// The `aria-describedby` of a field's control.
pub fn described_by(id: &str, hint: bool, error: bool) -> Option<String> {
    let mut ids = Vec::new();
    if hint {
        ids.push(format!("{id}-hint"));
    }
    if error {
        ids.push(format!("{id}-error"));
    }
    (!ids.is_empty()).then(|| ids.join(" "))
}

/// A time as people read it, with the exact value in a `<time>` element.
pub fn time(at: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M UTC")) }
    }
}

/// The exact form of a time that forms send back (RFC 3339, microseconds).
pub fn exact(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A memory's state as a badge: archived, expired, or nothing when live.
pub fn state_badge(m: &Memory) -> Markup {
    let expired = m.expires_at.is_some_and(|e| e <= Utc::now());
    html! {
        @if m.archived_at.is_some() { span.badge.archived { "archived" } }
        @if expired { span.badge.expired { "expired" } }
    }
}

/// A memory as one row of a list: kind, content (shortened), user, time.
pub fn memory_row(m: &Memory, score: Option<f64>) -> Markup {
    html! {
        li.memory {
            div.meta {
                span.kind { (m.kind.as_str()) }
                (state_badge(m))
                span { "user " a href=(user_url(&m.user_id)) { (m.user_id) } }
                span { "importance " (m.importance) }
                span { "occurred " (time(&m.occurred_at)) }
                @if let Some(s) = score { span { "score " (format!("{s:.3}")) } }
            }
            a.content href=(format!("/console/memories/{}", m.id)) { (shorten(&m.content, 280)) }
            @if !m.tags.is_empty() {
                ul.tags aria-label="Tags" { @for t in &m.tags { li { (t) } } }
            }
        }
    }
}

/// The link to a user's page.
pub fn user_url(user: &str) -> String {
    format!("/console/user?id={}", encode(user))
}

/// `text` percent-encoded for a query string.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A notice at the top of a page (after a save, or a refused one).
pub fn notice(text: &str, error: bool) -> Markup {
    html! {
        @if error { p.notice.bad role="alert" { (text) } }
        @else { p.notice role="status" { (text) } }
    }
}

/// An HTML answer.
pub fn reply(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// What went wrong, as a page with the right status.
#[derive(Debug)]
pub enum Oops {
    NotFound,
    Forbidden(String),
    RateLimited,
    /// The database (or another dependency) is down.
    Unavailable(String),
    TooLarge,
}

impl From<StoreError> for Oops {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) | StoreError::ContextNotFound(_) => Oops::NotFound,
            other => {
                tracing::error!(error = %other, "console: store error");
                Oops::Unavailable("the database is unavailable or refused the request".into())
            }
        }
    }
}

impl IntoResponse for Oops {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            Oops::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "Nothing here: it may have been deleted, or belong to another companion."
                    .to_string(),
            ),
            Oops::Forbidden(why) => (StatusCode::FORBIDDEN, "Refused", why),
            Oops::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "The rate limit is used up: wait a few seconds and try again.".to_string(),
            ),
            Oops::Unavailable(why) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", why),
            Oops::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form is too large.".to_string(),
            ),
        };
        let body = html! {
            p { (text) }
            p { a href="/console" { "Back to the console" } }
        };
        reply(status, page(title, Nav::None, None, body))
    }
}

/// Nothing to show, said plainly.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}
