//! An allocator that counts: a test binary that declares it its global allocator can
//! read the bytes allocated now, and the most allocated at once while some work ran.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the counters are
// only added to and read.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = ALLOCATED.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The bytes allocated now.
pub fn allocated() -> usize {
    ALLOCATED.load(Ordering::SeqCst)
}

/// What `work` returns, and the most bytes allocated at once while it ran beyond those
/// allocated before it began. Only meaningful while nothing else allocates: run such
/// tests one at a time in their binary.
pub fn peak_while<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let result = work();
    (result, PEAK.load(Ordering::SeqCst) - before)
}

/// The bytes allocated once they have stopped changing for half a second (at most
/// 30 s): what some work holds once it has settled.
pub fn settled_allocation() -> usize {
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut last = allocated();
    let mut steady_since = Instant::now();
    while Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(50));
        let now = allocated();
        if now != last {
            last = now;
            steady_since = Instant::now();
        } else if steady_since.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    last
}
