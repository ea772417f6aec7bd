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

/// The room a body's buffer takes when its first bytes arrive.
const FIRST_ROOM: usize = 64 * 1024;

/// Reads the whole body within `limit` bytes and `pace`, growing `reservation` to
/// cover it. The buffer's room grows with what has arrived, doubling up to `declared`
/// (the `Content-Length`), and the budget covers it before it is allocated: the memory
/// a client takes is at most twice what it has sent, whatever it declared. A body the
/// budget cannot take is read to its end (within a bound) and dropped before the
/// refusal, so that its client, still sending, sees it.
pub async fn read(
    body: Body,
    declared: Option<u64>,
    limit: usize,
    pace: UploadPace,
    started: Instant,
    reservation: &mut Reservation,
) -> Result<Bytes, ReadFailure> {
    // The most the body can be: its declared length, and never more than the limit.
    let most = declared.map_or(limit, |length| usize::try_from(length).unwrap_or(usize::MAX).min(limit));
    let mut collected: Vec<u8> = Vec::new();
    let mut chunks = std::pin::pin!(paced_chunks(body, limit, pace, started));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| ReadFailure::Request(Error::Body(error)))?;
        let needed = collected.len() + chunk.len();
        let held = 'held: {
            if needed > collected.capacity() {
                let doubled = collected.capacity().saturating_mul(2).max(FIRST_ROOM);
                // A body longer than declared must still fit.
                let room = doubled.min(most).max(needed);
                if !reservation.cover(room) {
                    break 'held false;
                }
                collected.reserve_exact(room - collected.len());
            }
            collected.extend_from_slice(&chunk);
            // The allocator's own rounding, if any, is held too.
            reservation.cover(collected.capacity())
        };
        if !held {
            drop(collected);
            matte_serve::discard_rest(chunks).await;
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
    async fn a_body_longer_than_declared_grows_its_reservation_before_its_buffer() {
        let budget = BufferBudget::new(FIRST_ROOM + 10);
        let mut reservation = budget.reserve(3).unwrap();
        let body = read(body_of(vec![b"abc", b"def"]), Some(3), 100, PACE, Instant::now(), &mut reservation).await;
        assert_eq!(&body.unwrap()[..], b"abcdef");
        assert_eq!(budget.used(), 6, "the room it needed, covered as it grew");
    }

    #[tokio::test]
    async fn a_body_the_budget_cannot_take_is_read_to_its_end_before_the_refusal() {
        let budget = BufferBudget::new(4);
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        let chunks = futures_util::stream::iter(vec![b"abc"; 5]).map(move |chunk: &'static [u8; 3]| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from_static(chunk))
        });
        let mut reservation = budget.reserve(0).unwrap();
        let read = read(Body::from_stream(chunks), None, 100, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::BudgetSpent)));
        assert_eq!(sent.load(Ordering::SeqCst), 5, "the rest of the upload taken off the wire");
        assert_eq!(budget.used(), 0, "the part read given back at once");
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
        let mut other = budget.reserve(0).unwrap();
        assert!(other.cover(4));
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
