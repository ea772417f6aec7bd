//! The bytes all held bodies may take together (`--max-buffered-bytes`), and who
//! gets them when they run out.
//!
//! A body is given its declared length when it is admitted, so that a burst of
//! uploads is either held whole or turned away before its bodies are sent: were
//! room given only as bytes arrive, every upload of a burst would be admitted and
//! race for the room part-way, most refused after sending much of their bodies. But
//! room promised to bytes that are not coming is room taken from everyone: clients
//! that declare large bodies and send them slowly, or not at all, would fill the
//! budget for little bandwidth and turn every real upload away. So when the budget
//! cannot take what a request needs, it first takes back the room still promised to
//! uploads that cannot arrive in time — nothing arrived a second after admission, or
//! at their pace so far the rest would arrive after their request's wait budget ends
//! — slowest first, and only if that makes room. Such an upload is refused the next
//! time it needs room (`buffers_reclaimed`, 429). The bytes a body has already been
//! given a buffer for are never taken back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How soon after admission an upload's first bytes arrive: well over a round trip,
/// and over the second curl waits for `100 Continue`, which the gateway sends as it
/// starts reading.
pub const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(1);

/// The bytes all held request bodies (and answers being translated) may take
/// together.
pub struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
    /// The uploads still arriving, by id: what each was promised and has been sent.
    uploads: Mutex<HashMap<u64, Upload>>,
    next_upload: AtomicU64,
}

/// An upload still arriving.
#[derive(Debug)]
struct Upload {
    /// The room it holds in the budget: its declared length, or more once it has grown
    /// past it.
    reserved: usize,
    /// The part of `reserved` it has a buffer for (or is allocating one for): never
    /// taken back.
    allocated: usize,
    received: usize,
    admitted: Instant,
    /// When its request's wait budget ends: an upload still arriving then is useless.
    due: Instant,
    /// Its promised room was taken back: it may not grow any more.
    overtaken: bool,
}

impl Upload {
    /// The room it holds beyond its buffer.
    fn promised(&self) -> usize {
        self.reserved - self.allocated
    }

    /// When the rest of it would arrive at its pace so far; `None` if nothing came.
    fn expected_end(&self, now: Instant) -> Option<Instant> {
        if self.received == 0 {
            return None;
        }
        let rest = self.reserved.saturating_sub(self.received) as f64;
        let per_byte = now.saturating_duration_since(self.admitted).as_secs_f64() / self.received as f64;
        Some(now + Duration::from_secs_f64((rest * per_byte).min(86_400.0)))
    }

    /// Whether it cannot arrive in time to be served, so that its promised room is
    /// better given to another request.
    fn is_behind(&self, now: Instant) -> bool {
        match self.expected_end(now) {
            None => now.saturating_duration_since(self.admitted) >= FIRST_BYTES_WITHIN,
            Some(end) => end > self.due,
        }
    }
}

