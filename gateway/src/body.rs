//! Holding request bodies in memory within a stated bound: each body within
//! `--max-body-bytes`, all of them together within `--max-buffered-bytes` (the
//! [`crate::budget`]), and each upload at the pod's minimum pace, so that a burst of
//! large or slow uploads cannot exhaust the gateway's memory or its places.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};

use matte_serve::{BodyError, UploadPace, paced_chunks};

use crate::Error;
use crate::budget::{Reservation, Shortfall};

/// Why a body could not be held.
#[derive(Debug)]
pub enum ReadFailure {
    /// The request is at fault (too large, too slow, malformed): answer it.
    Request(Error),
    /// The client's connection closed or broke before its body was whole: nobody is
    /// left to answer, though `Error` goes out in case it only stopped sending.
    ClientGone(Error),
    /// The body did not fit in what is left of the budget.
    BudgetSpent,
    /// The upload was arriving too slowly to be served in time, and its room went to
    /// requests that could be.
    Overtaken,
}

impl From<Shortfall> for ReadFailure {
    fn from(shortfall: Shortfall) -> ReadFailure {
        match shortfall {
            Shortfall::Spent => ReadFailure::BudgetSpent,
            Shortfall::Overtaken => ReadFailure::Overtaken,
        }
    }
}

/// The room a body's buffer takes when its first bytes arrive.
const FIRST_ROOM: usize = 64 * 1024;

/// Reads the whole body within `limit` bytes and `pace`, growing `reservation` to
/// cover it. The buffer's room grows with what has arrived, doubling up to `declared`
/// (the `Content-Length`), and the budget covers it before it is allocated: the memory
/// a client takes is at most twice what it has sent, whatever it declared. A body the
/// budget cannot take is read to its end (within a bound) and dropped before the
/// refusal, so that its client, still sending, sees it; one cut off to make room for
/// others ([`crate::budget`]) is dropped at once.
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
    let all_buffers = reservation.budget_limit();
    let mut collected: Vec<u8> = Vec::new();
    let connection_lost = Arc::new(AtomicBool::new(false));
    let body = Body::new(Watched { body, connection_lost: connection_lost.clone() });
    let mut chunks = std::pin::pin!(paced_chunks(body, limit, pace, started));
    loop {
        // An upload cut off to make room drops its buffer at once, not when its client
        // next sends something.
        let next = tokio::select! {
            next = chunks.next() => next,
            () = reservation.cut_off() => return Err(ReadFailure::Overtaken),
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|error| match error {
            BodyError::Read(_) if connection_lost.load(Ordering::Relaxed) => {
                ReadFailure::ClientGone(Error::Body(error))
            }
            error => ReadFailure::Request(Error::Body(error)),
        })?;
        let needed = collected.len() + chunk.len();
        if needed > all_buffers {
            // Known only now when no length was declared: told to come back, it would
            // be refused again on every try.
            drop(collected);
            reservation.release();
            matte_serve::discard_rest(chunks).await;
            return Err(ReadFailure::Request(Error::OverBuffers { needed, limit: all_buffers }));
        }
        let held = (|| {
            reservation.received(needed)?;
            if needed > collected.capacity() {
                let doubled = collected.capacity().saturating_mul(2).max(FIRST_ROOM);
                // A body longer than declared must still fit; doubled within all the
                // buffers, and, when the budget cannot cover the doubling, by as much of
                // it as the budget can (halving the step): a body that fits is not
                // refused for room it may never use, and a buffer grown by the body's
                // own bytes alone would be moved at every chunk.
                let mut room = doubled.min(most).min(all_buffers).max(needed);
                while room > needed && reservation.cover(room).is_err() {
                    room = needed + (room - needed) / 2;
                }
                reservation.cover(room)?;
                collected.reserve_exact(room - collected.len());
            }
            collected.extend_from_slice(&chunk);
            // The allocator's own rounding, if any, is held too.
            reservation.cover(collected.capacity())
        })();
        if let Err(shortfall) = held {
            // The buffer goes, and its room with it, before the rest is read off the
            // wire: that can take seconds, in which others may use the room.
            drop(collected);
            reservation.release();
            matte_serve::discard_rest(chunks).await;
            return Err(shortfall.into());
        }
    }
    reservation.settle(collected.capacity())?;
    Ok(Bytes::from(collected))
}

/// A client's body, noting whether it broke off because the client's connection closed
/// or broke rather than because what came was malformed: both reach the reader as the
/// same failure to read, and only the second is the client's request at fault.
struct Watched {
    body: Body,
    connection_lost: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(error))) = &polled
            && is_connection_lost(error)
        {
            self.connection_lost.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether reading a body failed for its connection: hyper reports an upload cut short
/// by the client's closing as an early end of file or an incomplete message, and a
/// reset as the socket's own error; a malformed body (a chunk size that is no number)
/// is invalid data or input.
fn is_connection_lost(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::NotConnected
            );
        }
        cause = error.source();
    }
    false
}

