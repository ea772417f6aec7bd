//! Accepting and serving HTTP/1.1 connections within limits a slow, vanished or greedy
//! client cannot outlast: at most so many connections at once (past that, a few spare
//! ones serve only probes and scrapes, [`SPARE_CONNECTIONS`], and new ones wait in the
//! listen backlog), request heads of at most
//! [`matte_common::memory::MAX_HEAD_BYTES`] (431 past it)
//! that must arrive within the header timeout, a client whose socket is full must take
//! its answer at a minimum pace, and a drain first asks every connection to finish its
//! current exchange, then cuts whatever is left.
//!
//! The inference server and the gateway both serve through it, so that a client meets
//! the same limits whether the gateway is in front of the pods or not.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use matte_common::{memory, paths};
use prometheus::IntGauge;
use prometheus::core::Collector;

use crate::pace::PaceCredit;

/// `matte_common::memory::MAX_HEAD_BYTES`, as hyper counts it.
const MAX_HEAD_BYTES: usize = memory::MAX_HEAD_BYTES as usize;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    pub header_read: Duration,
    /// The most time a client whose socket is full may have in hand at its pace: how long
    /// a client that stopped reading holds its connection.
    pub write: Duration,
    /// The slowest a client may take its answer once its socket is full (the pace an
    /// upload must keep too).
    pub min_write_bytes_per_second: u64,
}

/// Where the server stands in its shutdown, as the connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Serving,
    /// No new connections; each open one finishes its current exchange and closes.
    Closing,
    /// Every open connection is dropped now.
    Cut,
}

/// The connections a server holds open and the most it serves at once, as two gauges of
/// its metrics under the names it takes from `matte_common`: at the most, new clients
/// wait in the listen backlog, which no other figure shows.
#[derive(Debug, Clone)]
pub struct ConnectionGauges {
    open: IntGauge,
    max: IntGauge,
}

impl ConnectionGauges {
    pub fn new(open: &str, max: &str) -> ConnectionGauges {
        ConnectionGauges {
            open: IntGauge::new(open, "Client connections open now.").expect("a valid metric name"),
            max: IntGauge::new(max, "The most client connections served at once (--max-connections); more wait.")
                .expect("a valid metric name"),
        }
    }

    /// Both gauges, to register.
    pub fn collectors(&self) -> [Box<dyn Collector>; 2] {
        [Box::new(self.open.clone()), Box::new(self.max.clone())]
    }
}

/// One on a gauge while it lives, however its connection ends (a cut aborts the task).
struct Counted(IntGauge);

