//! Seeing objects die without a syscall: namespaces and shm segments whose kernel pointers the
//! probes learnt are recognised when they are freed: at the functions that free them, by
//! fentry or kprobe ([`segment_freed_fentry`], [`namespace_freed_fentry`]), or where the kernel
//! allows neither, among every `kfree` of the machine ([`kfree`]). Userspace attaches one way.
//!
//! kernel: [5.10 6.1 6.12 6.18] ipc/namespace.c: static void free_ipc_ns(struct ipc_namespace *ns) (may be inlined) ends with kfree(ns)
//!   (after sem_exit_ns, msg_exit_ns, shm_exit_ns destroyed every object left in it).
//! kernel: [5.10 6.1 6.12 6.18] ipc/shm.c: static void shm_rcu_free(struct rcu_head *head) does kfree(shp), an RCU
//!   grace period after shm_destroy(): at IPC_RMID with no attachment, at the last detach of a
//!   removed segment (shmdt, munmap, exit, exec), by shm_rmid_forced, or at namespace teardown.
//! kernel: [5.10 6.1 6.12 6.18] include/trace/events/kmem.h: TRACE_EVENT(kfree, TP_PROTO(unsigned long call_site, const void *ptr))
//!
//! `kfree` is a raw tracepoint, not a perf one: a perf tracepoint's program is skipped whenever
//! any BPF program (ours, or another tool's) runs on that CPU, and the frees here mostly come
//! from RCU callbacks in softirq, which interrupt such programs: under a shmget/IPC_RMID loop,
//! `kmem:kfree` missed thousands of frees in seconds (bpftool's recursion_misses), and each
//! missed tracked free lost a destroy for good. A raw tracepoint's program is only skipped when
//! it interrupts itself. Raw, not BTF (`tp_btf`): before 6.18 the verifier refuses to read the
//! `const void *ptr` argument of a BTF tracepoint ("arg1 type UNKNOWN is not a struct").
//! kernel: [5.10 6.1 6.12 6.18] include/linux/ipc_namespace.h: struct ipc_ids { ... struct idr ipcs_idr; ... }
//!   which lib/idr.c and lib/xarray.c make map an object's index to its kern_ipc_perm.

use aya_ebpf::{
    Global,
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use nsipc_common::{
    CodeRanges, EventKind, HOST_IPC_NS_INUM, IPC_SHM_IDS, IPCMNI_EXTEND_SHIFT, IPCMNI_SHIFT,
    NO_OFFSET, NsRef, ipc_index,
};

/// include/uapi/asm-generic/errno-base.h
const ENOENT: i32 = 2;

use crate::{
    mqueue::evicted_unnamed,
    record::emit,
    task::{address_of, current_task, ns_ref, offset, read_field},
};

/// What a tracked pointer is.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum TrackedKind {
    Namespace = 1,
    ShmSegment = 2,
}

#[derive(Clone, Copy)]
pub struct Tracked {
    kind: u32,
    id: i32,
    key: i32,
    /// The life of the namespace (its own, or a segment's namespace's): a tag the probes give
    /// a namespace when they first track its pointer, from the clock. Where the kernel has no
    /// `ns_id`, a freed namespace's inum and memory both go to the next one at once; the tag
    /// tells a segment of the dead namespace, freed an RCU grace period after it, from the
    /// new namespace's.
    ns_tag: u32,
    ns: NsRef,
    /// For a segment: its namespace's `struct ipc_namespace *`.
    ns_ptr: u64,
}

/// Kernel pointer → what it is. Sized for 10 000 namespaces and 100 000 segments; an entry goes
/// away when its pointer is freed.
#[map(name = "TRACKED")]
static TRACKED: HashMap<u64, Tracked> = HashMap::with_max_entries(131_072, 0);

/// Remembers a namespace's `struct ipc_namespace *` so that its `kfree` is recognised. The host
/// namespace is static and never freed.
#[inline(always)]
pub fn track_namespace(ipc_ns: *const u8, ns: NsRef) {
    let _ = namespace_tag(ipc_ns, ns);
}