impl BufferBudget {
    pub fn new(limit: usize) -> Arc<BufferBudget> {
        Arc::new(BufferBudget {
            limit,
            used: AtomicUsize::new(0),
            uploads: Mutex::new(HashMap::new()),
            next_upload: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// A reservation of `bytes` that grows as asked ([`Reservation::cover`]): for an
    /// answer held to be translated. `None` when the budget is spent.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        (self.take(bytes) || self.take_making_room(bytes, &mut self.lock_uploads(), None))
            .then(|| Reservation { budget: self.clone(), held: Held::Bytes(bytes) })
    }

    /// A reservation for an upload declared `declared` bytes long (0 for a body of
    /// unknown length, which then grows as it arrives), admitted now and due by
    /// `due`. `None` when the budget is spent, even after taking back what uploads
    /// that cannot arrive in time were promised.
    pub fn reserve_upload(self: &Arc<Self>, declared: usize, due: Instant) -> Option<Reservation> {
        let mut uploads = self.lock_uploads();
        if !self.take_making_room(declared, &mut uploads, None) {
            return None;
        }
        let id = self.next_upload.fetch_add(1, Ordering::Relaxed);
        let upload =
            Upload { reserved: declared, allocated: 0, received: 0, admitted: Instant::now(), due, overtaken: false };
        uploads.insert(id, upload);
        Some(Reservation { budget: self.clone(), held: Held::Upload(id) })
    }

    fn lock_uploads(&self) -> MutexGuard<'_, HashMap<u64, Upload>> {
        // The map is consistent after every statement: a panic elsewhere leaves it usable.
        self.uploads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `bytes` of the budget, if that many are left.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `bytes`, taking back first, if that is what it needs, the room promised
    /// to uploads that cannot arrive in time (never `asking`'s own).
    fn take_making_room(&self, bytes: usize, uploads: &mut HashMap<u64, Upload>, asking: Option<u64>) -> bool {
        if self.take(bytes) {
            return true;
        }
        let now = Instant::now();
        let mut behind: Vec<(u64, Option<Instant>)> = uploads
            .iter()
            .filter(|&(&id, upload)| Some(id) != asking && upload.promised() > 0 && upload.is_behind(now))
            .map(|(&id, upload)| (id, upload.expected_end(now)))
            .collect();
        let free = self.limit.saturating_sub(self.used.load(Ordering::SeqCst));
        let reclaimable: usize = behind.iter().map(|(id, _)| uploads[id].promised()).sum();
        if free.saturating_add(reclaimable) < bytes {
            // Refusing them would not make room: the request is refused alone.
            return false;
        }
        // Nothing arrived first, then the latest to arrive.
        behind.sort_by(|a, b| match (a.1, b.1) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => b.cmp(&a),
        });
        for (id, _) in behind {
            if self.take(bytes) {
                return true;
            }
            let Some(upload) = uploads.get_mut(&id) else { continue };
            let promised = upload.promised();
            upload.reserved = upload.allocated;
            upload.overtaken = true;
            self.used.fetch_sub(promised, Ordering::SeqCst);
            tracing::info!(
                promised,
                received = upload.received,
                "an upload that cannot arrive in time gave up its room in the buffers"
            );
        }
        self.take(bytes)
    }
}

/// Part of the [`BufferBudget`], given back when dropped.
pub struct Reservation {
    budget: Arc<BufferBudget>,
    held: Held,
}

enum Held {
    Bytes(usize),
    /// An upload's: its room is in the budget's list, where it can be taken back.
    Upload(u64),
}

/// Why a reservation could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// The budget is spent.
    Spent,
    /// The upload's room was taken back: it was arriving too slowly to be served.
    Overtaken,
}

impl Reservation {
    /// Grows the reservation to at least `bytes`, about to be allocated.
    pub fn cover(&mut self, bytes: usize) -> Result<(), Shortfall> {
        match &mut self.held {
            Held::Bytes(held) => {
                if bytes > *held {
                    let more = bytes - *held;
                    if !self.budget.take(more)
                        && !self.budget.take_making_room(more, &mut self.budget.lock_uploads(), None)
                    {
                        return Err(Shortfall::Spent);
                    }
                    *held = bytes;
                }
                Ok(())
            }
            Held::Upload(id) => {
                let id = *id;
                let mut uploads = self.budget.lock_uploads();
                let Some(upload) = uploads.get(&id) else { return Err(Shortfall::Spent) };
                if bytes > upload.reserved {
                    if upload.overtaken {
                        return Err(Shortfall::Overtaken);
                    }
                    let more = bytes - upload.reserved;
                    if !self.budget.take_making_room(more, &mut uploads, Some(id)) {
                        return Err(Shortfall::Spent);
                    }
                }
                let upload = uploads.get_mut(&id).expect("an upload is listed until its reservation drops");
                upload.reserved = upload.reserved.max(bytes);
                upload.allocated = upload.allocated.max(bytes);
                Ok(())
            }
        }
    }

    /// Records that `total` bytes of the upload have arrived: its pace so far.
    pub fn received(&self, total: usize) {
        if let Held::Upload(id) = self.held
            && let Some(upload) = self.budget.lock_uploads().get_mut(&id)
        {
            upload.received = total;
        }
    }

