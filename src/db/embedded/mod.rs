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
//! PostgreSQL program runs as an unprivileged user (`nobody`,
//! [`crate::config::defaults::PG_USER`], unless told otherwise), the
//! directories it writes are handed to that user, and the data dir must be
//! reachable by it: this is checked before anything is created.
//!
//! # Output
//!
//! stdout belongs to the MCP stdio transport: the output of `initdb` and
//! `pg_ctl` is captured, and its tail (with the tail of the server log) goes
//! into the error when one of them fails.
//!
//! # Why by hand
//!
//! The embedded-PostgreSQL crates (`postgresql_embedded`, `pg-embed`) reach
//! their server over TCP and (by default) delete its data when the handle
//! is dropped;
//! mnemo needs a cluster that listens on a private Unix socket only and
//! outlives every process using it.
//!
//! # Files
//!
//! - `layout`: where each file lives (data dir, PGDATA, socket, log, lock).
//! - `privileges`: the unprivileged user when root, ownership and modes.
//! - `conf`: `initdb`, `postgresql.conf` / `mnemo.conf`, `shared_buffers` sizing.
//! - `programs`: running `initdb` / `pg_ctl` as that user, output captured.
//! - `process`: pid files, starting the server, stale-pid recovery.
//! - `cluster`: [`EmbeddedCluster`], its lifecycle under the cluster lock.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;
mod conf;
mod layout;
mod privileges;
mod process;
mod programs;
#[cfg(test)]
mod testing;

pub use cluster::EmbeddedCluster;

/// The cluster's superuser; authentication is `trust` over a 0700 socket directory.
const SUPERUSER: &str = "postgres";
const PG_PORT: u16 = 5432;
const SOCKET_NAME: &str = ".s.PGSQL.5432";

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
