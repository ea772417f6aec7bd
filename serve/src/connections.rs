//! Accepting and serving HTTP/1.1 connections with timeouts a slow or vanished client
//! cannot outlast: request headers must arrive within the header timeout, a response
//! write that makes no progress fails after the write timeout, and a drain first asks
//! every connection to finish its current exchange, then cuts whatever is left.
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
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub write: Duration,
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

/// Serves `router` on the connections `listener` accepts until the stage leaves
/// `Serving`; returns once every connection has closed or been cut.
pub async fn serve(listener: TcpListener, router: Router, timeouts: Timeouts, stage: watch::Receiver<Stage>) {
    let mut connections = JoinSet::new();
    let mut watching = stage.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), timeouts, stage.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: let some connections end.
                    tracing::warn!(%error, "accepting a connection failed");
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

async fn serve_connection(stream: TcpStream, router: Router, timeouts: Timeouts, mut stage: watch::Receiver<Stage>) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(WriteTimeout::new(stream, timeouts.write));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| router.clone().call(request));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header_read);
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

/// A stream whose writes fail once they have made no progress for `limit`: a client
/// that stops reading its response cannot hold the connection, its memory or a
/// drain.
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write is pending.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration) -> WriteTimeout<S> {
        WriteTimeout { inner, limit, stalled_since: None }
    }

    /// Passes on a write's progress; a pending write arms the timer, and a timer that
    /// has run out turns the pending write into an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, progress: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match progress {
            Poll::Ready(result) => {
                self.stalled_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled_since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
                ready!(timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading the response")))
            }
        }
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
        self.watch(cx, progress)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, progress)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, progress)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, progress)
    }
}
