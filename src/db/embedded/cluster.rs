//! [`EmbeddedCluster`]: the cluster's lifecycle (initialise, start, create
//! the database, stop, status), each change under the exclusive cluster lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use super::layout::Layout;
use super::privileges::RunAs;
use super::process::{PidFile, is_our_postmaster, read_pid_file};
use super::programs::{PG_CTL_TIMEOUT, tool_args};
use super::{ClusterStatus, EmbeddedError, PG_PORT, SUPERUSER, io_error};

const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// mnemo's embedded PostgreSQL cluster under `<data_dir>/pg/`.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    pub(super) layout: Layout,
    /// `Some` only when mnemo runs as root.
    pub(super) run_as: Option<RunAs>,
}

/// The exclusive lock on `cluster.lock`; released when dropped.
struct ClusterLock {
    file: File,
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first just says so.
        let _ = FileExt::unlock(&self.file);
    }
}

impl EmbeddedCluster {
    /// data_dir: mnemo's data dir (cluster goes in data_dir/pg/data, log
    /// data_dir/pg/postgres.log, lock file data_dir/pg/cluster.lock).
    /// bin_dir: directory with initdb/pg_ctl/postgres. run_as: the user
    /// PostgreSQL runs as, only used when euid == 0 (None =
    /// [`crate::config::defaults::PG_USER`]).
    /// Creates nothing; fails if bin_dir lacks the binaries.
    pub fn new(
        data_dir: &Path,
        bin_dir: &Path,
        run_as: Option<&str>,
    ) -> Result<Self, EmbeddedError> {
        let layout = Layout::new(data_dir, bin_dir)?;
        let run_as = RunAs::when_root(run_as, &layout.bin_dir)?;
        Ok(Self { layout, run_as })
    }

    /// The cluster directory (PGDATA): `<data_dir>/pg/data`.
    pub fn pgdata(&self) -> &Path {
        &self.layout.pgdata
    }

    /// Where the server's Unix socket lives.
    pub fn socket_dir(&self) -> &Path {
        &self.layout.socket_dir
    }

    /// The server log: `<data_dir>/pg/postgres.log`.
    pub fn log_file(&self) -> PathBuf {
        self.layout.log_file()
    }