impl Counted {
    fn on(gauge: &IntGauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Connections served beyond `max_connections`, one exchange each, for the kubelet's
/// probes and Prometheus's scrapes alone (`GET` of [`paths::HEALTHZ`],
/// [`paths::READYZ`], [`paths::METRICS`]); any other request on one is answered 503 with
/// `Retry-After: 1`. At capacity the probes waited in the listen backlog with the
/// clients, timed out, and the kubelet restarted a server that was only busy, dropping
/// every request it held; and its metrics went unscraped when they mattered most.
pub const SPARE_CONNECTIONS: usize = 8;

/// The head a spare connection may read: a probe's or a scrape's is a few hundred bytes.
const SPARE_HEAD_BYTES: usize = 8 * 1024;

/// The most a spare connection waits for its head.
const SPARE_HEADER_READ: Duration = Duration::from_secs(2);

/// The place a connection is served in, held while it is open.
struct Place {
    _permit: OwnedSemaphorePermit,
    /// One of [`SPARE_CONNECTIONS`], the others being taken; else one of
    /// `max_connections`.
    spare: bool,
}

/// How often reaching `max_connections`, or failing to accept, is logged at most.
const AT_CAPACITY_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Serves `router` on the connections `listener` accepts until the stage leaves
/// `Serving`; returns once every connection has closed or been cut.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    gauges: ConnectionGauges,
    stage: watch::Receiver<Stage>,
) {
    gauges.max.set(i64::try_from(limits.max_connections).unwrap_or(i64::MAX));
    let mut connections = JoinSet::new();
    let mut watching = stage.clone();
    let open = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let spare = std::sync::Arc::new(Semaphore::new(SPARE_CONNECTIONS));
    let mut logged_at_capacity: Option<Instant> = None;
    let mut logged_accept_failure: Option<Instant> = None;
    loop {
        // A place first, then a connection: at capacity, a spare one (for probes and
        // scrapes), and past those clients wait in the backlog.
        let full = open.available_permits() == 0;
        let place = tokio::select! {
            biased;
            place = open.clone().acquire_owned() => match place {
                Ok(permit) => Place { _permit: permit, spare: false },
                Err(_) => break,
            },
            place = spare.clone().acquire_owned(), if full => match place {
                Ok(permit) => Place { _permit: permit, spare: true },
                Err(_) => break,
            },
            Some(_) = connections.join_next() => continue,
            () = reached(&mut watching, Stage::Closing) => break,
        };
        if open.available_permits() == 0
            && logged_at_capacity.is_none_or(|logged| logged.elapsed() >= AT_CAPACITY_LOGGED_EVERY)
        {
            logged_at_capacity = Some(Instant::now());
            tracing::warn!(
                max_connections = limits.max_connections,
                "serving as many connections as allowed; new ones get a spare connection for probes and scrapes, or wait to be accepted"
            );
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // A place may have come free while the spare one waited for a client.
                    let place = match place.spare.then(|| open.clone().try_acquire_owned()) {
                        Some(Ok(permit)) => Place { _permit: permit, spare: false },
                        _ => place,
                    };
                    let serving = serve_connection(stream, router.clone(), limits, place.spare, stage.clone());
                    let open = Counted::on(&gauges.open);
                    connections.spawn(async move {
                        serving.await;
                        drop((open, place));
                    });
                }
                Err(error) => {
                    // Out of file descriptors, most likely: let some connections end. Tried
                    // again every 50 ms, said once a minute (`open_files`).
                    if logged_accept_failure.is_none_or(|logged| logged.elapsed() >= AT_CAPACITY_LOGGED_EVERY) {
                        logged_accept_failure = Some(Instant::now());
                        tracing::warn!(%error, "accepting a connection failed; trying again every 50 ms");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            () = reached(&mut watching, Stage::Closing) => break,
        }
    }
    drop(listener);
    let cut = tokio::select! {
        () = async { while connections.join_next().await.is_some() {} } => false,
        () = reached(&mut watching, Stage::Cut) => true,
    };
    if cut && !connections.is_empty() {
        tracing::warn!(open = connections.len(), "closing connections still open at the end of the drain");
        connections.shutdown().await;
    }
}

/// Resolves once the shutdown has reached `stage` (or the server is gone).
async fn reached(watching: &mut watch::Receiver<Stage>, stage: Stage) {
    let _ = watching.wait_for(|current| *current >= stage).await;
}

/// Serves one connection: in a spare place (`spare_lane`), one exchange, with a small
/// head soon, and only a probe or a scrape ([`SPARE_CONNECTIONS`]).
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    spare_lane: bool,
    mut stage: watch::Receiver<Stage>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WriteTimeout::new(stream, limits.write, limits.min_write_bytes_per_second));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        async move {
            if spare_lane && !is_probe_or_scrape(&request) {
                return Ok(at_capacity());
            }
            router.call(request).await
        }
    });
    let (head_bytes, header_read) = if spare_lane {
        (SPARE_HEAD_BYTES, limits.header_read.min(SPARE_HEADER_READ))
    } else {
        (MAX_HEAD_BYTES, limits.header_read)
    };
    let mut builder = http1::Builder::new();
    // The read buffer no larger than a head may be: hyper grows it by doubling, and one
    // holding a head near the limit took twice that. A body is read through it in chunks
    // of at most that size, and the write queue holds no more either
    // (`memory::CONNECTION_BYTES` counts both).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .max_header_size(head_bytes)
        .max_buf_size(head_bytes)
        .keep_alive(!spare_lane);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        () = reached(&mut stage, Stage::Closing) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error while closing");
    }
}

/// Whether `request` is a kubelet's probe or a Prometheus scrape.
fn is_probe_or_scrape<B>(request: &hyper::Request<B>) -> bool {
    request.method() == hyper::Method::GET
        && [paths::HEALTHZ, paths::READYZ, paths::METRICS].contains(&request.uri().path())
}

/// The answer on a spare connection to anything but a probe or a scrape, in the servers'
/// error shape.
fn at_capacity() -> axum::response::Response {
    let body = serde_json::json!({"error": {
        "code": "too_many_connections",
        "message": "the server is serving as many connections as it may; retry in 1 s",
    }});
    let mut response =
        axum::response::IntoResponse::into_response((hyper::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)));
    response.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    response
}

