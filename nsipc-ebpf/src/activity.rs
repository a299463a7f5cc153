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
//! kernel: [5.10 6.1 6.12 6.18] ipc/msg.c: struct msg_queue { struct kern_ipc_perm q_perm; ... unsigned long q_cbytes; ... unsigned long q_qbytes; ... }
//!   found by its id as the shm segments are ([`perm_by_id`]).
//!
//! The tracepoints are `syscalls:sys_exit_<name>`, whose return value is msgrcv's byte count.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{macros::map, maps::HashMap};
use nsipc_common::{ACTIVITY_ENTRIES, ActivityCount, ActivityKey, EventKind, IPC_MSG_IDS};

use crate::{
    record::count_lost,
    syscall::{Call, enter_plain, syscall_hooks},
    task::{cgroup_of, ipc_ns_ptr_of, load_field, ns_ref, offset, read_field, task_ids},
    tracked::perm_by_id,
};

/// `BPF_NOEXIST` and `EEXIST`: an insert that finds the key already there (another CPU's
/// first call of the same process on the same object) adds to that entry instead.
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;
/// include/uapi/asm-generic/errno-base.h: msgsnd's error when the queue is full and the
/// sender asked not to wait (`IPC_NOWAIT`).
const EAGAIN: i64 = 11;

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

/// What one call adds to its entry. Plain integers, no `Option`: the 5.10 verifier refuses
/// a program that copies a `None`'s uninitialised payload off the stack.
#[derive(Clone, Copy, Default)]
struct Delta {
    calls: u64,
    units: u64,
    fills: u64,
    refused: u64,
    /// msgsnd: the queue, when it had no room left for another message of the call's size or
    /// refused the call (`limit` 0: nothing to record).
    queue: QueueFill,
}

/// A message queue's bytes and limit; a limit of 0: not known (the queue is gone).
#[derive(Clone, Copy, Default)]
struct QueueFill {
    queued: u64,
    limit: u64,
}

/// The exit of a call adds it to its entry: one successful call, and what it moved (msgsnd:
/// its `msgsz`, which the kernel queued whole; msgrcv: its return value, the bytes copied
/// out; semop/semtimedop: `nsops`). A msgsnd also looks at its queue: one left full, or a
/// send refused because it was full, is what blocks a producer.
#[inline(always)]
fn exit_activity(task: *const u8, kind: EventKind, call: Call, ret: i64) {
    let ipc_ns = ipc_ns_ptr_of(task);
    let id = call.args[0] as i32;
    let delta = match kind {
        EventKind::MsgSend => send_delta(ipc_ns, id, &call, ret),
        _ if ret >= 0 => Delta {
            calls: 1,
            units: match kind {
                EventKind::MsgReceive => ret as u64,
                _ => call.args[2],
            },
            ..Delta::default()
        },
        _ => return,
    };
    if delta.calls == 0 && delta.refused == 0 {
        return; // a failed send that did not meet a full queue
    }
    let (pid, _) = task_ids(task);
    let key = ActivityKey {
        ns: ns_ref(ipc_ns),
        id,
        pid,
        kind: kind as u32,
        _pad: 0,
    };
    if add(&key, &delta) {
        return;
    }
    let comm = load_field::<[u8; 16]>(task, offset!(task_comm)).unwrap_or([0; 16]);
    let fill = delta.queue;
    let first = ActivityCount {
        calls: delta.calls,
        units: delta.units,
        cgroup: cgroup_of(task),
        comm,
        fills: delta.fills,
        refused: delta.refused,
        queued: fill.queued,
        limit: fill.limit,
    };
    match ACTIVITY.insert(key, first, BPF_NOEXIST) {
        Ok(()) => {}
        Err(err) if err == -EEXIST => {
            add(&key, &delta);
        }
        // The map is full: userspace says so (agent.lost, kind msg.send…).
        Err(_) => count_lost(kind),
    }
}

/// A msgsnd(msqid, msgp, msgsz, msgflg): a send, with its queue if that is now full; or a
/// send the full queue refused; nothing for another failure.
#[inline(always)]
fn send_delta(ipc_ns: *const u8, id: i32, call: &Call, ret: i64) -> Delta {
    if ret == -EAGAIN {
        return Delta {
            refused: 1,
            queue: queue_fill(ipc_ns, id),
            ..Delta::default()
        };
    }
    if ret < 0 {
        return Delta::default();
    }
    let msgsz = call.args[2];
    let queue = queue_fill(ipc_ns, id);
    let full = queue.limit != 0 && queue.queued + msgsz > queue.limit;
    Delta {
        calls: 1,
        units: msgsz,
        fills: full.into(),
        queue: if full { queue } else { QueueFill::default() },
        ..Delta::default()
    }
}

/// The bytes and limit of message queue `id` in the namespace at `ipc_ns`, read without its
/// lock (another CPU may be changing them): limit 0 if the queue is gone.
#[inline(always)]
fn queue_fill(ipc_ns: *const u8, id: i32) -> QueueFill {
    let Some(perm) = perm_by_id(ipc_ns, IPC_MSG_IDS, id) else {
        return QueueFill::default();
    };
    let queue = perm.wrapping_sub(offset!(msg_perm) as usize);
    let (Some(queued), Some(limit)) = (
        read_field(queue, offset!(msg_cbytes)),
        read_field(queue, offset!(msg_qbytes)),
    ) else {
        return QueueFill::default();
    };
    QueueFill { queued, limit }
}

/// Adds one call's `delta` to `key`'s entry, if it has one.
#[inline(always)]
fn add(key: &ActivityKey, delta: &Delta) -> bool {
    let Some(count) = ACTIVITY.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a pointer to a live map value, which stays valid while the program runs. The
    // adds are atomic, so CPUs do not lose each other's; the intrinsic because core's atomic
    // types have no `fetch_add` on the BPF target, and with its result unused it is the
    // BPF_XADD instruction every kernel has (a used result would need BPF_FETCH, 5.12+). The
    // queue's bytes and limit are plain stores: the latest of racing sends wins, either is
    // true of its moment.
    unsafe {
        if delta.calls > 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*count).calls, 1);
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*count).units,
                delta.units,
            );
        }
        if delta.fills > 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*count).fills, 1);
        }
        if delta.refused > 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*count).refused, 1);
        }
        if delta.queue.limit != 0 {
            (*count).queued = delta.queue.queued;
            (*count).limit = delta.queue.limit;
        }
    }
    true
}
