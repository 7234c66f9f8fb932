//! Whole tables, for backups: every companion, user, memory, relation,
//! conversation context and message, handed out as a stream of rows from
//! one snapshot ([`Store::snapshot`]), and taken back in batches that keep
//! ids ([`Importer`]), so relations and forks survive and importing the same
//! rows twice changes nothing.
//!
//! Unlike the rest of the store this is not scoped by companion: export and
//! import are administrative commands over the whole database, never
//! reachable through MCP. It knows no files and no file format (that is
//! `backup`'s): a row here is a table's row, with companions and users named
//! rather than referenced by id, so a batch can be merged into a database
//! that knows them under other ids.
//!
//! [`Store::snapshot`]: super::Store::snapshot

mod insert;
mod snapshot;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Memory;
use super::contexts::{Context, Message};
use super::relations::Step;

pub use insert::Importer;
pub use snapshot::{Rows, Selection};

#[derive(Debug, Clone, PartialEq)]
pub struct CompanionRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: Uuid,
    pub external_id: String,
    pub created_at: DateTime<Utc>,
}

/// A memory with its companion and vector (`memory.user_id` names its
/// user; `memory.embedded` is ignored on import: the vector decides).
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub companion: String,
    pub memory: Memory,
    /// None when not embedded yet, or read without embeddings.
    pub embedding: Option<Vec<f32>>,
    pub embedding_model: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RelationRow {
    pub id: Uuid,
    pub companion: String,
    pub step: Step,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A context with its companion and deletion state (`context.user_id`
/// names its user; its counts and latest version are stored, not derived).
#[derive(Debug, Clone)]
pub struct ContextRow {
    pub companion: String,
    pub context: Context,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A message of context `message.context_id` (the context that wrote it),
/// with its vector.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub message: Message,
    pub embedding: Option<Vec<f32>>,
    pub embedding_model: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// One row, in the order a snapshot hands them out: companions, users,
/// memories, relations, contexts (a fork after its parent), messages. An
/// import in that order finds everything a row refers to already there.
#[derive(Debug, Clone)]
pub enum Row {
    Companion(CompanionRow),
    User(UserRow),
    Memory(MemoryRow),
    Relation(RelationRow),
    Context(ContextRow),
    Message(MessageRow),
}

/// Rows of each table read or imported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub companions: u64,
    pub users: u64,
    pub memories: u64,
    pub relations: u64,
    pub contexts: u64,
    pub messages: u64,
    /// Import only: rows already present (or whose memory or context is missing).
    pub skipped: u64,
    /// Memories and messages without an embedding (the server's backfill
    /// job embeds them).
    pub unembedded: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.companions
            + self.users
            + self.memories
            + self.relations
            + self.contexts
            + self.messages
    }

    pub fn add(&mut self, other: Counts) {
        self.companions += other.companions;
        self.users += other.users;
        self.memories += other.memories;
        self.relations += other.relations;
        self.contexts += other.contexts;
        self.messages += other.messages;
        self.skipped += other.skipped;
        self.unembedded += other.unembedded;
    }

    /// Counts `row` as one read (an export's tally).
    pub fn note(&mut self, row: &Row) {
        let (table, embedded) = match row {
            Row::Companion(_) => (&mut self.companions, true),
            Row::User(_) => (&mut self.users, true),
            Row::Memory(m) => (&mut self.memories, m.embedding.is_some()),
            Row::Relation(_) => (&mut self.relations, true),
            Row::Context(_) => (&mut self.contexts, true),
            Row::Message(m) => (&mut self.messages, m.embedding.is_some()),
        };
        *table += 1;
        if !embedded {
            self.unembedded += 1;
        }
    }
}
