//! The embedded PostgreSQL cluster: mnemo's own local database server.
//!
//! When no external database is configured, mnemo runs a private PostgreSQL
//! (with pgvector) from the relocatable binaries installed by
//! `scripts/setup.sh`. This module owns everything under `<data_dir>/pg/`:
//!
//! - `data/`: the cluster (PGDATA). It is created by `initdb` in
//!   `data.initdb-tmp/` and renamed into place, so a crash during `initdb`
//!   never leaves a half-made cluster behind.
//! - `data/mnemo.conf`: the settings that depend on where the cluster lives
//!   (socket directory, no TCP). Rewritten before every start; the tunables
//!   (`shared_buffers`, `max_connections`, ...) are appended once to
//!   `postgresql.conf`, where an administrator may change them.
//! - `postgres.log`: the server log (stderr of the postmaster).
//! - `cluster.lock`: an exclusive `flock` held around every lifecycle change
//!   (initdb, start, database creation, stop), so any number of mnemo
//!   processes may call [`EmbeddedCluster::ensure_running`] at the same time.
//! - the Unix socket `.s.PGSQL.5432`, normally in `<data_dir>/pg/`. Socket
//!   paths are limited to 107 bytes; for a longer data dir the socket goes to
//!   `/tmp/mnemo-<first 12 hex digits of sha256(canonical data dir)>`, which
//!   every process computes the same way.
//!
//! # Lifecycle
//!
//! The cluster keeps running after the last mnemo process exits, like any
//! local database server; `mnemo db stop` ([`EmbeddedCluster::stop`]) stops
//! it. There is no reference counting: MCP clients start and kill mnemo
//! processes freely (often with SIGKILL), so a count would go stale, and
//! restarting PostgreSQL for every short-lived process would cost a startup
//! and a cold cache each time.
//!
//! The server must not die with the process that started it. `pg_ctl` is
//! spawned in a process group of its own (`process_group(0)`), so a Ctrl-C
//! sent to a foreground mnemo's group never reaches it, and `pg_ctl start`
//! itself forks the postmaster into a new session (`setsid`) with its output
//! redirected to the log file, so neither the terminal's SIGHUP nor mnemo's
//! pipes reach the server. (A test checks the postmaster's session and group.)
//!
//! # Crashes
//!
//! After a `kill -9` of the postmaster its `postmaster.pid` stays behind.
//! PostgreSQL ignores it when the pid is dead, but not when the pid is a
//! zombie (an init that does not reap orphans, common in containers) or was
//! recycled by an unrelated process (after a reboot). [`ClusterStatus`]
//! therefore checks `/proc` (state, name, working directory) besides
//! `kill(pid, 0)`, and before a start such a file is pointed at an impossible
//! pid, keeping the shared-memory key PostgreSQL uses to detect surviving
//! backends. Starting is retried briefly while those backends exit.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When mnemo's effective uid is 0, every
//! PostgreSQL program runs as an unprivileged user (`nobody` unless told
//! otherwise), the directories it writes are handed to that user, and the data
//! dir must be reachable by it: this is checked before anything is created.
//!
//! # Output
//!
//! stdout belongs to the MCP stdio transport: the output of `initdb` and
//! `pg_ctl` is captured, and its tail (with the tail of the server log) goes
//! into the error when one of them fails.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Gid, Pid, Uid, User};
use sha2::{Digest, Sha256};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// The user PostgreSQL runs as when mnemo runs as root and no other is given.
pub const DEFAULT_RUN_AS: &str = "nobody";

/// The binaries this module runs (`pg_ctl` runs `postgres` from its own directory).
const REQUIRED_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// The cluster's superuser; authentication is `trust` over a 0700 socket directory.
const SUPERUSER: &str = "postgres";
const PG_PORT: u16 = 5432;
const SOCKET_NAME: &str = ".s.PGSQL.5432";
/// `sizeof(sun_path) - 1`.
const MAX_SOCKET_PATH: usize = 107;
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `ensure_running` waits for a started server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INITDB_TIMEOUT: Duration = Duration::from_secs(300);
/// `pg_ctl -t` plus a margin, after which the `pg_ctl` process itself is killed.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(90);
/// Starting again after a failure covers backends of a SIGKILLed postmaster
/// that still hold its shared memory for a moment.
const MAX_START_ATTEMPTS: u32 = 4;
/// Above Linux's PID_MAX_LIMIT (2^22), so `kill(pid, 0)` always fails with ESRCH.
const DEAD_PID: i32 = 4_194_305;
/// Lines of command output and of the server log quoted in errors.
const TAIL_LINES: usize = 20;

/// Appended once to `postgresql.conf` by `initdb`, after
/// `shared_buffers` (see [`shared_buffers_mb`]); an administrator may edit these.
const TUNABLES: &str = "max_connections = 200
maintenance_work_mem = 128MB
";
/// Bounds of the embedded cluster's `shared_buffers`, in MB.
const SHARED_BUFFERS_MB: (u64, u64) = (128, 1024);