/// Tracks the namespace at `ipc_ns` (see [`track_namespace`]) and returns its life's tag (0 for
/// the host's, never freed, or when it cannot be tracked).
#[inline(always)]
fn namespace_tag(ipc_ns: *const u8, ns: NsRef) -> u32 {
    if ipc_ns.is_null() || ns.inum == 0 || ns.inum == HOST_IPC_NS_INUM {
        return 0;
    }
    // An existing entry is normally this namespace, written again for nothing. One naming
    // another namespace is stale: that namespace's free was missed, and this one now lives at
    // its address; kept, it would hide this namespace's free. A full map only loses this
    // namespace's destroy, which userspace then learns at its next resynchronisation.
    let key = ipc_ns as u64;
    // SAFETY: the value is copied out at once.
    let stale = match unsafe { TRACKED.get(key) }.copied() {
        Some(current) if same_life(&current, ns) => return learn_id(key, current, ns),
        other => other,
    };
    // Two tasks of a new namespace can both miss it here, on two CPUs. Whichever inserts first
    // gives the life its tag, and the other must take that one: a second tag would make the
    // segments tracked under the first look like a dead life's at their free, and their
    // destroys be dropped. So a new entry goes in only where there is none (its tag from the
    // clock: any value but 0 will do, as long as the next life at this address gets another;
    // the clock's low bits come back only after 4.3 s to the nanosecond), and a stale entry is
    // replaced by one whose tag follows from it, the same on every CPU that saw it.
    let (tag, flags) = match stale {
        // SAFETY: no preconditions.
        None => ((unsafe { bpf_ktime_get_ns() } as u32).max(1), BPF_NOEXIST),
        Some(stale) => (stale.ns_tag.wrapping_add(1).max(1), BPF_ANY),
    };
    let tracked = Tracked {
        kind: TrackedKind::Namespace as u32,
        id: 0,
        key: 0,
        ns_tag: tag,
        ns,
        ns_ptr: 0,
    };
    if TRACKED.insert(key, tracked, flags as u64).is_ok() {
        return tag;
    }
    // Another CPU tracked this namespace between the lookup and the insert (or the map is full).
    // SAFETY: the value is copied out at once.
    match unsafe { TRACKED.get(key) }.copied() {
        Some(current) if same_life(&current, ns) => current.ns_tag,
        _ => tag,
    }
}

/// Whether a namespace's entry is the life `ns`: the same inum with the same `ns_id`, or with an
/// `ns_id` read as 0 on one side (a hook that ran before the kernel set it, or a kernel without
/// it). A life's tag must never change while it lives (see [`namespace_tag`]).
#[inline(always)]
fn same_life(entry: &Tracked, ns: NsRef) -> bool {
    entry.kind == TrackedKind::Namespace as u32
        && entry.ns.inum == ns.inum
        && (entry.ns.id == ns.id || entry.ns.id == 0 || ns.id == 0)
}

/// Keeps an `ns_id` learnt after the entry was made; returns the life's tag, unchanged.
#[inline(always)]
fn learn_id(key: u64, mut entry: Tracked, ns: NsRef) -> u32 {
    if entry.ns.id == 0 && ns.id != 0 {
        entry.ns = ns;
        let _ = TRACKED.insert(key, entry, BPF_ANY as u64);
    }
    entry.ns_tag
}

/// Deep enough for 2^24 indices (ipcmni_extend) at 6 bits a level; the default IPCMNI of 32768
/// needs 3. (A CONFIG_BASE_SMALL kernel's 4 bits a level reach 2^16: the default IPCMNI.)
const XA_MAX_DEPTH: usize = 4;

/// The kernel's `ipc_mni_shift` (userspace sets it before load): an id is `seq << 15 | index`,
/// or `seq << 24 | index` when the kernel was booted with `ipcmni_extend`.
#[unsafe(no_mangle)]
static IPC_ID_SHIFT: Global<u32> = Global::new(IPCMNI_SHIFT);

/// xa_is_node(): internal entries have the low bits 10 and are above the small-value range.
#[inline(always)]
fn is_node(entry: u64) -> bool {
    entry & 3 == 2 && entry > 4096
}

