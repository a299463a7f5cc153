//! The ring buffer, the lost-record counter, and writing one [`Record`].

use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use nsipc_common::{EventKind, NsRef, RECORD_ARGS, Record};

/// Default size; userspace sets the real one (`--ring-buffer-size`) before load.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records the ring buffer had no room for, per CPU (slot 0). Userspace reports them as
/// `agent.lost`: nothing is dropped silently.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Waking the reader on every record costs more than the probe itself; records are written
/// without a wakeup until this many bytes wait, and userspace also polls on a short timer.
#[unsafe(no_mangle)]
static WAKEUP_THRESHOLD: Global<u64> = Global::new(256 * 1024);

/// Who an event is about, when it is not simply the current task.
pub struct Subject {
    pub pid: u32,
    pub tid: u32,
}

impl Subject {
    #[inline(always)]
    pub fn current() -> Self {
        let pid_tgid = bpf_get_current_pid_tgid();
        Self {
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
        }
    }
}

/// Writes one record; on a full ring buffer counts it in `LOST` instead.
#[inline(always)]
pub fn emit(
    kind: EventKind,
    subject: Subject,
    ns: NsRef,
    other_ns: NsRef,
    ret: i64,
    args: [u64; RECORD_ARGS],
) {
    let Some(mut entry) = EVENTS.reserve::<Record>(0) else {
        count_lost();
        return;
    };
    entry.write(Record {
        kind: kind as u32,
        pid: subject.pid,
        tid: subject.tid,
        uid: bpf_get_current_uid_gid() as u32,
        // SAFETY: no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ns,
        other_ns,
        ret,
        args,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_THRESHOLD.load() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

#[inline(always)]
fn count_lost() {
    if let Some(slot) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs (no preemption).
        unsafe { *slot += 1 };
    }
}
