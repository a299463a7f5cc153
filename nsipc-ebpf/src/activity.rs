//! Traffic through SysV objects: sends and receives on message queues, operations on
//! semaphore sets, counted in the kernel per object, process and kind of call
//! ([`nsipc_common::ACTIVITY_MAP`]), with no record per call. Userspace attaches these hooks
//! only when asked for activity (`--activity-interval`).
//!
//! Hooked kernel functions (kprobe and fentry backends), each `long __x64_sys_<name>(const
//! struct pt_regs *regs)` (see [`crate::syscall`] for why the wrappers):
//! kernel: [5.10 6.1 6.12 6.18] ipc/msg.c: SYSCALL_DEFINE4(msgsnd, int, msqid, struct msgbuf __user *, msgp, size_t, msgsz, int, msgflg)
//! kernel: [5.10 6.1 6.12 6.18] ipc/msg.c: SYSCALL_DEFINE5(msgrcv, int, msqid, struct msgbuf __user *, msgp, size_t, msgsz, long, msgtyp, int, msgflg)
//! kernel: [5.10 6.1 6.12 6.18] ipc/sem.c: SYSCALL_DEFINE3(semop, int, semid, struct sembuf __user *, tsops, unsigned, nsops)
//! kernel: [5.10 6.1 6.12 6.18] ipc/sem.c: SYSCALL_DEFINE4(semtimedop, int, semid, struct sembuf __user *, tsops, unsigned int, nsops, const struct __kernel_timespec __user *, timeout)
//!
//! The tracepoints are `syscalls:sys_exit_<name>`, whose return value is msgrcv's byte count.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{macros::map, maps::HashMap};
use nsipc_common::{ACTIVITY_ENTRIES, ActivityCount, ActivityKey, EventKind};

use crate::{
    record::count_lost,
    syscall::{Call, enter_plain, syscall_hooks},
    task::{cgroup_of, ipc_ns_of, load_field, offset, task_ids},
};

/// `BPF_NOEXIST` and `EEXIST`: an insert that finds the key already there (another CPU's
/// first call of the same process on the same object) adds to that entry instead.
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// Running totals per object, process and kind of call. Not per CPU: a per-CPU map takes its
/// size times the number of CPUs, allocated up front; the counters are added to atomically.
#[map(name = "ACTIVITY")]
static ACTIVITY: HashMap<ActivityKey, ActivityCount> =
    HashMap::with_max_entries(ACTIVITY_ENTRIES, 0);

syscall_hooks!(
    EventKind::MsgSend,
    nr = 69,
    nargs = 3,
    enter = enter_plain,
    exit = exit_activity,
    tracepoint(sys_exit_msgsnd),
    kprobe(kprobe_msgsnd, kretprobe_msgsnd),
    fexit = fexit_msgsnd,
);
syscall_hooks!(
    EventKind::MsgReceive,
    nr = 70,
    nargs = 1,
    enter = enter_plain,
    exit = exit_activity,
    tracepoint(sys_exit_msgrcv),
    kprobe(kprobe_msgrcv, kretprobe_msgrcv),
    fexit = fexit_msgrcv,
);
syscall_hooks!(
    EventKind::SemOp,
    nr = 65,
    nargs = 3,
    enter = enter_plain,
    exit = exit_activity,
    tracepoint(sys_exit_semop),
    kprobe(kprobe_semop, kretprobe_semop),
    fexit = fexit_semop,
);
syscall_hooks!(
    EventKind::SemOp,
    nr = 220,
    nargs = 3,
    enter = enter_plain,
    exit = exit_activity,
    tracepoint(sys_exit_semtimedop),
    kprobe(kprobe_semtimedop, kretprobe_semtimedop),
    fexit = fexit_semtimedop,
);

/// The exit of a successful call adds it to its entry: one call, and what it moved (msgsnd:
/// its `msgsz`, which the kernel queued whole; msgrcv: its return value, the bytes copied
/// out; semop/semtimedop: `nsops`).
#[inline(always)]
fn exit_activity(task: *const u8, kind: EventKind, call: Call, ret: i64) {
    if ret < 0 {
        return;
    }
    let units = match kind {
        EventKind::MsgReceive => ret as u64,
        _ => call.args[2],
    };
    let (pid, _) = task_ids(task);
    let key = ActivityKey {
        ns: ipc_ns_of(task),
        id: call.args[0] as i32,
        pid,
        kind: kind as u32,
        _pad: 0,
    };
    if add(&key, units) {
        return;
    }
    let comm = load_field::<[u8; 16]>(task, offset!(task_comm)).unwrap_or([0; 16]);
    let first = ActivityCount {
        calls: 1,
        units,
        cgroup: cgroup_of(task),
        comm,
    };
    match ACTIVITY.insert(key, first, BPF_NOEXIST) {
        Ok(()) => {}
        Err(err) if err == -EEXIST => {
            add(&key, units);
        }
        // The map is full: userspace says so (agent.lost, kind msg.send…).
        Err(_) => count_lost(kind),
    }
}

/// Adds one call moving `units` to `key`'s entry, if it has one.
#[inline(always)]
fn add(key: &ActivityKey, units: u64) -> bool {
    let Some(count) = ACTIVITY.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a pointer to a live map value, which stays valid while the program runs. The
    // adds are atomic, so CPUs do not lose each other's; the intrinsic because core's atomic
    // types have no `fetch_add` on the BPF target, and with its result unused it is the
    // BPF_XADD instruction every kernel has (a used result would need BPF_FETCH, 5.12+).
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*count).calls, 1);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*count).units, units);
    }
    true
}