/// The `kern_ipc_perm *` of object `id` of one type (`ids`: [`IPC_SHM_IDS`] or
/// [`nsipc_common::IPC_MSG_IDS`]) in the namespace at `ipc_ns`, found as
/// ipc_obtain_object_idr() does: walk the xarray of `ns->ids[ids].ipcs_idr` by the index part
/// of the id, then check the full id (index and sequence number).
#[inline(always)]
pub fn perm_by_id(ipc_ns: *const u8, ids: u32, id: i32) -> Option<*const u8> {
    let ids = ipc_ns.wrapping_add((offset!(ipc_ns_ids) + ids * offset!(ipc_ids_size)) as usize);
    // One of the two shifts the kernel knows, whatever the global holds.
    let shift = if IPC_ID_SHIFT.load() == IPCMNI_EXTEND_SHIFT {
        IPCMNI_EXTEND_SHIFT
    } else {
        IPCMNI_SHIFT
    };
    let index = u64::from(ipc_index(id, shift));
    // XA_CHUNK_SIZE - 1: the slot bits of an index at each level (XA_CHUNK_SHIFT from the
    // kernel's BTF: 6 bits, 64 slots, unless CONFIG_BASE_SMALL).
    let chunk_mask = (1u64 << (offset!(xa_chunk_shift) & 63)) - 1;
    let mut entry: u64 = read_field(ids, offset!(ipc_ids_xa_head))?;
    let mut walked = false;
    for _ in 0..XA_MAX_DEPTH {
        if !is_node(entry) {
            break;
        }
        let node = (entry - 2) as *const u8;
        let shift: u8 = read_field(node, offset!(xa_node_shift))?;
        if !walked && index >> shift > chunk_mask {
            return None; // beyond what the tree holds
        }
        let slot = (index >> shift) & chunk_mask;
        entry = read_field(node, offset!(xa_node_slots) + (slot as u32) * 8)?;
        walked = true;
    }
    // A head that is not a node holds index 0 only; leftover internal entries are not objects.
    if entry == 0 || entry & 3 != 0 || (!walked && index != 0) {
        return None;
    }
    let perm = entry as *const u8;
    (read_field::<i32>(perm, offset!(perm_id))? == id).then_some(perm)
}

/// Whether shm segment `id` is listed in the namespace at `ipc_ns`; if so, remembers its
/// `shmid_kernel *` so that its `kfree` is recognised. `key` is the segment's key when the
/// caller knows it (shmget): the segment is then most likely new, and is written at once.
#[inline(always)]
pub fn track_shm_segment(ipc_ns: *const u8, id: i32, key: Option<i32>) -> bool {
    let Some(perm) = perm_by_id(ipc_ns, IPC_SHM_IDS, id) else {
        return false;
    };
    let segment = perm.wrapping_sub(offset!(shm_perm) as usize);
    let ns = ns_ref(ipc_ns);
    let ns_tag = namespace_tag(ipc_ns, ns);
    let tracked = |key| Tracked {
        kind: TrackedKind::ShmSegment as u32,
        id,
        key,
        ns_tag,
        ns,
        ns_ptr: ipc_ns as u64,
    };
    let tracked = match key {
        Some(key) => tracked(key),
        None => {
            let tracked = tracked(read_field::<i32>(perm, offset!(perm_key)).unwrap_or(0));
            // As for namespaces: an entry for another segment (or anything else) at this
            // address is stale, its free missed; this segment replaces it. The same segment
            // is not written again.
            // SAFETY: the value is copied out at once.
            let current = unsafe { TRACKED.get(segment as u64) }.copied();
            if current.is_some_and(|t| {
                t.kind == TrackedKind::ShmSegment as u32
                    && t.id == id
                    && t.ns == tracked.ns
                    && t.ns_tag == ns_tag
            }) {
                return true;
            }
            tracked
        }
    };
    let _ = TRACKED.insert(segment as u64, tracked, BPF_ANY as u64);
    true
}

