//! The process's allocator, counting each thread's allocations: `bench-json` reports them per
//! event, and a test checks the JSON path makes none in its steady state.
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

/// Makes glibc give freed memory back to the system as it goes. By default it raises its
/// mmap threshold to the largest block freed so far (up to 32 MB): after loading has freed
/// the kernel's BTF, the engine's growing hash tables would come from the heap, whose
/// freed pages it keeps (and a table freed below a live one cannot be trimmed at all).
/// Fixed thresholds keep large blocks in their own mappings, returned when freed.
pub fn return_freed_memory_promptly() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes the allocator's parameters; nothing is allocated yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
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