/// A quarter of the memory this process may use (the machine's, or its
/// container's limit when lower), within [`SHARED_BUFFERS_MB`]: 100k
/// memories take about 470 MB of table and indexes, and with PostgreSQL's
/// default 128 MB every keyword search and `get_memory` at that size read
/// pages back from the kernel (docs/BENCHMARKS.md). Buffers are only
/// touched as data grows, so a small database costs no more.
fn shared_buffers_mb() -> u64 {
    let read = |path: &str| fs::read_to_string(path).ok();
    let machine = read("/proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    // cgroup v2, then v1; "max" (or v1's huge number) means no limit.
    let container = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    shared_buffers_for(machine, container)
}

/// [`shared_buffers_mb`] for a machine and a container limit, in bytes.
fn shared_buffers_for(machine: Option<u64>, container: Option<u64>) -> u64 {
    let (low, high) = SHARED_BUFFERS_MB;
    let usable = match (machine, container) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    };
    usable.map_or(low, |bytes| (bytes / (1 << 20) / 4).clamp(low, high))
}

/// Linux only: after a crash, one syncfs() of the file system instead of an
/// fsync() of every file before recovery (seconds saved on slow disks).
const LINUX_TUNABLES: &str = "recovery_init_sync_method = syncfs
";
/// The line of `postgresql.conf` that pulls in `mnemo.conf`, written last so
/// that its location-dependent settings win.
const INCLUDE_LINE: &str = "include_if_exists = 'mnemo.conf'";

/// Whether the cluster exists and whether its postmaster is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterStatus {
    NotInitialized,
    Stopped,
    Running { pid: u32 },
}

/// Why the embedded cluster could not be prepared, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL program {} is missing or not executable: run scripts/setup.sh to install \
         PostgreSQL, or set MNEMO_PG_BIN to a directory containing initdb, pg_ctl and postgres",
        .path.display()
    )]
    MissingBinary { path: PathBuf },

    #[error(
        "user `{user}` does not exist: PostgreSQL refuses to run as root, so mnemo (running as \
         root) runs it as another user; create `{user}` (e.g. `useradd --system {user}`) or \
         choose an existing unprivileged user"
    )]
    UnknownUser { user: String },

    #[error(
        "cannot run PostgreSQL as `{user}`: it has uid 0 and PostgreSQL refuses to run as root; \
         choose an unprivileged user such as `nobody`"
    )]
    RootRunAs { user: String },

    #[error("looking up user `{user}`: {source}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },

    #[error(
        "PostgreSQL runs as `{user}` (mnemo runs as root), but `{user}` cannot enter {} \
         (mode {mode:o}, owner uid {owner}): use a data dir that `{user}` can reach, e.g. under \
         /var/lib or /tmp, or allow it with `chmod o+x {}`",
        .dir.display(), .dir.display()
    )]
    Unreachable {
        user: String,
        dir: PathBuf,
        mode: u32,
        owner: u32,
    },

    #[error("unsupported path {}: {reason}; choose another data dir", .path.display())]
    UnsupportedPath { path: PathBuf, reason: &'static str },

    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "timed out after {}s waiting for the cluster lock {}: another mnemo process holds it \
         (initialising or starting the cluster?); if that process hangs, stop it and see {}",
        .waited.as_secs(), .path.display(), .log.display()
    )]
    LockTimeout {
        path: PathBuf,
        waited: Duration,
        log: PathBuf,
    },

    #[error("`{command}` failed: {status}{details}")]
    Command {
        command: String,
        status: String,
        details: String,
    },

    #[error(
        "{} exists but is not a PostgreSQL cluster (no PG_VERSION): move it away and mnemo \
         will create a new cluster",
        .path.display()
    )]
    NotACluster { path: PathBuf },

    #[error(
        "the cluster {} is owned by uid {owner}, but PostgreSQL would run as {user} (uid {uid}): \
         run `chown -R {uid} {}` or run PostgreSQL as the cluster's owner",
        .path.display(), .path.display()
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        user: String,
        uid: u32,
    },

    #[error("socket directory {}: {reason}; remove it and try again", .path.display())]
    BadSocketDir { path: PathBuf, reason: String },

    #[error("invalid database name {name:?}: {reason}")]
    InvalidDatabaseName { name: String, reason: &'static str },

    #[error(
        "PostgreSQL did not accept connections on {} within {}s (last error: {last_error}){details}",
        .socket_dir.display(), .waited.as_secs()
    )]
    NotReady {
        socket_dir: PathBuf,
        waited: Duration,
        last_error: String,
        details: String,
    },

    #[error("{action}: {source}")]
    Postgres {
        action: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("internal task failed: {0}")]
    Task(String),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}

/// The unprivileged user PostgreSQL runs as when mnemo is root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
}

