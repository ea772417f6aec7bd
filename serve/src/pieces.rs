//! An answer held whole in memory, handed to the client's connection a piece at a
//! time, keeping what it holds (a place in a queue, a room in a budget) until the last
//! piece has been handed over.
//!
//! Handed over as one frame, a whole answer is queued by the connection at once and
//! the body dropped, its place or room given back, while every byte of it waits for a
//! client that may read slowly or not at all: a client reading all but the end of a
//! 17 MB answer held the 17 MB, outside any bound, on each of its connections. In
//! pieces of [`memory::ANSWER_PIECE_BYTES`], each a copy, the connection asks for the
//! next only as the client takes what it has, so what the answer holds is held until
//! all but its last piece has gone, and what is left then (the last piece and what the
//! connection still holds of the ones before) is on the connection's account
//! (`memory::CONNECTION_BYTES`): small, and a copy.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use matte_common::memory;

/// The most of an answer handed to the connection at a time.
const PIECE_BYTES: usize = memory::ANSWER_PIECE_BYTES as usize;

/// What an answer keeps until it has been handed over: told when its last piece has
/// gone to the connection, and dropped with the body (or with it, if the connection is
/// dropped first).
pub trait Kept: Send + Unpin + 'static {
    /// The whole answer has been handed to the connection.
    fn handed_over(&mut self) {}
}

/// An answer's body, handed over in pieces, keeping `K` until its last piece has gone.
pub struct Pieces<K: Kept> {
    answer: Bytes,
    sent: usize,
    kept: K,
}

impl<K: Kept> Pieces<K> {
    pub fn new(answer: impl Into<Bytes>, mut kept: K) -> Pieces<K> {
        let answer = answer.into();
        // Of no length, it is whole as it is handed over: the connection never asks it
        // for a frame.
        if answer.is_empty() {
            kept.handed_over();
        }
        Pieces { answer, sent: 0, kept }
    }

    fn rest(&self) -> &[u8] {
        &self.answer[self.sent..]
    }
}

impl<K: Kept> http_body::Body for Pieces<K> {
    type Data = Bytes;
    type Error = Infallible;

    /// Each piece is a copy: a slice of the answer would keep the whole of it alive in
    /// the connection's write queue.
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let rest = self.rest();
        if rest.is_empty() {
            return Poll::Ready(None);
        }
        let piece = Bytes::copy_from_slice(&rest[..rest.len().min(PIECE_BYTES)]);
        self.sent += piece.len();
        if self.rest().is_empty() {
            // The whole answer is the connection's now: its own buffer goes at once.
            self.answer = Bytes::new();
            self.sent = 0;
            self.kept.handed_over();
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest().is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest().len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body::Body as _;

    use super::*;

    /// Counts the answers handed over, and those dropped.
    struct Counted {
        handed_over: Arc<AtomicUsize>,
        dropped: Arc<AtomicUsize>,
    }

    impl Kept for Counted {
        fn handed_over(&mut self) {
            self.handed_over.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Counted, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (handed_over, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        (Counted { handed_over: handed_over.clone(), dropped: dropped.clone() }, handed_over, dropped)
    }

    #[tokio::test]
    async fn an_answer_goes_in_copied_pieces_and_is_handed_over_with_its_last() {
        let answer: Vec<u8> = (0..5 * PIECE_BYTES + 100).map(|i| i as u8).collect();
        let original = answer.clone();
        let span = answer.as_ptr_range();
        let (kept, handed_over, _) = counted();
        let mut body = std::pin::pin!(Pieces::new(answer, kept));
        assert_eq!(body.size_hint().exact(), Some(original.len() as u64), "its length, for Content-Length");
        let mut received = Vec::new();
        while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let piece = frame.expect("infallible").into_data().expect("a data frame");
            assert!(piece.len() <= PIECE_BYTES, "a piece of {} bytes", piece.len());
            assert!(!span.contains(&piece.as_ptr()), "a piece points into the answer's own buffer");
            received.extend_from_slice(&piece);
            let last = received.len() == original.len();
            assert_eq!(handed_over.load(Ordering::SeqCst), usize::from(last), "handed over with its last piece only");
        }
        assert!(body.is_end_stream());
        assert_eq!(received, original);
    }

    #[tokio::test]
    async fn an_answer_dropped_half_way_is_not_handed_over_and_lets_go_of_what_it_kept() {
        let (kept, handed_over, dropped) = counted();
        let mut body = Box::pin(Pieces::new(vec![7; 2 * PIECE_BYTES], kept));
        poll_fn(|cx| body.as_mut().poll_frame(cx)).await.expect("a first piece").expect("infallible");
        drop(body);
        assert_eq!((handed_over.load(Ordering::SeqCst), dropped.load(Ordering::SeqCst)), (0, 1));
        let (kept, handed_over, _) = counted();
        let empty = Pieces::new(Vec::new(), kept);
        assert!(empty.is_end_stream());
        assert_eq!(handed_over.load(Ordering::SeqCst), 1, "an empty answer is whole at once");
    }
}
