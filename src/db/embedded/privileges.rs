//! Running PostgreSQL as an unprivileged user when mnemo is root: the user,
//! whether it can reach the data dir, and the ownership and modes of what
//! PostgreSQL writes (its directory, PGDATA, the socket directory).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

use super::{EmbeddedCluster, EmbeddedError, io_error};

/// The unprivileged user PostgreSQL runs as when mnemo is root.
#[derive(Debug, Clone)]
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: Uid,
    pub(super) gid: Gid,
}

impl RunAs {
    /// The user PostgreSQL runs as: `Some` only when mnemo runs as root
    /// (`name`, else [`crate::config::defaults::PG_USER`]), checked to reach
    /// the programs in `bin_dir`.
    pub(super) fn when_root(
        name: Option<&str>,
        bin_dir: &Path,
    ) -> Result<Option<Self>, EmbeddedError> {
        if !Uid::effective().is_root() {
            if let Some(name) = name {
                tracing::debug!(user = name, "not root: PostgreSQL runs as the current user");
            }
            return Ok(None);
        }
        let user = lookup_user(name.unwrap_or(crate::config::defaults::PG_USER))?;
        check_reachable(&user, bin_dir)?;
        Ok(Some(user))
    }
}

impl EmbeddedCluster {
    /// The uid PostgreSQL runs as, and a name for it in messages.
    pub(super) fn run_uid(&self) -> (u32, String) {
        match &self.run_as {
            Some(user) => (user.uid.as_raw(), format!("`{}`", user.name)),
            None => (Uid::effective().as_raw(), "the current user".to_string()),
        }
    }

    /// Creates `<data_dir>/pg` and, as root, hands it to the PostgreSQL user
    /// after checking that the user can reach it.
    pub(super) fn prepare_pg_dir(&self) -> Result<(), EmbeddedError> {
        // Check what exists before creating anything, then check again: a
        // restrictive umask may have made the new directories unreachable.
        if let Some(user) = &self.run_as {
            check_reachable(user, &self.layout.data_dir)?;
        }
        fs::create_dir_all(&self.layout.data_dir)
            .map_err(io_error("creating the data dir", &self.layout.data_dir))?;
        match fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.layout.pg_dir)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("creating", &self.layout.pg_dir)(e)),
        }
        if let Some(user) = &self.run_as {
            check_reachable(user, &self.layout.data_dir)?;
            // PostgreSQL writes its log here and, by default, its socket.
            give_to(user, &self.layout.pg_dir)?;
            let log = self.log_file();
            if log.exists() {
                give_to(user, &log)?;
            }
        }
        Ok(())
    }

    /// PostgreSQL refuses a data directory it does not own; say so clearly.
    pub(super) fn check_pgdata_owner(&self) -> Result<(), EmbeddedError> {
        let meta =
            fs::metadata(&self.layout.pgdata).map_err(io_error("reading", &self.layout.pgdata))?;
        let (uid, user) = self.run_uid();
        if meta.uid() != uid {
            return Err(EmbeddedError::WrongOwner {
                path: self.layout.pgdata.clone(),
                owner: meta.uid(),
                user,
                uid,
            });
        }
        Ok(())
    }

    /// Creates (or checks) the fallback socket directory under /tmp: 0700 and
    /// owned by the PostgreSQL user, never a symlink or someone else's.
    pub(super) fn prepare_socket_dir(&self) -> Result<(), EmbeddedError> {
        let dir = &self.layout.socket_dir;
        if *dir == self.layout.pg_dir {
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

pub(super) fn give_to(user: &RunAs, path: &Path) -> Result<(), EmbeddedError> {
    let meta = fs::metadata(path).map_err(io_error("reading", path))?;
    if meta.uid() != user.uid.as_raw() || meta.gid() != user.gid.as_raw() {
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(io_error("changing the owner of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bin_dir, temp_root};
    use super::*;

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
}
