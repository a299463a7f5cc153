//! SysV IPC object syscalls: get, ctl, shmat, shmdt.
//!
//! kernel: ipc/msg.c: long ksys_msgget(key_t key, int msgflg)
//! kernel: ipc/shm.c: long ksys_shmget(key_t key, size_t size, int shmflg)
//! kernel: ipc/sem.c: long ksys_semget(key_t key, int nsems, int semflg)
//! kernel: ipc/msg.c: static long ksys_msgctl(int msqid, int cmd, struct msqid_ds __user *buf, int version)
//! kernel: ipc/shm.c: static long ksys_shmctl(int shmid, int cmd, struct shmid_ds __user *buf, int version)
//! kernel: ipc/sem.c: static long ksys_semctl(int semid, int semnum, int cmd, unsigned long arg, int version)
//! kernel: ipc/shm.c: long do_shmat(int shmid, char __user *shmaddr, int shmflg, ulong *raddr, unsigned long shmlba)
//! kernel: ipc/shm.c: long ksys_shmdt(char __user *shmaddr)
//!
//! The tracepoints are `syscalls:sys_{enter,exit}_<name>`, whose arguments mirror the syscalls.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use nsipc_common::EventKind;

use crate::{
    record::{Subject, emit},
    syscall::{enter_args, exit_ret, plain_syscall, remember, take},
    task::{current_task, ipc_ns_of, ipc_ns_ptr_of},
    tracked::track_shm_segment,
};

/// `IPC_RMID` and `IPC_STAT` from include/uapi/linux/ipc.h; `IPC_64` (0x100) is masked off.
const IPC_RMID: u64 = 0;
const IPC_STAT: u64 = 2;
const IPC_64: u64 = 0x100;

plain_syscall!(sys_enter_msgget, sys_exit_msgget, EventKind::MsgGet, 2);
plain_syscall!(sys_enter_semget, sys_exit_semget, EventKind::SemGet, 3);
plain_syscall!(sys_enter_msgctl, sys_exit_msgctl, EventKind::MsgCtl, 2);
plain_syscall!(sys_enter_semctl, sys_exit_semctl, EventKind::SemCtl, 3);
plain_syscall!(sys_enter_shmdt, sys_exit_shmdt, EventKind::ShmDetach, 1);

/// Defines the enter program of a shm syscall whose exit also tracks the segment.
macro_rules! shm_enter {
    ($enter:ident, $kind:expr, $nargs:literal) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            remember(
                $kind,
                enter_args::<$nargs>(&ctx),
                nsipc_common::NsRef::default(),
            );
            0
        }
    };
}

shm_enter!(sys_enter_shmget, EventKind::ShmGet, 3);
shm_enter!(sys_enter_shmctl, EventKind::ShmCtl, 2);
shm_enter!(sys_enter_shmat, EventKind::ShmAttach, 3);

/// Exit of a shm syscall: learns the segment's kernel pointer when the call named a live
/// segment (`segment_id`), so that its destruction is seen whenever it happens. For a
/// successful IPC_RMID, args[3] says whether the segment is still listed (attached, so only
/// marked) or already gone.
#[inline(always)]
fn shm_exit(
    ctx: &TracePointContext,
    kind: EventKind,
    segment_id: impl Fn(i64, &[u64; 4]) -> Option<i32>,
) {
    let Some(mut call) = take(kind) else {
        return;
    };
    let ret = exit_ret(ctx);
    let task = current_task();
    if let Some(id) = segment_id(ret, &call.args) {
        let listed = track_shm_segment(ipc_ns_ptr_of(task), id);
        call.args[3] = listed as u64;
    }
    emit(
        kind,
        Subject::current(),
        ipc_ns_of(task),
        call.ns_before,
        ret,
        call.args,
    );
}

#[tracepoint]
pub fn sys_exit_shmget(ctx: TracePointContext) -> u32 {
    shm_exit(&ctx, EventKind::ShmGet, |ret, _| {
        (ret >= 0).then_some(ret as i32)
    });
    0
}

#[tracepoint]
pub fn sys_exit_shmctl(ctx: TracePointContext) -> u32 {
    shm_exit(&ctx, EventKind::ShmCtl, |ret, args| {
        let cmd = args[1] & !IPC_64;
        (ret == 0 && (cmd == IPC_RMID || cmd == IPC_STAT)).then_some(args[0] as i32)
    });
    0
}

#[tracepoint]
pub fn sys_exit_shmat(ctx: TracePointContext) -> u32 {
    shm_exit(&ctx, EventKind::ShmAttach, |ret, args| {
        (ret >= 0).then_some(args[0] as i32)
    });
    0
}
