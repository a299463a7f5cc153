//! An IPC namespace's limits (its `kernel.msg*`, `kernel.shm*`, `kernel.sem` and
//! `fs.mqueue.*` sysctls, which are per IPC namespace), and which of them a failed get hit.
//!
//! Pure: the values are read elsewhere ([`crate::inventory::read_limits_of_task`], from a
//! thread inside the namespace), the namespace's use comes from the lifecycle engine.

use serde::Serialize;

use crate::names::IpcObject;

/// The IPC sysctls of one namespace, as `/proc/sys` shows them inside it. Field names are
/// part of the JSON contract (docs/events.md): the sysctls' own names, `kernel.sem`'s four
/// values by the names `ipcs -l` and the kernel give them, and `fs.mqueue.*` prefixed `mq_`;
/// in the order of their names, as serde_json's `Value` (the tests' lines) has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// `fs.mqueue.msg_max`, where the kernel has /proc/sys/fs/mqueue (so for the other two).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mq_msg_max: Option<u64>,
    /// `fs.mqueue.msgsize_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mq_msgsize_max: Option<u64>,
    /// `fs.mqueue.queues_max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mq_queues_max: Option<u64>,
    /// Bytes in one message (`kernel.msgmax`).
    pub msgmax: u64,
    /// Default byte limit of a new queue (`kernel.msgmnb`).
    pub msgmnb: u64,
    /// Queues in the namespace (`kernel.msgmni`).
    pub msgmni: u64,
    /// `kernel.sem`'s fourth: sets in the namespace.
    pub semmni: u64,
    /// `kernel.sem`'s second: semaphores in all the namespace's sets together.
    pub semmns: u64,
    /// `kernel.sem`'s first value: semaphores in one set.
    pub semmsl: u64,
    /// `kernel.sem`'s third: operations in one `semop`.
    pub semopm: u64,
    /// Pages of all the namespace's segments together (`kernel.shmall`).
    pub shmall: u64,
    /// Bytes in one segment (`kernel.shmmax`).
    pub shmmax: u64,
    /// Segments in the namespace (`kernel.shmmni`).
    pub shmmni: u64,
}

/// The files read, relative to /proc/sys.
pub const KERNEL_FILES: [&str; 7] = [
    "kernel/msgmni",
    "kernel/msgmax",
    "kernel/msgmnb",
    "kernel/shmmax",
    "kernel/shmall",
    "kernel/shmmni",
    "kernel/sem",
];
pub const MQUEUE_FILES: [&str; 3] = [
    "fs/mqueue/queues_max",
    "fs/mqueue/msg_max",
    "fs/mqueue/msgsize_max",
];

/// One sysctl's value: a single unsigned number (`shmmax` can be close to 2^64).
pub fn parse_one(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `kernel.sem`: four numbers separated by tabs (`semmsl semmns semopm semmni`).
pub fn parse_sem(text: &str) -> Option<[u64; 4]> {
    let mut values = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let sem = [
        values.next()??,
        values.next()??,
        values.next()??,
        values.next()??,
    ];
    values.next().is_none().then_some(sem)
}

/// What a namespace uses, from the lifecycle engine's state, for a failed get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsUse {
    pub msg: u64,
    pub shm: u64,
    pub sem: u64,
    /// Bytes of its segments, when the engine keeps their sizes.
    pub shm_bytes: Option<u64>,
}

/// The limit a failed get hit: its name (a field of [`Limits`], or `shmmin`), its value, what
/// the namespace used of it (for the namespace-wide ones, from the agent's own state), and what
/// the get asked for (for the per-object ones: a segment's size, a set's semaphores). Fields in
/// the order of their names, as the JSON has them (serde's and the hot path's lines agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LimitHit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked: Option<u64>,
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    pub value: u64,
}

