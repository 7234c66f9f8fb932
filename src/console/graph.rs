//! The Relations page: a memory's neighbourhood (two hops, both
//! directions) drawn as server-rendered SVG: the memory in the middle, its
//! neighbours on a ring, theirs on an outer ring, typed arrows between
//! them; every node links to its memory. The same edges follow as a table,
//! for screen readers and for reading exact values.

use std::collections::BTreeMap;
use std::f64::consts::PI;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use uuid::Uuid;

use super::layout::{self, Nav, Oops};
use super::session::Signed;
use super::{Console, Reply};
use crate::store::relations::Step;
use crate::store::{Memory, StoreError};

/// Hops drawn around the memory.
const DEPTH: i32 = 2;
/// Most neighbours drawn (the picture stays readable).
const MAX_NODES: i64 = 36;
const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 600.0;

struct Node<'a> {
    memory: &'a Memory,
    depth: i32,
    x: f64,
    y: f64,
}

/// Places the start at the centre and each depth on its own ring.
fn place<'a>(start: &'a Memory, reached: &'a [(Memory, i32)]) -> Vec<Node<'a>> {
    let (cx, cy) = (WIDTH / 2.0, HEIGHT / 2.0);
    let mut nodes = vec![Node {
        memory: start,
        depth: 0,
        x: cx,
        y: cy,
    }];
    for depth in 1..=DEPTH {
        let ring: Vec<&'a Memory> = reached
            .iter()
            .filter(|(_, d)| *d == depth)
            .map(|(m, _)| m)
            .collect();
        let count = ring.len().max(1) as f64;
        let radius = f64::from(depth) * (HEIGHT / 2.0 - 60.0) / f64::from(DEPTH);
        // Offset the outer ring so its labels fall between the inner ones.
        let offset = if depth % 2 == 0 { PI / count } else { 0.0 };
        for (i, memory) in ring.into_iter().enumerate() {
            let angle = offset - PI / 2.0 + 2.0 * PI * i as f64 / count;
            nodes.push(Node {
                memory,
                depth,
                x: cx + radius * 1.25 * angle.cos(),
                y: cy + radius * angle.sin(),
            });
        }
    }
    nodes
}

fn picture(nodes: &[Node], edges: &[Step]) -> Markup {
    let at: BTreeMap<Uuid, (f64, f64)> = nodes.iter().map(|n| (n.memory.id, (n.x, n.y))).collect();
    html! {
        svg.graph viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-labelledby="graph-title" {
            title #graph-title { "Relations around this memory: " (nodes.len() - 1) " neighbours, " (edges.len()) " links" }
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#8d97a8";
                }
            }
            @for e in edges {
                @if let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(&e.from_id), at.get(&e.to_id)) {
                    @let (dx, dy) = (x2 - x1, y2 - y1);
                    @let len = (dx * dx + dy * dy).sqrt().max(1.0);
                    // Stop the arrow at the target circle's edge.
                    @let (ex, ey) = (x2 - dx / len * 22.0, y2 - dy / len * 22.0);
                    line.edge x1=(fmt(x1)) y1=(fmt(y1)) x2=(fmt(ex)) y2=(fmt(ey)) marker-end="url(#arrow)";
                    text.edge-label x=(fmt((x1 + x2) / 2.0)) y=(fmt((y1 + y2) / 2.0 - 4.0)) text-anchor="middle" {
                        (e.relation.as_str())
                    }
                }
            }
            @for n in nodes {
                a href=(format!("/console/memories/{}/graph", n.memory.id)) {
                    g.node.start[n.depth == 0] {
                        title { (n.memory.content) }
                        circle cx=(fmt(n.x)) cy=(fmt(n.y)) r=(if n.depth == 0 { "20" } else { "16" });
                        text x=(fmt(n.x)) y=(fmt(n.y + 34.0)) text-anchor="middle" {
                            (layout::shorten(&n.memory.content, 28))
                        }
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// `GET /console/memories/{id}/graph`.
pub async fn page(
    State(console): State<Arc<Console>>,
    signed: Signed,
    Path(id): Path<String>,
) -> Reply {
    let id = Uuid::parse_str(&id).map_err(|_| Oops::NotFound)?;
    let store = &console.app.store;
    let start = store.peek_memory(&signed.scope, id).await?;
    let reached = match store
        .related(&signed.scope, id, DEPTH, None, MAX_NODES)
        .await
    {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut edges: Vec<Step> = Vec::new();
    for r in &reached {
        for step in &r.path {
            let known = edges.iter().any(|e| {
                e.from_id == step.from_id && e.to_id == step.to_id && e.relation == step.relation
            });
            if !known {
                edges.push(step.clone());
            }
        }
    }
    let reached: Vec<(Memory, i32)> = reached.into_iter().map(|r| (r.memory, r.depth)).collect();
    let nodes = place(&start, &reached);
    let content: BTreeMap<Uuid, &str> = nodes
        .iter()
        .map(|n| (n.memory.id, n.memory.content.as_str()))
        .collect();
    let body = html! {
        p {
            "Around: " a href=(format!("/console/memories/{id}")) { (layout::shorten(&start.content, 160)) }
        }
        @if reached.is_empty() {
            (layout::empty("This memory has no relations yet (relate_memories links memories)."))
        } @else {
            (picture(&nodes, &edges))
            p.legend { "Arrows point from a memory to the one it relates to; click a memory to centre it." }
            h2 { "Links" }
            table.wide {
                thead { tr { th { "From" } th { "Relation" } th { "To" } th.num { "Strength" } } }
                tbody {
                    @for e in &edges {
                        tr {
                            td { a href=(format!("/console/memories/{}", e.from_id)) { (layout::shorten(content.get(&e.from_id).copied().unwrap_or("?"), 80)) } }
                            td { (e.relation.as_str()) }
                            td { a href=(format!("/console/memories/{}", e.to_id)) { (layout::shorten(content.get(&e.to_id).copied().unwrap_or("?"), 80)) } }
                            td.num { (e.strength) }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::reply(
        StatusCode::OK,
        layout::page("Relations", Nav::Memories, Some(&signed), body),
    ))
}
