//! Moving in from the reference MCP memory server
//! (`@modelcontextprotocol/server-memory`): its JSONL knowledge graph
//! becomes related memories of one user of the configured companion.
//!
//! Lines `{"type":"entity","name":..,"entityType":..,"observations":[..]}`
//! and `{"type":"relation","from":..,"to":..,"relationType":..}` become:
//! - per entity, an anchor memory "`name` is a(n) `entityType`." (an entity
//!   that only a relation names gets "`name` is an entity.");
//! - per observation, a memory "`name` (`entityType`): `observation`" that
//!   `elaborates` the anchor;
//! - per relation, a memory "`from` `relationType` `to`" that `elaborates`
//!   the `from` anchor, and a `references` relation from the `from` anchor
//!   to the `to` anchor.
//!
//! All carry the tags `[entityType, name]` (relations: `[relationType, from,
//! to]`) and `{"source": "server-memory", ...}` metadata. Identical content
//! is stored once, so importing the file again changes nothing. They are
//! stored without vectors: the server's backfill job embeds them.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::commands::lines;
use super::{BATCH, BackupError, Counts, PROGRESS_EVERY};
use crate::limits::{MAX_CONTENT_CHARS, MAX_METADATA_BYTES, MAX_TAG_CHARS, MAX_TAGS, is_label};
use crate::store::{Kind, NewMemory, Relation, Scope, Store};

/// One line of the reference memory server's JSONL knowledge graph.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum GraphLine {
    Entity {
        name: String,
        #[serde(rename = "entityType")]
        entity_type: String,
        #[serde(default)]
        observations: Vec<String>,
    },
    Relation {
        from: String,
        to: String,
        #[serde(rename = "relationType")]
        relation_type: String,
    },
}

/// True when `text` is a line of a knowledge graph (to tell a user who gave
/// one as a mnemo export which format to name).
pub(super) fn is_graph_line(text: &str) -> bool {
    serde_json::from_str::<GraphLine>(text).is_ok()
}

/// A memory to make, and how it links to its entity's anchor.
struct Pending {
    memory: NewMemory,
    /// The entity whose anchor this memory elaborates (None: it is the anchor).
    elaborates: Option<String>,
    /// For anchors: the entity's name.
    anchor_of: Option<String>,
}

/// How a queued memory links to an entity's anchor.
#[derive(Clone, Copy)]
struct Links<'a> {
    /// The entity whose anchor it elaborates.
    elaborates: Option<&'a str>,
    /// The entity it is the anchor of.
    anchor_of: Option<&'a str>,
}

/// The import under way: memories waiting for their batch, and what the
/// stored ones became.
struct Graph<'a> {
    path: &'a Path,
    store: &'a Store,
    scope: &'a Scope,
    user: &'a str,
    pending: Vec<Pending>,
    /// Entity name to its anchor memory.
    anchors: HashMap<String, Uuid>,
    /// Memories that elaborate an entity's anchor.
    links: Vec<(Uuid, String)>,
    counts: Counts,
}

