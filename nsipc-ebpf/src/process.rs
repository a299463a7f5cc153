//! Task exits that matter for namespace lifetimes.
//!
//! kernel: include/trace/events/sched.h: sched_process_exit, TP_PROTO(struct task_struct *p, ...)
//!   fired from do_exit() before exit_task_namespaces() drops the task's nsproxy reference.
//!   (6.18 adds `bool group_dead`; only the first argument is read so older kernels load too.)

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use nsipc_common::{EventKind, HOST_IPC_NS_INUM, NsRef};

use crate::{
    record::emit,
    task::{ipc_ns_ptr_of, ns_ref},
    tracked::track_namespace,
};

/// Exits in the host namespace cannot end a namespace's life and are filtered here, so the
/// stream is not flooded with every exit on the machine.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let task: *const u8 = ctx.arg(0);
    let ipc_ns = ipc_ns_ptr_of(task);
    let ns = ns_ref(ipc_ns);
    if ns.inum != 0 && ns.inum != HOST_IPC_NS_INUM {
        // A namespace that existed before the agent may lose its last task here.
        track_namespace(ipc_ns, ns);
        // The exiting task is the current one.
        emit(
            task,
            EventKind::ProcessExit,
            ns,
            NsRef::default(),
            0,
            [0; 4],
        );
    }
    0
}
