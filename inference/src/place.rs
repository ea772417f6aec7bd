//! The places of the queue's capacity a request holds while anything still works on
//! it (see [`crate::state`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

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

/// The most of an answer handed to the connection at a time: the connection asks for
/// more only as the client takes what it has, so the place is held until all but the
/// last of the answer has gone.
const ANSWER_CHUNK: usize = 256 * 1024;

/// An answer's body that holds the request's place until the connection has taken the
/// whole of it (or drops it): an encoded image waiting for a client that reads slowly,
/// or not at all, stays within the places' bound rather than piling up beyond it.
pub struct PlacedAnswer {
    rest: Bytes,
    _place: Place,
}

impl PlacedAnswer {
    pub fn new(answer: Vec<u8>, place: Place) -> PlacedAnswer {
        PlacedAnswer { rest: Bytes::from(answer), _place: place }
    }
}

impl http_body::Body for PlacedAnswer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let chunk = self.rest.len().min(ANSWER_CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
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