/// The functions a tracked pointer's `kfree` is called from (its `call_site`): userspace finds
/// them in /proc/kallsyms. `shm_rcu_free` and `free_ipc_ns` end in a tail call to kfree, so the
/// call site is usually their caller: `rcu_do_batch` (every RCU callback) and `free_ipc` (the
/// namespace free work), and those are in the set too. Any other kfree returns at once, without
/// touching [`TRACKED`]: a hash lookup of a random pointer misses the cache, and this program
/// runs on every kfree on the machine. Userspace leaves it [`CodeRanges::EVERYWHERE`] when it
/// cannot find them all.
#[unsafe(no_mangle)]
static KFREE_CALLERS: Global<CodeRanges> = Global::new(CodeRanges::EVERYWHERE);

/// The pieces of `mqueue_evict_inode` (a subset of [`KFREE_CALLERS`]): a kfree called from
/// there is a POSIX message queue ending ([`crate::mqueue`]). Nowhere unless userspace found it.
#[unsafe(no_mangle)]
static MQUEUE_EVICT: Global<CodeRanges> = Global::new(CodeRanges::NOWHERE);

/// The `kfree` tracepoint fires for every kfree on the machine: this is a few comparisons unless
/// the caller is one that frees ours, and then one hash lookup unless the pointer is ours.
///
/// Two copies of the program are attached. The kernel skips a raw tracepoint's program when it
/// is already running on that CPU (`recursion_misses`), which happens whenever an RCU callback
/// frees memory in a softirq that interrupted the program: one copy lost such frees (seen: a
/// segment destroyed at its creator's exit never reported). The copies run one after the
/// other on each kfree, so an interrupt lands in at most one of them, and the other sees the
/// nested kfree; whichever removes the entry first reports it (a hash map delete is atomic).
///
/// The end of a message queue (one kfree in `mqueue_evict_inode`, in process context or a
/// workqueue, where no kfree program runs to be interrupted) is reported by this copy alone.
#[raw_tracepoint(tracepoint = "kfree")]
pub fn kfree(ctx: RawTracePointContext) -> i32 {
    on_kfree::<true>(&ctx);
    0
}

/// The second copy of [`kfree`].
#[raw_tracepoint(tracepoint = "kfree")]
pub fn kfree_again(ctx: RawTracePointContext) -> i32 {
    on_kfree::<false>(&ctx);
    0
}

#[inline(always)]
fn on_kfree<const REPORTS_MQUEUES: bool>(ctx: &RawTracePointContext) {
    // TP_PROTO(unsigned long call_site, const void *ptr)
    let call_site: u64 = ctx.arg(0);
    if !code_ranges(&KFREE_CALLERS).contains(call_site) {
        return;
    }
    if code_ranges(&MQUEUE_EVICT).contains(call_site) {
        if REPORTS_MQUEUES {
            evicted_unnamed();
        }
        return;
    }
    freed(ctx.arg(1));
}

