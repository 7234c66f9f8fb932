//! The `mnemo` binary: parses the command line and runs one command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mnemo::config::{Cli, Command, Config, DbAction, LogFormat, TokenAction};
use mnemo::db;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let config = match cli.settings.merge_file().and_then(|s| s.resolve()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mnemo: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mnemo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mnemo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: stdout belongs to the stdio transport.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("MNEMO_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            let app = mnemo::app::start(&config, shutdown.child_token())
                .await
                .context("cannot start")?;
            let served: anyhow::Result<()> = if let Some(addr) = args.http {
                mnemo::transport::http::serve(app.clone(), addr, &config.http, shutdown.clone())
                    .await
                    .map_err(Into::into)
            } else {
                mnemo::transport::stdio::serve(app.clone(), shutdown.clone())
                    .await
                    .map_err(Into::into)
            };
            // In this order: no job writes once the pool closes.
            shutdown.cancel();
            app.stop_jobs().await;
            // Reads counted since the last background flush.
            if let Err(e) = app.store.flush_access().await {
                tracing::warn!(error = %e, "access statistics of the last second were not written");
            }
            app.store.db().pool.close();
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let embedder = mnemo::embed::LazyEmbedder::from_config(&config.embedder)?;
            let db = db::connect(&config, mnemo::embed::Embedder::dim(embedder.as_ref())).await?;
            eprintln!("mnemo: {} is migrated", db.location);
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let (report, ok) = mnemo::doctor::run(&config).await;
            print!("{report}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Db { action } => db_command(action, &config).await,
        Command::Token { action } => token_command(action, &config).await,
        Command::Export(args) => {
            mnemo::backup::export_command(&config, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => {
            mnemo::backup::import_command(&config, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn token_command(action: TokenAction, config: &Config) -> anyhow::Result<ExitCode> {
    let embedder = mnemo::embed::LazyEmbedder::from_config(&config.embedder)?;
    let db = db::connect(config, mnemo::embed::Embedder::dim(embedder.as_ref())).await?;
    let store = mnemo::store::Store::new(db, mnemo::embed::Embedder::dim(embedder.as_ref()));
    match action {
        TokenAction::Create {
            companion,
            label,
            expires,
        } => {
            let expires_at = expires
                .as_deref()
                .map(|text| mnemo::auth::key_expiry(text, chrono::Utc::now()))
                .transpose()?;
            let scope = store.companion(&companion).await?;
            let key = mnemo::auth::generate_key();
            let prefix = mnemo::auth::display_prefix(&key);
            let id = store
                .create_key(
                    &scope,
                    &mnemo::auth::hash_key(&key),
                    &prefix,
                    label.as_deref(),
                    expires_at,
                )
                .await?;
            eprintln!(
                "created key {id} ({prefix}...) for companion {companion:?}; it is shown once:"
            );
            println!("{key}");
        }
        TokenAction::List => {
            let keys = store.list_keys().await?;
            println!(
                "{:<36}  {:<12}  {:<16}  {:<20}  {:<8}  label",
                "id", "prefix", "companion", "expires", "state"
            );
            for k in keys {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                    "expired"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<12}  {:<16}  {:<20}  {:<8}  {}",
                    k.id,
                    k.prefix,
                    k.companion,
                    k.expires_at
                        .map(|e| e.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "never".into()),
                    state,
                    k.label.unwrap_or_default()
                );
            }
        }
        TokenAction::Revoke { key } => {
            let n = store.revoke_key(&key).await?;
            if n == 0 {
                anyhow::bail!("no active key with id or prefix {key:?} (see `mnemo token list`)");
            }
            println!("revoked {n} key(s)");
        }
        TokenAction::ResetAuth => match store.delete_dead_keys().await? {
            Some(n) => println!(
                "deleted {n} revoked or expired key(s): HTTP serves requests without a key from the \
                 next start (a non-loopback address still needs --insecure-no-auth)"
            ),
            None => anyhow::bail!(
                "active keys remain, so HTTP keeps requiring one: revoke them first \
                 (`mnemo token list`, `mnemo token revoke ID`)"
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn db_command(action: DbAction, config: &Config) -> anyhow::Result<ExitCode> {
    if config.database_url.is_some() {
        anyhow::bail!(
            "`mnemo db` manages the embedded cluster, but DATABASE_URL points at an external database; unset it first"
        );
    }
    let cluster = db::embedded::EmbeddedCluster::new(
        &config.data_dir,
        &config.pg_bin,
        Some(&config.pg_user),
    )?;
    match action {
        DbAction::Start => {
            cluster.ensure_running("mnemo").await?;
            println!(
                "running: {} (socket in {})",
                cluster.pgdata().display(),
                cluster.socket_dir().display()
            );
        }
        DbAction::Stop => {
            if cluster.stop().await? {
                println!("stopped: {}", cluster.pgdata().display());
            } else {
                println!("not running: {}", cluster.pgdata().display());
            }
        }
        DbAction::Status => {
            let status = cluster.status().await?;
            println!("{}: {:?}", cluster.pgdata().display(), status);
            if !matches!(status, db::embedded::ClusterStatus::Running { .. }) {
                return Ok(ExitCode::from(3));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancels `shutdown` on SIGINT or SIGTERM, so transports stop accepting
/// work and in-flight calls finish.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}

/// glibc gives each thread that allocates under contention its own arena,
/// up to 8 per core, and arenas return little memory: under a long mixed
/// load the server's RSS crept from 260 to 300 MB. Two arenas kept it at
/// 260 MB with the same throughput (docs/BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it
    // is called first thing in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
