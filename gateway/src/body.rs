//! Holding request bodies in memory within a stated bound: each body within
//! `--max-body-bytes`, all of them together within `--max-buffered-bytes`, and each
//! upload at the pod's minimum pace, so that a burst of large or slow uploads cannot
//! exhaust the gateway's memory or its places.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;

use matte_serve::{UploadPace, paced_chunks};

use crate::Error;

/// The bytes all held request bodies may take together.
pub struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Arc<BufferBudget> {
        Arc::new(BufferBudget { limit, used: AtomicUsize::new(0) })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Takes `bytes` of the budget, if that many are left.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// A reservation of `bytes` (the declared length, or 0 for a body of unknown
    /// length, which then grows as it arrives); `None` when the budget is spent.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.take(bytes).then(|| Reservation { budget: self.clone(), bytes })
    }
}

/// Part of the [`BufferBudget`], given back when dropped.
pub struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: usize,
}

impl Reservation {
    /// Grows the reservation to at least `bytes`.
    fn cover(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if self.budget.take(bytes - self.bytes) {
            self.bytes = bytes;
            true
        } else {
            false
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Why a body could not be held.
#[derive(Debug)]
pub enum ReadFailure {
    /// The request is at fault (too large, too slow, broken): answer it.
    Request(Error),
    /// The body did not fit in what is left of the budget.
    BudgetSpent,
}

/// Reads the whole body within `limit` bytes and `pace`, growing `reservation` to
/// cover it. `declared` (the `Content-Length`) sizes the buffer once.
pub async fn read(
    body: Body,
    declared: Option<u64>,
    limit: usize,
    pace: UploadPace,
    started: Instant,
    reservation: &mut Reservation,
) -> Result<Bytes, ReadFailure> {
    let capacity = declared.map_or(0, |length| length.min(limit as u64) as usize);
    let mut collected = Vec::with_capacity(capacity);
    let mut chunks = std::pin::pin!(paced_chunks(body, limit, pace, started));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| ReadFailure::Request(Error::Body(error)))?;
        // A body longer than declared (or of unknown length) must still fit, including
        // the spare room the buffer grows into.
        if !reservation.cover((collected.len() + chunk.len()).max(collected.capacity())) {
            return Err(ReadFailure::BudgetSpent);
        }
        collected.extend_from_slice(&chunk);
        if !reservation.cover(collected.capacity()) {
            return Err(ReadFailure::BudgetSpent);
        }
    }
    Ok(Bytes::from(collected))
}

/// Reads a pod's whole answer, at most `limit` bytes, growing `reservation` to cover
/// it: the answers the gateway translates are held within the same budget as bodies.
pub async fn read_answer(body: Body, limit: usize, reservation: &mut Reservation) -> Result<Bytes, ReadFailure> {
    let mut collected = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|error| ReadFailure::Request(Error::Internal(format!("the pod's answer broke off: {error}"))))?;
        let total = collected.len() + chunk.len();
        if total > limit {
            return Err(ReadFailure::Request(Error::Internal(format!("the pod's answer is over {limit} bytes"))));
        }
        if !reservation.cover(total.max(collected.capacity())) {
            return Err(ReadFailure::BudgetSpent);
        }
        collected.extend_from_slice(&chunk);
        if !reservation.cover(collected.capacity()) {
            return Err(ReadFailure::BudgetSpent);
        }
    }
    Ok(Bytes::from(collected))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use matte_serve::BodyError;

    use super::*;

    const PACE: UploadPace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1000 };

    fn body_of(chunks: Vec<&'static [u8]>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(|chunk| Ok::<_, std::io::Error>(Bytes::from_static(chunk))),
        ))
    }

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = BufferBudget::new(100);
        let first = budget.reserve(60).unwrap();
        assert!(budget.reserve(50).is_none());
        let second = budget.reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_body_is_read_within_its_reservation() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve(6).unwrap();
        let body = read(body_of(vec![b"abc", b"def"]), Some(6), 100, PACE, Instant::now(), &mut reservation).await;
        assert_eq!(&body.unwrap()[..], b"abcdef");
        assert_eq!(budget.used(), 6);
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_grows_until_the_budget_is_spent() {
        let budget = BufferBudget::new(4);
        let mut reservation = budget.reserve(0).unwrap();
        let read = read(body_of(vec![b"abc", b"def"]), None, 100, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::BudgetSpent)));
    }

    #[tokio::test]
    async fn an_answer_held_for_translation_takes_its_share_of_the_budget() {
        let budget = BufferBudget::new(8);
        let mut reservation = budget.reserve(0).unwrap();
        let answer = read_answer(body_of(vec![b"abc", b"def"]), 100, &mut reservation).await;
        assert_eq!(&answer.unwrap()[..], b"abcdef");
        assert!(budget.used() >= 6, "held while translated");
        drop(reservation);
        assert_eq!(budget.used(), 0);

        let mut reservation = budget.reserve(0).unwrap();
        let _other = budget.reserve(4).unwrap();
        let answer = read_answer(body_of(vec![b"abc", b"def"]), 100, &mut reservation).await;
        assert!(matches!(answer, Err(ReadFailure::BudgetSpent)), "no room left for it");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve(0).unwrap();
        let read = read(body_of(vec![b"abc", b"def"]), None, 5, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::Request(Error::Body(BodyError::TooLarge { limit: 5 })))));
    }
}
