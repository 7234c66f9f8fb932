//! The Overview page: how much the companion keeps (by kind, by user),
//! how it grew (memories stored per day, as a server-rendered SVG bar
//! chart), and whether the embedder and the database are healthy.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{Duration, NaiveDate, Utc};
use maud::{Markup, html};

use super::layout::{self, Nav};
use super::session::Signed;
use super::{Console, Reply};
use crate::embed::Embedder;

/// Days the growth chart covers.
const DAYS: i32 = 60;
/// Users listed by count.
const TOP_USERS: usize = 15;

/// One bar per day of the last [`DAYS`], zero-height for days without stores.
fn chart(growth: &[(NaiveDate, i64)]) -> Markup {
    let today = Utc::now().date_naive();
    let days: Vec<(NaiveDate, i64)> = (0..DAYS)
        .rev()
        .map(|back| {
            let day = today - Duration::days(i64::from(back));
            let n = growth
                .iter()
                .find(|(d, _)| *d == day)
                .map_or(0, |(_, n)| *n);
            (day, n)
        })
        .collect();
    let max = days.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let (width, height, left, bottom) = (720.0, 200.0, 40.0, 24.0);
    let bar = (width - left) / f64::from(DAYS);
    let total: i64 = days.iter().map(|(_, n)| n).sum();
    html! {
        svg.chart viewBox=(format!("0 0 {width} {height}")) role="img" aria-labelledby="growth-title" {
            title #growth-title { (total) " memories stored in the last " (DAYS) " days; at most " (max) " in one day" }
            line.axis x1=(left) y1=(height - bottom) x2=(width) y2=(height - bottom);
            line.axis x1=(left) y1="8" x2=(left) y2=(height - bottom);
            text x=(left - 6.0) y="14" text-anchor="end" { (max) }
            text x=(left - 6.0) y=(height - bottom) text-anchor="end" { "0" }
            @for (i, (day, n)) in days.iter().enumerate() {
                @let h = (height - bottom - 10.0) * (*n as f64) / (max as f64);
                @let x = left + bar * i as f64;
                rect.bar x=(format!("{:.1}", x + 1.0)) y=(format!("{:.1}", height - bottom - h))
                    width=(format!("{:.1}", (bar - 2.0).max(1.0))) height=(format!("{h:.1}")) {
                    title { (day) ": " (n) }
                }
                @if i % 10 == 0 || i + 1 == days.len() {
                    text x=(format!("{:.1}", x + bar / 2.0)) y=(height - 6.0) text-anchor="middle" { (day.format("%b %d")) }
                }
            }
        }
    }
}

/// `GET /console`.
pub async fn page(State(console): State<Arc<Console>>, signed: Signed) -> Reply {
    let app = &console.app;
    let store = &app.store;
    let started = Instant::now();
    let stats = store.stats(&signed.scope, None).await?;
    let db_ms = started.elapsed().as_millis();
    let users = store.users(&signed.scope).await?;
    let growth = store.memory_growth(&signed.scope, DAYS).await?;
    let live: i64 = stats.by_kind.values().sum();
    let body = html! {
        section aria-labelledby="counts-h" {
            h2 #counts-h { "What is kept" }
            div.cards {
                div.card { strong { (live) } span { "live memories" } }
                div.card { strong { (stats.archived) } span { "archived" } }
                div.card { strong { (stats.expired) } span { "expired, to be purged" } }
                div.card { strong { (stats.relations) } span { "relations" } }
                div.card { strong { (stats.users) } span { "users" } }
                div.card { strong { (stats.unembedded) } span { "waiting for embedding" } }
            }
        }
        div.columns {
            section aria-labelledby="kinds-h" {
                h2 #kinds-h { "Live memories by kind" }
                table {
                    thead { tr { th { "Kind" } th.num { "Memories" } } }
                    tbody {
                        @for (kind, n) in &stats.by_kind {
                            tr {
                                td { a href=(format!("/console/memories?kind={kind}")) { (kind) } }
                                td.num { (n) }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="users-h" {
                h2 #users-h { "Memories by user" }
                @if users.is_empty() { (layout::empty("No users yet.")) }
                @else {
                    table {
                        thead { tr { th { "User" } th.num { "Memories" } th.num { "Conversations" } } }
                        tbody {
                            @for u in users.iter().take(TOP_USERS) {
                                tr {
                                    td { a href=(layout::user_url(&u.user_id)) { (u.user_id) } }
                                    td.num { (u.memories) }
                                    td.num { (u.contexts) }
                                }
                            }
                        }
                    }
                    @if users.len() > TOP_USERS { p { a href="/console/users" { "All " (users.len()) " users" } } }
                }
            }
        }
        section aria-labelledby="growth-h" {
            h2 #growth-h { "Growth: memories stored per day" }
            (chart(&growth))
        }
        section aria-labelledby="health-h" {
            h2 #health-h { "Health" }
            dl.fields.card {
                dt { "Database" } dd { "answering (" (db_ms) " ms for the counts) · " (store.db().location) }
                dt { "Embedder" } dd {
                    (app.embedder.model_id()) ", " (app.embedder.dim()) " dimensions · "
                    @if app.embedder.is_loaded() { "loaded" } @else { "loading (keyword search works meanwhile)" }
                }
                dt { "Oldest memory" } dd { @match &stats.oldest_created_at { Some(t) => (layout::time(t)), None => "none" } }
                dt { "Newest memory" } dd { @match &stats.newest_created_at { Some(t) => (layout::time(t)), None => "none" } }
            }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page("Overview", Nav::Overview, Some(&signed), body),
    ))
}
