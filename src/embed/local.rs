//! TEMPORARY STUB (helper is writing the real one).
use super::{EmbedError, Embedder};
use futures::future::BoxFuture;
pub struct LocalEmbedder;
impl LocalEmbedder {
    pub fn load(_model_dir: &std::path::Path) -> Result<Self, EmbedError> {
        Err(EmbedError::Load("stub".into()))
    }
    pub fn embed_sync(&self, _texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Err(EmbedError::Load("stub".into()))
    }
}
impl Embedder for LocalEmbedder {
    fn dim(&self) -> usize {
        384
    }
    fn model_id(&self) -> &str {
        "all-MiniLM-L6-v2"
    }
    fn embed(&self, _texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async { Err(EmbedError::Load("stub".into())) })
    }
}
