//! The HTTP/1.1 server under the routes: its own accept loop and connections, so that slow or
//! hostile clients can't starve the ones that matter (`/healthz`, Slack, the alarms).
//!
//! It owns the connection-level limits of `[http]`: a request head must be in within
//! `header_timeout` (counted from the accept, or from the first byte after the previous
//! answer); a keep-alive connection with nothing to say is closed after `idle_timeout`; at most
//! `max_connections` are open — a new one closes the oldest that has no request being answered,
//! so a flood of stalled connections can't lock `/healthz` out — and never more than the
//! open-files limit leaves room for; accept errors (EMFILE) back off and are logged at most once
//! a second. The body deadline and the request cap are the [`Guard`](super::Guard)'s, in front
//! of the routes. It knows no route and no use case: it serves whatever service it is given.
//!
//! hyper's own `header_read_timeout` is not used: its clock starts whenever a connection waits
//! for a request head, idle keep-alive included, so it would cut every idle connection at the
//! header timeout and `idle_timeout` could not be longer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use futures_util::task::AtomicWaker;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::HttpConfig;

/// How long the accept loop waits after an error such as EMFILE before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// On shutdown, how long a connection that is not being answered may still take to finish its
/// request head or to flush its last answer.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, close the
/// connections that have no request being answered, let the requests in flight finish, and
/// return once every connection is closed.
pub async fn run<S>(
    listener: TcpListener,
    app: S,
    limits: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    S: App,
{
    let cap = connection_cap(limits.max_connections, open_files_limit());
    info!(
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        body_timeout_ms = limits.body_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        max_connections = cap,
        max_requests = limits.max_requests,
        "HTTP limits"
    );
    let slots = Arc::new(Semaphore::new(cap));
    let open = Arc::new(Open::default());
    let mut accept_errors = LogEvery::default();
    let base = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The peer gave up before we took it: nothing to wait for.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors (or memory): free one and wait a little rather
                    // than spin on a listener that stays readable.
                    open.evict_one();
                    if let Some(suppressed) = accept_errors.ready(Instant::now()) {
                        warn!(error = %e, suppressed, "accept error: backing off");
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the cap: make room by closing the oldest connection that is not being
                // answered; when every one is, wait for one to finish.
                open.evict_one();
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = slots.clone().acquire_owned() => permit.expect("the slots are never closed"),
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = open.add(base);
        let (app, open) = (app.clone(), open.clone());
        tokio::spawn(async move {
            serve_connection(stream, conn.clone(), app, limits).await;
            drop(permit);
            // The last connection closed: a burst is over, give back what it left free.
            if open.remove(conn.id) {
                crate::memory::release_free_memory();
            }
        });
    }
    drop(listener);
    // No connection is added from here on: each one open is told once.
    open.stop_all();
    // Each connection holds a slot until it is closed: all slots back means all closed.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// What a connection serves: a service that answers every request (errors are answers too).
pub trait App:
    tower_service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower_service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The connection cap: `max_connections`, lowered to leave room under the open-files limit for
/// the store, the outgoing clients and a few spare descriptors, so that the cap is reached (and
/// the oldest idle connection closed) before accept fails with EMFILE.
fn connection_cap(max_connections: usize, open_files: Option<u64>) -> usize {
    let Some(soft) = open_files else {
        return max_connections.max(1);
    };
    let reserve = (soft / 4).clamp(64, 1024);
    let room = usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX);
    if room < max_connections {
        warn!(
            max_connections,
            open_files_limit = soft,
            cap = room.max(1),
            "the open-files limit leaves room for fewer connections than max_connections"
        );
    }
    max_connections.min(room).max(1)
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// At most one log line a second; counts what it held back.
#[derive(Debug, Default)]
struct LogEvery {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogEvery {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now < last + Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Where a connection is in its life: what it is waiting for decides which timeout applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted; no byte received yet (the header timeout runs from the accept).
    New,
    /// A request head is coming in.
    Head,
    /// A request is being answered (its body is read, within the body timeout, by middleware).
    Busy,
    /// Answered; waiting for the next request (the idle timeout runs).
    Idle,
}

impl Phase {
    fn bits(self) -> u64 {
        match self {
            Phase::New => 0,
            Phase::Head => 1,
            Phase::Busy => 2,
            Phase::Idle => 3,
        }
    }

    fn from_bits(bits: u64) -> Phase {
        match bits & 3 {
            0 => Phase::New,
            1 => Phase::Head,
            2 => Phase::Busy,
            _ => Phase::Idle,
        }
    }
}

/// One open connection, as its supervisor, its I/O and its requests see it.
struct Conn {
    id: u64,
    /// The phase (low two bits) and when it began (milliseconds since `base`, the rest): one
    /// word, so the I/O, the requests and the supervisor agree without a lock.
    state: AtomicU64,
    base: Instant,
    /// Wakes the supervisor when the connection is evicted or the server stops: nothing else
    /// needs it before its timer. One atomic register per poll, where a `Notify` and a `watch`
    /// took a lock each.
    wake: AtomicWaker,
    evicted: AtomicBool,
    stopping: AtomicBool,
}

impl Conn {
    fn pack(&self, phase: Phase, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.base).as_millis() as u64;
        (ms << 2) | phase.bits()
    }

    fn phase(&self) -> (Phase, Instant) {
        let s = self.state.load(Ordering::Acquire);
        (
            Phase::from_bits(s),
            self.base + Duration::from_millis(s >> 2),
        )
    }

    fn enter(&self, phase: Phase) {
        self.state
            .store(self.pack(phase, Instant::now()), Ordering::Release);
    }

    /// The I/O read bytes: a request head has begun if the connection was waiting for one.
    fn bytes_arrived(&self) {
        let s = self.state.load(Ordering::Acquire);
        let next = match Phase::from_bits(s) {
            // The header timeout keeps counting from the accept.
            Phase::New => (s & !3) | Phase::Head.bits(),
            Phase::Idle => self.pack(Phase::Head, Instant::now()),
            Phase::Head | Phase::Busy => return,
        };
        // Lost to a concurrent change (an answer given, an eviction): that one stands. The
        // supervisor's timer is due no later than the header timeout from now: no wake-up.
        let _ = self
            .state
            .compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// When this connection is to be closed as it is now, and why; `None` while a request is
    /// being answered. `draining` is when shutdown began.
    fn deadline(
        &self,
        limits: &HttpConfig,
        draining: Option<Instant>,
    ) -> Option<(Instant, &'static str)> {
        let (phase, since) = self.phase();
        let normal = match phase {
            Phase::New | Phase::Head => (since + limits.header_timeout, "header_timeout"),
            Phase::Idle => (since + limits.idle_timeout, "idle_timeout"),
            Phase::Busy => return None,
        };
        match draining {
            None => Some(normal),
            Some(at) if phase == Phase::New => Some((at, "shutdown")),
            Some(at) => Some(if normal.0 <= at + DRAIN_GRACE {
                normal
            } else {
                (at + DRAIN_GRACE, "shutdown")
            }),
        }
    }
}

/// The open connections, in accept order.
#[derive(Default)]
struct Open {
    conns: Mutex<std::collections::BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Open {
    fn add(&self, base: Instant) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            state: AtomicU64::new(0),
            base,
            wake: AtomicWaker::new(),
            evicted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        conn.enter(Phase::New);
        self.lock().insert(id, conn.clone());
        conn
    }

    /// Forget a closed connection; true when none is left open.
    fn remove(&self, id: u64) -> bool {
        let mut conns = self.lock();
        conns.remove(&id);
        conns.is_empty()
    }

    /// Close the oldest connection that has no request being answered — one still sending
    /// its head before one that is idle. False when every connection is being answered.
    fn evict_one(&self) -> bool {
        let victim = {
            let mut conns = self.lock();
            let mut idle = None;
            let mut victim = None;
            for (id, conn) in conns.iter() {
                match conn.phase().0 {
                    Phase::New | Phase::Head => {
                        victim = Some(*id);
                        break;
                    }
                    Phase::Idle if idle.is_none() => idle = Some(*id),
                    _ => {}
                }
            }
            victim.or(idle).and_then(|id| conns.remove(&id))
        };
        match victim {
            Some(conn) => {
                conn.evicted.store(true, Ordering::Release);
                conn.wake.wake();
                true
            }
            None => false,
        }
    }

    /// The server is stopping: tell every open connection.
    fn stop_all(&self) {
        for conn in self.lock().values() {
            conn.stopping.store(true, Ordering::Release);
            conn.wake.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serve one connection until the client closes it, a timeout or an eviction closes it, or
/// shutdown has let its last request finish.
async fn serve_connection<S: App>(stream: TcpStream, conn: Arc<Conn>, app: S, limits: HttpConfig) {
    let io = TokioIo::new(Watched {
        stream,
        conn: conn.clone(),
    });
    let routes = TowerToHyperService::new(app);
    let answering = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Answering::start(answering.clone());
        let answer = hyper::service::Service::call(&routes, req);
        async move {
            let answer = answer.await;
            drop(busy);
            answer
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let connection = http.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = None;
    // The timer lives as long as the connection, rather than being made again each time
    // round: a timer whose deadline moves later is moved without a lock.
    let expiry = tokio::time::sleep_until(Instant::now() + limits.idle_timeout);
    tokio::pin!(expiry);
    // The timer goes off at the deadline, or sooner: never later than `recheck` from when it
    // was set. Then nothing a request does can bring the deadline before it (an answer starts
    // the idle timeout, a first byte the header timeout, each from a moment after the timer
    // was set), so requests never wake the supervisor; it looks again when the timer goes off
    // (every few seconds on a long answer or a long idle spell).
    let recheck = limits.header_timeout.min(limits.idle_timeout);
    let mut armed = false;
    loop {
        let latest = Instant::now() + recheck;
        let at = match conn.deadline(&limits, draining) {
            Some((at, _)) => at.min(latest),
            None => latest,
        };
        if !armed || expiry.deadline() != at {
            expiry.as_mut().reset(at);
            armed = true;
        }
        // The connection first (it is what nearly every wake-up is for), then the signals,
        // then the timer.
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(ended));
            }
            conn.wake.register(cx.waker());
            if conn.evicted.load(Ordering::Acquire) {
                return Poll::Ready(Event::Evicted);
            }
            if draining.is_none() && conn.stopping.load(Ordering::Acquire) {
                return Poll::Ready(Event::Stopping);
            }
            expiry.as_mut().poll(cx).map(|()| Event::Timer)
        })
        .await;
        match event {
            Event::Ended(ended) => {
                if let Err(e) = ended {
                    debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            Event::Timer => {
                // The phase may have moved on while we slept: look again.
                if let Some((at, reason)) = conn.deadline(&limits, draining)
                    && at <= Instant::now()
                {
                    debug!(reason, "closing a connection");
                    counters::dropped(reason);
                    return;
                }
                // It went off: armed again at the top, for the deadline as it is now.
                armed = false;
            }
            Event::Evicted => {
                debug!("closing the oldest connection to make room for a new one");
                counters::dropped("evicted");
                return;
            }
            Event::Stopping => {
                draining = Some(Instant::now());
                // Idle connections close now; one being answered closes after its answer.
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What woke a connection's supervisor.
enum Event {
    /// hyper is done with the connection.
    Ended(Result<(), hyper::Error>),
    /// Its timer went off.
    Timer,
    /// It was evicted to make room.
    Evicted,
    /// The server is stopping.
    Stopping,
}

/// A request being answered on a connection: `Busy` until the answer is ready (or the request
/// is dropped), then `Idle`.
struct Answering(Arc<Conn>);

impl Answering {
    fn start(conn: Arc<Conn>) -> Answering {
        conn.enter(Phase::Busy);
        Answering(conn)
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        // The supervisor's timer is due no later than the idle timeout from now: no wake-up.
        self.0.enter(Phase::Idle);
    }
}

/// The connection's socket, telling its [`Conn`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The open-files soft limit, where the platform has one.
pub fn open_files_limit() -> Option<u64> {
    nofile::get().map(|(soft, _)| soft)
}

/// Raise the soft open-files limit to the hard limit, so that connections (and the store and
/// the outgoing clients) don't run out of descriptors at the default 1,024. Logs before and
/// after; does nothing where the platform has no such limit.
pub fn raise_open_files_limit() {
    let Some((soft, hard)) = nofile::get() else {
        return;
    };
    if soft >= hard {
        info!(soft, hard, "open-files limit already at its hard limit");
        return;
    }
    match nofile::set_soft(hard) {
        Ok(now) => info!(
            before = soft,
            after = now,
            hard,
            "raised the open-files soft limit"
        ),
        Err(e) => warn!(soft, hard, error = %e, "could not raise the open-files soft limit"),
    }
}

#[cfg(unix)]
#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is u64 on Linux but not on every unix"
)]
mod nofile {
    /// (soft, hard) `RLIMIT_NOFILE`; `RLIM_INFINITY` reads as `u64::MAX`.
    pub fn get() -> Option<(u64, u64)> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` into memory we own and reads nothing else.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        ok.then_some((lim.rlim_cur as u64, lim.rlim_max as u64))
    }

    /// Set the soft limit to `want` (at most the hard limit); the soft limit it ends at.
    pub fn set_soft(want: u64) -> std::io::Result<u64> {
        let (_, hard) = get().ok_or_else(std::io::Error::last_os_error)?;
        // macOS refuses an unlimited soft limit for files: its kernel caps them at OPEN_MAX.
        let tries: &[u64] = if cfg!(target_os = "macos") {
            &[want, 10_240]
        } else {
            &[want]
        };
        let mut error = None;
        for &soft in tries {
            let lim = libc::rlimit {
                rlim_cur: soft.min(hard) as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            // SAFETY: setrlimit reads one `rlimit` we own; raising the soft limit up to the
            // hard one is always allowed.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
                return Ok(get().map_or(soft, |(now, _)| now));
            }
            error = Some(std::io::Error::last_os_error());
        }
        Err(error.unwrap_or_else(std::io::Error::last_os_error))
    }
}

#[cfg(not(unix))]
mod nofile {
    pub fn get() -> Option<(u64, u64)> {
        None
    }

    pub fn set_soft(_want: u64) -> std::io::Result<u64> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// The server's own counters (the request counters are the telemetry layer's).
pub(super) mod counters {
    /// A connection (or a request, for `body_timeout`) the server closed: `header_timeout`,
    /// `body_timeout`, `idle_timeout`, `evicted` or `shutdown`.
    pub fn dropped(reason: &'static str) {
        metrics::counter!("redis_autoscaler_http_connections_closed_total", "reason" => reason)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;

    use crate::http::{BodyDeadline, Guard};

    fn limits() -> HttpConfig {
        HttpConfig {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            max_connections: 100,
            max_requests: 100,
        }
    }

    /// A server with `/healthz` uncounted and `/slow` (which answers once `release` has a
    /// permit) under a cap of `max_requests`, behind the bot's guard.
    async fn spawn(
        limits: HttpConfig,
        release: Arc<Semaphore>,
    ) -> (
        std::net::SocketAddr,
        watch::Sender<bool>,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let routes = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    release.acquire().await.unwrap().forget();
                    "done\n"
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }));
        let body = BodyDeadline {
            timeout: limits.body_timeout,
            max_bytes: 1024,
        };
        let app = Guard::new(routes, vec!["/healthz", "/slow"], body, limits.max_requests);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let shutdown = async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        };
        let server = tokio::spawn(run(listener, app, limits, shutdown));
        (addr, stop, server)
    }

    /// GET `path` on a new connection; the answer's status.
    async fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
    }

    #[tokio::test]
    async fn requests_beyond_the_cap_get_503_and_healthz_is_not_counted() {
        let release = Arc::new(Semaphore::new(0));
        let limits = HttpConfig {
            max_requests: 1,
            ..limits()
        };
        let (addr, stop, server) = spawn(limits, release.clone()).await;
        let first = tokio::spawn(get_status(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get_status(addr, "/slow").await, 503);
        assert_eq!(get_status(addr, "/healthz").await, 200);
        release.add_permits(1);
        assert_eq!(first.await.unwrap(), 200);
        let _ = stop.send(true);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish() {
        let release = Arc::new(Semaphore::new(0));
        let (addr, stop, server) = spawn(limits(), release.clone()).await;
        let in_flight = tokio::spawn(get_status(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!server.is_finished(), "a request was still being answered");
        release.add_permits(1);
        assert_eq!(in_flight.await.unwrap(), 200);
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("the server stops once the request is answered")
            .unwrap()
            .unwrap();
    }

    /// Shutdown reaches connections whose timers are far off: one idle after an answer and
    /// one that has sent nothing are closed at once, not at their 30 s timeouts.
    #[tokio::test]
    async fn shutdown_closes_idle_and_silent_connections_at_once() {
        let limits = HttpConfig {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            ..limits()
        };
        let (addr, stop, server) = spawn(limits, Arc::new(Semaphore::new(0))).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered first");
        let mut silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("both connections were closed at once")
            .unwrap()
            .unwrap();
        for conn in [&mut idle, &mut silent] {
            let n = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf))
                .await
                .expect("closed");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
    }

    #[tokio::test]
    async fn at_the_cap_a_new_connection_closes_the_oldest_stalled_one() {
        let limits = HttpConfig {
            header_timeout: Duration::from_secs(30),
            max_connections: 2,
            ..limits()
        };
        let (addr, stop, server) = spawn(limits, Arc::new(Semaphore::new(0))).await;
        let mut oldest = TcpStream::connect(addr).await.unwrap();
        oldest
            .write_all(b"GET /healthz HTTP/1.1\r\nHo")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut newer = TcpStream::connect(addr).await.unwrap();
        newer
            .write_all(b"GET /healthz HTTP/1.1\r\nHo")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A third connection needs a slot: the oldest stalled one gives it up.
        assert_eq!(get_status(addr, "/healthz").await, 200);
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(1), oldest.read(&mut buf))
            .await
            .expect("the oldest connection was closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let _ = stop.send(true);
        drop(newer);
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_connection_cap_leaves_room_under_the_open_files_limit() {
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(10_000, Some(1024)), 768);
        assert_eq!(connection_cap(10_000, Some(65_536)), 10_000);
        assert_eq!(connection_cap(10_000, Some(10_500)), 9_476);
        assert_eq!(connection_cap(100, Some(20_000)), 100);
        assert_eq!(connection_cap(0, Some(10)), 1);
    }

    #[test]
    fn accept_errors_are_logged_at_most_once_a_second() {
        let mut every = LogEvery::default();
        let t = Instant::now();
        assert_eq!(every.ready(t), Some(0));
        for ms in [1, 200, 999] {
            assert_eq!(every.ready(t + Duration::from_millis(ms)), None);
        }
        assert_eq!(every.ready(t + Duration::from_millis(1000)), Some(3));
        assert_eq!(every.ready(t + Duration::from_millis(1001)), None);
    }
}
