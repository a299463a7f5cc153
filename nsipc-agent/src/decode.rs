//! Ring-buffer bytes → typed kernel events. Pure: no I/O, no allocation.

use nsipc_common::{EventKind, NsRef, RECORD_ARGS, Record};
use thiserror::Error;

use crate::names::IpcObject;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes, expected {expected}", expected = Record::SIZE)]
    BadLength(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// A syscall's outcome: its non-negative return value, or the errno it failed with.
pub type SysResult<T> = Result<T, i32>;

fn sys_result(ret: i64) -> SysResult<i64> {
    // Kernel errors are -1..=-4095; anything more negative comes from a corrupted record, and
    // must neither overflow the negation (-i64::MIN panics with overflow checks) nor truncate to
    // a zero or negative errno (-2^31 did, rendered as a failure with a positive `ret`).
    if ret < 0 {
        Err(i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX))
    } else {
        Ok(ret)
    }
}

/// The task an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    /// The parent's pid (0: unknown).
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid: what the kernel makes the owner of an object the task creates.
    pub euid: u32,
    /// Raw `task_struct.comm`: any bytes, NUL-padded.
    pub comm: [u8; nsipc_common::COMM_LEN],
    /// The task's cgroup id (0: not read); see `Record::cgroup`.
    pub cgroup: u64,
    /// The container the cgroup belongs to: filled in by the agent after decoding, from
    /// `cgroup` (decoding leaves it [`ContainerRef::NONE`]).
    pub container: ContainerRef,
}

/// A container, as an index into the agent's table of the containers it has seen (see
/// `crate::attribution`); [`ContainerRef::NONE`] for a task outside any container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerRef(pub u32);

impl ContainerRef {
    pub const NONE: Self = Self(0);

    pub fn is_some(self) -> bool {
        self != Self::NONE
    }
}

/// A `task_struct.comm` as the probes copy it, up to its first NUL.
pub fn comm_bytes(comm: &[u8; nsipc_common::COMM_LEN]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    &comm[..end]
}

impl Task {
    /// The comm bytes up to the first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        comm_bytes(&self.comm)
    }
}

/// What happened, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `msgget`/`shmget`/`semget`. `size` is the segment size (shm) or nsems (sem), 0 for msg.
    Get {
        object: IpcObject,
        key: i32,
        flags: i32,
        size: u64,
        result: SysResult<i64>,
    },
    /// `msgctl`/`shmctl`/`semctl`. `semnum` only for sem. `still_listed`: after a successful
    /// shm IPC_RMID, whether the segment is still there (attached, so only marked).
    Ctl {
        object: IpcObject,
        id: i32,
        cmd: i32,
        semnum: i32,
        still_listed: bool,
        result: SysResult<i64>,
    },
    ShmAttach {
        id: i32,
        requested_addr: u64,
        flags: i32,
        result: SysResult<i64>,
    },
    /// `rmid_forced`: the caller's namespace has kernel.shm_rmid_forced set, where a last
    /// detach destroys a segment even without IPC_RMID.
    ShmDetach {
        addr: u64,
        rmid_forced: bool,
        result: SysResult<i64>,
    },
    Unshare {
        flags: u64,
        from: NsRef,
        result: SysResult<i64>,
    },
    Setns {
        fd: i32,
        nstype: i32,
        from: NsRef,
        result: SysResult<i64>,
    },
    /// `result` is the child's tid.
    Clone {
        flags: u64,
        child_pid: u32,
        from: NsRef,
        result: SysResult<i64>,
    },
    /// `rmid_forced`: the namespace it exits in has kernel.shm_rmid_forced set, where its exit
    /// destroys the segments it made that nothing has attached.
    ProcessExit { rmid_forced: bool },
    /// The namespace `ns` was freed: it and everything left in it are gone.
    NsFreed,
    /// Shm segment `id` (with `key`) of namespace `ns` was freed. `ns_dying`: its namespace
    /// was being torn down when the free came; `ns_freed`: even freed already (the segment
    /// was that life's, not the one that may have the inum now); `rmid_forced`: the namespace has
    /// kernel.shm_rmid_forced set (read while the namespace's memory is there, dying or not;
    /// false once it is freed).
    ShmFreed {
        id: i32,
        key: i32,
        ns_dying: bool,
        ns_freed: bool,
        rmid_forced: bool,
    },
    /// A cgroup was made in the attributed hierarchy (by the task, a container runtime).
    CgroupMkdir { cgroup: u64 },
    /// A cgroup of the attributed hierarchy was removed; `container` is the container it was
    /// (the agent resolves it: [`ContainerRef::NONE`] as decoded).
    CgroupRmdir {
        cgroup: u64,
        container: ContainerRef,
    },
}

/// One decoded kernel event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub task: Task,
    /// The task's IPC namespace at the event.
    pub ns: NsRef,
    pub body: Body,
}

