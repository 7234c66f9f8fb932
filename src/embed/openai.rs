//! Embeddings from any OpenAI-compatible `/embeddings` endpoint (OpenAI,
//! Ollama, vLLM, TEI): batched requests, a per-request timeout, and retries
//! with exponential backoff on rate limits, server errors and timeouts.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{EmbedError, Embedder, normalize};

const BATCH: usize = 64;
const ATTEMPTS: u32 = 4;

pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    dim: usize,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        dim: usize,
    ) -> Result<Self, EmbedError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| EmbedError::Remote(format!("cannot build HTTP client: {e}")))?;
        Ok(OpenAiEmbedder {
            client,
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
            dim,
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = serde_json::json!({ "model": self.model, "input": texts });
        let mut delay = Duration::from_millis(250);
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            let mut request = self.client.post(&self.url).json(&body);
            if let Some(key) = &self.api_key {
                request = request.bearer_auth(key);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let parsed: Response = response.json().await.map_err(|e| {
                        EmbedError::Remote(format!("unexpected response from {}: {e}", self.url))
                    })?;
                    return self.order(parsed, texts.len());
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    last_error = format!("{} returned {status}: {}", self.url, truncate(&text));
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    if !retryable {
                        break;
                    }
                }
                Err(e) => last_error = format!("request to {} failed: {e}", self.url),
            }
            if attempt < ATTEMPTS {
                tracing::warn!(attempt, error = %last_error, "embedding request failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(EmbedError::Remote(last_error))
    }

    fn order(&self, response: Response, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = vec![Vec::new(); expected];
        for item in response.data {
            if item.embedding.len() != self.dim {
                return Err(EmbedError::Dimension {
                    expected: self.dim,
                    got: item.embedding.len(),
                });
            }
            let slot = out.get_mut(item.index).ok_or_else(|| {
                EmbedError::Remote(format!("response index {} out of range", item.index))
            })?;
            *slot = item.embedding;
        }
        if out.iter().any(Vec::is_empty) {
            return Err(EmbedError::Remote(
                "response is missing some embeddings".into(),
            ));
        }
        for v in &mut out {
            normalize(v);
        }
        Ok(out)
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(300) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl Embedder for OpenAiEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn model_id(&self) -> &str {
        &self.model
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(BATCH) {
                out.extend(self.embed_batch(chunk).await?);
            }
            Ok(out)
        })
    }
}