const ENOSPC: i32 = libc::ENOSPC;
const EINVAL: i32 = libc::EINVAL;
/// `SHMMIN` (include/uapi/linux/shm.h): the smallest segment.
const SHMMIN: u64 = 1;
/// The kernel counts `shmall` in pages of this size (x86-64).
const PAGE_SIZE: u64 = 4096;

/// Which limit a `msgget`/`shmget`/`semget` that failed with `errno` hit, from the namespace's
/// `limits` and `used`; `size` is the get's size (shm) or nsems (sem). `None` for failures that
/// are not a limit (`ENOENT`, `EACCES`, `EEXIST`; `EINVAL` for an existing object's size), or
/// an `ENOSPC` none of the limits explains (the agent's counts fell behind the kernel's).
///
/// The kernel's checks (ipc/msg.c `newque`, ipc/shm.c `newseg`, ipc/sem.c `newary`, and
/// `ipc_addid`'s `in_use >= min(ctlmni, IPCMNI)`):
/// - msgget `ENOSPC`: `msgmni` queues exist.
/// - shmget `EINVAL`: size below `SHMMIN` or above `shmmax`; `ENOSPC`: `shmmni` segments exist,
///   or the new segment's pages would take the namespace over `shmall`.
/// - semget `EINVAL`: nsems above `semmsl` (or negative); `ENOSPC`: `semmni` sets exist, or the
///   new set's semaphores would take it over `semmns`.
pub fn hit(
    object: IpcObject,
    errno: i32,
    size: u64,
    limits: &Limits,
    used: &NsUse,
) -> Option<LimitHit> {
    let count = |name, value, used| LimitHit {
        name,
        value,
        used: Some(used),
        asked: None,
    };
    match (object, errno) {
        (IpcObject::Msg, ENOSPC) => Some(count("msgmni", limits.msgmni, used.msg)),
        (IpcObject::Shm, EINVAL) if size > limits.shmmax => Some(LimitHit {
            name: "shmmax",
            value: limits.shmmax,
            used: None,
            asked: Some(size),
        }),
        (IpcObject::Shm, EINVAL) if size < SHMMIN => Some(LimitHit {
            name: "shmmin",
            value: SHMMIN,
            used: None,
            asked: Some(size),
        }),
        (IpcObject::Shm, ENOSPC) if used.shm >= limits.shmmni => {
            Some(count("shmmni", limits.shmmni, used.shm))
        }
        (IpcObject::Shm, ENOSPC) => Some(LimitHit {
            name: "shmall",
            value: limits.shmall,
            used: used.shm_bytes.map(|bytes| bytes.div_ceil(PAGE_SIZE)),
            asked: Some(size.div_ceil(PAGE_SIZE)),
        }),
        // semget's nsems is an int: a negative one reaches here as a huge u64, and is no limit.
        (IpcObject::Sem, EINVAL) if size > limits.semmsl && size <= i32::MAX as u64 => {
            Some(LimitHit {
                name: "semmsl",
                value: limits.semmsl,
                used: None,
                asked: Some(size),
            })
        }
        (IpcObject::Sem, ENOSPC) if used.sem >= limits.semmni => {
            Some(count("semmni", limits.semmni, used.sem))
        }
        (IpcObject::Sem, ENOSPC) => Some(LimitHit {
            name: "semmns",
            value: limits.semmns,
            used: None,
            asked: Some(size),
        }),
        _ => None,
    }
}