/// mnemo's embedded PostgreSQL cluster under `<data_dir>/pg/`.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    /// Canonical (symlinks resolved) absolute data dir.
    data_dir: PathBuf,
    pg_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// `Some` only when mnemo runs as root.
    run_as: Option<RunAs>,
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
    /// PostgreSQL runs as, only used when euid == 0 (None = `nobody`).
    /// Creates nothing; fails if bin_dir lacks the binaries.
    pub fn new(
        data_dir: &Path,
        bin_dir: &Path,
        run_as: Option<&str>,
    ) -> Result<Self, EmbeddedError> {
        let bin_dir = std::path::absolute(bin_dir).map_err(io_error("resolving", bin_dir))?;
        for name in REQUIRED_BINARIES {
            check_executable(&bin_dir.join(name))?;
        }
        let data_dir = resolve_path(data_dir)?;
        let pg_dir = data_dir.join("pg");
        check_path_chars(&pg_dir)?;
        let socket_dir = socket_dir_for(&data_dir, &pg_dir);
        let run_as = if Uid::effective().is_root() {
            let user = lookup_user(run_as.unwrap_or(DEFAULT_RUN_AS))?;
            check_reachable(&user, &bin_dir)?;
            Some(user)
        } else {
            if let Some(name) = run_as {
                tracing::debug!(user = name, "not root: PostgreSQL runs as the current user");
            }
            None
        };
        Ok(Self {
            pgdata: pg_dir.join("data"),
            data_dir,
            pg_dir,
            socket_dir,
            bin_dir,
            run_as,
        })
    }

    /// The cluster directory (PGDATA): `<data_dir>/pg/data`.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Where the server's Unix socket lives.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log: `<data_dir>/pg/postgres.log`.
    pub fn log_file(&self) -> PathBuf {
        self.pg_dir.join("postgres.log")
    }

    fn lock_file(&self) -> PathBuf {
        self.pg_dir.join("cluster.lock")
    }

    fn pid_file(&self) -> PathBuf {
        self.pgdata.join("postmaster.pid")
    }

    fn is_initialized(&self) -> bool {
        self.pgdata.join("PG_VERSION").is_file()
    }

    /// The uid PostgreSQL runs as, and a name for it in messages.
    fn run_uid(&self) -> (u32, String) {
        match &self.run_as {
            Some(user) => (user.uid.as_raw(), format!("`{}`", user.name)),
            None => (Uid::effective().as_raw(), "the current user".to_string()),
        }
    }

    /// A tokio_postgres::Config for `dbname` on this cluster (no side effects).
    /// TLS is disabled: the connection is a Unix socket.
    pub fn client_config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(&self.socket_dir)
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
        if !self.is_initialized() {
            self.initdb().await?;
        }
        self.check_pgdata_owner()?;
        self.prepare_socket_dir()?;
        let client = self.start_and_connect().await?;
        ensure_database(&client, dbname).await?;
        tracing::debug!(
            pgdata = %self.pgdata.display(),
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

    fn status_now(&self) -> Result<ClusterStatus, EmbeddedError> {
        if !self.is_initialized() {
            return Ok(ClusterStatus::NotInitialized);
        }
        Ok(match read_pid_file(&self.pid_file())? {
            PidFile::Pid(pid) if is_our_postmaster(pid, &self.pgdata) => {
                ClusterStatus::Running { pid: pid as u32 }
            }
            _ => ClusterStatus::Stopped,
        })
    }

    /// Stops the cluster (fast shutdown: sessions are disconnected, open
    /// transactions rolled back) under the cluster lock. Ok(false) if it was
    /// not running.
    pub async fn stop(&self) -> Result<bool, EmbeddedError> {
        if !self.is_initialized() {
            return Ok(false);
        }
        let _lock = self.lock().await?;
        let ClusterStatus::Running { pid } = self.status_now()? else {
            return Ok(false);
        };
        tracing::info!(pid, pgdata = %self.pgdata.display(), "stopping embedded PostgreSQL");
        let args = tool_args(
            &["stop", "-m", "fast", "-w", "-t", "60", "-s", "-D"],
            &self.pgdata,
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

    /// Creates `<data_dir>/pg` and, as root, hands it to the PostgreSQL user
    /// after checking that the user can reach it.
    fn prepare_pg_dir(&self) -> Result<(), EmbeddedError> {
        // Check what exists before creating anything, then check again: a
        // restrictive umask may have made the new directories unreachable.
        if let Some(user) = &self.run_as {
            check_reachable(user, &self.data_dir)?;
        }
        fs::create_dir_all(&self.data_dir)
            .map_err(io_error("creating the data dir", &self.data_dir))?;
        match fs::DirBuilder::new().mode(0o700).create(&self.pg_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating", &self.pg_dir)(e)),
        }
        if let Some(user) = &self.run_as {
            check_reachable(user, &self.data_dir)?;
            // PostgreSQL writes its log here and, by default, its socket.
            give_to(user, &self.pg_dir)?;
            let log = self.log_file();
            if log.exists() {
                give_to(user, &log)?;
            }
        }
        Ok(())
    }

    /// Takes the exclusive cluster lock, polling so that the wait can time out
    /// (a blocked `flock` could not be abandoned).
    async fn lock(&self) -> Result<ClusterLock, EmbeddedError> {
        let path = self.lock_file();
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

    /// Runs initdb into a temporary directory and renames it into place.
    async fn initdb(&self) -> Result<(), EmbeddedError> {
        let tmp = self.pg_dir.join("data.initdb-tmp");
        // A leftover from a crash: nobody else can be using it, we hold the lock.
        match fs::remove_dir_all(&tmp) {
            Ok(()) => tracing::warn!(dir = %tmp.display(), "removed an unfinished initdb"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing", &tmp)(e)),
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io_error("creating", &tmp))?;
        if let Some(user) = &self.run_as {
            give_to(user, &tmp)?;
        }
        tracing::info!(pgdata = %self.pgdata.display(), "initialising the embedded PostgreSQL cluster");
        let mut args = tool_args(&["-D"], &tmp);
        // The builtin C.UTF-8 locale (PostgreSQL >= 17) is independent of the
        // host's libc locales, which a relocatable install cannot rely on.
        for arg in [
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--no-instructions",
        ] {
            args.push(arg.into());
        }
        if cfg!(target_os = "linux") {
            // One syncfs() instead of an fsync() per file: same durability on
            // Linux >= 5.8, about half the time of a cold start on slow disks.
            args.push("--sync-method=syncfs".into());
        }
        if let Err(e) = self.run_tool("initdb", &args, INITDB_TIMEOUT).await {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let conf = tmp.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| {
                writeln!(
                    f,
                    "\n# --- added by mnemo for its embedded cluster (edit freely) ---"
                )?;
                writeln!(f, "shared_buffers = {}MB", shared_buffers_mb())?;
                f.write_all(TUNABLES.as_bytes())?;
                if cfg!(target_os = "linux") {
                    f.write_all(LINUX_TUNABLES.as_bytes())?;
                }
                writeln!(f, "{INCLUDE_LINE}")
            })
            .map_err(io_error("configuring", &conf))?;
        // rename() replaces an empty directory but never a non-empty one.
        if let Err(e) = fs::rename(&tmp, &self.pgdata) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(match e.kind() {
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
                    EmbeddedError::NotACluster {
                        path: self.pgdata.clone(),
                    }
                }
                _ => io_error("moving the new cluster to", &self.pgdata)(e),
            });
        }
        // Make the rename durable before anything relies on the cluster.
        File::open(&self.pg_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("syncing", &self.pg_dir))?;
        Ok(())
    }

    /// PostgreSQL refuses a data directory it does not own; say so clearly.
    fn check_pgdata_owner(&self) -> Result<(), EmbeddedError> {
        let meta = fs::metadata(&self.pgdata).map_err(io_error("reading", &self.pgdata))?;
        let (uid, user) = self.run_uid();
        if meta.uid() != uid {
            return Err(EmbeddedError::WrongOwner {
                path: self.pgdata.clone(),
                owner: meta.uid(),
                user,
                uid,
            });
        }
        Ok(())
    }

    /// Creates (or checks) the fallback socket directory under /tmp: 0700 and
    /// owned by the PostgreSQL user, never a symlink or someone else's.
    fn prepare_socket_dir(&self) -> Result<(), EmbeddedError> {
        let dir = &self.socket_dir;
        if *dir == self.pg_dir {
            return Ok(());
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating the socket directory", dir)(e)),
        }
        let meta = fs::symlink_metadata(dir).map_err(io_error("reading", dir))?;
        if !meta.file_type().is_dir() {
            return Err(EmbeddedError::BadSocketDir {
                path: dir.clone(),
                reason: "it is not a directory".to_string(),
            });
        }
        let (uid, _) = self.run_uid();
        if meta.uid() != uid {
            match &self.run_as {
                Some(user) if meta.uid() == Uid::effective().as_raw() => {
                    std::os::unix::fs::lchown(
                        dir,
                        Some(user.uid.as_raw()),
                        Some(user.gid.as_raw()),
                    )
                    .map_err(io_error("changing the owner of", dir))?;
                }
                _ => {
                    return Err(EmbeddedError::BadSocketDir {
                        path: dir.clone(),
                        reason: format!("it is owned by uid {}, not by uid {uid}", meta.uid()),
                    });
                }
            }
        }
        if meta.mode() & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_error("changing the mode of", dir))?;
        }
        Ok(())
    }

    /// Starts the server if needed and returns a connection to the
    /// `postgres` database once it accepts connections.
    async fn start_and_connect(&self) -> Result<Client, EmbeddedError> {
        let mut admin = self.client_config("postgres");
        admin.connect_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + START_TIMEOUT;
        let mut attempts = 0;
        loop {
            match self.status_now()? {
                ClusterStatus::NotInitialized => {
                    return Err(EmbeddedError::NotACluster {
                        path: self.pgdata.clone(),
                    });
                }
                ClusterStatus::Stopped => {
                    attempts += 1;
                    if let Err(e) = self.start().await {
                        if attempts >= MAX_START_ATTEMPTS || Instant::now() >= deadline {
                            return Err(e);
                        }
                        tracing::warn!(attempt = attempts, error = %e, "embedded PostgreSQL did not start; retrying");
                        tokio::time::sleep(Duration::from_millis(250) * attempts).await;
                        continue;
                    }
                }
                ClusterStatus::Running { .. } => {}
            }
            let last_error = match connect(&admin).await {
                Ok(client) => return Ok(client),
                // The server answered but refuses us for good (not "starting
                // up", "shutting down" or "too many clients", which pass).
                Err(e)
                    if e.as_db_error().is_some()
                        && e.code() != Some(&SqlState::CANNOT_CONNECT_NOW)
                        && e.code() != Some(&SqlState::TOO_MANY_CONNECTIONS) =>
                {
                    return Err(EmbeddedError::Postgres {
                        action: format!(
                            "connecting to the embedded cluster at {}",
                            self.socket_dir.display()
                        ),
                        source: e,
                    });
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(EmbeddedError::NotReady {
                    socket_dir: self.socket_dir.clone(),
                    waited: START_TIMEOUT,
                    last_error,
                    details: self.log_details(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start(&self) -> Result<(), EmbeddedError> {
        self.clear_stale_lock_files()?;
        self.write_runtime_conf()?;
        tracing::info!(pgdata = %self.pgdata.display(), socket_dir = %self.socket_dir.display(), "starting embedded PostgreSQL");
        let mut args = tool_args(&["start", "-w", "-t", "60", "-s", "-D"], &self.pgdata);
        args.push("-l".into());
        args.push(self.log_file().into());
        self.run_tool("pg_ctl", &args, PG_CTL_TIMEOUT).await?;
        Ok(())
    }

    /// Makes lock files whose pid is not a live postmaster of this cluster
    /// harmless. PostgreSQL itself ignores a dead pid, but not a zombie (an
    /// unreaped postmaster, as under an init that does not reap) nor a pid
    /// recycled by another process of the same user (after a reboot).
    fn clear_stale_lock_files(&self) -> Result<(), EmbeddedError> {
        let pid_file = self.pid_file();
        match read_pid_file(&pid_file)? {
            PidFile::Missing => {}
            PidFile::Invalid => {
                tracing::warn!(file = %pid_file.display(), "removing an unreadable postmaster.pid");
                remove_if_exists(&pid_file)?;
            }
            PidFile::Pid(pid) => {
                if kill(Pid::from_raw(pid), None).is_ok()
                    && kill(Pid::from_raw(DEAD_PID), None) == Err(Errno::ESRCH)
                {
                    // Keep the file (its shared-memory key lets PostgreSQL
                    // detect surviving backends) but point it at a pid that
                    // cannot exist, so PostgreSQL sees it as stale.
                    tracing::warn!(
                        pid,
                        "postmaster.pid names a live process that is not this cluster's postmaster"
                    );
                    let text =
                        fs::read_to_string(&pid_file).map_err(io_error("reading", &pid_file))?;
                    let rest = text.split_once('\n').map_or("", |(_, rest)| rest);
                    fs::write(&pid_file, format!("{DEAD_PID}\n{rest}"))
                        .map_err(io_error("rewriting", &pid_file))?;
                }
            }
        }
        // The socket lock only guards the socket name: remove it when stale.
        let socket_lock = self.socket_dir.join(format!("{SOCKET_NAME}.lock"));
        match read_pid_file(&socket_lock)? {
            PidFile::Missing => {}
            PidFile::Pid(pid) if is_our_postmaster(pid, &self.pgdata) => {}
            _ => remove_if_exists(&socket_lock)?,
        }
        Ok(())
    }

    /// Writes `mnemo.conf` (no TCP, and the socket where clients will look)
    /// and makes sure `postgresql.conf` includes it.
    fn write_runtime_conf(&self) -> Result<(), EmbeddedError> {
        let main_conf = self.pgdata.join("postgresql.conf");
        let current = fs::read_to_string(&main_conf).map_err(io_error("reading", &main_conf))?;
        if !current.lines().any(|line| line.trim() == INCLUDE_LINE) {
            // A cluster made by other means: without the include it would
            // listen on TCP and put its socket elsewhere.
            OpenOptions::new()
                .append(true)
                .open(&main_conf)
                .and_then(|mut f| f.write_all(format!("\n{INCLUDE_LINE}\n").as_bytes()))
                .map_err(io_error("configuring", &main_conf))?;
        }
        let path = self.pgdata.join("mnemo.conf");
        // Double quotes inside the value let the directory contain spaces or commas.
        let sockets = conf_quote(&format!("\"{}\"", self.socket_dir.display()));
        let text = format!(
            "# Written by mnemo before every start of its embedded cluster: do not edit.\n\
             listen_addresses = ''\n\
             port = {PG_PORT}\n\
             unix_socket_directories = {sockets}\n\
             unix_socket_permissions = 0700\n"
        );
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_error("writing", &path))?;
        if let Some(user) = &self.run_as {
            give_to(user, &path)?;
        }
        Ok(())
    }

    /// Runs a PostgreSQL program as the PostgreSQL user with its output
    /// captured; a failure carries the output's and the log's last lines.
    async fn run_tool(
        &self,
        tool: &str,
        args: &[OsString],
        timeout: Duration,
    ) -> Result<Output, EmbeddedError> {
        let program = self.bin_dir.join(tool);
        let command_line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(args)
            // The PostgreSQL user may not be able to enter mnemo's cwd.
            .current_dir(&self.pg_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Out of mnemo's process group: a Ctrl-C to mnemo must not reach it.
            .process_group(0)
            .env("LC_ALL", "C");
        // PGPORT, PGDATA, PGOPTIONS... from the user's shell must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.as_bytes().starts_with(b"PG") {
                cmd.env_remove(key);
            }
        }
        if let Some(user) = &self.run_as {
            // std also drops root's supplementary groups before setuid.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        tracing::debug!(command = %command_line, "running");
        let child = cmd.spawn().map_err(io_error("running", &program))?;
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(result) => result.map_err(io_error("waiting for", &program))?,
            // Dropping the future kills the child (kill_on_drop).
            Err(_) => {
                return Err(EmbeddedError::Command {
                    command: command_line,
                    status: format!("no answer within {}s", timeout.as_secs()),
                    details: self.log_details(),
                });
            }
        };
        if !output.status.success() {
            let mut details = String::new();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            );
            let text = last_lines(&text, TAIL_LINES);
            if !text.trim().is_empty() {
                details.push_str("\n--- its output ---\n");
                details.push_str(text.trim_end());
            }
            details.push_str(&self.log_details());
            return Err(EmbeddedError::Command {
                command: command_line,
                status: output.status.to_string(),
                details,
            });
        }
        Ok(output)
    }

    /// The tail of the server log, formatted for an error message.
    fn log_details(&self) -> String {
        let log = self.log_file();
        let tail = tail_file(&log, TAIL_LINES);
        if tail.trim().is_empty() {
            String::new()
        } else {
            format!(
                "\n--- last lines of {} ---\n{}",
                log.display(),
                tail.trim_end()
            )
        }
    }

    /// Test helper: stops the server at once, synchronously (for Drop guards).
    #[cfg(test)]
    fn stop_immediately_blocking(&self) {
        use std::os::unix::process::CommandExt;
        if !self.pid_file().exists() {
            return;
        }
        let mut cmd = std::process::Command::new(self.bin_dir.join("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.pgdata)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let _ = cmd.status();
    }
}

/// Tool arguments: `flags` followed by `path`.
fn tool_args(flags: &[&str], path: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.push(path.into());
    args
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "embedded cluster admin connection ended");
        }
    });
    Ok(client)
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

/// A postgresql.conf string literal.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn check_executable(path: &Path) -> Result<(), EmbeddedError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.mode() & 0o111 != 0 => Ok(()),
        _ => Err(EmbeddedError::MissingBinary {
            path: path.to_path_buf(),
        }),
    }
}

/// `pg_ctl` passes the data dir and log file to `/bin/sh` inside double
/// quotes, and the socket directory goes into a config file: refuse the few
/// characters that would break either.
fn check_path_chars(path: &Path) -> Result<(), EmbeddedError> {
    let Some(text) = path.to_str() else {
        return Err(EmbeddedError::UnsupportedPath {
            path: path.to_path_buf(),
            reason: "it is not valid UTF-8",
        });
    };
    if text.contains(['"', '$', '`', '\\', '\n', '\r']) {
        return Err(EmbeddedError::UnsupportedPath {
            path: path.to_path_buf(),
            reason: "it contains one of \" $ ` \\ or a line break",
        });
    }
    Ok(())
}

/// The absolute path with symlinks resolved in the part that exists (the rest
/// will be created as plain directories), so that every process derives the
/// same socket directory from it.
fn resolve_path(path: &Path) -> Result<PathBuf, EmbeddedError> {
    let absolute = std::path::absolute(path).map_err(io_error("resolving", path))?;
    let components: Vec<Component> = absolute.components().collect();
    for split in (1..=components.len()).rev() {
        let prefix: PathBuf = components[..split].iter().collect();
        match fs::canonicalize(&prefix) {
            Ok(mut resolved) => {
                for component in &components[split..] {
                    match component {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::Normal(name) => resolved.push(name),
                        _ => {}
                    }
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("resolving", &prefix)(e)),
        }
    }
    Ok(absolute)
}

fn socket_dir_for(data_dir: &Path, pg_dir: &Path) -> PathBuf {
    if pg_dir.as_os_str().len() + 1 + SOCKET_NAME.len() <= MAX_SOCKET_PATH {
        return pg_dir.to_path_buf();
    }
    let digest = hex::encode(Sha256::digest(data_dir.as_os_str().as_bytes()));
    PathBuf::from(format!("/tmp/mnemo-{}", &digest[..12]))
}

fn lookup_user(name: &str) -> Result<RunAs, EmbeddedError> {
    match User::from_name(name) {
        Ok(Some(user)) if user.uid.is_root() => Err(EmbeddedError::RootRunAs {
            user: name.to_string(),
        }),
        Ok(Some(user)) => Ok(RunAs {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
        }),
        Ok(None) => Err(EmbeddedError::UnknownUser {
            user: name.to_string(),
        }),
        Err(source) => Err(EmbeddedError::UserLookup {
            user: name.to_string(),
            source,
        }),
    }
}

/// Checks that `user` may enter `dir` and each of its existing ancestors.
/// Only the primary group counts: std drops supplementary groups on setuid.
fn check_reachable(user: &RunAs, dir: &Path) -> Result<(), EmbeddedError> {
    for ancestor in dir.ancestors() {
        let meta = match fs::metadata(ancestor) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("reading", ancestor)(e)),
        };
        let mode = meta.mode();
        let bit = if meta.uid() == user.uid.as_raw() {
            0o100
        } else if meta.gid() == user.gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(EmbeddedError::Unreachable {
                user: user.name.clone(),
                dir: ancestor.to_path_buf(),
                mode: mode & 0o7777,
                owner: meta.uid(),
            });
        }
    }
    Ok(())
}

