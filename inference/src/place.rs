//! The places of the queue's capacity a request holds while anything still works on
//! it (see [`crate::state`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use matte_common::memory;

use crate::metrics::Delivery;

#[cfg(test)]
use tokio::sync::Semaphore;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// One of the `queue_capacity` places. Clones share the place; it is free again once
/// the last clone is gone.
#[derive(Clone)]
pub struct Place {
    _shared: Arc<PlaceInner>,
}

impl Place {
    /// The place `permit` holds; `released` is told when the last clone is gone.
    pub(crate) fn new(permit: OwnedSemaphorePermit, released: Arc<Notify>) -> Place {
        Place { _shared: Arc::new(PlaceInner { permit: Some(permit), released }) }
    }

    /// A place of its own, outside any server's capacity, for unit tests.
    #[cfg(test)]
    pub(crate) fn detached() -> Place {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a fresh semaphore has a permit");
        Place::new(permit, Arc::new(Notify::new()))
    }
}

/// The most of an answer handed to the connection at a time
/// ([`memory::ANSWER_PIECE_BYTES`]): the connection asks for more only as the client
/// takes what it has, so the place is held until all but the last of the answer has
/// gone. What is left then, the last piece and what the connection still holds of the
/// ones before, waits for a client that may never read it, on the connection's account
/// (`memory::CONNECTION_BYTES`): small, and a copy.
const ANSWER_CHUNK: usize = memory::ANSWER_PIECE_BYTES as usize;

/// An answer's body that holds the request's place until the connection has taken the
/// whole of it (or drops it): an encoded image waiting for a client that reads slowly,
/// or not at all, stays within the places' bound rather than piling up beyond it.
pub struct PlacedAnswer {
    answer: Vec<u8>,
    sent: usize,
    _place: Place,
    /// Counted once the whole answer has been handed over, or the body dropped.
    delivery: Option<Delivery>,
}

impl PlacedAnswer {
    pub fn new(answer: Vec<u8>, place: Place, mut delivery: Delivery) -> PlacedAnswer {
        // Of no length, it is whole as it is handed over: the connection never asks it
        // for a frame.
        if answer.is_empty() {
            delivery.arrived();
        }
        PlacedAnswer { answer, sent: 0, _place: place, delivery: Some(delivery) }
    }

    fn rest(&self) -> &[u8] {
        &self.answer[self.sent..]
    }
}

impl http_body::Body for PlacedAnswer {
    type Data = Bytes;
    type Error = Infallible;

    /// Each piece is a copy: a slice of the answer would keep the whole of it alive in
    /// the connection's write queue after the place is given back (a client reading all
    /// but the end of a 17 MB answer held the 17 MB, on each of its connections).
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let rest = self.rest();
        if rest.is_empty() {
            return Poll::Ready(None);
        }
        let piece = Bytes::copy_from_slice(&rest[..rest.len().min(ANSWER_CHUNK)]);
        self.sent += piece.len();
        if self.rest().is_empty()
            && let Some(mut delivery) = self.delivery.take()
        {
            delivery.arrived();
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

struct PlaceInner {
    permit: Option<OwnedSemaphorePermit>,
    released: Arc<Notify>,
}

impl Drop for PlaceInner {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body::Body as _;
    use matte_common::metrics as names;

    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn no_piece_of_an_answer_shares_its_memory() {
        let answer: Vec<u8> = (0..5 * ANSWER_CHUNK + 100).map(|i| i as u8).collect();
        let original = answer.clone();
        let span = answer.as_ptr_range();
        let metrics = Metrics::default();
        let mut body = std::pin::pin!(PlacedAnswer::new(answer, Place::detached(), metrics.delivery()));
        let mut received = Vec::new();
        while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let piece = frame.expect("infallible").into_data().expect("a data frame");
            assert!(piece.len() <= ANSWER_CHUNK, "a piece of {} bytes", piece.len());
            assert!(!span.contains(&piece.as_ptr()), "a piece points into the answer's own buffer");
            received.extend_from_slice(&piece);
        }
        assert!(body.is_end_stream());
        assert_eq!(received, original);
    }

    fn outcome_count(metrics: &Metrics, outcome: &str) -> u64 {
        metrics.requests.with_label_values(&[outcome]).get()
    }

    #[tokio::test]
    async fn an_answer_is_counted_served_once_handed_over_whole_and_not_before() {
        let metrics = Metrics::default();
        let mut body =
            std::pin::pin!(PlacedAnswer::new(vec![7; 2 * ANSWER_CHUNK], Place::detached(), metrics.delivery()));
        poll_fn(|cx| body.as_mut().poll_frame(cx)).await.expect("a first piece").expect("infallible");
        assert_eq!(outcome_count(&metrics, names::OK_OUTCOME), 0, "half of it handed over");
        poll_fn(|cx| body.as_mut().poll_frame(cx)).await.expect("the last piece").expect("infallible");
        assert_eq!(outcome_count(&metrics, names::OK_OUTCOME), 1, "counted with its last piece");
        assert!(poll_fn(|cx| body.as_mut().poll_frame(cx)).await.is_none());

        let mut left = Box::pin(PlacedAnswer::new(vec![7; 2 * ANSWER_CHUNK], Place::detached(), metrics.delivery()));
        poll_fn(|cx| left.as_mut().poll_frame(cx)).await.expect("a first piece").expect("infallible");
        drop(left);
        assert_eq!(outcome_count(&metrics, names::OK_OUTCOME), 1);
        assert_eq!(outcome_count(&metrics, names::CLIENT_GONE_OUTCOME), 1, "dropped half-way: the client left");
    }
}
