//! The benchmark floor: the least an eBPF tracer on nsipc's hooks can do and still stream one
//! record per hook hit to userspace.
//!
//! `nsipc-bench floor` attaches [`floor_enter`] to every `syscalls:sys_enter_*` and
//! [`floor_exit`] to every `syscalls:sys_exit_*` tracepoint the nsipc probes use (the list comes
//! from the nsipc object itself), plus the same two BTF tracepoints, and [`floor_raw`] to the
//! raw tracepoint (`kfree`). Every hit of an exit-side
//! hook (syscall exit, BTF tracepoint) writes one record of nsipc's size, with nsipc's wakeup
//! policy, and nothing else: no per-thread argument map, no namespace reads, no filtering (so
//! where nsipc filters, e.g. forks and exits in the host namespace, the floor writes more).
//! `cargo xtask bench` compares nsipc's overhead with this one.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use nsipc_common::Record;

/// Sized by userspace before load, like nsipc's.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records the ring buffer had no room for (slot 0, per CPU).
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Same policy as nsipc: no wakeup until this many bytes wait.
#[unsafe(no_mangle)]
static WAKEUP_THRESHOLD: Global<u64> = Global::new(256 * 1024);

/// `long ret` of every `sys_exit_*` record (kernel/trace/trace_syscalls.c).
const EXIT_RET_OFFSET: usize = 16;

/// One nsipc-sized record holding who and the return value; the rest stays zero.
#[inline(always)]
fn write_record(ret: i64) {
    let Some(mut entry) = EVENTS.reserve::<Record>(0) else {
        if let Some(slot) = LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *slot += 1 };
        }
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let record = Record {
        kind: 0,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: 0,
        ts_ns: 0,
        ns: Default::default(),
        other_ns: Default::default(),
        ret,
        args: [0; 4],
        comm: [0; 16],
        cgroup: 0,
        euid: 0,
        ppid: 0,
    };
    // As nsipc writes its records (a struct store would call a byte-at-a-time memset).
    // SAFETY: the reservation is one aligned Record.
    unsafe { record.store(entry.as_mut_ptr()) };
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_THRESHOLD.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Attached where nsipc remembers a syscall's arguments; the floor needs nothing from there,
/// but the hook itself (an attached tracepoint) is part of the cost.
#[tracepoint]
pub fn floor_enter(_ctx: TracePointContext) -> u32 {
    0
}

/// Attached where nsipc watches every kfree on the machine for the few that free its objects:
/// a floor writing a record per kfree would be no floor, so, as at syscall entry, the floor
/// only pays for the hook being there; nsipc's looking at the frees is its own overhead.
#[raw_tracepoint(tracepoint = "kfree")]
pub fn floor_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[tracepoint]
pub fn floor_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: `ret` is at a fixed offset in every sys_exit record; a plain context load, as
    // nsipc reads it.
    write_record(unsafe {
        *(ctx.as_ptr() as *const u8)
            .add(EXIT_RET_OFFSET)
            .cast::<i64>()
    });
    0
}

#[btf_tracepoint(function = "task_newtask")]
pub fn task_newtask(_ctx: BtfTracePointContext) -> u32 {
    write_record(0);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> u32 {
    write_record(0);
    0
}

/// nsipc reports new cgroups of one hierarchy: rare (a container start), so the floor writes
/// none.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(_ctx: BtfTracePointContext) -> u32 {
    0
}

/// Likewise for removed cgroups (a container's end).
#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(_ctx: BtfTracePointContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