/// Reads a pod's whole answer, at most `limit` bytes, growing `reservation` to cover
/// it: the answers the gateway translates are held within the same budget as bodies.
/// The buffer is sized once from `declared` (the answer's `Content-Length`, within the
/// limit), so that growing by doubling does not hold up to twice the answer, and never
/// grows past all the buffers. An answer larger than all of them is refused for what it
/// is: told to come back, its client would be refused on every try.
pub async fn read_answer(
    body: Body,
    declared: Option<u64>,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<HeldAnswer, ReadFailure> {
    let all_buffers = reservation.budget_limit();
    let over_buffers = |needed: usize| ReadFailure::Request(Error::AnswerOverBuffers { needed, limit: all_buffers });
    let expected = declared.map_or(0, |length| usize::try_from(length).unwrap_or(usize::MAX).min(limit));
    if expected > all_buffers {
        return Err(over_buffers(expected));
    }
    reservation.cover(expected)?;
    let mut collected = Vec::with_capacity(expected);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|error| ReadFailure::Request(Error::Internal(format!("the pod's answer broke off: {error}"))))?;
        let total = collected.len() + chunk.len();
        if total > limit {
            return Err(ReadFailure::Request(Error::Internal(format!("the pod's answer is over {limit} bytes"))));
        }
        if total > all_buffers {
            return Err(over_buffers(total));
        }
        if total > collected.capacity() {
            // Doubled, unless only the answer itself still fits.
            let doubled = collected.capacity().saturating_mul(2).clamp(total, all_buffers);
            let grown = if reservation.cover(doubled).is_ok() {
                doubled
            } else {
                reservation.cover(total)?;
                total
            };
            collected.reserve_exact(grown - collected.len());
        }
        collected.extend_from_slice(&chunk);
        reservation.cover(collected.capacity())?;
    }
    let allocated = collected.capacity();
    Ok(HeldAnswer { bytes: Bytes::from(collected), allocated })
}

/// An answer read whole, and what its buffer took: its capacity, which the bytes keep,
/// may exceed its length.
#[derive(Debug)]
pub struct HeldAnswer {
    pub bytes: Bytes,
    pub allocated: usize,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use matte_serve::BodyError;

    use super::*;
    use crate::budget::BufferBudget;

    fn due() -> Instant {
        Instant::now() + Duration::from_secs(90)
    }

    const PACE: UploadPace = UploadPace { grace: Duration::from_secs(5), min_bytes_per_second: 1000 };

