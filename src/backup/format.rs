//! The mnemo export format, defined once: [`Record`] is every line a file
//! may hold, the header included, and its conversions to and from the
//! store's rows are the only place the two meet.
//!
//! Version 2 added `context` and `message` lines; a version 1 file (no
//! conversation lines) reads as before. Readers ignore fields they do not
//! know, so a field added later does not break them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::bulk::{
    CompanionRow, ContextRow, MemoryRow, MessageRow, RelationRow, Row, UserRow,
};
use crate::store::contexts::{Context, Message, Role};
use crate::store::relations::Step;
use crate::store::{Kind, Memory, Relation};

/// The format name in the header line.
pub const FORMAT: &str = "mnemo-export";
/// The version this mnemo writes, and the newest it reads.
pub const VERSION: u32 = 2;
/// The oldest version this mnemo reads.
pub const OLDEST_VERSION: u32 = 1;

/// The first line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    pub mnemo_version: String,
    /// The dimension of the embeddings in the file (those of another
    /// dimension are dropped on import and re-embedded).
    pub embedding_dim: usize,
    /// Set when the export was limited to one user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One line of a mnemo export: a JSON object whose `type` says which. After
/// the header, in this order: companions, users, memories, relations,
/// contexts (a fork after its parent), messages. Companions and users are
/// named, not referenced by id, so a file merges into a database that knows
/// them under other ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Header(Header),
    Companion {
        id: Uuid,
        name: String,
        created_at: DateTime<Utc>,
    },
    User {
        id: Uuid,
        external_id: String,
        created_at: DateTime<Utc>,
    },
    Memory {
        id: Uuid,
        companion: String,
        user: String,
        content: String,
        kind: Kind,
        importance: i16,
        confidence: f32,
        tags: Vec<String>,
        metadata: serde_json::Value,
        occurred_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        archived_at: Option<DateTime<Utc>>,
        access_count: i64,
        last_accessed_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        /// Absent when exported without embeddings, or not embedded yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<f32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding_model: Option<String>,
    },
    Relation {
        id: Uuid,
        companion: String,
        from_id: Uuid,
        to_id: Uuid,
        relation: Relation,
        strength: f32,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    },
    /// Since version 2. The counts and latest version are the context's as
    /// read (a fork's include what it inherits).
    Context {
        id: Uuid,
        companion: String,
        user: String,
        name: String,
        parent_id: Option<Uuid>,
        fork_version: Option<i64>,
        message_count: i64,
        total_tokens: i64,
        latest_version: i64,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        deleted_at: Option<DateTime<Utc>>,
    },
    /// Since version 2. `context_id` is the context that wrote it.
    Message {
        id: Uuid,
        context_id: Uuid,
        version: i64,
        role: Role,
        content: String,
        tool_call_id: Option<String>,
        tool_name: Option<String>,
        token_count: i32,
        model: Option<String>,
        created_at: DateTime<Utc>,
        deleted_at: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding: Option<Vec<f32>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        embedding_model: Option<String>,
    },
}

impl From<Row> for Record {
    fn from(row: Row) -> Self {
        match row {
            Row::Companion(CompanionRow {
                id,
                name,
                created_at,
            }) => Record::Companion {
                id,
                name,
                created_at,
            },
            Row::User(UserRow {
                id,
                external_id,
                created_at,
            }) => Record::User {
                id,
                external_id,
                created_at,
            },
            Row::Memory(MemoryRow {
                companion,
                memory: m,
                embedding,
                embedding_model,
            }) => Record::Memory {
                id: m.id,
                companion,
                user: m.user_id,
                content: m.content,
                kind: m.kind,
                importance: m.importance,
                confidence: m.confidence,
                tags: m.tags,
                metadata: m.metadata,
                occurred_at: m.occurred_at,
                expires_at: m.expires_at,
                archived_at: m.archived_at,
                access_count: m.access_count,
                last_accessed_at: m.last_accessed_at,
                created_at: m.created_at,
                updated_at: m.updated_at,
                embedding,
                embedding_model,
            },
            Row::Relation(RelationRow {
                id,
                companion,
                step,
                created_at,
                updated_at,
            }) => Record::Relation {
                id,
                companion,
                from_id: step.from_id,
                to_id: step.to_id,
                relation: step.relation,
                strength: step.strength,
                created_at,
                updated_at,
            },
            Row::Context(ContextRow {
                companion,
                context: c,
                deleted_at,
            }) => Record::Context {
                id: c.id,
                companion,
                user: c.user_id,
                name: c.name,
                parent_id: c.parent_id,
                fork_version: c.fork_version,
                message_count: c.message_count,
                total_tokens: c.total_tokens,
                latest_version: c.latest_version,
                created_at: c.created_at,
                updated_at: c.updated_at,
                deleted_at,
            },
            Row::Message(MessageRow {
                message: m,
                embedding,
                embedding_model,
                deleted_at,
            }) => Record::Message {
                id: m.id,
                context_id: m.context_id,
                version: m.version,
                role: m.role,
                content: m.content,
                tool_call_id: m.tool_call_id,
                tool_name: m.tool_name,
                token_count: m.token_count,
                model: m.model,
                created_at: m.created_at,
                deleted_at,
                embedding,
                embedding_model,
            },
        }
    }
}

