//! Creating and configuring the cluster: `initdb`, the tunables appended
//! once to `postgresql.conf` (with `shared_buffers` sized to the machine),
//! and `mnemo.conf`, rewritten before every start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::time::Duration;

use super::privileges::give_to;
use super::programs::tool_args;
use super::{EmbeddedCluster, EmbeddedError, PG_PORT, SUPERUSER, io_error};

const INITDB_TIMEOUT: Duration = Duration::from_secs(300);

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
pub(super) fn shared_buffers_mb() -> u64 {
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
pub(super) const INCLUDE_LINE: &str = "include_if_exists = 'mnemo.conf'";

impl EmbeddedCluster {
    /// Runs initdb into a temporary directory and renames it into place.
    pub(super) async fn initdb(&self) -> Result<(), EmbeddedError> {
        let tmp = self.layout.pg_dir.join("data.initdb-tmp");
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
        tracing::info!(pgdata = %self.layout.pgdata.display(), "initialising the embedded PostgreSQL cluster");
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
        if let Err(e) = fs::rename(&tmp, &self.layout.pgdata) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(match e.kind() {
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
                    EmbeddedError::NotACluster {
                        path: self.layout.pgdata.clone(),
                    }
                }
                _ => io_error("moving the new cluster to", &self.layout.pgdata)(e),
            });
        }
        // Make the rename durable before anything relies on the cluster.
        File::open(&self.layout.pg_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error("syncing", &self.layout.pg_dir))?;
        Ok(())
    }

    /// Writes `mnemo.conf` (no TCP, and the socket where clients will look)
    /// and makes sure `postgresql.conf` includes it.
    pub(super) fn write_runtime_conf(&self) -> Result<(), EmbeddedError> {
        let main_conf = self.layout.pgdata.join("postgresql.conf");
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
        let path = self.layout.pgdata.join("mnemo.conf");
        // Double quotes inside the value let the directory contain spaces or commas.
        let sockets = conf_quote(&format!("\"{}\"", self.layout.socket_dir.display()));
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
}

/// A postgresql.conf string literal.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
