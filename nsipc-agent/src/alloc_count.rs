//! An allocator counting each thread's allocations: the bench binary's (`nsipc-bench json`
//! reports them per event) and the unit tests' (a test checks the JSON path makes none in its
//! steady state). The agent itself runs on the system allocator.
//!
//! The count is thread-local (a plain add, no atomic), so tests running in parallel do not
//! see each other's allocations.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

pub struct CountingAllocator;

thread_local! {
    /// Const-initialised and without a destructor: usable from the allocator, never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// Allocations and reallocations made by this thread so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call goes to the system allocator unchanged; counting has no effect on it.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees are System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}