impl Record {
    /// The store's row for this line; None for the header.
    pub fn into_row(self) -> Option<Row> {
        Some(match self {
            Record::Header(_) => return None,
            Record::Companion {
                id,
                name,
                created_at,
            } => Row::Companion(CompanionRow {
                id,
                name,
                created_at,
            }),
            Record::User {
                id,
                external_id,
                created_at,
            } => Row::User(UserRow {
                id,
                external_id,
                created_at,
            }),
            Record::Memory {
                id,
                companion,
                user,
                content,
                kind,
                importance,
                confidence,
                tags,
                metadata,
                occurred_at,
                expires_at,
                archived_at,
                access_count,
                last_accessed_at,
                created_at,
                updated_at,
                embedding,
                embedding_model,
            } => Row::Memory(MemoryRow {
                companion,
                memory: Memory {
                    id,
                    user_id: user,
                    content,
                    kind,
                    importance,
                    confidence,
                    tags,
                    metadata,
                    occurred_at,
                    expires_at,
                    archived_at,
                    access_count,
                    last_accessed_at,
                    created_at,
                    updated_at,
                    embedded: embedding.is_some(),
                },
                embedding,
                embedding_model,
            }),
            Record::Relation {
                id,
                companion,
                from_id,
                to_id,
                relation,
                strength,
                created_at,
                updated_at,
            } => Row::Relation(RelationRow {
                id,
                companion,
                step: Step {
                    from_id,
                    relation,
                    to_id,
                    strength,
                },
                created_at,
                updated_at,
            }),
            Record::Context {
                id,
                companion,
                user,
                name,
                parent_id,
                fork_version,
                message_count,
                total_tokens,
                latest_version,
                created_at,
                updated_at,
                deleted_at,
            } => Row::Context(ContextRow {
                companion,
                context: Context {
                    id,
                    user_id: user,
                    name,
                    parent_id,
                    fork_version,
                    message_count,
                    total_tokens,
                    latest_version,
                    created_at,
                    updated_at,
                },
                deleted_at,
            }),
            Record::Message {
                id,
                context_id,
                version,
                role,
                content,
                tool_call_id,
                tool_name,
                token_count,
                model,
                created_at,
                deleted_at,
                embedding,
                embedding_model,
            } => Row::Message(MessageRow {
                message: Message {
                    id,
                    context_id,
                    version,
                    role,
                    content,
                    tool_call_id,
                    tool_name,
                    token_count,
                    model,
                    created_at,
                },
                embedding,
                embedding_model,
                deleted_at,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 memory line (as the first export wrote it) still reads,
    /// and writes back with the same fields.
    #[test]
    fn a_version_1_memory_line_reads_and_writes_back_unchanged() {
        let line = r#"{"type":"memory","id":"5f0c6a4e-8a4b-4c1e-9d3e-2b7f1a0c9e11","companion":"default","user":"ana","content":"Ana likes tea","kind":"preference","importance":5,"confidence":1.0,"tags":["drinks"],"metadata":{"source":"chat"},"occurred_at":"2024-01-01T00:00:00Z","expires_at":null,"archived_at":null,"access_count":2,"last_accessed_at":null,"created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z"}"#;
        let record: Record = serde_json::from_str(line).unwrap();
        let row = record.into_row().unwrap();
        let Row::Memory(m) = &row else {
            panic!("not a memory: {row:?}")
        };
        assert_eq!(
            (m.memory.user_id.as_str(), m.memory.access_count),
            ("ana", 2)
        );
        let back: serde_json::Value = serde_json::to_value(Record::from(row)).unwrap();
        let original: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn a_header_is_no_row() {
        let header = Record::Header(Header {
            format: FORMAT.into(),
            version: VERSION,
            exported_at: Utc::now(),
            mnemo_version: "0".into(),
            embedding_dim: 3,
            user: None,
        });
        let text = serde_json::to_string(&header).unwrap();
        assert!(
            text.starts_with(r#"{"type":"header","format":"mnemo-export","version":2"#),
            "{text}"
        );
        assert!(header.into_row().is_none());
    }
}
