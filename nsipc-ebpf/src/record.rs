//! The ring buffer, the lost-record counter, and writing one [`Record`].

use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use nsipc_common::{EventKind, LOST_SLOTS, MqueueRecord, NsRef, RECORD_ARGS, Record};

use crate::task::{cgroup_of, load_field, offset, parent_pid, task_ids};

/// Default size; userspace sets the real one (`--ring-buffer-size`) before load.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records the ring buffer had no room for, per CPU and per kind (the slot is the kind's id).
/// Userspace reports them as `agent.lost`: nothing is dropped silently, and the kinds say
/// which events a lost record would have made.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Waking the reader on every record costs more than the probe itself; records are written
/// without a wakeup until this many bytes wait, and userspace also polls on a short timer.
#[unsafe(no_mangle)]
static WAKEUP_THRESHOLD: Global<u64> = Global::new(256 * 1024);

/// The agent's process id (userspace sets it before load). Its inventory asks `IPC_STAT` of
/// the objects it lists: those calls are not its users', and their records, lost in a full
/// ring buffer, would count as lost events no workload made. What the probes learn from them
/// (a segment's kernel pointer) they still learn.
#[unsafe(no_mangle)]
static AGENT_TGID: Global<u32> = Global::new(0);

/// Writes one record about `task`, the current task (a BTF pointer); on a full ring buffer
/// counts it in `LOST` instead.
#[inline(always)]
pub fn emit(
    task: *const u8,
    kind: EventKind,
    ns: NsRef,
    other_ns: NsRef,
    ret: i64,
    args: [u64; RECORD_ARGS],
) {
    if matches!(
        kind,
        EventKind::MsgCtl | EventKind::ShmCtl | EventKind::SemCtl
    ) && task_ids(task).0 == AGENT_TGID.load()
    {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Record>(0) else {
        count_lost(kind);
        return;
    };
    let record = record_of(task, kind, ns, other_ns, ret, args);
    // SAFETY: the reservation is one aligned Record.
    unsafe { record.store(entry.as_mut_ptr()) };
    entry.submit(wakeup_flags());
}

/// Writes one [`MqueueRecord`] about `task`, the current task: the record, the queue's inode
/// number `ino`, and the name at user address `name` (none for 0); on a full ring buffer
/// counts it in `LOST` instead.
#[inline(always)]
pub fn emit_mqueue(
    task: *const u8,
    kind: EventKind,
    ns: NsRef,
    ret: i64,
    args: [u64; RECORD_ARGS],
    ino: u64,
    name: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<MqueueRecord>(0) else {
        count_lost(kind);
        return;
    };
    let out = entry.as_mut_ptr();
    let record = record_of(task, kind, ns, NsRef::default(), ret, args);
    // SAFETY: the reservation is one aligned MqueueRecord; its fields are written in place,
    // the name by the helper (a copy through the stack would not fit its 512 bytes).
    unsafe {
        record.store(&raw mut (*out).record);
        (&raw mut (*out).tail.ino).write_volatile(ino);
        let buffer = &mut (*out).tail.name;
        // A failed read zeroes the buffer (bpf_probe_read_user_str): an empty name.
        if name == 0 || bpf_probe_read_user_str_bytes(name as *const u8, buffer).is_err() {
            buffer[0] = 0;
        }
    }
    entry.submit(wakeup_flags());
}

/// The record of one event of `task`, the current task (a BTF pointer). Who the task is (ids,
/// uids, comm, cgroup) is read straight from its `task_struct`: each helper call
/// (bpf_get_current_pid_tgid, _uid_gid, _comm) costs more than the loads.
#[inline(always)]
fn record_of(
    task: *const u8,
    kind: EventKind,
    ns: NsRef,
    other_ns: NsRef,
    ret: i64,
    args: [u64; RECORD_ARGS],
) -> Record {
    let (pid, tid) = task_ids(task);
    let comm = load_field::<[u64; 2]>(task, offset!(task_comm)).unwrap_or([0; 2]);
    let cred = load_field::<*const u8>(task, offset!(task_cred)).unwrap_or(core::ptr::null());
    let uid = load_field::<u32>(cred, offset!(cred_uid)).unwrap_or(0);
    let euid = load_field::<u32>(cred, offset!(cred_euid)).unwrap_or(0);
    Record {
        kind: kind as u32,
        pid,
        tid,
        uid,
        // SAFETY: no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ns,
        other_ns,
        ret,
        args,
        // SAFETY: plain bytes either way.
        comm: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(comm) },
        cgroup: cgroup_of(task),
        euid,
        ppid: parent_pid(task),
    }
}

/// Waking the reader on every record costs more than the probe itself: only past
/// [`WAKEUP_THRESHOLD`] bytes of unread records.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_THRESHOLD.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

/// Counts a record of `kind` that could not be written (full ring buffer, unreadable call).
#[inline(always)]
pub fn count_lost(kind: EventKind) {
    if let Some(slot) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs (no preemption).
        unsafe { *slot += 1 };
    }
}
