//! MCP logging: `logging/setLevel` (each session's level) and the
//! `notifications/message` a tool call sends about what its client should
//! hear: the embedding model down (a memory or message stored without a
//! vector: warning) and a dependency unavailable (a tool answering
//! `unavailable`: error). The server's own log (tracing, on stderr) is
//! separate and unchanged.
//!
//! Tools [`note`] messages as they go, synchronously and without knowing
//! the session; `call_tool` runs each call inside [`collecting`] and sends
//! what was noted, filtered by the session's level, before the response.
//!
//! rmcp marks MCP logging deprecated (SEP-2577, a draft after 2025-11-25);
//! the 2025-11-25 specification mnemo serves still has it.
#![allow(deprecated)]

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::RoleServer;
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::Peer;

/// The logger name on every message.
const LOGGER: &str = "mnemo";

/// A session's level until it sends `logging/setLevel`: what it sends is
/// warnings and errors, all worth hearing.
const DEFAULT: LoggingLevel = LoggingLevel::Warning;

/// RFC 5424 order, as MCP uses it: debug lowest, emergency highest.
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The lowest level a session wants to hear.
///
/// Cloning gives a new session's level, at the default, not a shared one:
/// a transport makes each session's handler by cloning the server (rmcp
/// then shares that one handler within the session).
#[derive(Debug)]
pub(crate) struct SessionLevel(AtomicU8);

impl Default for SessionLevel {
    fn default() -> Self {
        SessionLevel(AtomicU8::new(rank(DEFAULT)))
    }
}

impl Clone for SessionLevel {
    fn clone(&self) -> Self {
        SessionLevel::default()
    }
}

impl SessionLevel {
    pub(crate) fn set(&self, level: LoggingLevel) {
        self.0.store(rank(level), Ordering::Relaxed);
    }

    fn allows(&self, level: LoggingLevel) -> bool {
        rank(level) >= self.0.load(Ordering::Relaxed)
    }
}

/// One message noted during a call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Note {
    level: LoggingLevel,
    message: String,
}

type Notes = Arc<Mutex<Vec<Note>>>;

tokio::task_local! {
    /// The messages of the tool call this task is running.
    static NOTES: Notes;
}

/// Notes `message` for the client of the tool call being run; outside one
/// (a call in-process, a background job) it goes nowhere.
pub(crate) fn note(level: LoggingLevel, message: impl Into<String>) {
    let message = message.into();
    let _ = NOTES.try_with(|notes| {
        if let Ok(mut notes) = notes.lock() {
            // The same warning from every chunk of a batch is one message.
            if !notes.iter().any(|n| n.message == message) {
                notes.push(Note { level, message });
            }
        }
    });
}

/// Runs `call`, returning its output and what it noted.
pub(crate) async fn collecting<F: Future>(call: F) -> (F::Output, Vec<Note>) {
    let notes = Notes::default();
    let output = NOTES.scope(notes.clone(), call).await;
    let noted = notes.lock().map(|n| n.clone()).unwrap_or_default();
    (output, noted)
}

/// Sends the `notes` of `tool` that `level` lets through to `peer`.
pub(crate) async fn send(
    peer: &Peer<RoleServer>,
    level: &SessionLevel,
    tool: &str,
    notes: Vec<Note>,
) {
    for note in notes.into_iter().filter(|n| level.allows(n.level)) {
        let data = serde_json::json!({"tool": tool, "message": note.message});
        let param = LoggingMessageNotificationParam::new(note.level, data).with_logger(LOGGER);
        if let Err(e) = peer.notify_logging_message(param).await {
            tracing::debug!(error = %e, "log notification not delivered");
        }
    }
}

/// A warning: a memory or message was stored without a vector.
pub(crate) fn embedding_deferred() {
    note(
        LoggingLevel::Warning,
        "the embedding model is unavailable: stored without a vector; keyword search finds it now, semantic search once the background job embeds it",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_filter_in_rfc_5424_order() {
        let level = SessionLevel::default();
        assert!(level.allows(LoggingLevel::Warning) && !level.allows(LoggingLevel::Info));
        level.set(LoggingLevel::Error);
        assert!(!level.allows(LoggingLevel::Warning));
        assert!(level.allows(LoggingLevel::Emergency));
        level.set(LoggingLevel::Debug);
        assert!(level.allows(LoggingLevel::Debug));
        assert!(
            level.clone().allows(LoggingLevel::Warning)
                && !level.clone().allows(LoggingLevel::Info),
            "a clone is a new session, at the default"
        );
    }

    #[tokio::test]
    async fn notes_are_collected_per_call_once_each() {
        let ((), notes) = collecting(async {
            embedding_deferred();
            embedding_deferred();
            note(LoggingLevel::Error, "the database is unavailable");
        })
        .await;
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(notes[1].level, LoggingLevel::Error);
        // Outside a call a note goes nowhere (and does not panic).
        note(LoggingLevel::Error, "nobody hears this");
    }
}
