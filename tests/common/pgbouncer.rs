//! A real PgBouncer (Debian's 1.18, installed by scripts/setup-pgbouncer.sh)
//! in transaction mode with 4 server connections per database, in front of
//! the shared test cluster. Like the cluster it outlives the test processes
//! and is shared by them; scripts/test.sh stops it at the end.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{TestDb, cluster, free_port};

/// Server connections per database, as the issue measured the failure.
pub const SERVER_CONNECTIONS: u32 = 4;

fn state_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/mnemo-pgbouncer-{}", nix::unistd::geteuid()))
}

fn binary() -> PathBuf {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("pgbouncer is not installed (scripts/setup-pgbouncer.sh installs it)")
}

static PORT: OnceCell<u16> = OnceCell::const_new();

/// The port PgBouncer listens on, starting it if needed.
pub async fn port() -> u16 {
    *PORT.get_or_init(start).await
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn start() -> u16 {
    let dir = state_dir();
    let port_file = dir.join("port");
    if let Some(port) = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
        && listening(port).await
    {
        return port;
    }
    // The cluster must be up before PgBouncer sends anyone to it.
    let pg = cluster()
        .ensure_running("postgres")
        .await
        .expect("start the test cluster");
    let socket_dir = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(path)) => path.clone(),
        other => panic!("the test cluster listens on a socket directory, not {other:?}"),
    };
    let pg_port = pg.get_ports().first().copied().unwrap_or(5432);
    std::fs::create_dir_all(&dir).expect("pgbouncer state dir");
    // PgBouncer refuses to run as root; as `nobody` it must write here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod pgbouncer state dir");
    // An instance whose port was forgotten (or that stopped answering)
    // holds the pid file, which would keep a new one from starting.
    let pidfile = dir.join("pgbouncer.pid");
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..100 {
            if !pidfile.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    let port = free_port();
    let ini = format!(
        "[databases]\n\
         * = host={socket} port={pg_port} user=postgres\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = any\n\
         pool_mode = transaction\n\
         default_pool_size = {SERVER_CONNECTIONS}\n\
         max_client_conn = 2000\n\
         server_reset_query =\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n",
        socket = socket_dir.display(),
        dir = dir.display(),
    );
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).expect("write pgbouncer.ini");
    let mut cmd = std::process::Command::new(binary());
    cmd.arg("-d");
    if nix::unistd::geteuid().is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let status = cmd.arg(&ini_path).status().expect("run pgbouncer");
    assert!(
        status.success(),
        "pgbouncer did not start: see {}/pgbouncer.log",
        dir.display()
    );
    for _ in 0..200 {
        if listening(port).await {
            std::fs::write(&port_file, port.to_string()).expect("write pgbouncer port");
            return port;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "pgbouncer is not listening on {port}: see {}/pgbouncer.log",
        dir.display()
    );
}

/// `db` reached through PgBouncer, once [`port`] has started it.
pub fn url(db: &TestDb) -> Option<String> {
    PORT.get().map(|port| {
        format!(
            "host=127.0.0.1 port={port} user=postgres dbname={}",
            db.name
        )
    })
}

/// Whether this test run sends every server through PgBouncer
/// (scripts/test.sh's second pass sets `MNEMO_TEST_PGBOUNCER=1`).
pub fn everywhere() -> bool {
    std::env::var_os("MNEMO_TEST_PGBOUNCER").is_some_and(|v| v == "1")
}
