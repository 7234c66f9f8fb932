//! What the two local backends (`onnx`, `local`) share around their one
//! different step, the BERT forward pass: batching texts into passes,
//! padding a pass, masked mean pooling with normalisation, and the
//! [`Embedder`] wrapper that runs it all on tokio's blocking pool.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokenizers::Tokenizer;

use super::{EmbedError, Embedder, LOCAL_MODEL_ID};

/// A loaded local model: its tokenizer and one padded forward pass.
pub trait Model: Send + Sync + 'static {
    /// The backend's name in `Debug` output.
    const NAME: &'static str;
    fn tokenizer(&self) -> &Tokenizer;
    /// Texts per forward pass.
    fn batch_size(&self) -> usize;
    fn dim(&self) -> usize;
    /// One unit vector per token sequence of `batch`, in order.
    fn pass(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// all-MiniLM-L6-v2 on a local backend `M`. Cloning is cheap and shares
/// the loaded model.
pub struct Local<M> {
    pub(super) model: Arc<M>,
}

impl<M> Clone for Local<M> {
    fn clone(&self) -> Self {
        Local {
            model: Arc::clone(&self.model),
        }
    }
}

impl<M: Model> std::fmt::Debug for Local<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(M::NAME)
            .field("model_id", &LOCAL_MODEL_ID)
            .field("dim", &self.model.dim())
            .finish_non_exhaustive()
    }
}

impl<M: Model> Local<M> {
    pub(super) fn new(model: M) -> Self {
        Local {
            model: Arc::new(model),
        }
    }

    /// Synchronous batch embedding; blocks the calling thread for the whole
    /// computation. Returns one unit-length vector per text, in input order.
    pub fn embed_sync(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        embed_in_passes(&*self.model, texts)
    }
}

impl<M: Model> Embedder for Local<M> {
    fn dim(&self) -> usize {
        self.model.dim()
    }

    fn model_id(&self) -> &str {
        LOCAL_MODEL_ID
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedError>> {
        let model = Arc::clone(&self.model);
        Box::pin(super::off_runtime(move || embed_in_passes(&*model, &texts)))
    }
}

/// Tokenises `texts` and embeds them in passes of the model's batch size,
/// returning one vector per text in input order. Attention cost grows with
/// the padded length of a pass, so texts of similar length go together;
/// results go back by index.
fn embed_in_passes<M: Model>(model: &M, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encodings = model
        .tokenizer()
        .encode_batch(inputs, true)
        .map_err(|e| EmbedError::Inference(format!("tokenising: {e}")))?;
    let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    let mut rest = &order[..];
    while let Some(&longest) = rest.first() {
        // Longest first, so the first text sets the pass's padded width.
        let width = ids[longest].len().max(1);
        let rows = (PASS_TOKENS / width).clamp(1, model.batch_size().max(1));
        let (chunk, tail) = rest.split_at(rows.min(rest.len()));
        rest = tail;
        let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
        for (&i, v) in chunk.iter().zip(model.pass(&batch)?) {
            out[i] = v;
        }
    }
    Ok(out)
}

/// Padded tokens one pass may hold. Attention's scratch memory grows with
/// rows x width², and ONNX Runtime's arena keeps its largest. With sorted
/// chunks, passes of 2,048 tokens took the HTTP server to 367-402 MB
/// resident during batch ingest; 512 keeps it near 200 MB at the same
/// throughput (ONNX Runtime alone, 3,000 turn-length texts: 2,048 tokens
/// 322 MB at 103 texts/s, 512 tokens 200-208 MB at 98-108; docs/BENCHMARKS.md).
const PASS_TOKENS: usize = 512;

/// A pass's inputs: token ids padded with `pad_id` to the longest sequence,
/// and the attention mask (1 on real tokens), both row-major, and the
/// (rows, width) they have.
pub(super) struct Padded<T> {
    pub ids: Vec<T>,
    pub mask: Vec<T>,
    pub rows: usize,
    pub width: usize,
}

pub(super) fn pad<T: Copy + From<u32>>(batch: &[&[u32]], pad_id: u32) -> Padded<T> {
    let rows = batch.len();
    let width = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(rows * width);
    let mut mask = Vec::with_capacity(rows * width);
    for seq in batch {
        ids.extend(seq.iter().map(|&t| T::from(t)));
        ids.extend(std::iter::repeat_n(T::from(pad_id), width - seq.len()));
        mask.extend(std::iter::repeat_n(T::from(1), seq.len()));
        mask.extend(std::iter::repeat_n(T::from(0), width - seq.len()));
    }
    Padded {
        ids,
        mask,
        rows,
        width,
    }
}

/// The sentence vector from the sum of a sequence's `tokens` hidden states:
/// their mean, at unit length. A tokenised text always has at least [CLS]
/// and [SEP], but the division is guarded regardless.
pub(super) fn mean_pooled(mut sum: Vec<f32>, tokens: usize) -> Vec<f32> {
    let count = tokens.max(1) as f32;
    sum.iter_mut().for_each(|x| *x /= count);
    super::normalize(&mut sum);
    sum
}