/// Which limit an `mq_open` that failed with `errno` hit, from the namespace's `limits`;
/// `create`: it had `O_CREAT`; `maxmsg`/`msgsize`: the attributes it gave (0: none);
/// `queues`: the queues the namespace has, as the agent knows them. `None` for failures that
/// are not a limit, and where the kernel has no /proc/sys/fs/mqueue.
///
/// The kernel's checks (ipc/mqueue.c), for a task without CAP_SYS_RESOURCE, which a
/// container's root lacks unless given it: `ENOSPC` when the namespace's `mq_queues_count`
/// reached `mq_queues_max` (`mqueue_create_attr`); `EINVAL` when `mq_maxmsg > mq_msg_max` or
/// `mq_msgsize > mq_msgsize_max` (`mq_attr_ok`). Where both fail, 6.18 reports the count.
pub fn mqueue_hit(
    errno: i32,
    create: bool,
    [maxmsg, msgsize]: [u64; 2],
    limits: &Limits,
    queues: u64,
) -> Option<LimitHit> {
    let asked = |name, value: Option<u64>, asked| {
        Some(LimitHit {
            name,
            value: value?,
            used: None,
            asked: Some(asked),
        })
    };
    match errno {
        _ if !create => None,
        ENOSPC => Some(LimitHit {
            name: "mq_queues_max",
            value: limits.mq_queues_max?,
            used: Some(queues),
            asked: None,
        }),
        EINVAL if limits.mq_msg_max.is_some_and(|max| maxmsg > max) => {
            asked("mq_msg_max", limits.mq_msg_max, maxmsg)
        }
        EINVAL if limits.mq_msgsize_max.is_some_and(|max| msgsize > max) => {
            asked("mq_msgsize_max", limits.mq_msgsize_max, msgsize)
        }
        _ => None,
    }
}

