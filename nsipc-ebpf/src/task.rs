//! Reading a task's IPC namespace through offsets userspace took from the kernel's BTF.
//!
//! kernel: include/linux/sched.h: struct task_struct { ... struct nsproxy *nsproxy; ... }
//! kernel: include/linux/nsproxy.h: struct nsproxy { ... struct ipc_namespace *ipc_ns; ... }
//! kernel: include/linux/ipc_namespace.h: struct ipc_namespace { ... struct ns_common ns; ... }
//! kernel: include/linux/ns_common.h: struct ns_common { ... unsigned int inum; ... u64 ns_id (6.18) }

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use nsipc_common::{NO_OFFSET, NsRef};

#[unsafe(no_mangle)]
static TASK_NSPROXY_OFFSET: Global<u32> = Global::new(NO_OFFSET);
#[unsafe(no_mangle)]
static NSPROXY_IPC_NS_OFFSET: Global<u32> = Global::new(NO_OFFSET);
#[unsafe(no_mangle)]
static IPC_NS_INUM_OFFSET: Global<u32> = Global::new(NO_OFFSET);
#[unsafe(no_mangle)]
static IPC_NS_ID_OFFSET: Global<u32> = Global::new(NO_OFFSET);

/// Reads a kernel pointer-sized or integer field at `base + offset`.
#[inline(always)]
fn read_field<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address; a bad one only returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

/// The IPC namespace of `task` (a `struct task_struct *`), or a zero [`NsRef`] when the task has
/// already dropped its namespaces (`exit_task_namespaces` sets `nsproxy` to NULL).
#[inline(always)]
pub fn ipc_ns_of(task: *const u8) -> NsRef {
    let mut ns = NsRef::default();
    let Some(nsproxy) = read_field::<*const u8>(task, TASK_NSPROXY_OFFSET.load()) else {
        return ns;
    };
    let Some(ipc_ns) = read_field::<*const u8>(nsproxy, NSPROXY_IPC_NS_OFFSET.load()) else {
        return ns;
    };
    ns.inum = read_field::<u32>(ipc_ns, IPC_NS_INUM_OFFSET.load()).unwrap_or(0);
    let id_offset = IPC_NS_ID_OFFSET.load();
    if id_offset != NO_OFFSET {
        ns.id = read_field::<u64>(ipc_ns, id_offset).unwrap_or(0);
    }
    ns
}

/// The IPC namespace of the current task.
#[inline(always)]
pub fn current_ipc_ns() -> NsRef {
    // SAFETY: bpf_get_current_task has no preconditions.
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() } as *const u8;
    ipc_ns_of(task)
}

#[unsafe(no_mangle)]
static TASK_PID_OFFSET: Global<u32> = Global::new(NO_OFFSET);
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: Global<u32> = Global::new(NO_OFFSET);

/// `(task->tgid, task->pid)` of a task that is not the current one.
#[inline(always)]
pub fn task_ids(task: *const u8) -> (u32, u32) {
    let tgid = read_field::<u32>(task, TASK_TGID_OFFSET.load()).unwrap_or(0);
    let pid = read_field::<u32>(task, TASK_PID_OFFSET.load()).unwrap_or(0);
    (tgid, pid)
}
