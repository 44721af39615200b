//! A counting global allocator: the fuzz binary and the CI test install it so
//! a parser that asks for a huge buffer (a length field trusted before it is
//! checked) is a finding even when the machine could satisfy it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Wraps the system allocator and counts. Install it with
/// `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
pub struct CountingAlloc;

impl CountingAlloc {
    fn grew(size: usize) {
        INSTALLED.store(true, Ordering::Relaxed);
        LARGEST.fetch_max(size, Ordering::Relaxed);
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    /// The system refused (a request far beyond the cap, typically): Rust
    /// aborts next, so leave the evidence first, without allocating.
    fn failed(size: usize) {
        crate::runner::dump_on_abort(size);
    }
}

// SAFETY: every call is forwarded to `System` with the same layout; the
// counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::grew(layout.size());
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            Self::failed(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::grew(layout.size());
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            Self::failed(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            Self::failed(new_size);
        } else {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

/// What the allocator saw since the last [`reset`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Live bytes at the reset.
    pub base: usize,
    /// Highest live total since.
    pub peak: usize,
    /// Largest single request since.
    pub largest: usize,
}

impl Usage {
    /// Bytes the input itself added at its peak.
    pub fn peak_growth(&self) -> usize {
        self.peak.saturating_sub(self.base)
    }
}

/// Starts a measurement (before each input).
pub fn reset() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    live
}

pub fn usage(base: usize) -> Usage {
    Usage {
        base,
        peak: PEAK.load(Ordering::Relaxed),
        largest: LARGEST.load(Ordering::Relaxed),
    }
}

/// Whether the process runs on [`CountingAlloc`] (else no allocation is checked).
pub fn installed() -> bool {
    // Any program allocates before fuzzing starts; make sure of it.
    drop(std::hint::black_box(vec![0u8; 1]));
    INSTALLED.load(Ordering::Relaxed)
}