fn give_to(user: &RunAs, path: &Path) -> Result<(), EmbeddedError> {
    let meta = fs::metadata(path).map_err(io_error("reading", path))?;
    if meta.uid() != user.uid.as_raw() || meta.gid() != user.gid.as_raw() {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(io_error("changing the owner of", path))?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), EmbeddedError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing", path)(e)),
    }
}

enum PidFile {
    Missing,
    Invalid,
    Pid(i32),
}

/// The pid on the first line of a PostgreSQL lock file (negative for a
/// single-user backend).
fn read_pid_file(path: &Path) -> Result<PidFile, EmbeddedError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<i32>().ok())
            .and_then(|pid| pid.checked_abs())
            .filter(|pid| *pid > 0)
            .map_or(PidFile::Invalid, PidFile::Pid)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PidFile::Missing),
        Err(e) => Err(io_error("reading", path)(e)),
    }
}

/// Whether `pid` is a live (not zombie) postgres process serving `pgdata`.
/// Without /proc only `kill(pid, 0)` can be asked.
fn is_our_postmaster(pid: i32, pgdata: &Path) -> bool {
    match kill(Pid::from_raw(pid), None) {
        // EPERM: alive, but another user's.
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = match fs::read_to_string(proc_dir.join("stat")) {
        Ok(stat) => stat,
        // Gone since kill(): dead. Unreadable: assume alive.
        Err(e) => return e.kind() != io::ErrorKind::NotFound,
    };
    // "pid (comm) state ...": comm may itself contain spaces or parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return true;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next().unwrap_or('?');
    if matches!(state, 'Z' | 'X' | 'x') || comm != "postgres" {
        return false;
    }
    // The postmaster works in its data dir: another cluster's postgres may
    // have been given the recycled pid. Compare inodes, not paths, so that
    // symlinks and bind mounts cannot make our own server look foreign.
    match (fs::metadata(proc_dir.join("cwd")), fs::metadata(pgdata)) {
        (Ok(cwd), Ok(ours)) => cwd.dev() == ours.dev() && cwd.ino() == ours.ino(),
        _ => true,
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a file (reading at most its last 16 KiB).
fn tail_file(path: &Path, n: usize) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().map(|text| last_lines(&text, n)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn shared_buffers_are_a_quarter_of_usable_memory_within_bounds() {
        const GB: u64 = 1 << 30;
        assert_eq!(shared_buffers_for(Some(24 * GB), None), 1024, "capped");
        assert_eq!(shared_buffers_for(Some(2 * GB), None), 512);
        assert_eq!(
            shared_buffers_for(Some(24 * GB), Some(GB)),
            256,
            "a container's limit wins"
        );
        assert_eq!(
            shared_buffers_for(Some(2 * GB), Some(u64::MAX / 2)),
            512,
            "cgroup v1's 'unlimited'"
        );
        assert_eq!(
            shared_buffers_for(Some(GB / 4), None),
            128,
            "at least 128 MB"
        );
        assert_eq!(shared_buffers_for(None, None), 128, "unknown: the default");
    }

    /// Set in child processes spawned by `concurrent_processes_share_one_cluster`.
    const CHILD_ENV: &str = "MNEMO_EMBEDDED_TEST_CHILD_DATA_DIR";

    /// The real binaries: a missing install is a failure, not a skip.
    fn bin_dir() -> PathBuf {
        let dir = std::env::var_os("MNEMO_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                crate::config::default_runtime_dir().join("pg/pgserver/pginstall/bin")
            });
        for name in REQUIRED_BINARIES {
            assert!(
                dir.join(name).is_file(),
                "PostgreSQL binaries are missing ({} not found): run scripts/setup.sh or set MNEMO_PG_BIN",
                dir.join(name).display()
            );
        }
        dir
    }

    /// A temp dir under /tmp that the PostgreSQL user can enter.
    fn temp_root() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("mnemo-embedded-")
            .tempdir_in("/tmp")
            .expect("creating a temp dir in /tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 temp dir");
        dir
    }

    /// Stops the cluster (immediately) even when the test panics.
    struct StopOnDrop(EmbeddedCluster);

    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.stop_immediately_blocking();
            if self.0.socket_dir != self.0.pg_dir {
                let _ = fs::remove_dir_all(&self.0.socket_dir);
            }
        }
    }

    async fn client(config: &Config) -> Client {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .expect("connecting to the embedded cluster");
        tokio::spawn(connection);
        client
    }

    /// What identifies one running server: its system id and start time.
    async fn identity(config: &Config) -> String {
        let row = client(config)
            .await
            .query_one(
                "SELECT system_identifier::text || '/' || pg_postmaster_start_time()::text FROM pg_control_system()",
                &[],
            )
            .await
            .expect("identity query");
        row.get(0)
    }

    fn running_pid(status: ClusterStatus) -> u32 {
        match status {
            ClusterStatus::Running { pid } => pid,
            other => panic!("expected Running, got {other:?}"),
        }
    }

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
    async fn recovers_after_kill_9_of_the_postmaster() {
        let bin = bin_dir();
        let root = temp_root();
        let cluster = EmbeddedCluster::new(&root.path().join("data"), &bin, None).expect("new");
        let _guard = StopOnDrop(cluster.clone());
        let config = cluster
            .ensure_running("mnemo")
            .await
            .expect("ensure_running");
        client(&config)
            .await
            .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42);")
            .await
            .expect("write");
        let pid = running_pid(cluster.status().await.expect("status"));

        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill -9");
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(
            cluster.status().await.expect("status"),
            ClusterStatus::Running { .. }
        ) {
            assert!(
                Instant::now() < deadline,
                "postmaster {pid} still reported running after kill -9"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            cluster.pid_file().exists(),
            "kill -9 leaves postmaster.pid behind"
        );

        let began = Instant::now();
        let config = cluster.ensure_running("mnemo").await.expect("recovery");
        eprintln!("timing: recovery after kill -9 {:?}", began.elapsed());
        let new_pid = running_pid(cluster.status().await.expect("status"));
        assert_ne!(new_pid, pid);
        let x: i32 = client(&config)
            .await
            .query_one("SELECT x FROM t", &[])
            .await
            .expect("data after crash recovery")
            .get(0);
        assert_eq!(x, 42);
    }

    /// After a reboot the pid in a stale postmaster.pid may belong to an
    /// unrelated live process of the same user; PostgreSQL alone would refuse
    /// to start.
    #[tokio::test]
    async fn recovers_from_a_postmaster_pid_naming_a_recycled_pid() {
        use std::os::unix::process::CommandExt;
        let bin = bin_dir();
        let root = temp_root();
        let cluster = EmbeddedCluster::new(&root.path().join("data"), &bin, None).expect("new");
        let _guard = StopOnDrop(cluster.clone());
        cluster
            .ensure_running("mnemo")
            .await
            .expect("ensure_running");
        assert!(cluster.stop().await.expect("stop"));

        let mut sleeper = std::process::Command::new("sleep");
        sleeper.arg("60").stdout(Stdio::null());
        if let Some(user) = &cluster.run_as {
            sleeper.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let mut sleeper = sleeper.spawn().expect("spawning sleep");
        let pid_file = cluster.pid_file();
        fs::write(
            &pid_file,
            format!("{}\n{}\n", sleeper.id(), cluster.pgdata().display()),
        )
        .expect("fake pid file");
        if let Some(user) = &cluster.run_as {
            give_to(user, &pid_file).expect("chown");
        }
        assert_eq!(
            cluster.status().await.expect("status"),
            ClusterStatus::Stopped
        );

        let result = cluster.ensure_running("mnemo").await;
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let config = result.expect("ensure_running with a recycled pid in postmaster.pid");
        assert!(!identity(&config).await.is_empty());
        running_pid(cluster.status().await.expect("status"));
    }

    #[tokio::test]
    async fn long_data_dir_uses_the_fallback_socket_dir() {
        let bin = bin_dir();
        let root = temp_root();
        let data = root
            .path()
            .join("a-rather-long-directory-name-for-the-socket-path/".repeat(2) + "data");
        let cluster = EmbeddedCluster::new(&data, &bin, None).expect("new");
        let _guard = StopOnDrop(cluster.clone());
        let socket_dir = cluster.socket_dir().to_path_buf();
        assert!(socket_dir.starts_with("/tmp"), "{}", socket_dir.display());
        assert!(socket_dir.to_string_lossy().starts_with("/tmp/mnemo-"));
        let again = EmbeddedCluster::new(&data, &bin, None).expect("new");
        assert_eq!(
            again.socket_dir(),
            socket_dir,
            "every process computes the same socket dir"
        );

        let config = cluster
            .ensure_running("mnemo")
            .await
            .expect("ensure_running");
        assert!(!identity(&config).await.is_empty());
        let meta = fs::symlink_metadata(&socket_dir).expect("socket dir");
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert!(socket_dir.join(SOCKET_NAME).exists());
        assert!(cluster.stop().await.expect("stop"));
    }

    #[test]
    fn short_data_dir_keeps_the_socket_in_pg_dir() {
        let pg_dir = Path::new("/var/lib/mnemo/pg");
        assert_eq!(socket_dir_for(Path::new("/var/lib/mnemo"), pg_dir), pg_dir);
    }

    #[test]
    fn missing_binaries_error_names_the_fix() {
        let dir = temp_root();
        let err = EmbeddedCluster::new(dir.path(), dir.path(), None).expect_err("no binaries here");
        let msg = err.to_string();
        assert!(
            msg.contains("scripts/setup.sh") && msg.contains("MNEMO_PG_BIN"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn unreachable_data_dir_fails_before_creating_anything() {
        let bin = bin_dir();
        if !Uid::effective().is_root() {
            eprintln!("not root: PostgreSQL runs as the current user, nothing to check");
            return;
        }
        let root = temp_root();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        let data = root.path().join("data");
        let cluster = EmbeddedCluster::new(&data, &bin, None).expect("new");
        let err = cluster
            .ensure_running("mnemo")
            .await
            .expect_err("nobody cannot reach it");
        let msg = err.to_string();
        assert!(matches!(err, EmbeddedError::Unreachable { .. }), "{msg}");
        assert!(
            msg.contains(&root.path().display().to_string()) && msg.contains("/var/lib"),
            "{msg}"
        );
        assert!(!data.exists());
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
