//! The accept loop: what `axum::serve` does, plus the limits it lacks, so
//! stalled clients cannot starve real ones (issue 16 item 3).
//!
//! - a connection limit (`--http-max-connections`, capped below the open-file
//!   limit): at the limit the loop stops accepting, so new clients wait in the
//!   kernel's backlog instead of being refused;
//! - hyper's header-read timeout (`--http-header-timeout-secs`), which also
//!   bounds how long a keep-alive connection waits for its next request;
//! - an idle timeout (`--http-idle-timeout-secs`): a connection that moves no
//!   byte either way for that long is closed (a client that stops reading its
//!   response). rmcp writes a keep-alive comment on every SSE stream each 15 s,
//!   so a live stream is never idle;
//! - accept errors (EMFILE and friends) are counted, logged at most every
//!   10 s, and followed by a growing pause instead of a busy loop.
//!
//! The request-body timeout lives in `body`, where the body is read.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Connections closed by the server, by `reason`: `header_timeout`,
/// `idle_timeout`.
pub const CONNECTIONS_DROPPED: &str = "mnemo_http_connections_dropped_total";
/// Failed `accept` calls (e.g. out of file descriptors): the client is refused.
pub const ACCEPT_ERRORS: &str = "mnemo_http_accept_errors_total";
/// Connections open now.
pub const CONNECTIONS_OPEN: &str = "mnemo_http_connections";

/// File descriptors kept free below the open-file limit for the database
/// pool, the log and the model, so the connection limit is reached before
/// `accept` fails with EMFILE.
const FD_RESERVE: u64 = 128;
/// First and longest pause after a failed `accept`.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// At most one warning per kind in this period (a flood must not flood the log).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits the loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let max = limits.max_connections.min(fd_budget()).max(1);
    if max < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            max,
            "the open-file limit (ulimit -n) caps the HTTP connection limit"
        );
    }
    let permits = Arc::new(Semaphore::new(max));
    // HTTP/1.1 only, as `axum::serve` with axum's default features was.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    let full_log = log_throttle();
    let error_log = log_throttle();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        if permits.available_permits() == 0 && full_log.check().is_ok() {
            tracing::warn!(
                max,
                "HTTP connection limit reached: new connections wait until one closes"
            );
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => {
                backoff = ACCEPT_BACKOFF.0;
                pair
            }
            // The client gave up before we took it: nothing wrong here.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                metrics::counter!(ACCEPT_ERRORS).increment(1);
                if error_log.check().is_ok() {
                    tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accepting an HTTP connection failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let task = Connection {
            builder: builder.clone(),
            router: router.clone(),
            remote,
            idle_timeout: limits.idle_timeout,
            shutdown: shutdown.clone(),
        };
        tracker.spawn(async move {
            metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
            task.run(stream).await;
            metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

fn log_throttle() -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::with_period(LOG_EVERY).unwrap_or(Quota::per_second(NonZeroU32::MIN)))
}

/// Connections this process can hold: the soft open-file limit less a reserve.
fn fd_budget() -> usize {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => {
            usize::try_from(soft.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX)
        }
        _ => usize::MAX,
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection.
struct Connection {
    builder: Arc<http1::Builder>,
    router: Router,
    remote: SocketAddr,
    idle_timeout: Duration,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let clock = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            clock: clock.clone(),
        });
        let (router, remote) = (self.router, self.remote);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // The guard limits failed key look-ups per client address.
            request.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(request)
        });
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut ending = false;
        loop {
            let deadline = clock.last() + self.idle_timeout;
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        if e.is_timeout() {
                            dropped("header_timeout", remote);
                        } else {
                            tracing::debug!(error = %e, %remote, "HTTP connection ended with an error");
                        }
                    }
                    return;
                }
                _ = self.shutdown.cancelled(), if !ending => {
                    ending = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if clock.last() + self.idle_timeout <= Instant::now() {
                        dropped("idle_timeout", remote);
                        return; // dropping the connection closes the socket
                    }
                }
            }
        }
    }
}

fn dropped(reason: &'static str, remote: SocketAddr) {
    metrics::counter!(CONNECTIONS_DROPPED, "reason" => reason).increment(1);
    static LOG: std::sync::OnceLock<DefaultDirectRateLimiter> = std::sync::OnceLock::new();
    if LOG.get_or_init(log_throttle).check().is_ok() {
        tracing::warn!(
            reason,
            %remote,
            "closed a stalled HTTP connection (further ones are counted in {CONNECTIONS_DROPPED}, logged at most every 10 s)"
        );
    }
}

/// When a connection last moved a byte, in ms since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that notes every read and write in its [`Activity`].
struct Watched {
    inner: TcpStream,
    clock: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
