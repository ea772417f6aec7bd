//! What one connection holds beside the bodies the flags count, while its client sends
//! a head at the limit and then reads nothing of a large answer: its read buffer and
//! state, and the write side, what the connection has taken of the answer and the
//! client has not. The pod's memory bound and the gateway's connection limit count
//! `matte_common::memory::CONNECTION_BYTES` a connection. Counted by this test binary's
//! allocator: live bytes, connections open, against before they opened.

mod support;

use std::net::TcpStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use matte_common::memory::{ANSWER_PIECE_BYTES, CONNECTION_BYTES, MAX_HEAD_BYTES};
use matte_serve::{ConnectionGauges, ConnectionLimits, Stage};
use support::counting_allocator::{Counting, settled_allocation};
use support::stalled_readers::stalled_readers;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONNECTIONS: usize = 64;
/// Far more than the kernel's socket buffers take on loopback, so that the connection's
/// own write queue fills.
const ANSWER_BYTES: u64 = 64 << 20;

/// An answer handed over as the pod hands its own: a copied piece of
/// [`ANSWER_PIECE_BYTES`] bytes each time the connection asks, made on demand here, so that
/// nothing but the connection holds any of it.
struct Pieces {
    left: u64,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let length = self.left.min(ANSWER_PIECE_BYTES);
        self.left -= length;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; length as usize])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[test]
fn a_connection_whose_client_stops_reading_holds_no_more_than_its_allowance() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route("/answer", get(|| async { Body::new(Pieces { left: ANSWER_BYTES }) }));
    let limits = ConnectionLimits {
        max_connections: 1024,
        header_read: Duration::from_secs(30),
        write: Duration::from_secs(120),
        min_write_bytes_per_second: 1,
    };
    let gauges = ConnectionGauges::new("open", "max");
    let (_stage, watching) = tokio::sync::watch::channel(Stage::Serving);
    runtime.spawn(matte_serve::serve(listener, router, limits, gauges, watching));

    // A head at the limit, so the read buffer grows as far as it may.
    let padding = "a".repeat(MAX_HEAD_BYTES as usize - 1024);
    let head = format!("GET /answer HTTP/1.1\r\nHost: test\r\nX-Padding: {padding}\r\n\r\n");
    // One connection first, so that the runtime's own first allocations are in the
    // baseline.
    drop(TcpStream::connect(address).unwrap());
    let before = settled_allocation();
    let clients = stalled_readers(&address.to_string(), head.as_bytes(), CONNECTIONS);
    let held = settled_allocation().saturating_sub(before);
    let per_connection = held / CONNECTIONS;
    println!(
        "{CONNECTIONS} connections, each a head of {} KiB and an answer it does not read: {:.1} KiB a connection \
         (allowance {} KiB)",
        head.len() >> 10,
        per_connection as f64 / 1024.0,
        CONNECTION_BYTES >> 10
    );
    // The write queue holds something: beyond its read side (77.6 KiB measured with such
    // a head) every connection has taken more of the answer than a piece, or the
    // measure says nothing of the write side.
    let read_side_and_a_piece = MAX_HEAD_BYTES + ANSWER_PIECE_BYTES;
    assert!(per_connection as u64 > read_side_and_a_piece, "{per_connection} bytes a connection: no write side");
    assert!(
        per_connection as u64 <= CONNECTION_BYTES,
        "{:.1} KiB a connection, over the allowance of {} KiB",
        per_connection as f64 / 1024.0,
        CONNECTION_BYTES >> 10
    );
    drop(clients);
    runtime.shutdown_timeout(Duration::from_secs(1));
}