/// A [`CodeRanges`] global, read in place.
#[inline(always)]
fn code_ranges(global: &'static Global<CodeRanges>) -> &'static CodeRanges {
    // SAFETY: Global is repr(transparent); `contains` reads it with volatile loads.
    unsafe { &*(global as *const Global<CodeRanges>).cast::<CodeRanges>() }
}

/// Where the kernel has them to hook (fentry or kprobes), the frees are seen at the exact
/// functions that free a segment and tear a namespace down, and no program runs on the other
/// kfrees of the machine. Checked in /proc/kallsyms on 5.10.0-46, 6.1.0-57, 6.12.118 (Debian)
/// and 6.18.
///
/// kernel: [5.10 6.1 6.12 6.18] ipc/shm.c: static void shm_rcu_free(struct rcu_head *head): the RCU callback that
///   kfree()s the segment (address-taken, so never inlined); `head` is `&shp->shm_perm.rcu`.
#[aya_ebpf::macros::fentry]
pub fn segment_freed_fentry(ctx: FEntryContext) -> u32 {
    segment_freed(address_of(ctx.arg(0)));
    0
}

/// [`segment_freed_fentry`], by kprobe.
#[aya_ebpf::macros::kprobe]
pub fn segment_freed_kprobe(ctx: ProbeContext) -> u32 {
    segment_freed(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// kernel: [5.10 6.1 6.12 6.18] ipc/shm.c: void shm_exit_ns(struct ipc_namespace *ns): called by free_ipc_ns() (6.1
///   to 6.18: inlined into free_ipc(), the namespace free work) once the namespace's last
///   reference is gone, after sem_exit_ns() and msg_exit_ns() and before the inum is given back
///   and the memory freed. The namespace is as good as freed: its queues and semaphore sets are
///   gone, its segments go now (their RCU frees follow, told apart as the dead namespace's).
#[aya_ebpf::macros::fentry]
pub fn namespace_freed_fentry(ctx: FEntryContext) -> u32 {
    freed(address_of(ctx.arg(0)));
    0
}

/// [`namespace_freed_fentry`], by kprobe.
#[aya_ebpf::macros::kprobe]
pub fn namespace_freed_kprobe(ctx: ProbeContext) -> u32 {
    freed(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// The segment whose `shm_perm.rcu` is at `head`: container_of() twice.
#[inline(always)]
fn segment_freed(head: u64) {
    let (rcu, perm) = (offset!(perm_rcu), offset!(shm_perm));
    if head == 0 || rcu == NO_OFFSET || perm == NO_OFFSET {
        return;
    }
    freed(head - u64::from(rcu) - u64::from(perm));
}

/// Reports the free of `ptr` if it is a namespace or segment the probes track.
#[inline(always)]
fn freed(ptr: u64) {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(tracked) = (unsafe { TRACKED.get(ptr) }).copied() else {
        return;
    };
    // -ENOENT: the other copy removed it first and reports it. Any other failure is -EBUSY:
    // this run interrupted a map update on this CPU (a syscall program tracking a pointer) and
    // the bucket is locked; the free is reported all the same, and the entry left behind is
    // replaced when the address is tracked again (both copies may then report it: a destroy
    // reported twice changes nothing in userspace).
    if TRACKED.remove(ptr) == Err(-ENOENT) {
        return;
    }
    if tracked.kind == TrackedKind::Namespace as u32 {
        emit(
            current_task(),
            EventKind::NsFreed,
            tracked.ns,
            NsRef::default(),
            0,
            [0; 4],
        );
    } else {
        let ns_state = namespace_state(&tracked);
        // Read while the namespace's memory is there, dying or not: a segment destroyed by
        // shm_rmid_forced at its creator's exit, the namespace's last reference, is freed
        // after that reference is gone but before the namespace is.
        let rmid_forced = ns_state != NsState::Freed
            && read_field::<i32>(tracked.ns_ptr as *const u8, offset!(ipc_ns_shm_rmid_forced))
                .is_some_and(|forced| forced != 0);
        let args = [
            tracked.id as u32 as u64,
            tracked.key as u32 as u64,
            ns_state as u64,
            rmid_forced as u64,
        ];
        emit(
            current_task(),
            EventKind::ShmFreed,
            tracked.ns,
            NsRef::default(),
            0,
            args,
        );
    }
}

/// Where a freed segment's namespace stands (the `ShmFreed` record's args[2]).
#[repr(u64)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum NsState {
    Live = 0,
    /// Its last reference is gone; its memory is not freed yet.
    Dying = 1,
    /// Its kfree came already: its memory must not be read.
    Freed = 2,
}

/// Whether a freed segment's namespace is being torn down: shm_exit_ns() destroys the segments
/// of a namespace whose last reference is gone, and their RCU-deferred kfree can come before or
/// after the namespace's own kfree. Before: the reference count is already zero. After: the
/// namespace is no longer tracked, or another life is tracked at its address (another tag).
#[inline(always)]
fn namespace_state(segment: &Tracked) -> NsState {
    if segment.ns.inum == HOST_IPC_NS_INUM {
        return NsState::Live;
    }
    let ns_ptr = segment.ns_ptr;
    // SAFETY: the value is copied out at once.
    let namespace = unsafe { TRACKED.get(ns_ptr) }.copied();
    if namespace.is_none_or(|ns| ns.ns_tag != segment.ns_tag) {
        return NsState::Freed;
    }
    if read_field::<u32>(ns_ptr as *const u8, offset!(ipc_ns_refcount)) == Some(0) {
        NsState::Dying
    } else {
        NsState::Live
    }
}