    /// The upload has arrived whole in a buffer of `allocated` bytes: it keeps that
    /// much, gives back the rest of what was promised, and can no longer be overtaken.
    pub fn settle(&mut self, allocated: usize) {
        if let Held::Upload(id) = self.held {
            let upload = self.budget.lock_uploads().remove(&id);
            let reserved = upload.map_or(0, |upload| upload.reserved);
            let kept = allocated.min(reserved);
            self.budget.used.fetch_sub(reserved - kept, Ordering::SeqCst);
            self.held = Held::Bytes(kept);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let bytes = match self.held {
            Held::Bytes(bytes) => bytes,
            Held::Upload(id) => self.budget.lock_uploads().remove(&id).map_or(0, |upload| upload.reserved),
        };
        self.budget.used.fetch_sub(bytes, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upload admitted `ago`, due `due_in` from now, that has received `received`.
    fn upload(
        budget: &Arc<BufferBudget>,
        declared: usize,
        ago: Duration,
        due_in: Duration,
        received: usize,
    ) -> Reservation {
        let reservation = budget.reserve_upload(declared, Instant::now() + due_in).unwrap();
        let Held::Upload(id) = reservation.held else { unreachable!() };
        let mut uploads = budget.lock_uploads();
        let listed = uploads.get_mut(&id).unwrap();
        listed.admitted = Instant::now() - ago;
        listed.received = received;
        drop(uploads);
        reservation
    }

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = BufferBudget::new(100);
        let first = budget.reserve(60).unwrap();
        assert!(budget.reserve(50).is_none());
        let second = budget.reserve_upload(40, Instant::now() + Duration::from_secs(90)).unwrap();
        assert_eq!(budget.used(), 100);
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn room_promised_to_an_upload_that_sent_nothing_goes_to_a_new_request() {
        let budget = BufferBudget::new(100);
        let mut stalled = upload(&budget, 80, Duration::from_secs(2), Duration::from_secs(60), 0);
        let newcomer = budget.reserve_upload(50, Instant::now() + Duration::from_secs(90));
        assert!(newcomer.is_some(), "the stalled upload's room taken back");
        assert_eq!(budget.used(), 50);
        assert_eq!(stalled.cover(10), Err(Shortfall::Overtaken), "and it may not grow again");
        drop(stalled);
        drop(newcomer);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_upload_too_slow_to_arrive_within_its_budget_gives_way() {
        let budget = BufferBudget::new(100);
        // 10 of 80 bytes in 10 s: the rest due in 70 s, after its budget ends in 30 s.
        let _trickle = upload(&budget, 80, Duration::from_secs(10), Duration::from_secs(30), 10);
        assert!(budget.reserve_upload(50, Instant::now() + Duration::from_secs(90)).is_some());
    }

    #[test]
    fn uploads_that_can_arrive_in_time_keep_their_room() {
        let budget = BufferBudget::new(100);
        // Just admitted, nothing yet: its first bytes may still be on their way.
        let _fresh = upload(&budget, 40, Duration::ZERO, Duration::from_secs(90), 0);
        // 20 of 40 bytes in 2 s: the rest in 2 s, well within its budget.
        let _steady = upload(&budget, 40, Duration::from_secs(2), Duration::from_secs(88), 20);
        assert!(budget.reserve_upload(50, Instant::now() + Duration::from_secs(90)).is_none());
        assert_eq!(budget.used(), 80);
    }

    #[test]
    fn a_buffer_already_allocated_is_never_taken_back() {
        let budget = BufferBudget::new(100);
        let mut stalled = upload(&budget, 80, Duration::from_secs(5), Duration::from_secs(60), 0);
        stalled.cover(40).unwrap();
        // Only the 40 promised beyond its buffer could be taken back: not enough for 70,
        // so nothing is taken.
        assert!(budget.reserve(70).is_none());
        assert_eq!(stalled.cover(80), Ok(()), "its room left alone");
        assert!(budget.reserve(20).is_some());
    }

    #[test]
    fn a_settled_upload_keeps_its_buffer_and_gives_back_the_rest() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve_upload(80, Instant::now() + Duration::from_secs(90)).unwrap();
        reservation.cover(30).unwrap();
        reservation.settle(30);
        assert_eq!(budget.used(), 30);
        drop(reservation);
        assert_eq!(budget.used(), 0);
    }
}
