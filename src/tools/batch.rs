//! Embedding for the batch tools (`store_memories`, `append_messages`): in
//! chunks of [`EMBED_CHUNK`], a progress notification per chunk when the
//! request carries a progress token, and a stop at the next chunk once the
//! client cancels. A chunk the embedder cannot do is left to the backfill
//! job (its vectors are `None`).

use rmcp::model::ProgressNotificationParam;
use rmcp::{RoleServer, service::RequestContext};

use super::MnemoServer;
use super::output::ToolError;

/// Texts per embedding call: one progress notification and one
/// cancellation check each.
pub(crate) const EMBED_CHUNK: usize = 32;

/// The answer to a cancelled batch: `nothing` names what was not done
/// ("stored", "appended").
pub(crate) fn cancelled(nothing: &str) -> ToolError {
    ToolError::invalid(format!("cancelled by the client; nothing was {nothing}"))
}

impl MnemoServer {
    /// One vector (or `None`, deferred) per text, in order; on cancellation
    /// the [`cancelled`] error with `nothing`.
    pub(crate) async fn embed_with_progress(
        &self,
        texts: Vec<String>,
        context: &RequestContext<RoleServer>,
        nothing: &str,
    ) -> Result<Vec<Option<Vec<f32>>>, ToolError> {
        let n = texts.len();
        let token = context.meta.get_progress_token();
        // Chunks of texts of similar length: a pass pads every text to its
        // longest, so chunks cut in arrival order paid for padding
        // (conversation turns were stored at 0.46-0.54x the bare embedder's
        // rate on the same batches, 0.86-0.96x sorted; docs/BENCHMARKS.md).
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut done = 0;
        for chunk in order.chunks(EMBED_CHUNK) {
            if context.ct.is_cancelled() {
                return Err(cancelled(nothing));
            }
            let batch = chunk.iter().map(|&i| texts[i].clone()).collect();
            match self.app().embed_or_defer(batch).await {
                Some(v) => {
                    for (&i, vector) in chunk.iter().zip(v) {
                        out[i] = Some(vector);
                    }
                }
                None => super::logging::embedding_deferred(),
            }
            done += chunk.len();
            if let Some(token) = &token {
                let progress = ProgressNotificationParam::new(token.clone(), done as f64)
                    .with_total(n as f64)
                    .with_message(format!("embedded {done} of {n}"));
                if let Err(e) = context.peer.notify_progress(progress).await {
                    tracing::debug!(error = %e, "progress notification not delivered");
                }
            }
        }
        if context.ct.is_cancelled() {
            return Err(cancelled(nothing));
        }
        Ok(out)
    }
}
