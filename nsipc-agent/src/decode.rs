//! Ring-buffer bytes → typed kernel events. Pure: no I/O, no allocation.

use nsipc_common::{EventKind, MqueueRecord, MqueueTail, NsRef, RECORD_ARGS, Record};
use thiserror::Error;

use crate::names::IpcObject;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes, expected {expected}", expected = Record::SIZE)]
    BadLength(usize),
    #[error("{0:?} record of {1} bytes, expected {expected}", expected = MqueueRecord::SIZE)]
    BadMqueueLength(EventKind, usize),
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// `mq_open(name, oflag, mode, attr)`: `maxmsg`/`msgsize` as asked (0: no attributes);
    /// `ino`: the inode of the queue the returned fd is open on (0: not read).
    MqueueOpen {
        name: MqueueName,
        oflag: i32,
        mode: u32,
        maxmsg: u64,
        msgsize: u64,
        ino: u64,
        result: SysResult<i64>,
    },
    MqueueUnlink {
        name: MqueueName,
        result: SysResult<i64>,
    },
    /// A queue's inode was evicted: the queue is gone, or a failed `mq_open` (`syscall` is
    /// then `SYS_mq_open`) dropped the inode it made. `ino` None: the hook could not tell
    /// which queue's (the kfree program). `syscall`: the number of the syscall the evicting
    /// thread was in (0 for a kernel thread, -1 unread).
    MqueueEvicted { ino: Option<u64>, syscall: i64 },
}

/// A POSIX message queue's name as the caller passed it to the kernel (no leading `/`): any
/// bytes but NUL. Kept on the heap: records of other kinds stay small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MqueueName(pub Box<[u8]>);

impl MqueueName {
    /// As `mq_open(3)` takes it and `/dev/mqueue` lists it: with the leading `/`, invalid
    /// UTF-8 replaced.
    pub fn display(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.0))
    }
}

/// One decoded kernel event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub task: Task,
    /// The task's IPC namespace at the event.
    pub ns: NsRef,
    pub body: Body,
}

/// Copies a record out of ring-buffer bytes (which need not be aligned) and types it. Only
/// the mqueue kinds' records allocate (their names).
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() < Record::SIZE {
        return Err(DecodeError::BadLength(bytes.len()));
    }
    // SAFETY: the length is checked and every bit pattern is a valid `Record` (plain integers);
    // read_unaligned copies, so the source alignment does not matter.
    let record: Record = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Record>()) };
    let kind = EventKind::from_record(record.kind).ok_or(DecodeError::UnknownKind(record.kind))?;
    let tail = if kind.has_mqueue_tail() {
        if bytes.len() != MqueueRecord::SIZE {
            return Err(DecodeError::BadMqueueLength(kind, bytes.len()));
        }
        // SAFETY: as above; the tail follows the record.
        Some(unsafe {
            std::ptr::read_unaligned(bytes[Record::SIZE..].as_ptr().cast::<MqueueTail>())
        })
    } else if bytes.len() != Record::SIZE {
        return Err(DecodeError::BadLength(bytes.len()));
    } else {
        None
    };
    let name = || {
        let name = tail.as_ref().map_or(&[][..], |tail| {
            let end = tail
                .name
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(tail.name.len());
            &tail.name[..end]
        });
        MqueueName(name.into())
    };
    let ino = tail.as_ref().map_or(0, |tail| tail.ino);
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
        EventKind::MqueueOpen => Body::MqueueOpen {
            name: name(),
            oflag: int(0),
            mode: args[1] as u32,
            maxmsg: args[2],
            msgsize: args[3],
            ino,
            result,
        },
        EventKind::MqueueUnlink => Body::MqueueUnlink {
            name: name(),
            result,
        },
        EventKind::MqueueEvicted => Body::MqueueEvicted {
            ino: (ino != 0).then_some(ino),
            syscall: args[0] as i64,
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

    /// The inode number and name of every mqueue kind's record that [`bytes_of`] writes.
    pub(crate) const TAIL_INO: u64 = 31337;
    pub(crate) const TAIL_NAME: &[u8] = b"jobs\xff";

    /// A record's bytes as the ring buffer holds them, owned (for strategies and tables); an
    /// mqueue kind's with a tail naming [`TAIL_NAME`] and [`TAIL_INO`], garbage past the NUL.
    pub(crate) fn bytes_of(record: &Record) -> Vec<u8> {
        let mut bytes = record.to_bytes().to_vec();
        if EventKind::from_record(record.kind).is_some_and(EventKind::has_mqueue_tail) {
            bytes.extend(TAIL_INO.to_ne_bytes());
            let mut name = [0xaa; nsipc_common::MQUEUE_NAME_LEN];
            name[..TAIL_NAME.len()].copy_from_slice(TAIL_NAME);
            name[TAIL_NAME.len()] = 0;
            bytes.extend(name);
        }
        bytes
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
            (
                EventKind::MqueueOpen,
                3,
                [0o102, 0o640, 4, 64],
                Body::MqueueOpen {
                    name: MqueueName(TAIL_NAME.into()),
                    oflag: 0o102,
                    mode: 0o640,
                    maxmsg: 4,
                    msgsize: 64,
                    ino: TAIL_INO,
                    result: Ok(3),
                },
            ),
            (
                EventKind::MqueueUnlink,
                -2,
                [0; 4],
                Body::MqueueUnlink {
                    name: MqueueName(TAIL_NAME.into()),
                    result: Err(2),
                },
            ),
            (
                EventKind::MqueueEvicted,
                0,
                [3, 0, 0, 0],
                Body::MqueueEvicted {
                    ino: Some(TAIL_INO),
                    syscall: 3,
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
        // An mqueue kind's record needs its tail, and others must not have one.
        let open = record_bytes(EventKind::MqueueOpen, 3, [0; 4]);
        assert_eq!(
            decode(&open[..Record::SIZE]),
            Err(DecodeError::BadMqueueLength(
                EventKind::MqueueOpen,
                Record::SIZE
            ))
        );
        let mut long = bytes;
        long.extend([0; 8]);
        assert_eq!(decode(&long), Err(DecodeError::BadLength(Record::SIZE + 8)));
    }

    #[test]
    fn an_unnamed_eviction_and_a_name_without_nul() {
        let mut bytes = record_bytes(EventKind::MqueueEvicted, 0, [0; 4]);
        bytes[Record::SIZE..Record::SIZE + 8].copy_from_slice(&0u64.to_ne_bytes());
        assert_eq!(
            decode(&bytes).unwrap().body,
            Body::MqueueEvicted {
                ino: None,
                syscall: 0
            }
        );
        let mut bytes = record_bytes(EventKind::MqueueUnlink, 0, [0; 4]);
        bytes[Record::SIZE + 8..].fill(b'q');
        let Body::MqueueUnlink { name, .. } = decode(&bytes).unwrap().body else {
            panic!("an unlink");
        };
        assert_eq!(name.0.len(), nsipc_common::MQUEUE_NAME_LEN);
    }
}
