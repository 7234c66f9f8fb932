//! The server process: reading `postmaster.pid`, telling our live
//! postmaster from a dead, zombie or recycled pid, making stale lock files
//! harmless, and starting the server until it accepts connections.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::programs::{PG_CTL_TIMEOUT, tool_args};
use super::{ClusterStatus, EmbeddedCluster, EmbeddedError, io_error};

/// How long `ensure_running` waits for a started server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Starting again after a failure covers backends of a SIGKILLed postmaster
/// that still hold its shared memory for a moment.
const MAX_START_ATTEMPTS: u32 = 4;
/// Above Linux's PID_MAX_LIMIT (2^22), so `kill(pid, 0)` always fails with ESRCH.
const DEAD_PID: i32 = 4_194_305;

impl EmbeddedCluster {
    /// Starts the server if needed and returns a connection to the
    /// `postgres` database once it accepts connections.
    pub(super) async fn start_and_connect(&self) -> Result<Client, EmbeddedError> {
        let mut admin = self.client_config("postgres");
        admin.connect_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + START_TIMEOUT;
        let mut attempts = 0;
        loop {
            match self.status_now()? {
                ClusterStatus::NotInitialized => {
                    return Err(EmbeddedError::NotACluster {
                        path: self.layout.pgdata.clone(),
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
                            self.layout.socket_dir.display()
                        ),
                        source: e,
                    });
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(EmbeddedError::NotReady {
                    socket_dir: self.layout.socket_dir.clone(),
                    waited: START_TIMEOUT,
                    last_error,
                    details: self.log_details(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn start(&self) -> Result<(), EmbeddedError> {
        self.clear_stale_lock_files()?;
        self.write_runtime_conf()?;
        tracing::info!(pgdata = %self.layout.pgdata.display(), socket_dir = %self.layout.socket_dir.display(), "starting embedded PostgreSQL");
        let mut args = tool_args(
            &["start", "-w", "-t", "60", "-s", "-D"],
            &self.layout.pgdata,
        );
        args.push("-l".into());
        args.push(self.log_file().into());
        self.run_tool("pg_ctl", &args, PG_CTL_TIMEOUT).await?;
        Ok(())
    }

    /// Makes lock files whose pid is not a live postmaster of this cluster
    /// harmless. PostgreSQL itself ignores a dead pid, but not a zombie (an
    /// unreaped postmaster, as under an init that does not reap) nor a pid
    /// recycled by another process of the same user (after a reboot).
    pub(super) fn clear_stale_lock_files(&self) -> Result<(), EmbeddedError> {
        let pid_file = self.layout.pid_file();
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
        let socket_lock = self.layout.socket_lock();
        match read_pid_file(&socket_lock)? {
            PidFile::Missing => {}
            PidFile::Pid(pid) if is_our_postmaster(pid, &self.layout.pgdata) => {}
            _ => remove_if_exists(&socket_lock)?,
        }
        Ok(())
    }
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

fn remove_if_exists(path: &Path) -> Result<(), EmbeddedError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing", path)(e)),
    }
}

pub(super) enum PidFile {
    Missing,
    Invalid,
    Pid(i32),
}

/// The pid on the first line of a PostgreSQL lock file (negative for a
/// single-user backend).
pub(super) fn read_pid_file(path: &Path) -> Result<PidFile, EmbeddedError> {
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
pub(super) fn is_our_postmaster(pid: i32, pgdata: &Path) -> bool {
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

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use nix::sys::signal::Signal;

    use super::super::privileges::give_to;
    use super::super::testing::{StopOnDrop, bin_dir, client, identity, running_pid, temp_root};
    use super::*;

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
            cluster.layout.pid_file().exists(),
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
        let pid_file = cluster.layout.pid_file();
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
}
