//! Threads creating or entering IPC namespaces: unshare, setns, clone, clone3, task_newtask.
//!
//! kernel: kernel/fork.c: int ksys_unshare(unsigned long unshare_flags)
//! kernel: kernel/nsproxy.c: SYSCALL_DEFINE2(setns, int, fd, int, flags)
//! kernel: kernel/fork.c: SYSCALL_DEFINE5(clone, unsigned long, clone_flags, ...) (x86_64 order)
//! kernel: kernel/fork.c: SYSCALL_DEFINE2(clone3, struct clone_args __user *, uargs, size_t, size)
//! kernel: include/trace/events/task.h: TRACE_EVENT(task_newtask, TP_PROTO(struct task_struct *task, u64 clone_flags))
//!   fired in copy_process() after copy_namespaces(), so the child's nsproxy is already set.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use nsipc_common::{CLONE_NEWIPC, EventKind, NsRef};

use crate::{
    record::{Subject, emit},
    syscall::{enter_args, exit_ret, remember, take},
    task::{current_ipc_ns, current_task, ipc_ns_ptr_of, ns_ref, task_ids},
    tracked::track_namespace,
};

/// The current task's namespace, tracked so that its destruction is seen.
#[inline(always)]
fn current_ipc_ns_tracked() -> NsRef {
    let ipc_ns = ipc_ns_ptr_of(current_task());
    let ns = ns_ref(ipc_ns);
    track_namespace(ipc_ns, ns);
    ns
}

#[tracepoint]
pub fn sys_enter_unshare(ctx: TracePointContext) -> u32 {
    let args = enter_args::<1>(&ctx);
    if args[0] & CLONE_NEWIPC != 0 {
        remember(EventKind::Unshare, args, current_ipc_ns());
    }
    0
}

#[tracepoint]
pub fn sys_exit_unshare(ctx: TracePointContext) -> u32 {
    if let Some(call) = take(EventKind::Unshare) {
        let ns = current_ipc_ns_tracked();
        emit(
            EventKind::Unshare,
            Subject::current(),
            ns,
            call.ns_before,
            exit_ret(&ctx),
            call.args,
        );
    }
    0
}

#[tracepoint]
pub fn sys_enter_setns(ctx: TracePointContext) -> u32 {
    remember(EventKind::Setns, enter_args::<2>(&ctx), current_ipc_ns());
    0
}

/// Reported when the IPC namespace changed, or when the caller asked for an IPC namespace
/// (nstype has CLONE_NEWIPC), so failed and no-op joins are seen too; setns into other
/// namespace types stays quiet.
#[tracepoint]
pub fn sys_exit_setns(ctx: TracePointContext) -> u32 {
    if let Some(call) = take(EventKind::Setns) {
        let ns = current_ipc_ns_tracked();
        if ns != call.ns_before || call.args[1] & CLONE_NEWIPC != 0 {
            emit(
                EventKind::Setns,
                Subject::current(),
                ns,
                call.ns_before,
                exit_ret(&ctx),
                call.args,
            );
        }
    }
    0
}

#[tracepoint]
pub fn sys_enter_clone(ctx: TracePointContext) -> u32 {
    remember_clone(enter_args::<1>(&ctx)[0]);
    0
}

#[tracepoint]
pub fn sys_enter_clone3(ctx: TracePointContext) -> u32 {
    let uargs = enter_args::<1>(&ctx)[0] as *const u64;
    // `flags` is the first member of struct clone_args.
    // SAFETY: bpf_probe_read_user tolerates any user address.
    if let Ok(flags) = unsafe { bpf_probe_read_user(uargs) } {
        remember_clone(flags);
    }
    0
}

#[inline(always)]
fn remember_clone(flags: u64) {
    if flags & CLONE_NEWIPC != 0 {
        remember(EventKind::Clone, [flags, 0, 0, 0], current_ipc_ns());
    }
}

/// Only failures are reported here: a successful clone was reported by `task_newtask` with the
/// child's new namespace.
#[inline(always)]
fn clone_exit(ctx: &TracePointContext) {
    if let Some(call) = take(EventKind::Clone) {
        let ret = exit_ret(ctx);
        if ret < 0 {
            emit(
                EventKind::Clone,
                Subject::current(),
                call.ns_before,
                call.ns_before,
                ret,
                call.args,
            );
        }
    }
}

#[tracepoint]
pub fn sys_exit_clone(ctx: TracePointContext) -> u32 {
    clone_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_clone3(ctx: TracePointContext) -> u32 {
    clone_exit(&ctx);
    0
}

#[btf_tracepoint(function = "task_newtask")]
pub fn task_newtask(ctx: BtfTracePointContext) -> u32 {
    let child: *const u8 = ctx.arg(0);
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_NEWIPC != 0 {
        let (child_tgid, child_tid) = task_ids(child);
        let child_ipc_ns = ipc_ns_ptr_of(child);
        let child_ns = ns_ref(child_ipc_ns);
        track_namespace(child_ipc_ns, child_ns);
        emit(
            EventKind::Clone,
            Subject::current(),
            child_ns,
            current_ipc_ns(),
            child_tid as i64,
            [flags, child_tgid as u64, 0, 0],
        );
    }
    0
}
