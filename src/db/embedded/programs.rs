//! Running PostgreSQL's programs (`initdb`, `pg_ctl`): as the PostgreSQL
//! user, out of mnemo's process group, with a clean `PG*` environment and
//! their output captured (stdout belongs to the stdio transport); a failure
//! quotes the output's and the server log's last lines.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use super::{EmbeddedCluster, EmbeddedError, io_error};

/// `pg_ctl -t` plus a margin, after which the `pg_ctl` process itself is killed.
pub(super) const PG_CTL_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of command output and of the server log quoted in errors.
const TAIL_LINES: usize = 20;

impl EmbeddedCluster {
    /// Runs a PostgreSQL program as the PostgreSQL user with its output
    /// captured; a failure carries the output's and the log's last lines.
    pub(super) async fn run_tool(
        &self,
        tool: &str,
        args: &[OsString],
        timeout: Duration,
    ) -> Result<Output, EmbeddedError> {
        let program = self.layout.bin_dir.join(tool);
        let command_line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(args)
            // The PostgreSQL user may not be able to enter mnemo's cwd.
            .current_dir(&self.layout.pg_dir)
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
    pub(super) fn log_details(&self) -> String {
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
    pub(super) fn stop_immediately_blocking(&self) {
        use std::os::unix::process::CommandExt;
        if !self.layout.pid_file().exists() {
            return;
        }
        let mut cmd = std::process::Command::new(self.layout.bin_dir.join("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.layout.pgdata)
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
pub(super) fn tool_args(flags: &[&str], path: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.push(path.into());
    args
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
