//! `mnemo doctor`: prints the effective configuration and checks each part
//! of the setup (postgres binaries, database, pgvector, schema, embedding
//! model), saying in plain words what is wrong and how to fix it.

use std::fmt::Write as _;
use std::time::Instant;

use crate::config::{Config, EmbedderConfig};
use crate::db::{self, embedded};
use crate::embed::{Embedder, LazyEmbedder};

/// One check's outcome.
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Runs every check; the report is for stdout, and `false` means a problem.
pub async fn run(config: &Config) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mnemo {} doctor\n\nconfiguration:",
        env!("CARGO_PKG_VERSION")
    );
    let database = match &config.database_url {
        Some(url) => format!("external: {}", db::redact(url)),
        None => format!(
            "embedded cluster in {}",
            config.data_dir.join("pg").display()
        ),
    };
    let replicas = config
        .read_database_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let role = format!(
                "{} (read-only calls; skipped when down or over {} ms behind)",
                db::redact(url),
                config.read_max_lag.as_millis()
            );
            (format!("read replica {}", i + 1), role)
        });
    for (k, v) in [
        ("database", database),
        ("data dir", config.data_dir.display().to_string()),
        ("runtime dir", config.runtime_dir.display().to_string()),
        ("postgres binaries", config.pg_bin.display().to_string()),
        ("companion", config.companion.clone()),
        ("default user", config.default_user.clone()),
        ("embedder", config.embedder.describe()),
        ("pool size", config.pool_size.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into_iter()
    .chain(replicas)
    {
        let _ = writeln!(out, "  {k:<18} {v}");
    }
    let _ = writeln!(out, "\nchecks:");
    let mut checks = Vec::new();
    let embedder = LazyEmbedder::from_config(&config.embedder);
    let dim = embedder.as_ref().map(|e| e.dim()).ok();
    checks.extend(check_database(config, dim).await);
    checks.extend(check_replicas(config).await);
    checks.push(match embedder {
        Ok(e) => check_embedder(config, &e).await,
        Err(e) => Check {
            name: "embedding model",
            ok: false,
            detail: e.to_string(),
        },
    });
    let ok = checks.iter().all(|c| c.ok);
    for c in &checks {
        let _ = writeln!(
            out,
            "  [{}] {:<18} {}",
            if c.ok { " ok " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        if ok {
            "everything looks fine."
        } else {
            "some checks failed: see the FAIL lines above for what to do."
        }
    );
    (out, ok)
}

/// Which URL does what, for an external database; a warning when
/// migrations would go through a transaction pooler.
fn route_check(config: &Config, pg: &tokio_postgres::Config) -> Option<Check> {
    config.database_url.as_ref()?;
    let route = match db::Route::of(config, pg) {
        Ok(route) => route,
        Err(e) => {
            return Some(Check {
                name: "connections",
                ok: false,
                detail: e.to_string(),
            });
        }
    };
    let serving = if route.pooled {
        "through a transaction pooler, statements sent unnamed"
    } else {
        "direct, statements prepared once per connection"
    };
    let mut detail = format!("serving: {} ({serving})", db::describe_target(pg));
    match &route.direct {
        Some(direct) => {
            detail += &format!("; migrations: {}", db::describe_target(direct));
        }
        None => detail += "; migrations: DATABASE_URL",
    }
    let ok = !(route.pooled && route.direct.is_none());
    if !ok {
        detail += ". A transaction pooler would run the migrations and their session advisory \
                   lock: set DIRECT_DATABASE_URL to the database itself";
    }
    Some(Check {
        name: "connections",
        ok,
        detail,
    })
}

async fn check_database(config: &Config, dim: Option<usize>) -> Vec<Check> {
    let mut checks = Vec::new();
    if config.database_url.is_none() {
        match embedded::EmbeddedCluster::new(
            &config.data_dir,
            &config.pg_bin,
            Some(&config.pg_user),
        ) {
            Ok(_) => checks.push(Check {
                name: "postgres binaries",
                ok: true,
                detail: format!("found in {}", config.pg_bin.display()),
            }),
            Err(e) => {
                checks.push(Check {
                    name: "postgres binaries",
                    ok: false,
                    detail: e.to_string(),
                });
                return checks;
            }
        }
    }
    let target = match db::target(config).await {
        Ok((pg, _)) => {
            if let Some(check) = route_check(config, &pg) {
                let direct = db::Route::of(config, &pg).ok().and_then(|r| r.direct);
                checks.push(check);
                // The checks below read the schema as migrations do: over
                // the direct connection when there is one.
                direct.unwrap_or(pg)
            } else {
                pg
            }
        }
        Err(e) => {
            checks.push(Check {
                name: "database",
                ok: false,
                detail: e.to_string(),
            });
            return checks;
        }
    };
    let client = match db::pool(config, target) {
        Ok(pool) => pool.get().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check {
                name: "database",
                ok: false,
                detail: format!(
                    "cannot connect: {e}. Check DATABASE_URL (host, port, user, password, sslmode), or unset it to use the embedded database"
                ),
            });
            return checks;
        }
    };
    match db::check_server(&client).await {
        Ok(info) => {
            checks.push(Check {
                name: "database",
                ok: true,
                detail: format!("PostgreSQL {}", info.version),
            });
            checks.push(Check {
                name: "pgvector",
                ok: true,
                detail: format!("version {}", info.pgvector),
            });
        }
        Err(e) => {
            checks.push(Check {
                name: "pgvector",
                ok: false,
                detail: e.to_string(),
            });
            return checks;
        }
    }
    let stored = client
        .query_opt(
            "SELECT (value #>> '{}')::int FROM mnemo_settings WHERE key = 'embedding_dim'",
            &[],
        )
        .await;
    checks.push(match (stored, dim) {
        (Ok(Some(row)), Some(dim)) => {
            let stored = row.get::<_, i32>(0) as usize;
            Check {
                name: "schema",
                ok: stored == dim,
                detail: if stored == dim {
                    format!("migrated; embeddings have {stored} dimensions")
                } else {
                    db::DbError::DimensionMismatch {
                        stored,
                        configured: dim,
                    }
                    .to_string()
                },
            }
        }
        (Ok(_), _) | (Err(_), _) => Check {
            name: "schema",
            ok: true,
            detail: "not migrated yet: `mnemo migrate` or the first `mnemo serve` does it".into(),
        },
    });
    checks
}

/// Each read replica answers and is a standby (a primary there would serve
/// data that may have left the primary's).
async fn check_replicas(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    for (i, url) in config.read_database_urls.iter().enumerate() {
        let answer = match url.parse::<tokio_postgres::Config>() {
            Ok(pg) => match db::pool(config, pg) {
                Ok(pool) => match pool.get().await {
                    Ok(client) => client
                        .query_one(
                            "SELECT pg_is_in_recovery(), current_setting('server_version')",
                            &[],
                        )
                        .await
                        .map(|row| (row.get::<_, bool>(0), row.get::<_, String>(1)))
                        .map_err(|e| db::DbError::from(e).to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("not a valid PostgreSQL URL: {e}")),
        };
        let (ok, detail) = match answer {
            Ok((true, version)) => (true, format!("a standby, PostgreSQL {version}")),
            Ok((false, _)) => (
                false,
                "not a standby (pg_is_in_recovery() is false): point READ_DATABASE_URL at a \
                 streaming replica of DATABASE_URL"
                    .to_string(),
            ),
            Err(e) => (
                false,
                format!("cannot connect: {e}. Reads go to the primary meanwhile"),
            ),
        };
        checks.push(Check {
            name: "read replica",
            ok,
            detail: format!("{}: {detail}", i + 1),
        });
    }
    checks
}

async fn check_embedder(config: &Config, embedder: &LazyEmbedder) -> Check {
    let started = Instant::now();
    match embedder
        .embed(vec!["mnemo doctor test sentence".into()])
        .await
    {
        Ok(v) => Check {
            name: "embedding model",
            ok: true,
            detail: format!(
                "{} dims, first embedding in {} ms",
                v.first().map(Vec::len).unwrap_or(0),
                started.elapsed().as_millis()
            ),
        },
        Err(e) => Check {
            name: "embedding model",
            ok: false,
            detail: match &config.embedder {
                EmbedderConfig::Local(_) => format!(
                    "{e}. Run scripts/setup.sh to install the model and onnxruntime, or set MNEMO_ONNX_MODEL, MNEMO_ONNXRUNTIME_LIB and MNEMO_MODEL_DIR (or use --embedder candle)"
                ),
                EmbedderConfig::Candle { .. } => format!(
                    "{e}. Run scripts/setup.sh to install the model, or set MNEMO_MODEL_DIR"
                ),
                _ => format!("{e}. Check the base URL, model name and API key"),
            },
        },
    }
}
