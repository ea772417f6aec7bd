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
//! time it needs room (`buffers_reclaimed`, 429). When that room is not enough, such
//! uploads are cut off whole, their buffers with them, slowest first: a client that
//! sent half of a large body at once, and the rest at the minimum pace, holds a buffer
//! of its whole length for as long as the rest takes (minutes), and a few dozen such
//! clients would otherwise hold every buffer for little bandwidth. Its reader is woken
//! at once ([`Reservation::cut_off`]), drops the buffer and answers 429
//! `buffers_reclaimed`; the budget counts the buffer as free from the moment it is cut.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

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
    /// It was cut off whole, its buffer's room given to another request: its reader
    /// must drop the buffer and give up.
    cut: bool,
    /// Wakes its reader when it is cut off.
    cut_off: Arc<Notify>,
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
        (self.take(bytes) || self.take_making_room(bytes, &mut self.lock_uploads(), None)).then(|| Reservation {
            budget: self.clone(),
            held: Held::Bytes(bytes),
            cut_off: None,
        })
    }

    /// A reservation of `bytes` only if all that is held, with it, stays within
    /// `ceiling`, and never by taking room promised to uploads: for an answer taken off
    /// its pod to wait for its client, which is worth holding only while the uploads
    /// have room to spare. `None` otherwise.
    pub fn reserve_below(self: &Arc<Self>, bytes: usize, ceiling: usize) -> Option<Reservation> {
        let ceiling = ceiling.min(self.limit);
        let taken = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= ceiling)
            })
            .is_ok();
        taken.then(|| Reservation { budget: self.clone(), held: Held::Bytes(bytes), cut_off: None })
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
        let cut_off = Arc::new(Notify::new());
        let upload = Upload {
            reserved: declared,
            allocated: 0,
            received: 0,
            admitted: Instant::now(),
            due,
            overtaken: false,
            cut: false,
            cut_off: cut_off.clone(),
        };
        uploads.insert(id, upload);
        Some(Reservation { budget: self.clone(), held: Held::Upload(id), cut_off: Some(cut_off) })
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
    /// to uploads that cannot arrive in time (never `asking`'s own), and then, if that
    /// is not enough, those uploads whole.
    fn take_making_room(&self, bytes: usize, uploads: &mut HashMap<u64, Upload>, asking: Option<u64>) -> bool {
        if self.take(bytes) {
            return true;
        }
        let now = Instant::now();
        let mut behind: Vec<(u64, Option<Instant>)> = uploads
            .iter()
            .filter(|&(&id, upload)| Some(id) != asking && upload.reserved > 0 && upload.is_behind(now))
            .map(|(&id, upload)| (id, upload.expected_end(now)))
            .collect();
        let free = self.limit.saturating_sub(self.used.load(Ordering::SeqCst));
        let reclaimable: usize = behind.iter().map(|(id, _)| uploads[id].reserved).sum();
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
        // Their promised room first, which costs nobody a byte received; their buffers
        // only if that is not enough.
        for (id, _) in &behind {
            if self.take(bytes) {
                return true;
            }
            let Some(upload) = uploads.get_mut(id) else { continue };
            let promised = upload.promised();
            if promised == 0 {
                continue;
            }
            upload.reserved = upload.allocated;
            upload.overtaken = true;
            self.used.fetch_sub(promised, Ordering::SeqCst);
            tracing::info!(
                promised,
                received = upload.received,
                "an upload that cannot arrive in time gave up its room in the buffers"
            );
        }
        for (id, _) in &behind {
            if self.take(bytes) {
                return true;
            }
            let Some(upload) = uploads.get_mut(id) else { continue };
            let buffer = upload.reserved;
            upload.reserved = 0;
            upload.allocated = 0;
            upload.overtaken = true;
            upload.cut = true;
            upload.cut_off.notify_one();
            self.used.fetch_sub(buffer, Ordering::SeqCst);
            tracing::info!(
                buffer,
                received = upload.received,
                "an upload that cannot arrive in time was cut off and gave up its buffer"
            );
        }
        self.take(bytes)
    }
}

/// Part of the [`BufferBudget`], given back when dropped.
pub struct Reservation {
    budget: Arc<BufferBudget>,
    held: Held,
    /// An upload's: notified when it is cut off.
    cut_off: Option<Arc<Notify>>,
}

enum Held {
    Bytes(usize),
    /// An upload's: its room is in the budget's list, where it can be taken back.
    Upload(u64),
}

/// An answer held in the buffers gives its room back once its last piece has gone to
/// the client's connection: its own buffer is gone then, and what the connection still
/// holds is on the connection's account (`memory::GATEWAY_CONNECTION_BYTES`).
impl matte_serve::pieces::Kept for Reservation {
    fn handed_over(&mut self) {
        self.release();
    }
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
    /// All the buffers, this reservation's share and the others'.
    pub fn budget_limit(&self) -> usize {
        self.budget.limit()
    }

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
                if upload.cut {
                    return Err(Shortfall::Overtaken);
                }
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