    fn body_of(chunks: Vec<&'static [u8]>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(|chunk| Ok::<_, std::io::Error>(Bytes::from_static(chunk))),
        ))
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_grows_its_reservation_before_its_buffer() {
        let budget = BufferBudget::new(FIRST_ROOM + 10);
        let mut reservation = budget.reserve_upload(3, due()).unwrap();
        let body = read(body_of(vec![b"abc", b"def"]), Some(3), 100, PACE, Instant::now(), &mut reservation).await;
        assert_eq!(&body.unwrap()[..], b"abcdef");
        assert_eq!(budget.used(), 6, "the room it needed, covered as it grew");
    }

    #[tokio::test]
    async fn a_body_the_budget_cannot_take_is_read_to_its_end_before_the_refusal() {
        let budget = BufferBudget::new(100);
        let _others = budget.reserve(96).unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        let chunks = futures_util::stream::iter(vec![b"abc"; 5]).map(move |chunk: &'static [u8; 3]| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from_static(chunk))
        });
        let mut reservation = budget.reserve_upload(0, due()).unwrap();
        let read = read(Body::from_stream(chunks), None, 100, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::BudgetSpent)));
        assert_eq!(sent.load(Ordering::SeqCst), 5, "the rest of the upload taken off the wire");
        assert_eq!(budget.used(), 96, "the part read given back at once");
    }

    #[tokio::test]
    async fn a_body_outgrowing_the_budget_gives_back_its_room_before_the_rest_is_read() {
        // Declared 100, sent 300 in chunks of 60: the third outgrows the 150 left.
        let budget = BufferBudget::new(1000);
        let others = budget.reserve(850).unwrap();
        let seen_while_discarding = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (watched, seen) = (budget.clone(), seen_while_discarding.clone());
        let chunks = futures_util::stream::iter(0..5).map(move |index| {
            if index >= 3 {
                seen.lock().unwrap().push(watched.used());
            }
            Ok::<_, std::io::Error>(Bytes::from_static(&[7; 60]))
        });
        let mut reservation = budget.reserve_upload(100, due()).unwrap();
        let read = read(Body::from_stream(chunks), Some(100), 1000, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::BudgetSpent)));
        assert_eq!(*seen_while_discarding.lock().unwrap(), vec![850, 850], "nothing held while the rest arrived");
        drop(reservation);
        drop(others);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_body_is_read_within_its_reservation() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve_upload(6, due()).unwrap();
        let body = read(body_of(vec![b"abc", b"def"]), Some(6), 100, PACE, Instant::now(), &mut reservation).await;
        assert_eq!(&body.unwrap()[..], b"abcdef");
        assert_eq!(budget.used(), 6);
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_grows_until_the_budget_is_spent() {
        let budget = BufferBudget::new(100);
        let _others = budget.reserve(96).unwrap();
        let mut reservation = budget.reserve_upload(0, due()).unwrap();
        let read = read(body_of(vec![b"abc", b"def"]), None, 100, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::BudgetSpent)));
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_larger_than_all_the_buffers_is_refused_for_its_size() {
        let budget = BufferBudget::new(4);
        let mut reservation = budget.reserve_upload(0, due()).unwrap();
        let read = read(body_of(vec![b"abc", b"def"]), None, 100, PACE, Instant::now(), &mut reservation).await;
        assert!(
            matches!(read, Err(ReadFailure::Request(Error::OverBuffers { needed: 6, limit: 4 }))),
            "a 413, not a 429 refused on every try"
        );
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn an_answer_held_for_translation_takes_its_share_of_the_budget() {
        let budget = BufferBudget::new(8);
        let mut reservation = budget.reserve(0).unwrap();
        let answer = read_answer(body_of(vec![b"abc", b"def"]), None, 100, &mut reservation).await;
        assert_eq!(&answer.unwrap().bytes[..], b"abcdef");
        assert!(budget.used() >= 6, "held while translated");
        drop(reservation);
        assert_eq!(budget.used(), 0);

        let mut reservation = budget.reserve(0).unwrap();
        let mut other = budget.reserve(0).unwrap();
        assert!(other.cover(4).is_ok());
        let answer = read_answer(body_of(vec![b"abc", b"def"]), None, 100, &mut reservation).await;
        assert!(matches!(answer, Err(ReadFailure::BudgetSpent)), "no room left for it");
    }

    #[tokio::test]
    async fn an_answer_larger_than_all_the_buffers_is_refused_as_too_large() {
        let budget = BufferBudget::new(5);
        let mut reservation = budget.reserve(0).unwrap();
        let answer = read_answer(body_of(vec![b"abc", b"def"]), None, 100, &mut reservation).await;
        assert!(
            matches!(answer, Err(ReadFailure::Request(Error::AnswerOverBuffers { needed: 6, limit: 5 }))),
            "not a budget spent, which sends the client away to come back: {answer:?}"
        );
        let mut reservation = budget.reserve(0).unwrap();
        let answer = read_answer(body_of(vec![b"abc"]), Some(6), 100, &mut reservation).await;
        assert!(matches!(answer, Err(ReadFailure::Request(Error::AnswerOverBuffers { needed: 6, limit: 5 }))));
    }

    #[tokio::test]
    async fn an_answer_that_fits_all_the_buffers_is_never_grown_past_them() {
        // Doubling a 3-byte buffer for the second chunk would ask for 6 of the 5.
        let budget = BufferBudget::new(5);
        let mut reservation = budget.reserve(0).unwrap();
        let answer = read_answer(body_of(vec![b"abc", b"de"]), None, 100, &mut reservation).await;
        assert_eq!(&answer.unwrap().bytes[..], b"abcde");
        assert_eq!(budget.used(), 5);

        // With room for the answer and not for a doubled buffer, the answer is held.
        let budget = BufferBudget::new(100);
        let mut other = budget.reserve(0).unwrap();
        assert!(other.cover(45).is_ok());
        let mut reservation = budget.reserve(0).unwrap();
        let chunks: Vec<&'static [u8]> = vec![&[1u8; 30], &[2u8; 25]];
        let answer = read_answer(body_of(chunks), None, 1000, &mut reservation).await.expect("55 of the 55 left");
        assert_eq!((answer.bytes.len(), answer.allocated), (55, 55));
    }

    #[tokio::test]
    async fn an_answer_of_a_declared_length_is_held_in_one_buffer_of_that_length() {
        let budget = BufferBudget::new(1000);
        let mut reservation = budget.reserve(0).unwrap();
        let chunks: Vec<&'static [u8]> = vec![&[1u8; 300], &[2u8; 300], &[3u8; 400]];
        let answer = read_answer(body_of(chunks), Some(1000), 1000, &mut reservation).await.unwrap();
        assert_eq!((answer.bytes.len(), answer.allocated), (1000, 1000));
        assert_eq!(budget.used(), 1000, "a buffer grown by doubling would have needed 1,200");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve_upload(0, due()).unwrap();
        let read = read(body_of(vec![b"abc", b"def"]), None, 5, PACE, Instant::now(), &mut reservation).await;
        assert!(matches!(read, Err(ReadFailure::Request(Error::Body(BodyError::TooLarge { limit: 5 })))));
    }
}
