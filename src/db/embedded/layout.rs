//! Where the embedded cluster's files live under `<data_dir>/pg/`, and the
//! checks on those paths (see the module doc of [`super`] for the layout).

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{EmbeddedError, SOCKET_NAME, io_error};

/// The binaries this module runs (`pg_ctl` runs `postgres` from its own directory).
pub(super) const REQUIRED_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];
/// `sizeof(sun_path) - 1`.
const MAX_SOCKET_PATH: usize = 107;

/// The paths of one cluster, all absolute.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// Canonical (symlinks resolved) absolute data dir.
    pub(super) data_dir: PathBuf,
    pub(super) pg_dir: PathBuf,
    pub(super) pgdata: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) bin_dir: PathBuf,
}

impl Layout {
    /// The layout under `data_dir`, with the programs in `bin_dir`. Creates
    /// nothing; fails if `bin_dir` lacks the binaries or a path is unusable.
    pub(super) fn new(data_dir: &Path, bin_dir: &Path) -> Result<Self, EmbeddedError> {
        let bin_dir = std::path::absolute(bin_dir).map_err(io_error("resolving", bin_dir))?;
        for name in REQUIRED_BINARIES {
            check_executable(&bin_dir.join(name))?;
        }
        let data_dir = resolve_path(data_dir)?;
        let pg_dir = data_dir.join("pg");
        check_path_chars(&pg_dir)?;
        let socket_dir = socket_dir_for(&data_dir, &pg_dir);
        Ok(Self {
            pgdata: pg_dir.join("data"),
            data_dir,
            pg_dir,
            socket_dir,
            bin_dir,
        })
    }

    /// The server log: `<data_dir>/pg/postgres.log`.
    pub(super) fn log_file(&self) -> PathBuf {
        self.pg_dir.join("postgres.log")
    }

    pub(super) fn lock_file(&self) -> PathBuf {
        self.pg_dir.join("cluster.lock")
    }

    pub(super) fn pid_file(&self) -> PathBuf {
        self.pgdata.join("postmaster.pid")
    }

    /// The lock file PostgreSQL keeps beside its socket.
    pub(super) fn socket_lock(&self) -> PathBuf {
        self.socket_dir.join(format!("{SOCKET_NAME}.lock"))
    }

    pub(super) fn is_initialized(&self) -> bool {
        self.pgdata.join("PG_VERSION").is_file()
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::testing::{StopOnDrop, bin_dir, identity, temp_root};
    use super::super::{EmbeddedCluster, SOCKET_NAME};
    use super::*;

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
}
