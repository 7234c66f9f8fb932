//! Text embeddings: the [`Embedder`] interface and its providers.
//!
//! Providers: `local` (all-MiniLM-L6-v2 through ONNX Runtime, the default),
//! `candle` (the same model in pure Rust, slower), `openai`
//! (any OpenAI-compatible `/embeddings` endpoint) and `hash` (a tiny
//! deterministic embedder for tests that are not about retrieval quality).
//! Every provider returns L2-normalised vectors of [`Embedder::dim`] floats.

pub mod bert;
pub mod cache;
pub mod hash;
pub mod local;
pub mod onnx;
pub mod openai;
#[cfg(test)]
mod testkit;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::config::EmbedderConfig;

/// Why an embedding could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model files not found at {path}: {hint}")]
    ModelMissing { path: String, hint: String },
    #[error("embedding model failed to load: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Inference(String),
    #[error("embedding service error: {0}")]
    Remote(String),
    #[error("embedder returned {got} dimensions, expected {expected}")]
    Dimension { expected: usize, got: usize },
}

/// Turns texts into vectors. Implementations must be cheap to share
/// (`Arc<dyn Embedder>`) and must not block the async runtime.
pub trait Embedder: Send + Sync {
    /// Number of dimensions of every vector this embedder returns.
    fn dim(&self) -> usize;
    /// A stable name for the model, recorded next to stored vectors.
    fn model_id(&self) -> &str;
    /// Embeds `texts` in order; the result has one vector per text.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedError>>;
}

const LOCAL_MODEL_ID: &str = "all-MiniLM-L6-v2";

/// The local model's dimension from its config.json, read before the model
/// itself loads so the database can be checked at once (384 if unreadable:
/// the load then fails with the real reason).
pub(crate) fn local_dim(model_dir: &std::path::Path) -> usize {
    std::fs::read(model_dir.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("hidden_size").and_then(|h| h.as_u64()))
        .map(|h| h as usize)
        .unwrap_or(384)
}

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2. The bundled
/// tokenizer.json says 128, but the published pipeline truncates at 256.
pub(crate) const MAX_SEQ_LEN: usize = 256;

/// Loads the model's tokenizer.json configured the way both local backends
/// need it: truncated at `max_len` tokens and unpadded (each batch is padded
/// to its own longest text). Returns the tokenizer and its padding id.
pub(crate) fn load_tokenizer(
    path: &std::path::Path,
    max_len: usize,
) -> Result<(tokenizers::Tokenizer, u32), EmbedError> {
    use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};
    let mut tokenizer = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| EmbedError::Load(format!("reading {}: {e}", path.display())))?;
    // The shipped tokenizer pads every input to a fixed 128 tokens, which
    // would make a 10-token query cost as much as a 128-token one.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| EmbedError::Load(format!("configuring tokenizer truncation: {e}")))?;
    // BERT's vocabulary puts [PAD] at 0; padded positions are masked anyway.
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
    Ok((tokenizer, pad_id))
}

/// Runs CPU-bound inference on tokio's blocking pool, so it never stalls the
/// async runtime; outside a runtime there is no pool to hand off to, and
/// computing inline beats panicking.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EmbedError> + Send + 'static,
) -> Result<T, EmbedError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(work)
            .await
            .map_err(|e| EmbedError::Inference(format!("embedding task failed: {e}")))?,
        Err(_) => work(),
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Runs a model loader on the blocking pool: loading reads ~100 MB and
/// optimises a graph, CPU work that must not stall the async runtime.
async fn load_in_background<E, F>(load: F) -> Result<Arc<dyn Embedder>, EmbedError>
where
    E: Embedder + Send + 'static,
    F: FnOnce() -> Result<E, EmbedError> + Send + 'static,
{
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(load)
        .await
        .map_err(|e| EmbedError::Load(format!("model loader crashed: {e}")))??;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "embedding model loaded"
    );
    Ok(Arc::new(loaded) as Arc<dyn Embedder>)
}

/// An embedder whose model loads in the background, so the server answers
/// `initialize` at once; the first embedding call waits for the load.
pub struct LazyEmbedder {
    dim: usize,
    model_id: String,
    source: Source,
    cell: OnceCell<Arc<dyn Embedder>>,
}

enum Source {
    Onnx(onnx::OnnxFiles),
    Candle(PathBuf),
    Ready(Arc<dyn Embedder>),
}

impl LazyEmbedder {
    /// Builds the provider `config` names. Remote and hash providers are
    /// ready at once; the local model is read on first use or [`Self::warm_up`].
    pub fn from_config(config: &EmbedderConfig) -> Result<Arc<Self>, EmbedError> {
        let (dim, model_id, source) = match config {
            EmbedderConfig::Local(files) => (
                local_dim(&files.tokenizer_dir),
                LOCAL_MODEL_ID.to_string(),
                Source::Onnx(files.clone()),
            ),
            EmbedderConfig::Candle { model_dir } => (
                local_dim(model_dir),
                LOCAL_MODEL_ID.to_string(),
                Source::Candle(model_dir.clone()),
            ),
            EmbedderConfig::OpenAi {
                base_url,
                model,
                api_key,
                dim,
            } => {
                let e = openai::OpenAiEmbedder::new(base_url, model, api_key.clone(), *dim)?;
                (*dim, model.clone(), Source::Ready(Arc::new(e)))
            }
            EmbedderConfig::Hash { dim } => (
                *dim,
                "hash".to_string(),
                Source::Ready(Arc::new(hash::HashEmbedder::new(*dim))),
            ),
        };
        Ok(Arc::new(LazyEmbedder {
            dim,
            model_id,
            source,
            cell: OnceCell::new(),
        }))
    }

    /// The loaded embedder, loading it now if needed.
    pub async fn get(&self) -> Result<Arc<dyn Embedder>, EmbedError> {
        self.cell
            .get_or_try_init(|| async {
                match &self.source {
                    Source::Ready(e) => Ok(e.clone()),
                    Source::Onnx(files) => {
                        let files = files.clone();
                        load_in_background(move || {
                            onnx::OnnxEmbedder::load(&files, &onnx::OnnxOptions::default())
                        })
                        .await
                    }
                    Source::Candle(dir) => {
                        let dir = dir.clone();
                        load_in_background(move || local::LocalEmbedder::load(&dir)).await
                    }
                }
            })
            .await
            .cloned()
    }

    /// True once the model is loaded (for readiness checks).
    pub fn is_loaded(&self) -> bool {
        self.cell.initialized()
    }

    /// Starts loading in the background; errors are logged, and retried by
    /// the next call that needs an embedding.
    pub fn warm_up(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.get().await {
                tracing::error!(error = %e, "embedding model did not load; memories are stored without vectors until it does");
            }
        });
    }
}

impl Embedder for LazyEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            let inner = self.get().await?;
            let started = std::time::Instant::now();
            let n = texts.len();
            let vectors = inner.embed(texts).await?;
            crate::metrics::embedding(n, started.elapsed());
            if let Some(v) = vectors.iter().find(|v| v.len() != self.dim) {
                return Err(EmbedError::Dimension {
                    expected: self.dim,
                    got: v.len(),
                });
            }
            Ok(vectors)
        })
    }
}