    /// Gives back what is held beyond `bytes`, once that is all that is left to hold
    /// (for an upload, only once settled).
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Held::Bytes(held) = &mut self.held
            && *held > bytes
        {
            self.budget.used.fetch_sub(*held - bytes, Ordering::SeqCst);
            *held = bytes;
        }
    }

    /// Records that `total` bytes of the upload have arrived: its pace so far. An upload
    /// cut off gets `Overtaken`: its buffer's room is no longer its own.
    pub fn received(&self, total: usize) -> Result<(), Shortfall> {
        if let Held::Upload(id) = self.held
            && let Some(upload) = self.budget.lock_uploads().get_mut(&id)
        {
            if upload.cut {
                return Err(Shortfall::Overtaken);
            }
            upload.received = total;
        }
        Ok(())
    }

    /// Resolves once the upload is cut off (never for a reservation of bytes): its
    /// reader, waiting on a stalled client, drops its buffer at once.
    pub async fn cut_off(&self) {
        match &self.cut_off {
            Some(cut_off) => cut_off.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Gives back everything held, once the buffer it covered is gone (an upload
    /// refused while its client still sends, the rest read and dropped): it holds
    /// nothing from then on, and an upload is no longer listed to be overtaken.
    pub fn release(&mut self) {
        let bytes = match self.held {
            Held::Bytes(bytes) => bytes,
            Held::Upload(id) => self.budget.lock_uploads().remove(&id).map_or(0, |upload| upload.reserved),
        };
        self.budget.used.fetch_sub(bytes, Ordering::SeqCst);
        self.held = Held::Bytes(0);
        self.cut_off = None;
    }

    /// The upload has arrived whole in a buffer of `allocated` bytes: it keeps that
    /// much, gives back the rest of what was promised, and can no longer be overtaken;
    /// `Overtaken` if it was cut off first.
    pub fn settle(&mut self, allocated: usize) -> Result<(), Shortfall> {
        if let Held::Upload(id) = self.held {
            let mut uploads = self.budget.lock_uploads();
            if uploads.get(&id).is_some_and(|upload| upload.cut) {
                return Err(Shortfall::Overtaken);
            }
            let reserved = uploads.remove(&id).map_or(0, |upload| upload.reserved);
            drop(uploads);
            let kept = allocated.min(reserved);
            self.budget.used.fetch_sub(reserved - kept, Ordering::SeqCst);
            self.held = Held::Bytes(kept);
            self.cut_off = None;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
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
    fn room_below_a_ceiling_is_given_only_while_all_held_stays_under_it() {
        let budget = BufferBudget::new(100);
        let answer = budget.reserve_below(40, 50).unwrap();
        assert!(budget.reserve_below(20, 50).is_none(), "60 held would be over the ceiling");
        let stalled = upload(&budget, 30, Duration::from_secs(2), Duration::from_secs(60), 0);
        assert!(budget.reserve_below(15, 80).is_none(), "never by taking back a stalled upload's room");
        assert_eq!(budget.used(), 70);
        assert!(budget.reserve(15).is_some(), "which a body may take");
        assert!(budget.reserve_below(10, 1000).is_some(), "the ceiling is the limit at most");
        assert!(budget.reserve_below(31, 1000).is_none());
        drop(answer);
        drop(stalled);
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
    fn a_buffer_is_taken_back_only_when_the_promised_room_is_not_enough() {
        let budget = BufferBudget::new(100);
        let mut stalled = upload(&budget, 80, Duration::from_secs(5), Duration::from_secs(60), 0);
        stalled.cover(40).unwrap();
        // The 40 promised beyond its buffer make room for 20 more: its buffer stays.
        let small = budget.reserve(40);
        assert!(small.is_some());
        assert_eq!(stalled.received(0), Ok(()), "not cut off");
        assert_eq!(stalled.cover(50), Err(Shortfall::Overtaken), "but it may not grow");
        drop(small);
        // 70 needs its buffer too: it is cut off, and its reader told so.
        let large = budget.reserve(70);
        assert!(large.is_some());
        assert_eq!(budget.used(), 70, "its buffer counted free at once");
        assert_eq!(stalled.received(10), Err(Shortfall::Overtaken));
        assert_eq!(stalled.settle(40), Err(Shortfall::Overtaken));
        drop(stalled);
        assert_eq!(budget.used(), 70, "nothing given back twice");
    }

    #[tokio::test]
    async fn a_cut_off_upload_wakes_its_reader() {
        let budget = BufferBudget::new(100);
        let mut stalled = upload(&budget, 100, Duration::from_secs(5), Duration::from_secs(60), 0);
        stalled.cover(100).unwrap();
        let reader = async { stalled.cut_off().await };
        let cutter = async { budget.reserve(60).is_some() };
        let ((), made_room) = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join(reader, cutter))
            .await
            .expect("the reader was woken");
        assert!(made_room);
    }

    #[test]
    fn an_upload_arriving_in_time_keeps_its_buffer() {
        let budget = BufferBudget::new(100);
        // 50 of 80 bytes in 1 s: the rest in under a second.
        let mut steady = upload(&budget, 80, Duration::from_secs(1), Duration::from_secs(30), 50);
        steady.cover(80).unwrap();
        assert!(budget.reserve(30).is_none());
        assert_eq!(steady.received(60), Ok(()));
    }

    #[test]
    fn a_reservation_shrinks_to_what_is_left_to_hold() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve(80).unwrap();
        reservation.shrink_to(30);
        assert_eq!(budget.used(), 30);
        reservation.shrink_to(50);
        assert_eq!(budget.used(), 30, "shrinking never grows it");
        drop(reservation);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_settled_upload_keeps_its_buffer_and_gives_back_the_rest() {
        let budget = BufferBudget::new(100);
        let mut reservation = budget.reserve_upload(80, Instant::now() + Duration::from_secs(90)).unwrap();
        reservation.cover(30).unwrap();
        reservation.settle(30).unwrap();
        assert_eq!(budget.used(), 30);
        drop(reservation);
        assert_eq!(budget.used(), 0);
    }
}
