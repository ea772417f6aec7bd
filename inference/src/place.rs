//! The places of the queue's capacity a request holds while anything still works on
//! it (see [`crate::state`]).

use std::sync::Arc;

use matte_serve::pieces::{Kept, Pieces};

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

/// What an answer's body keeps until it has been handed over
/// ([`matte_serve::pieces`]): the request's place, held until the body is dropped, so
/// that an encoded image waiting for a client that reads slowly, or not at all, stays
/// within the places' bound rather than piling up beyond it; and the count of its
/// delivery, `ok` once its last piece has gone to the connection.
pub struct PlacedAnswer {
    _place: Place,
    delivery: Option<Delivery>,
}

impl PlacedAnswer {
    /// The body of `answer`, holding `place` and counting its `delivery`.
    pub fn body(answer: Vec<u8>, place: Place, delivery: Delivery) -> Pieces<PlacedAnswer> {
        Pieces::new(answer, PlacedAnswer { _place: place, delivery: Some(delivery) })
    }
}

impl Kept for PlacedAnswer {
    fn handed_over(&mut self) {
        if let Some(mut delivery) = self.delivery.take() {
            delivery.arrived();
        }
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

    const PIECE: usize = matte_common::memory::ANSWER_PIECE_BYTES as usize;

    fn outcome_count(metrics: &Metrics, outcome: &str) -> u64 {
        metrics.requests.with_label_values(&[outcome]).get()
    }

    #[tokio::test]
    async fn an_answer_is_counted_served_once_handed_over_whole_and_not_before() {
        let metrics = Metrics::default();
        let mut body = std::pin::pin!(PlacedAnswer::body(vec![7; 2 * PIECE], Place::detached(), metrics.delivery()));
        poll_fn(|cx| body.as_mut().poll_frame(cx)).await.expect("a first piece").expect("infallible");
        assert_eq!(outcome_count(&metrics, names::OK_OUTCOME), 0, "half of it handed over");
        poll_fn(|cx| body.as_mut().poll_frame(cx)).await.expect("the last piece").expect("infallible");
        assert_eq!(outcome_count(&metrics, names::OK_OUTCOME), 1, "counted with its last piece");
        assert!(poll_fn(|cx| body.as_mut().poll_frame(cx)).await.is_none());

        let mut left = Box::pin(PlacedAnswer::body(vec![7; 2 * PIECE], Place::detached(), metrics.delivery()));
        poll_fn(|cx| left.as_mut().poll_frame(cx)).await.expect("a first piece").expect("infallible");
        drop(left);
        assert_eq!(outcome_count(&metrics, names::OK_OUTCOME), 1);
        assert_eq!(outcome_count(&metrics, names::CLIENT_GONE_OUTCOME), 1, "dropped half-way: the client left");
    }
}