/// Limits as a namespace made on this kernel has them (msgmni 32000, …), with or without
/// `fs.mqueue`: for samples and tests.
#[cfg(test)]
pub fn sample(mqueue: bool) -> Limits {
    Limits {
        msgmni: 32000,
        msgmax: 8192,
        msgmnb: 16384,
        shmmax: 18_446_744_073_692_774_399,
        shmall: 18_446_744_073_692_774_399,
        shmmni: 4096,
        semmsl: 32000,
        semmns: 1_024_000_000,
        semopm: 500,
        semmni: 32000,
        mq_queues_max: mqueue.then_some(256),
        mq_msg_max: mqueue.then_some(10),
        mq_msgsize_max: mqueue.then_some(8192),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            msgmni: 2,
            msgmax: 8192,
            msgmnb: 16384,
            shmmax: 4096,
            shmall: 100,
            shmmni: 3,
            semmsl: 10,
            semmns: 50,
            semopm: 500,
            semmni: 4,
            mq_queues_max: Some(256),
            mq_msg_max: Some(10),
            mq_msgsize_max: Some(8192),
        }
    }

    fn used(msg: u64, shm: u64, sem: u64) -> NsUse {
        NsUse {
            msg,
            shm,
            sem,
            shm_bytes: None,
        }
    }

    #[test]
    fn sysctl_text_parses() {
        assert_eq!(parse_one("32000\n"), Some(32000));
        assert_eq!(
            parse_one("18446744073692774399\n"),
            Some(18_446_744_073_692_774_399)
        );
        assert_eq!(parse_one("x\n"), None);
        assert_eq!(
            parse_sem("32000\t1024000000\t500\t32000\n"),
            Some([32000, 1_024_000_000, 500, 32000])
        );
        assert_eq!(parse_sem("250 32000 32\n"), None);
        assert_eq!(parse_sem("250 32000 32 128 5\n"), None);
    }

    #[test]
    fn msgget_enospc_is_msgmni_with_the_queues_in_use() {
        let hit = hit(IpcObject::Msg, libc::ENOSPC, 0, &limits(), &used(2, 0, 0)).unwrap();
        assert_eq!(
            hit,
            LimitHit {
                name: "msgmni",
                value: 2,
                used: Some(2),
                asked: None
            }
        );
    }

    #[test]
    fn shmget_einval_above_shmmax_or_below_shmmin() {
        let big = hit(
            IpcObject::Shm,
            libc::EINVAL,
            8192,
            &limits(),
            &used(0, 0, 0),
        )
        .unwrap();
        assert_eq!(
            (big.name, big.value, big.asked),
            ("shmmax", 4096, Some(8192))
        );
        let zero = hit(IpcObject::Shm, libc::EINVAL, 0, &limits(), &used(0, 0, 0)).unwrap();
        assert_eq!((zero.name, zero.value), ("shmmin", 1));
        // EINVAL for a size the limits allow: an existing segment is smaller. No limit.
        assert_eq!(
            hit(IpcObject::Shm, libc::EINVAL, 100, &limits(), &used(0, 1, 0)),
            None
        );
    }

    #[test]
    fn shmget_enospc_is_shmmni_when_full_else_shmall() {
        let full = hit(IpcObject::Shm, libc::ENOSPC, 10, &limits(), &used(0, 3, 0)).unwrap();
        assert_eq!((full.name, full.used), ("shmmni", Some(3)));
        let mut bytes = used(0, 1, 0);
        bytes.shm_bytes = Some(4096 * 99 + 1);
        let pages = hit(IpcObject::Shm, libc::ENOSPC, 4097, &limits(), &bytes).unwrap();
        assert_eq!(
            (pages.name, pages.value, pages.used, pages.asked),
            ("shmall", 100, Some(100), Some(2))
        );
    }

    #[test]
    fn semget_limits() {
        let big = hit(IpcObject::Sem, libc::EINVAL, 11, &limits(), &used(0, 0, 0)).unwrap();
        assert_eq!((big.name, big.value, big.asked), ("semmsl", 10, Some(11)));
        let negative = hit(
            IpcObject::Sem,
            libc::EINVAL,
            -1i64 as u64,
            &limits(),
            &used(0, 0, 0),
        );
        assert_eq!(negative, None);
        let full = hit(IpcObject::Sem, libc::ENOSPC, 1, &limits(), &used(0, 0, 4)).unwrap();
        assert_eq!((full.name, full.used), ("semmni", Some(4)));
        let sems = hit(IpcObject::Sem, libc::ENOSPC, 9, &limits(), &used(0, 0, 1)).unwrap();
        assert_eq!((sems.name, sems.asked), ("semmns", Some(9)));
    }

    #[test]
    fn other_errors_hit_no_limit() {
        for errno in [libc::ENOENT, libc::EACCES, libc::EEXIST, libc::ENOMEM] {
            for object in [IpcObject::Msg, IpcObject::Shm, IpcObject::Sem] {
                assert_eq!(hit(object, errno, 1, &limits(), &used(9, 9, 9)), None);
            }
        }
        assert_eq!(
            hit(IpcObject::Msg, libc::EINVAL, 0, &limits(), &used(0, 0, 0)),
            None
        );
    }

    #[test]
    fn an_mq_open_names_the_fs_mqueue_limit_it_hit() {
        let hit = |errno, create, attr| mqueue_hit(errno, create, attr, &limits(), 256);
        let hit_named = |name, value, used, asked| {
            Some(LimitHit {
                name,
                value,
                used,
                asked,
            })
        };
        assert_eq!(
            hit(ENOSPC, true, [0, 0]),
            hit_named("mq_queues_max", 256, Some(256), None)
        );
        assert_eq!(
            hit(EINVAL, true, [11, 64]),
            hit_named("mq_msg_max", 10, None, Some(11))
        );
        assert_eq!(
            hit(EINVAL, true, [10, 8193]),
            hit_named("mq_msgsize_max", 8192, None, Some(8193))
        );
        // Within the limits (EINVAL for a zero attribute), without O_CREAT (an open only
        // finds), another errno, a kernel without fs.mqueue: no limit.
        assert_eq!(hit(EINVAL, true, [10, 64]), None);
        assert_eq!(hit(ENOSPC, false, [0, 0]), None);
        assert_eq!(hit(libc::ENOENT, true, [11, 64]), None);
        let without_mqueue = Limits {
            mq_queues_max: None,
            mq_msg_max: None,
            mq_msgsize_max: None,
            ..limits()
        };
        assert_eq!(mqueue_hit(ENOSPC, true, [0, 0], &without_mqueue, 3), None);
    }
}
