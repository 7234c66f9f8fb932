//! Test fixtures shared by the embedded cluster's tests: the real
//! binaries, temp dirs the PostgreSQL user can enter, a guard that stops a
//! test's cluster even when it panics.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio_postgres::{Client, Config, NoTls};

use super::{ClusterStatus, EmbeddedCluster};

/// The real binaries: a missing install is a failure, not a skip.
pub(super) fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("MNEMO_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            crate::config::default_runtime_dir().join(crate::config::defaults::PG_BIN)
        });
    for name in super::layout::REQUIRED_BINARIES {
        assert!(
            dir.join(name).is_file(),
            "PostgreSQL binaries are missing ({} not found): run scripts/setup.sh or set MNEMO_PG_BIN",
            dir.join(name).display()
        );
    }
    dir
}

/// A temp dir under /tmp that the PostgreSQL user can enter.
pub(super) fn temp_root() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mnemo-embedded-")
        .tempdir_in("/tmp")
        .expect("creating a temp dir in /tmp");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 temp dir");
    dir
}

/// Stops the cluster (immediately) even when the test panics.
pub(super) struct StopOnDrop(pub(super) EmbeddedCluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop_immediately_blocking();
        if self.0.layout.socket_dir != self.0.layout.pg_dir {
            let _ = fs::remove_dir_all(&self.0.layout.socket_dir);
        }
    }
}

pub(super) async fn client(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("connecting to the embedded cluster");
    tokio::spawn(connection);
    client
}

/// What identifies one running server: its system id and start time.
pub(super) async fn identity(config: &Config) -> String {
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

pub(super) fn running_pid(status: ClusterStatus) -> u32 {
    match status {
        ClusterStatus::Running { pid } => pid,
        other => panic!("expected Running, got {other:?}"),
    }
}
