//! How the agent tunes glibc's allocator, in one place: what it keeps, and when it gives back.

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

/// Gives the memory freed since start-up back to the system. Loading parses the kernel's BTF
/// (5 MB) several times into tens of MB of short-lived allocations; glibc keeps freed heap
/// pages for reuse, and the agent would carry them for its whole life.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only reads and changes the allocator's own state.
    unsafe { libc::malloc_trim(0) };
}
