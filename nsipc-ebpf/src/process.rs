//! Task exits that matter for namespace lifetimes, and the cgroups tasks are attributed by.
//!
//! kernel: [5.10 6.1 6.12 6.18] include/trace/events/sched.h: TRACE_EVENT(sched_process_exit, TP_PROTO(struct task_struct *p, bool group_dead (6.18)))
//!   fired from do_exit() before exit_task_namespaces() drops the task's nsproxy reference.
//!   (Before 6.18 a DEFINE_EVENT of sched_process_template, without `bool group_dead`; only the
//!   first argument is read so older kernels load too.)
//! kernel: [5.10 6.1 6.12 6.18] include/trace/events/cgroup.h: DEFINE_EVENT(cgroup, cgroup_mkdir, TP_PROTO(struct cgroup *cgrp, const char *path))
//!   fired from cgroup_mkdir() once the new cgroup's kernfs node exists (4.13+).
//! kernel: [5.10 6.1 6.12 6.18] include/trace/events/cgroup.h: DEFINE_EVENT(cgroup, cgroup_rmdir, TP_PROTO(struct cgroup *cgrp, const char *path))
//!   fired from cgroup_destroy_locked() when an empty cgroup's directory is removed (4.13+).

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use nsipc_common::{CGROUP_PATH_LEN, EventKind, HOST_IPC_NS_INUM, NsRef};

use crate::{
    record::emit,
    task::{current_task, ipc_ns_ptr_of, load_field, ns_ref, offset, shm_rmid_forced},
    tracked::track_namespace,
};

/// The hierarchy whose new cgroups are reported (userspace sets it; -1: none).
#[unsafe(no_mangle)]
static CGROUP_HIERARCHY: Global<i32> = Global::new(-1);

/// Cgroup id → path, for the cgroups made while the agent runs: a container that starts, does
/// its IPC and is removed between two reads of the ring buffer leaves no directory behind to
/// find its path by. LRU: the newest thousand are plenty for what is waiting to be read.
#[map(name = "CGROUP_PATHS")]
static CGROUP_PATHS: LruHashMap<u64, [u8; CGROUP_PATH_LEN]> = LruHashMap::with_max_entries(1024, 0);

/// The id of `cgroup` (a `struct cgroup *`) if it is in the hierarchy tasks are attributed by.
#[inline(always)]
fn attributed_cgroup_id(cgroup: *const u8) -> Option<u64> {
    let hierarchy = load_field::<*const u8>(cgroup, offset!(cgroup_root))
        .and_then(|root| load_field::<i32>(root, offset!(cgroup_root_hierarchy_id)));
    if hierarchy != Some(CGROUP_HIERARCHY.load()) {
        return None;
    }
    load_field::<*const u8>(cgroup, offset!(cgroup_kn))
        .and_then(|kn| load_field::<u64>(kn, offset!(kernfs_node_id)))
}

/// A record about a cgroup (no namespace), made by the current task.
#[inline(always)]
fn emit_cgroup(kind: EventKind, id: u64) {
    emit(
        current_task(),
        kind,
        NsRef::default(),
        NsRef::default(),
        0,
        [id, 0, 0, 0],
    );
}

/// A cgroup of the attributed hierarchy was made: its path goes into [`CGROUP_PATHS`] and a
/// record says so, so that userspace resolves its container while it exists.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> u32 {
    let cgroup: *const u8 = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let Some(id) = attributed_cgroup_id(cgroup) else {
        return 0;
    };
    if CGROUP_PATHS.insert(id, [0; CGROUP_PATH_LEN], 0).is_err() {
        return 0;
    }
    if let Some(slot) = CGROUP_PATHS.get_ptr_mut(id) {
        // SAFETY: a map value of CGROUP_PATH_LEN bytes; a bad source address only fails.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(path, &mut *slot) };
    }
    emit_cgroup(EventKind::CgroupMkdir, id);
    0
}

/// A cgroup of the attributed hierarchy was removed: the end of its container, if it was one
/// (what the container made in the host's IPC namespace and left there is then orphaned).
#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: BtfTracePointContext) -> u32 {
    if let Some(id) = attributed_cgroup_id(ctx.arg(0)) {
        emit_cgroup(EventKind::CgroupRmdir, id);
    }
    0
}

/// Processes (tgid) that attached a shm segment, or made an object (a get with IPC_CREAT),
/// while the agent ran: their exit detaches whatever they still have attached, with no shmdt,
/// and orphans what they made, and the agent must hear of it wherever they are. LRU: a process
/// evicted by sixteen thousand newer ones is forgotten.
#[map(name = "ATTACHERS")]
pub static ATTACHERS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// Exits in the host namespace cannot end a namespace's life and are filtered here, so the
/// stream is not flooded with every exit on the machine; but for processes that attached a
/// segment or made an object ([`ATTACHERS`]; one hash lookup per process exit in the host).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let task: *const u8 = ctx.arg(0);
    let ipc_ns = ipc_ns_ptr_of(task);
    let ns = ns_ref(ipc_ns);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // A process ends with its leader's exit (the engine lets attachments go then).
    // SAFETY: the value is not read, only whether there is one.
    let attacher = pid_tgid as u32 == tgid && unsafe { ATTACHERS.get(tgid) }.is_some();
    if attacher {
        let _ = ATTACHERS.remove(tgid);
    }
    if ns.inum != 0 && (ns.inum != HOST_IPC_NS_INUM || attacher) {
        // A namespace that existed before the agent may lose its last task here.
        track_namespace(ipc_ns, ns);
        // The exiting task is the current one.
        emit(
            task,
            EventKind::ProcessExit,
            ns,
            NsRef::default(),
            0,
            [shm_rmid_forced(ipc_ns) as u64, 0, 0, 0],
        );
    }
    0
}
