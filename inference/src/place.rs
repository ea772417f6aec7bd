//! The places of the queue's capacity a request holds while anything still works on
//! it (see [`crate::state`]).

use std::sync::Arc;

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
