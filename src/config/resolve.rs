//! [`Settings::resolve`]: the defaults (from [`super::defaults`]) and the
//! range checks that turn merged settings into a [`Config`].

use std::time::Duration;

use super::defaults;
use super::{
    Config, ConfigError, EmbedderConfig, EmbedderKind, HttpConfig, Settings, default_data_dir,
};

impl Settings {
    /// Applies defaults and checks ranges.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let default_data = default_data_dir();
        let data_dir = self.data_dir.unwrap_or_else(|| default_data.clone());
        let runtime_dir = self
            .runtime_dir
            .unwrap_or_else(|| default_data.join(defaults::RUNTIME_DIR));
        let pg_bin = self
            .pg_bin
            .unwrap_or_else(|| runtime_dir.join(defaults::PG_BIN));
        let pool_size = self.pool_size.unwrap_or(defaults::POOL_SIZE);
        if !(1..=1000).contains(&pool_size) {
            return Err(ConfigError::Invalid(format!(
                "pool_size {pool_size} is out of range: use 1 to 1000"
            )));
        }
        let query_cache = self.query_cache.unwrap_or(defaults::QUERY_CACHE);
        // Its vectors are allocated at start: 1.5 MB per 1,000 at 384 dims.
        if query_cache > 100_000 {
            return Err(ConfigError::Invalid(format!(
                "query_cache {query_cache} is out of range: use 0 (off) to 100000"
            )));
        }
        let companion = self.companion.unwrap_or_else(|| defaults::COMPANION.into());
        check_name("companion", &companion, 128)?;
        let default_user = self
            .default_user
            .unwrap_or_else(|| defaults::DEFAULT_USER.into());
        check_name("default_user", &default_user, 256)?;
        let model_dir = self
            .model_dir
            .unwrap_or_else(|| runtime_dir.join(defaults::MODEL_DIR));
        let embedder = match self.embedder.unwrap_or(defaults::EMBEDDER) {
            EmbedderKind::Local => EmbedderConfig::Local(crate::embed::onnx::OnnxFiles {
                model: self
                    .onnx_model
                    .unwrap_or_else(|| runtime_dir.join(defaults::ONNX_MODEL)),
                runtime_lib: self
                    .onnxruntime_lib
                    .unwrap_or_else(|| runtime_dir.join(defaults::ONNXRUNTIME_LIB)),
                tokenizer_dir: model_dir,
            }),
            EmbedderKind::Candle => EmbedderConfig::Candle { model_dir },
            EmbedderKind::Openai => EmbedderConfig::OpenAi {
                base_url: self
                    .openai_base_url
                    .unwrap_or_else(|| defaults::OPENAI_BASE_URL.into())
                    .trim_end_matches('/')
                    .to_string(),
                model: self
                    .openai_model
                    .unwrap_or_else(|| defaults::OPENAI_MODEL.into()),
                api_key: self
                    .openai_api_key
                    .or_else(|| std::env::var("OPENAI_API_KEY").ok()),
                dim: check_dim(self.embedding_dim.unwrap_or(defaults::OPENAI_EMBEDDING_DIM))?,
            },
            EmbedderKind::Hash => EmbedderConfig::Hash {
                dim: check_dim(self.embedding_dim.unwrap_or(defaults::HASH_EMBEDDING_DIM))?,
            },
        };
        let millis = |ms: Option<u64>, default: u64| Duration::from_millis(ms.unwrap_or(default));
        Ok(Config {
            data_dir,
            runtime_dir,
            database_url: self.database_url.filter(|u| !u.trim().is_empty()),
            direct_database_url: self.direct_database_url.filter(|u| !u.trim().is_empty()),
            pooler: self.pooler.unwrap_or(defaults::POOLER),
            db_ca_file: self.db_ca_file,
            pg_bin,
            pg_user: self.pg_user.unwrap_or_else(|| defaults::PG_USER.into()),
            pool_size,
            pool_wait: millis(self.pool_wait_ms, defaults::POOL_WAIT_MS),
            connect_timeout: millis(self.connect_timeout_ms, defaults::CONNECT_TIMEOUT_MS),
            statement_timeout: millis(self.statement_timeout_ms, defaults::STATEMENT_TIMEOUT_MS),
            companion,
            default_user,
            embedder,
            query_cache,
            purge_interval: Duration::from_secs(
                self.purge_interval_secs
                    .unwrap_or(defaults::PURGE_INTERVAL_SECS)
                    .max(1),
            ),
            log_format: self.log_format.unwrap_or(defaults::LOG_FORMAT),
            read_database_urls: self
                .read_database_url
                .unwrap_or_default()
                .into_iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            read_max_lag: read_max_lag(self.read_max_lag_ms)?,
            http: HttpConfig {
                session_ttl: session_ttl(
                    self.session_ttl_hours
                        .unwrap_or(defaults::SESSION_TTL_HOURS),
                )?,
                allowed_hosts: self.allowed_hosts.unwrap_or_default(),
                allowed_origins: self.allowed_origins.unwrap_or_default(),
                rate_limit: self.rate_limit.unwrap_or(defaults::RATE_LIMIT),
                max_body_bytes: self
                    .max_body_bytes
                    .unwrap_or(defaults::MAX_BODY_BYTES)
                    .max(1024),
                insecure_no_auth: self.insecure_no_auth.unwrap_or(false),
                header_timeout: secs(
                    self.http_header_timeout_secs,
                    defaults::HTTP_HEADER_TIMEOUT_SECS,
                ),
                idle_timeout: secs(
                    self.http_idle_timeout_secs,
                    defaults::HTTP_IDLE_TIMEOUT_SECS,
                ),
                body_timeout: secs(
                    self.http_body_timeout_secs,
                    defaults::HTTP_BODY_TIMEOUT_SECS,
                ),
                max_connections: self
                    .http_max_connections
                    .unwrap_or(defaults::HTTP_MAX_CONNECTIONS)
                    .max(1),
            },
        })
    }
}