impl Graph<'_> {
    /// Queues a memory that line `line` makes (of `what`, for errors);
    /// memories are stored in batches of [`BATCH`].
    async fn add(
        &mut self,
        line: u64,
        what: &str,
        content: String,
        tags: &[&str],
        metadata: Value,
        links: Links<'_>,
    ) -> Result<(), BackupError> {
        let memory = memory(self.user, content, tags, metadata).map_err(|e| BackupError::Line {
            path: self.path.to_path_buf(),
            line,
            message: format!("{what}: {e}"),
        })?;
        self.pending.push(Pending {
            memory,
            elaborates: links.elaborates.map(str::to_string),
            anchor_of: links.anchor_of.map(str::to_string),
        });
        if self.pending.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// True when `name` has an anchor, stored or queued.
    fn has_anchor(&self, name: &str) -> bool {
        self.anchors.contains_key(name)
            || self
                .pending
                .iter()
                .any(|p| p.anchor_of.as_deref() == Some(name))
    }

    /// Stores the queued memories in one transaction (deduplicated), noting
    /// anchors and which memories elaborate which entity.
    async fn flush(&mut self) -> Result<(), BackupError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let memories: Vec<NewMemory> = self.pending.iter().map(|p| p.memory.clone()).collect();
        let outcomes = self
            .store
            .insert_batch(self.scope, &memories, vec![None; memories.len()], "")
            .await?;
        for (p, outcome) in self.pending.drain(..).zip(outcomes) {
            if outcome.created {
                self.counts.memories += 1;
                self.counts.unembedded += 1;
            } else {
                self.counts.skipped += 1;
            }
            if let Some(name) = p.anchor_of {
                self.anchors.insert(name, outcome.id);
            }
            if let Some(entity) = p.elaborates {
                self.links.push((outcome.id, entity));
            }
        }
        Ok(())
    }

    /// Relates `from` to `to` unless they are one memory; counts it.
    async fn relate(
        &mut self,
        from: Uuid,
        to: Uuid,
        relation: Relation,
    ) -> Result<(), BackupError> {
        if from == to {
            return Ok(());
        }
        let related = self
            .store
            .relate(self.scope, from, to, relation, 1.0)
            .await?;
        if related.created {
            self.counts.relations += 1;
        } else {
            self.counts.skipped += 1;
        }
        Ok(())
    }
}

/// Imports a server-memory knowledge graph for `user` in `scope`.
pub async fn import_server_memory(
    store: &Store,
    scope: &Scope,
    user: &str,
    path: &Path,
    reader: Box<dyn BufRead>,
) -> Result<Counts, BackupError> {
    let started = Instant::now();
    let mut graph = Graph {
        path,
        store,
        scope,
        user,
        pending: Vec::new(),
        anchors: HashMap::new(),
        links: Vec::new(),
        counts: Counts::default(),
    };
    let bad = |line: u64, message: String| BackupError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut relations: Vec<(u64, String, String, String)> = Vec::new();
    let mut read: u64 = 0;
    for item in lines(path, reader) {
        let (n, text) = item?;
        let line: GraphLine = serde_json::from_str(&text).map_err(|e| {
            bad(
                n,
                format!("not a server-memory entity or relation: {e} (a mnemo export needs --format mnemo)"),
            )
        })?;
        read += 1;
        match line {
            GraphLine::Entity {
                name,
                entity_type,
                observations,
            } => {
                let tags = [entity_type.as_str(), name.as_str()];
                let meta =
                    json!({"source": "server-memory", "entity": name, "entity_type": entity_type});
                let article = if entity_type
                    .starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U'])
                {
                    "an"
                } else {
                    "a"
                };
                let anchor = format!("{name} is {article} {entity_type}.");
                let anchor_of = Links {
                    elaborates: None,
                    anchor_of: Some(&name),
                };
                let what = format!("entity {name:?}");
                graph
                    .add(n, &what, anchor, &tags, meta.clone(), anchor_of)
                    .await?;
                let elaborates = Links {
                    elaborates: Some(&name),
                    anchor_of: None,
                };
                let what = format!("observation of {name:?}");
                for observation in observations {
                    let content = format!("{name} ({entity_type}): {observation}");
                    graph
                        .add(n, &what, content, &tags, meta.clone(), elaborates)
                        .await?;
                }
            }
            GraphLine::Relation {
                from,
                to,
                relation_type,
            } => relations.push((n, from, to, relation_type)),
        }
        if read.is_multiple_of(PROGRESS_EVERY) {
            eprintln!(
                "mnemo: import: {read} lines read, {} memories stored",
                graph.counts.memories + graph.counts.skipped
            );
        }
    }
    // Relations last: by now every entity in the file has its anchor.
    let mut edges: Vec<(String, String)> = Vec::new();
    for (n, from, to, relation_type) in relations {
        for name in [&from, &to] {
            if !graph.has_anchor(name) {
                // A relation to an entity the file never describes.
                let meta = json!({"source": "server-memory", "entity": name});
                let links = Links {
                    elaborates: None,
                    anchor_of: Some(name.as_str()),
                };
                let content = format!("{name} is an entity.");
                graph
                    .add(
                        n,
                        &format!("entity {name:?}"),
                        content,
                        &[name.as_str()],
                        meta,
                        links,
                    )
                    .await?;
            }
        }
        let meta = json!({"source": "server-memory", "from": from, "to": to, "relation_type": relation_type});
        let links = Links {
            elaborates: Some(&from),
            anchor_of: None,
        };
        let content = format!("{from} {relation_type} {to}");
        let tags = [relation_type.as_str(), from.as_str(), to.as_str()];
        graph
            .add(n, "relation", content, &tags, meta, links)
            .await?;
        edges.push((from, to));
    }
    graph.flush().await?;
    for (id, entity) in std::mem::take(&mut graph.links) {
        if let Some(&anchor) = graph.anchors.get(&entity) {
            graph.relate(id, anchor, Relation::Elaborates).await?;
        }
    }
    for (from, to) in edges {
        if let (Some(&a), Some(&b)) = (graph.anchors.get(&from), graph.anchors.get(&to)) {
            graph.relate(a, b, Relation::References).await?;
        }
    }
    let counts = graph.counts;
    eprintln!(
        "mnemo: imported {read} lines as {} new memories and {} new relations ({} already present) in {:.1} s",
        counts.memories,
        counts.relations,
        counts.skipped,
        started.elapsed().as_secs_f64()
    );
    Ok(counts)
}

