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

use nsipc_common::EventKind;

use crate::syscall::plain_syscall;

plain_syscall!(sys_enter_msgget, sys_exit_msgget, EventKind::MsgGet, 2);
plain_syscall!(sys_enter_shmget, sys_exit_shmget, EventKind::ShmGet, 3);
plain_syscall!(sys_enter_semget, sys_exit_semget, EventKind::SemGet, 3);
plain_syscall!(sys_enter_msgctl, sys_exit_msgctl, EventKind::MsgCtl, 2);
plain_syscall!(sys_enter_shmctl, sys_exit_shmctl, EventKind::ShmCtl, 2);
plain_syscall!(sys_enter_semctl, sys_exit_semctl, EventKind::SemCtl, 3);
plain_syscall!(sys_enter_shmat, sys_exit_shmat, EventKind::ShmAttach, 3);
plain_syscall!(sys_enter_shmdt, sys_exit_shmdt, EventKind::ShmDetach, 1);