/// Copies a record out of ring-buffer bytes (which need not be aligned) and types it.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() != Record::SIZE {
        return Err(DecodeError::BadLength(bytes.len()));
    }
    // SAFETY: the length is checked and every bit pattern is a valid `Record` (plain integers);
    // read_unaligned copies, so the source alignment does not matter.
    let record: Record = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Record>()) };
    let kind = EventKind::from_record(record.kind).ok_or(DecodeError::UnknownKind(record.kind))?;
    let args: [u64; RECORD_ARGS] = record.args;
    let result = sys_result(record.ret);
    // Syscall arguments arrive as 8-byte slots; `int` arguments are the low 32 bits.
    let int = |i: usize| args[i] as i32;
    let body = match kind {
        EventKind::MsgGet => Body::Get {
            object: IpcObject::Msg,
            key: int(0),
            flags: int(1),
            size: 0,
            result,
        },
        EventKind::ShmGet => Body::Get {
            object: IpcObject::Shm,
            key: int(0),
            flags: int(2),
            size: args[1],
            result,
        },
        EventKind::SemGet => Body::Get {
            object: IpcObject::Sem,
            key: int(0),
            flags: int(2),
            size: int(1) as u64,
            result,
        },
        EventKind::MsgCtl => Body::Ctl {
            object: IpcObject::Msg,
            id: int(0),
            cmd: int(1),
            semnum: 0,
            still_listed: false,
            result,
        },
        EventKind::ShmCtl => Body::Ctl {
            object: IpcObject::Shm,
            id: int(0),
            cmd: int(1),
            semnum: 0,
            still_listed: args[3] != 0,
            result,
        },
        EventKind::SemCtl => Body::Ctl {
            object: IpcObject::Sem,
            id: int(0),
            cmd: int(2),
            semnum: int(1),
            still_listed: false,
            result,
        },
        EventKind::ShmAttach => Body::ShmAttach {
            id: int(0),
            requested_addr: args[1],
            flags: int(2),
            result,
        },
        EventKind::ShmDetach => Body::ShmDetach {
            addr: args[0],
            rmid_forced: args[1] != 0,
            result,
        },
        EventKind::Unshare => Body::Unshare {
            flags: args[0],
            from: record.other_ns,
            result,
        },
        EventKind::Setns => Body::Setns {
            fd: int(0),
            nstype: int(1),
            from: record.other_ns,
            result,
        },
        EventKind::Clone => Body::Clone {
            flags: args[0],
            child_pid: args[1] as u32,
            from: record.other_ns,
            result,
        },
        EventKind::ProcessExit => Body::ProcessExit {
            rmid_forced: args[0] != 0,
        },
        EventKind::NsFreed => Body::NsFreed,
        EventKind::ShmFreed => Body::ShmFreed {
            id: int(0),
            key: int(1),
            ns_dying: args[2] != 0,
            ns_freed: args[2] == 2,
            rmid_forced: args[3] != 0,
        },
        EventKind::CgroupMkdir => Body::CgroupMkdir { cgroup: args[0] },
        EventKind::CgroupRmdir => Body::CgroupRmdir {
            cgroup: args[0],
            container: ContainerRef::NONE,
        },
        EventKind::MsgSend | EventKind::MsgReceive | EventKind::SemOp => {
            unreachable!("from_record gives no activity kind")
        }
    };
    Ok(KernelEvent {
        ts_ns: record.ts_ns,
        task: Task {
            pid: record.pid,
            tid: record.tid,
            ppid: record.ppid,
            uid: record.uid,
            euid: record.euid,
            comm: record.comm,
            cgroup: record.cgroup,
            container: ContainerRef::NONE,
        },
        ns: record.ns,
        body,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A task of process `pid` named `comm`, in `container`.
    pub(crate) fn task(pid: u32, comm: &[u8], container: ContainerRef) -> Task {
        let mut bytes = [0; 16];
        bytes[..comm.len()].copy_from_slice(comm);
        Task {
            pid,
            tid: pid,
            ppid: 1,
            uid: 0,
            euid: 0,
            comm: bytes,
            cgroup: 0,
            container,
        }
    }

    pub(crate) fn ns(inum: u32, id: u64) -> NsRef {
        NsRef { id, inum, life: 0 }
    }

    /// The bytes a probe would write for this record.
    pub(crate) fn record_bytes(kind: EventKind, ret: i64, args: [u64; 4]) -> Vec<u8> {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"ipcmk\xff");
        let record = Record {
            kind: kind as u32,
            pid: 100,
            tid: 101,
            uid: 1000,
            ts_ns: 5_000,
            ns: ns(4026532177, 42),
            other_ns: ns(4026531839, 1),
            ret,
            args,
            comm,
            cgroup: 77,
            euid: 1001,
            ppid: 99,
        };
        bytes_of(&record)
    }

    /// A record's bytes as the ring buffer holds them, owned (for strategies and tables).
    pub(crate) fn bytes_of(record: &Record) -> Vec<u8> {
        record.to_bytes().to_vec()
    }

    #[test]
    fn decodes_each_kind() {
        let cases: &[(EventKind, i64, [u64; 4], Body)] = &[
            (
                EventKind::MsgGet,
                3,
                [0x1234, 0o1600, 0, 0],
                Body::Get {
                    object: IpcObject::Msg,
                    key: 0x1234,
                    flags: 0o1600,
                    size: 0,
                    result: Ok(3),
                },
            ),
            (
                EventKind::ShmGet,
                -2,
                [7, 4096, 0o600, 0],
                Body::Get {
                    object: IpcObject::Shm,
                    key: 7,
                    flags: 0o600,
                    size: 4096,
                    result: Err(2),
                },
            ),
            (
                EventKind::SemGet,
                9,
                [u32::MAX as u64, 4, 0o1600, 0],
                Body::Get {
                    object: IpcObject::Sem,
                    key: -1,
                    flags: 0o1600,
                    size: 4,
                    result: Ok(9),
                },
            ),
            (
                EventKind::MsgCtl,
                0,
                [3, 0, 0, 0],
                Body::Ctl {
                    object: IpcObject::Msg,
                    id: 3,
                    cmd: 0,
                    semnum: 0,
                    still_listed: false,
                    result: Ok(0),
                },
            ),
            (
                EventKind::ShmCtl,
                -22,
                [5, 0x102, 0, 0],
                Body::Ctl {
                    object: IpcObject::Shm,
                    id: 5,
                    cmd: 0x102,
                    semnum: 0,
                    still_listed: false,
                    result: Err(22),
                },
            ),
            (
                EventKind::SemCtl,
                1,
                [9, 2, 12, 0],
                Body::Ctl {
                    object: IpcObject::Sem,
                    id: 9,
                    cmd: 12,
                    semnum: 2,
                    still_listed: false,
                    result: Ok(1),
                },
            ),
            (
                EventKind::ShmAttach,
                0x7f00_0000_0000,
                [5, 0, 0o10000, 0],
                Body::ShmAttach {
                    id: 5,
                    requested_addr: 0,
                    flags: 0o10000,
                    result: Ok(0x7f00_0000_0000),
                },
            ),
            (
                EventKind::ShmDetach,
                0,
                [0x7f00_0000_0000, 1, 0, 0],
                Body::ShmDetach {
                    addr: 0x7f00_0000_0000,
                    rmid_forced: true,
                    result: Ok(0),
                },
            ),
            (
                EventKind::Unshare,
                0,
                [0x0800_0000, 0, 0, 0],
                Body::Unshare {
                    flags: 0x0800_0000,
                    from: ns(4026531839, 1),
                    result: Ok(0),
                },
            ),
            (
                EventKind::Setns,
                -1,
                [3, 0x0800_0000, 0, 0],
                Body::Setns {
                    fd: 3,
                    nstype: 0x0800_0000,
                    from: ns(4026531839, 1),
                    result: Err(1),
                },
            ),
            (
                EventKind::Clone,
                200,
                [0x0800_0011, 200, 0, 0],
                Body::Clone {
                    flags: 0x0800_0011,
                    child_pid: 200,
                    from: ns(4026531839, 1),
                    result: Ok(200),
                },
            ),
            (
                EventKind::ProcessExit,
                0,
                [0; 4],
                Body::ProcessExit { rmid_forced: false },
            ),
            (EventKind::NsFreed, 0, [0; 4], Body::NsFreed),
            (
                EventKind::ShmFreed,
                0,
                [7, u32::MAX as u64, 1, 0],
                Body::ShmFreed {
                    id: 7,
                    key: -1,
                    ns_dying: true,
                    ns_freed: false,
                    rmid_forced: false,
                },
            ),
            (
                EventKind::ShmCtl,
                0,
                [5, 0, 0, 1],
                Body::Ctl {
                    object: IpcObject::Shm,
                    id: 5,
                    cmd: 0,
                    semnum: 0,
                    still_listed: true,
                    result: Ok(0),
                },
            ),
        ];
        for (kind, ret, args, body) in cases {
            let event = decode(&record_bytes(*kind, *ret, *args)).unwrap();
            assert_eq!(event.body, *body, "{kind:?}");
            assert_eq!(event.task.pid, 100);
            assert_eq!(event.task.tid, 101);
            assert_eq!(event.task.uid, 1000);
            assert_eq!(event.task.comm_bytes(), b"ipcmk\xff");
            assert_eq!(event.ns, ns(4026532177, 42));
            assert_eq!(event.ts_ns, 5_000);
        }
    }

    #[test]
    fn decodes_from_unaligned_bytes() {
        let mut shifted = vec![0u8];
        shifted.extend(record_bytes(EventKind::MsgGet, 1, [1, 0, 0, 0]));
        assert!(decode(&shifted[1..]).is_ok());
    }

    #[test]
    fn rejects_bad_length_and_unknown_kind() {
        let bytes = record_bytes(EventKind::MsgGet, 1, [0; 4]);
        assert_eq!(decode(&bytes[..50]), Err(DecodeError::BadLength(50)));
        assert_eq!(decode(&[]), Err(DecodeError::BadLength(0)));
        let mut unknown = bytes.clone();
        unknown[..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(999)));
    }
}