    /// A tokio_postgres::Config for `dbname` on this cluster (no side effects).
    /// TLS is disabled: the connection is a Unix socket.
    pub fn client_config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(&self.layout.socket_dir)
            .port(PG_PORT)
            .user(SUPERUSER)
            .dbname(dbname)
            .ssl_mode(SslMode::Disable);
        config
    }

    /// Initialises the cluster if needed, starts it if it is not running,
    /// waits until it accepts connections and creates `dbname` if missing,
    /// all under the cluster lock. Idempotent and safe to call from many
    /// processes at once. Returns the client configuration for `dbname`.
    pub async fn ensure_running(&self, dbname: &str) -> Result<Config, EmbeddedError> {
        validate_dbname(dbname)?;
        let began = Instant::now();
        self.prepare_pg_dir()?;
        let _lock = self.lock().await?;
        if !self.layout.is_initialized() {
            self.initdb().await?;
        }
        self.check_pgdata_owner()?;
        self.prepare_socket_dir()?;
        let client = self.start_and_connect().await?;
        ensure_database(&client, dbname).await?;
        tracing::debug!(
            pgdata = %self.layout.pgdata.display(),
            elapsed_ms = began.elapsed().as_millis() as u64,
            "embedded PostgreSQL ready"
        );
        Ok(self.client_config(dbname))
    }

    /// Whether the cluster exists and runs, from `postmaster.pid` and a
    /// liveness check of the pid in it (no lock taken, no side effects).
    pub async fn status(&self) -> Result<ClusterStatus, EmbeddedError> {
        self.status_now()
    }

    pub(super) fn status_now(&self) -> Result<ClusterStatus, EmbeddedError> {
        if !self.layout.is_initialized() {
            return Ok(ClusterStatus::NotInitialized);
        }
        Ok(match read_pid_file(&self.layout.pid_file())? {
            PidFile::Pid(pid) if is_our_postmaster(pid, &self.layout.pgdata) => {
                ClusterStatus::Running { pid: pid as u32 }
            }
            _ => ClusterStatus::Stopped,
        })
    }

    /// Stops the cluster (fast shutdown: sessions are disconnected, open
    /// transactions rolled back) under the cluster lock. Ok(false) if it was
    /// not running.
    pub async fn stop(&self) -> Result<bool, EmbeddedError> {
        if !self.layout.is_initialized() {
            return Ok(false);
        }
        let _lock = self.lock().await?;
        let ClusterStatus::Running { pid } = self.status_now()? else {
            return Ok(false);
        };
        tracing::info!(pid, pgdata = %self.layout.pgdata.display(), "stopping embedded PostgreSQL");
        let args = tool_args(
            &["stop", "-m", "fast", "-w", "-t", "60", "-s", "-D"],
            &self.layout.pgdata,
        );
        match self.run_tool("pg_ctl", &args, PG_CTL_TIMEOUT).await {
            Ok(_) => Ok(true),
            // It may have gone down by itself meanwhile: what was asked for is done.
            Err(e) => match self.status_now()? {
                ClusterStatus::Running { .. } => Err(e),
                _ => Ok(true),
            },
        }
    }

    /// Takes the exclusive cluster lock, polling so that the wait can time out
    /// (a blocked `flock` could not be abandoned).
    async fn lock(&self) -> Result<ClusterLock, EmbeddedError> {
        let path = self.layout.lock_file();
        let log = self.log_file();
        tokio::task::spawn_blocking(move || {
            // std opens with O_CLOEXEC: postgres, started while we hold the
            // lock, must not inherit it.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(io_error("opening the lock file", &path))?;
            let began = Instant::now();
            let mut pause = Duration::from_millis(5);
            loop {
                if FileExt::try_lock_exclusive(&file).map_err(io_error("locking", &path))? {
                    return Ok(ClusterLock { file });
                }
                if began.elapsed() >= LOCK_TIMEOUT {
                    return Err(EmbeddedError::LockTimeout {
                        path,
                        waited: LOCK_TIMEOUT,
                        log,
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        })
        .await
        .map_err(|e| EmbeddedError::Task(e.to_string()))?
    }
}

async fn ensure_database(client: &Client, dbname: &str) -> Result<(), EmbeddedError> {
    let found = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await
        .map_err(|source| EmbeddedError::Postgres {
            action: format!("looking for database {dbname:?}"),
            source,
        })?;
    if found.is_some() {
        return Ok(());
    }
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(dbname)))
        .await
    {
        Ok(()) => {
            tracing::info!(
                database = dbname,
                "created database in the embedded cluster"
            );
            Ok(())
        }
        // Someone else (outside our lock) created it first: fine.
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        Err(source) => Err(EmbeddedError::Postgres {
            action: format!("creating database {dbname:?}"),
            source,
        }),
    }
}

fn validate_dbname(name: &str) -> Result<(), EmbeddedError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 63 {
        "it is longer than 63 bytes (PostgreSQL would truncate it)"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(EmbeddedError::InvalidDatabaseName {
        name: name.to_string(),
        reason,
    })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::process::Stdio;

    use nix::unistd::Pid;

    use super::super::conf::{INCLUDE_LINE, shared_buffers_mb};
    use super::super::testing::{StopOnDrop, bin_dir, client, identity, running_pid, temp_root};
    use super::*;

    /// Set in child processes spawned by `concurrent_processes_share_one_cluster`.
    const CHILD_ENV: &str = "MNEMO_EMBEDDED_TEST_CHILD_DATA_DIR";

    #[tokio::test]
    async fn init_start_query_stop_restart_keeps_data() {
        let bin = bin_dir();
        let root = temp_root();
        let cluster = EmbeddedCluster::new(&root.path().join("data"), &bin, None).expect("new");
        let _guard = StopOnDrop(cluster.clone());
        assert_eq!(
            cluster.status().await.expect("status"),
            ClusterStatus::NotInitialized
        );
        assert!(!cluster.stop().await.expect("stop"));

        let began = Instant::now();
        let config = cluster
            .ensure_running("mnemo")
            .await
            .expect("cold ensure_running");
        let cold = began.elapsed();
        let mut warm = Vec::new();
        for _ in 0..5 {
            let began = Instant::now();
            cluster
                .ensure_running("mnemo")
                .await
                .expect("warm ensure_running");
            warm.push(began.elapsed());
        }
        eprintln!("timing: cold init+start {cold:?}, warm ensure_running {warm:?}");

        let db = client(&config).await;
        let one: i32 = db
            .query_one("SELECT 1", &[])
            .await
            .expect("SELECT 1")
            .get(0);
        assert_eq!(one, 1);
        // Sized to the machine at initdb, not PostgreSQL's 128 MB default.
        let buffers: i64 = db
            .query_one(
                "SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576",
                &[],
            )
            .await
            .expect("shared_buffers")
            .get(0);
        assert_eq!(buffers as u64, shared_buffers_mb());
        db.batch_execute(
            "CREATE EXTENSION IF NOT EXISTS vector;
             CREATE TABLE kept (v vector(3));
             INSERT INTO kept VALUES ('[1,2,3]');",
        )
        .await
        .expect("pgvector");
        drop(db);

        let pid = running_pid(cluster.status().await.expect("status"));
        // Detached: a Ctrl-C or SIGHUP aimed at our group or session misses it.
        let pm = Some(Pid::from_raw(pid as i32));
        assert_ne!(
            nix::unistd::getpgid(pm).expect("pgid"),
            nix::unistd::getpgid(None).expect("own pgid")
        );
        assert_ne!(
            nix::unistd::getsid(pm).expect("sid"),
            nix::unistd::getsid(None).expect("own sid")
        );
        assert!(
            cluster.log_file().is_file(),
            "the server logs to {}",
            cluster.log_file().display()
        );

        assert!(cluster.stop().await.expect("stop"));
        assert_eq!(
            cluster.status().await.expect("status"),
            ClusterStatus::Stopped
        );
        assert!(
            !cluster.stop().await.expect("second stop"),
            "stop of a stopped cluster is Ok(false)"
        );

        // A postgresql.conf without mnemo's include (a cluster made by other
        // means, or edited) gets it back: no TCP, socket where we look.
        let conf = cluster.pgdata().join("postgresql.conf");
        let text = fs::read_to_string(&conf).expect("postgresql.conf");
        let stripped: String = text
            .lines()
            .filter(|line| line.trim() != INCLUDE_LINE)
            .map(|line| format!("{line}\n"))
            .collect();
        fs::write(&conf, stripped).expect("rewrite postgresql.conf");

        let began = Instant::now();
        let config = cluster.ensure_running("mnemo").await.expect("restart");
        eprintln!(
            "timing: restart of an existing cluster {:?}",
            began.elapsed()
        );
        let db = client(&config).await;
        let text: String = db
            .query_one("SELECT v::text FROM kept", &[])
            .await
            .expect("data kept")
            .get(0);
        assert_eq!(text, "[1,2,3]");
        let listen: String = db
            .query_one("SHOW listen_addresses", &[])
            .await
            .expect("SHOW")
            .get(0);
        assert_eq!(listen, "", "no TCP");
        assert!(cluster.stop().await.expect("final stop"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_ensure_running_share_one_cluster() {
        let bin = bin_dir();
        let root = temp_root();
        let data = root.path().join("data");
        let _guard = StopOnDrop(EmbeddedCluster::new(&data, &bin, None).expect("new"));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (data, bin) = (data.clone(), bin.clone());
                tokio::spawn(async move {
                    let cluster = EmbeddedCluster::new(&data, &bin, None).expect("new");
                    let config = cluster
                        .ensure_running("mnemo")
                        .await
                        .expect("ensure_running");
                    identity(&config).await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.expect("task"));
        }
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "all tasks reach one server: {ids:?}"
        );
    }

    /// Does nothing unless spawned by `concurrent_processes_share_one_cluster`.
    #[tokio::test]
    async fn helper_process_for_concurrent_processes_test() {
        let Some(data) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let cluster = EmbeddedCluster::new(Path::new(&data), &bin_dir(), None).expect("new");
        let config = cluster
            .ensure_running("mnemo")
            .await
            .expect("ensure_running");
        println!("\nCHILD_IDENTITY={}", identity(&config).await);
    }

    #[tokio::test]
    async fn concurrent_processes_share_one_cluster() {
        let bin = bin_dir();
        let root = temp_root();
        let data = root.path().join("data");
        let cluster = EmbeddedCluster::new(&data, &bin, None).expect("new");
        let _guard = StopOnDrop(cluster.clone());
        let exe = std::env::current_exe().expect("test binary");
        let module = module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest);
        let test = format!("{module}::helper_process_for_concurrent_processes_test");
        let children: Vec<_> = (0..4)
            .map(|_| {
                tokio::process::Command::new(&exe)
                    .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
                    .env(CHILD_ENV, &data)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawning the test binary")
            })
            .collect();
        let mut ids = Vec::new();
        for child in children {
            let out = child.wait_with_output().await.expect("child");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let id = stdout
                .lines()
                .find_map(|l| l.strip_prefix("CHILD_IDENTITY="))
                .unwrap_or_else(|| panic!("no identity in child output: {stdout}"));
            ids.push(id.to_string());
        }
        let config = cluster
            .ensure_running("mnemo")
            .await
            .expect("ensure_running");
        let mine = identity(&config).await;
        assert!(
            ids.iter().all(|id| *id == mine),
            "all processes reach one server: {ids:?} vs {mine}"
        );
    }

    #[tokio::test]
    async fn rejects_bad_database_names() {
        let bin = bin_dir();
        let root = temp_root();
        let cluster = EmbeddedCluster::new(&root.path().join("data"), &bin, None).expect("new");
        let long = "x".repeat(64);
        for name in ["", long.as_str(), "a\0b"] {
            let err = cluster
                .ensure_running(name)
                .await
                .expect_err("invalid name");
            assert!(
                matches!(err, EmbeddedError::InvalidDatabaseName { .. }),
                "{err}"
            );
        }
    }
}
