//! Carrying a syscall's arguments from its enter tracepoint to its exit tracepoint.
//!
//! The layout of `syscalls:sys_enter_*` is fixed by the kernel's syscall tracing
//! (kernel/trace/trace_syscalls.c): 8 bytes of common fields, `int __syscall_nr`, then each
//! argument as an 8-byte slot from offset 16. `syscalls:sys_exit_*` has `long ret` at offset 16.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, maps::LruHashMap, programs::TracePointContext,
};
use nsipc_common::{EventKind, NsRef, RECORD_ARGS};

use crate::{
    record::{Subject, emit},
    task::current_ipc_ns,
};

const ENTER_ARGS_OFFSET: usize = 16;
const EXIT_RET_OFFSET: usize = 16;

/// A syscall in flight on one thread.
#[derive(Clone, Copy)]
pub struct PendingCall {
    pub kind: u32,
    pub _pad: u32,
    pub args: [u64; RECORD_ARGS],
    /// The thread's IPC namespace at entry (used by the namespace-switching calls).
    pub ns_before: NsRef,
}

/// Keyed by pid_tgid. LRU, so a thread killed inside a syscall cannot leak its slot.
#[map(name = "PENDING")]
static PENDING: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

/// Reads the first `N` syscall arguments of an enter tracepoint.
#[inline(always)]
pub fn enter_args<const N: usize>(ctx: &TracePointContext) -> [u64; RECORD_ARGS] {
    let mut args = [0u64; RECORD_ARGS];
    let mut i = 0;
    while i < N && i < RECORD_ARGS {
        // SAFETY: the offset is inside the tracepoint record for a syscall with >= N arguments.
        args[i] = unsafe { ctx.read_at::<u64>(ENTER_ARGS_OFFSET + 8 * i) }.unwrap_or(0);
        i += 1;
    }
    args
}

/// Remembers a call at its enter tracepoint.
#[inline(always)]
pub fn remember(kind: EventKind, args: [u64; RECORD_ARGS], ns_before: NsRef) {
    let call = PendingCall {
        kind: kind as u32,
        _pad: 0,
        args,
        ns_before,
    };
    // A full LRU map evicts its oldest entry; insert cannot fail for lack of room.
    let _ = PENDING.insert(bpf_get_current_pid_tgid(), call, 0);
}

/// Takes back the call this thread remembered, if it was of `kind`.
#[inline(always)]
pub fn take(kind: EventKind) -> Option<PendingCall> {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let call = unsafe { PENDING.get(key) }.copied()?;
    let _ = PENDING.remove(key);
    (call.kind == kind as u32).then_some(call)
}

/// The return value at an exit tracepoint.
#[inline(always)]
pub fn exit_ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: `ret` is at a fixed offset in every sys_exit record.
    unsafe { ctx.read_at::<i64>(EXIT_RET_OFFSET) }.unwrap_or(0)
}

/// Exit of a call whose record is simply its arguments and return value, in the caller's
/// namespace at exit.
#[inline(always)]
pub fn emit_on_exit(ctx: &TracePointContext, kind: EventKind) {
    if let Some(call) = take(kind) {
        emit(
            kind,
            Subject::current(),
            current_ipc_ns(),
            call.ns_before,
            exit_ret(ctx),
            call.args,
        );
    }
}

/// Defines the enter and exit tracepoint programs of a syscall whose record is simply its
/// arguments and return value. `$nargs` is how many arguments the syscall takes (up to 4).
macro_rules! plain_syscall {
    ($enter:ident, $exit:ident, $kind:expr, $nargs:literal) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $enter(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::syscall::remember(
                $kind,
                $crate::syscall::enter_args::<$nargs>(&ctx),
                nsipc_common::NsRef::default(),
            );
            0
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn $exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            $crate::syscall::emit_on_exit(&ctx, $kind);
            0
        }
    };
}
pub(crate) use plain_syscall;