/// A stream whose writes fail once the client has fallen behind a minimum pace: while a
/// write waits for the client to read (its socket is full), the time it waits is spent
/// from a [`PaceCredit`] of `limit` that every byte the client takes refills at
/// `min_bytes_per_second`, up to `limit`. A client that stops reading, reads a byte now
/// and then, or takes a socketful just before its time runs out, again and again, cannot
/// hold the connection, its buffers or whatever its answer holds (a place in the pod's
/// queue) beyond that.
struct WriteTimeout<S> {
    inner: S,
    credit: PaceCredit,
    /// Whether the last write waited for the client.
    waited: bool,
    /// Fires at the credit's deadline while a write waits.
    timer: Pin<Box<Sleep>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration, min_bytes_per_second: u64) -> WriteTimeout<S> {
        let now = Instant::now();
        let credit = PaceCredit::new(limit, min_bytes_per_second, now);
        WriteTimeout { inner, credit, waited: false, timer: Box::pin(tokio::time::sleep_until(credit.deadline())) }
    }

    /// Passes on a write's progress: what a write took after waiting is paid for by the
    /// wait, what it took at once only earns time, and a write that waits past the
    /// credit's deadline fails.
    fn watch_write(&mut self, cx: &mut Context<'_>, progress: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match progress {
            Poll::Ready(Ok(written)) => {
                if self.waited {
                    self.credit.moved(written, Instant::now());
                } else {
                    self.credit.moved_without_waiting(written);
                }
                self.waited = false;
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.wait(cx),
        }
    }

    /// A flush or shutdown: only its waiting counts.
    fn watch_other(&mut self, cx: &mut Context<'_>, progress: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
        match progress {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.wait(cx).map_ok(|_| ()),
        }
    }

    /// A write waits for the client: pending until the credit's deadline, an error after.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.waited {
            self.credit.start_waiting(Instant::now());
            self.waited = true;
        }
        let deadline = self.credit.deadline();
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client is not reading its answer at the minimum pace",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, progress)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, progress)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_other(cx, progress)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch_other(cx, progress)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server answering `GET /` with "ok" on a loopback port, serving at most
    /// `max_connections` at once; its address.
    async fn server(max_connections: usize) -> std::net::SocketAddr {
        server_counted(max_connections, ConnectionGauges::new("open", "max")).await
    }

    /// [`server`], counting its connections on `gauges`.
    async fn server_counted(max_connections: usize, gauges: ConnectionGauges) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(paths::HEALTHZ, axum::routing::get(|| async { "live" }))
            .route(paths::METRICS, axum::routing::get(|| async { "# metrics" }));
        let limits = ConnectionLimits {
            max_connections,
            header_read: Duration::from_secs(30),
            write: Duration::from_secs(30),
            min_write_bytes_per_second: 1000,
        };
        let (stage, watching) = watch::channel(Stage::Serving);
        tokio::spawn(async move {
            serve(listener, router, limits, gauges, watching).await;
            drop(stage);
        });
        address
    }

    /// Sends `GET /` with `extra` headers on `stream` and reads the status line's code,
    /// if one comes within `within`.
    async fn status_within(stream: &mut TcpStream, extra: &str, within: Duration) -> Option<String> {
        status_of("GET /", stream, extra, within).await
    }

    /// Sends `request_line` (a method and a path) with `extra` headers on `stream` and
    /// reads the status line's code, if one comes within `within`.
    async fn status_of(request_line: &str, stream: &mut TcpStream, extra: &str, within: Duration) -> Option<String> {
        let request = format!("{request_line} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        tokio::time::timeout(within, stream.read_exact(&mut head)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&head[9..12]).into_owned())
    }

    #[tokio::test]
    async fn a_request_head_past_the_limit_is_refused_with_431() {
        let address = server(8).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let cookie = format!("Cookie: {}\r\n", "c".repeat(MAX_HEAD_BYTES));
        assert_eq!(status_within(&mut stream, &cookie, Duration::from_secs(5)).await.as_deref(), Some("431"));
        let mut stream = TcpStream::connect(address).await.unwrap();
        let cookie = format!("Cookie: {}\r\n", "c".repeat(4096));
        assert_eq!(status_within(&mut stream, &cookie, Duration::from_secs(5)).await.as_deref(), Some("200"));
    }

    #[tokio::test]
    async fn past_the_most_connections_a_probe_or_a_scrape_is_served_and_a_client_told_to_come_back() {
        let address = server(2).await;
        let mut first = TcpStream::connect(address).await.unwrap();
        let mut second = TcpStream::connect(address).await.unwrap();
        assert_eq!(status_within(&mut first, "", Duration::from_secs(5)).await.as_deref(), Some("200"));
        assert_eq!(status_within(&mut second, "", Duration::from_secs(5)).await.as_deref(), Some("200"));
        // Both kept alive: a probe and a scrape are still served, each on a spare
        // connection for one exchange...
        for probe in ["GET /healthz", "GET /metrics"] {
            let mut spare = TcpStream::connect(address).await.unwrap();
            assert_eq!(
                status_of(probe, &mut spare, "", Duration::from_secs(5)).await.as_deref(),
                Some("200"),
                "{probe}"
            );
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(5), spare.read_to_end(&mut rest)).await;
            assert!(matches!(closed, Ok(Ok(_))), "{probe}: closed after one exchange");
        }
        // ...and a client is told to come back, not left in the backlog.
        let mut third = TcpStream::connect(address).await.unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{answer}");
        assert!(answer.contains("too_many_connections"), "{answer}");
        // Once one of them closes, a client is served again.
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut stream = TcpStream::connect(address).await.unwrap();
                if status_within(&mut stream, "", Duration::from_secs(5)).await.as_deref() == Some("200") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert!(served.await.is_ok(), "a place came free");
        drop(second);
    }

    #[tokio::test]
    async fn past_the_spare_connections_too_new_ones_wait_in_the_backlog() {
        let address = server(1).await;
        // The one place taken, and every spare one held by a client that sends nothing
        // (each is cut within two seconds).
        let mut first = TcpStream::connect(address).await.unwrap();
        assert_eq!(status_within(&mut first, "", Duration::from_secs(5)).await.as_deref(), Some("200"));
        let mut idle = Vec::new();
        for _ in 0..SPARE_CONNECTIONS {
            idle.push(TcpStream::connect(address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut waiting = TcpStream::connect(address).await.unwrap();
        waiting.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        let waited = tokio::time::timeout(Duration::from_millis(500), waiting.read_exact(&mut head)).await;
        assert!(waited.is_err(), "served beyond the spare connections");
        // The idle ones are cut by the spare connections' header timeout, and it is served.
        tokio::time::timeout(Duration::from_secs(10), waiting.read_exact(&mut head)).await.unwrap().unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        drop((first, idle));
    }

    #[tokio::test]
    async fn the_gauges_show_the_connections_open_and_the_most_served() {
        let gauges = ConnectionGauges::new("open", "max");
        let address = server_counted(3, gauges.clone()).await;
        let mut streams = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            assert_eq!(status_within(&mut stream, "", Duration::from_secs(5)).await.as_deref(), Some("200"));
            streams.push(stream);
        }
        assert_eq!((gauges.open.get(), gauges.max.get()), (2, 3));
        drop(streams);
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while gauges.open.get() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(closed.await.is_ok(), "{} still counted open", gauges.open.get());
    }

    /// Writes 1 MB through a 1 kB pipe whose reader takes `bytes` at every `interval`,
    /// for at most a minute; how long the writes went on, and whether they were cut.
    async fn write_to_a_reader_taking(bytes: usize, interval: Duration) -> (Duration, bool) {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut writer = WriteTimeout::new(near, Duration::from_secs(2), 1000);
        tokio::spawn(async move {
            let mut buffer = vec![0u8; bytes];
            loop {
                tokio::time::sleep(interval).await;
                if far.read_exact(&mut buffer).await.is_err() {
                    break;
                }
            }
        });
        let started = Instant::now();
        let mut cut = false;
        for _ in 0..1000 {
            if writer.write_all(&[7u8; 1000]).await.is_err() {
                cut = true;
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        (started.elapsed(), cut)
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_reading_a_byte_now_and_then_is_cut_after_the_grace() {
        // 10 bytes every 100 ms: 100 B/s, a tenth of the pace.
        let (lasted, cut) = write_to_a_reader_taking(10, Duration::from_millis(100)).await;
        assert!(cut, "still writing after {lasted:?}");
        assert!(lasted < Duration::from_secs(3), "cut after the 2 s grace and the little it took: {lasted:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_taking_a_socketful_just_before_its_time_runs_out_is_cut() {
        // 1 kB every 1.9 s, within the 2 s grace each time: 540 B/s, half the pace.
        let (lasted, cut) = write_to_a_reader_taking(1024, Duration::from_millis(1900)).await;
        assert!(cut, "still writing after {lasted:?}");
        assert!(lasted < Duration::from_secs(10), "cut after {lasted:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_reading_at_the_pace_is_not_cut() {
        // 200 bytes every 100 ms: twice the pace, for the minute the test writes.
        let (lasted, cut) = write_to_a_reader_taking(200, Duration::from_millis(100)).await;
        assert!(!cut, "cut after {lasted:?}");
        assert!(lasted > Duration::from_secs(30), "{lasted:?}");
    }
}