/// A timeout of at least a second.
fn secs(value: Option<u64>, default: u64) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(1))
}

fn session_ttl(hours: f64) -> Result<Duration, ConfigError> {
    if !hours.is_finite() || hours <= 0.0 || hours > 24.0 * 3650.0 {
        return Err(ConfigError::Invalid(format!(
            "session_ttl_hours {hours} is out of range: use more than 0 and at most 87600"
        )));
    }
    Ok(Duration::from_secs_f64(hours * 3600.0))
}

/// The replica lag bound: 100 ms (the fastest probe interval; a smaller
/// bound would skip every replica most of the time) to an hour.
fn read_max_lag(ms: Option<u64>) -> Result<Duration, ConfigError> {
    let ms = ms.unwrap_or(defaults::READ_MAX_LAG_MS);
    if !(100..=3_600_000).contains(&ms) {
        return Err(ConfigError::Invalid(format!(
            "read_max_lag_ms {ms} is out of range: use 100 (replicas are probed at most every \
             100 ms) to 3600000"
        )));
    }
    Ok(Duration::from_millis(ms))
}

fn check_name(what: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ConfigError::Invalid(format!(
            "{what} must be 1 to {max} characters, got {:?}",
            value
        )));
    }
    Ok(())
}

fn check_dim(dim: usize) -> Result<usize, ConfigError> {
    // HNSW indexes on pgvector's `vector` type support at most 2000 dimensions.
    if !(2..=2000).contains(&dim) {
        return Err(ConfigError::Invalid(format!(
            "embedding_dim {dim} is out of range: use 2 to 2000"
        )));
    }
    Ok(dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_cache_defaults_to_1024_and_is_bounded_with_a_clear_error() {
        assert_eq!(Settings::default().resolve().unwrap().query_cache, 1024);
        let off = Settings {
            query_cache: Some(0),
            ..Default::default()
        };
        assert_eq!(off.resolve().unwrap().query_cache, 0, "0 turns it off");
        let huge = Settings {
            query_cache: Some(100_001),
            ..Default::default()
        };
        let err = huge.resolve().unwrap_err().to_string();
        assert!(
            err.contains("query_cache 100001 is out of range: use 0 (off) to 100000"),
            "{err}"
        );
    }

    /// Nothing given: every default is its constant.
    #[test]
    fn nothing_given_resolves_to_the_documented_defaults() {
        let config = Settings::default().resolve().unwrap();
        assert_eq!(config.pool_size, 16);
        assert_eq!(config.pool_wait, Duration::from_millis(5000));
        assert_eq!(config.connect_timeout, Duration::from_millis(5000));
        assert_eq!(config.statement_timeout, Duration::from_millis(30_000));
        assert_eq!(config.pg_user, "nobody");
        assert_eq!(
            (config.companion.as_str(), config.default_user.as_str()),
            ("default", "default")
        );
        assert_eq!(config.purge_interval, Duration::from_secs(300));
        assert_eq!(config.http.session_ttl, Duration::from_secs(168 * 3600));
        assert_eq!(config.http.rate_limit, 1200);
        assert_eq!(config.http.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(config.log_format, super::super::LogFormat::Text);
        assert!(matches!(config.embedder, EmbedderConfig::Local(_)));
        assert!(config.pg_bin.ends_with("runtime/pg/pgserver/pginstall/bin"));
    }
}