/// The tags among `candidates` that fit (an over-long name is left out
/// rather than failing the import), trimmed, each once, at most [`MAX_TAGS`].
fn tags(candidates: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tag in candidates.iter().map(|t| t.trim()) {
        if is_label(tag, MAX_TAG_CHARS) && !out.iter().any(|o| o == tag) && out.len() < MAX_TAGS {
            out.push(tag.to_string());
        }
    }
    out
}

/// A fact memory of `user`, or why the content or metadata cannot be stored.
fn memory(
    user: &str,
    content: String,
    candidates: &[&str],
    metadata: Value,
) -> Result<NewMemory, String> {
    let content = content.trim();
    let chars = content.chars().count();
    if chars == 0 || chars > MAX_CONTENT_CHARS || content.contains('\0') {
        return Err(format!(
            "the memory would be {chars} characters: it must be 1 to {MAX_CONTENT_CHARS}, without NUL"
        ));
    }
    let size = metadata.to_string().len();
    if size > MAX_METADATA_BYTES || metadata.to_string().contains("\\u0000") {
        return Err(format!(
            "its metadata would be {size} bytes: at most {MAX_METADATA_BYTES} are allowed, without NUL"
        ));
    }
    Ok(NewMemory {
        user: user.to_string(),
        content: content.to_string(),
        kind: Kind::Fact,
        importance: 5,
        confidence: 1.0,
        tags: tags(candidates),
        metadata,
        occurred_at: None,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_that_do_not_fit_are_left_out() {
        let long = "x".repeat(MAX_TAG_CHARS + 1);
        assert_eq!(
            tags(&[" person ", &long, "person", "Ana"]),
            vec!["person", "Ana"]
        );
    }

    #[test]
    fn content_too_long_or_with_nul_is_refused() {
        let meta = json!({"source": "server-memory"});
        assert!(memory("u", "x".repeat(MAX_CONTENT_CHARS + 1), &[], meta.clone()).is_err());
        assert!(memory("u", "a\0b".into(), &[], meta.clone()).is_err());
        let ok = memory("u", "  Ana is a person.  ".into(), &["person"], meta).unwrap();
        assert_eq!(ok.content, "Ana is a person.");
    }
}
