//! Lines of every kind the agent writes, made by the writers `trace` and `snapshot` use:
//! [`KernelEventJson`] (raw events, through serde_json as the sink writes them),
//! [`FieldsLine::write_json`] of [`LifecycleJson`] (lifecycle events, the hot path's
//! [`Line`](crate::output::json::Line) writer), [`output::inventory::write_lines`] (the
//! inventory's lines) and [`AgentEvent`] (serde derive). Each optional field is present in some sample and absent in another, and each
//! value of a field with a closed set of values (reasons, errno and command names, backends…)
//! appears: the schema is inferred from these lines, so what they leave out it refuses.
//!
//! The `all_*` lists are exhaustive by construction: each has a `match` with no wildcard, so a
//! new variant does not compile until it is sampled.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nsipc_common::{HOST_IPC_NS_INUM, KernelOffsets, NsRef};

use crate::{
    attribution::Attribution,
    containers::{Container, Pod, Runtime},
    decode::{Body, ContainerRef, KernelEvent, MqueueName, SysResult, Task},
    inventory::{
        FdHolder, Inventory, IpcPerm, MountHolder, MqueueInfo, NamespaceInfo, ObjectDetail,
        ObjectInfo, ProcessInfo, mqueue::MqueueAttr,
    },
    lifecycle::{
        DestroyReason, JoinKind, KeyHome, Lifecycle, MqueueIdent, NsIdent, ObjectCounts,
        OrphanCause, Via,
    },
    limits::{self, LimitHit},
    names::IpcObject,
    output,
    output::agent_events::{AgentEvent, ResyncCause},
    output::fields::WallClock,
    output::kernel_events::{KernelEventJson, kind_name},
    output::sink::JsonLines,
    output::{json::FieldsLine, lifecycle_events::LifecycleJson},
    probes::{Backend, FreeHooks, HookChoice},
};

pub fn all_objects() -> [IpcObject; 3] {
    let _exhaustive = |o: IpcObject| match o {
        IpcObject::Msg | IpcObject::Shm | IpcObject::Sem => {}
    };
    [IpcObject::Msg, IpcObject::Shm, IpcObject::Sem]
}

fn all_runtimes() -> [Runtime; 6] {
    let _exhaustive = |r: Runtime| match r {
        Runtime::Docker
        | Runtime::Podman
        | Runtime::Containerd
        | Runtime::CriO
        | Runtime::Lxc
        | Runtime::SystemdNspawn => {}
    };
    [
        Runtime::Docker,
        Runtime::Podman,
        Runtime::Containerd,
        Runtime::CriO,
        Runtime::Lxc,
        Runtime::SystemdNspawn,
    ]
}

/// The reasons the engine gives a POSIX message queue.
const MQUEUE_DESTROY_REASONS: [DestroyReason; 4] = [
    DestroyReason::Unlink,
    DestroyReason::LastClose,
    DestroyReason::NamespaceTeardown,
    DestroyReason::Unknown,
];

/// The reasons the engine gives an object of this kind (`last_detach` and `rmid_forced` are a
/// segment's only), and a namespace (`None`).
fn destroy_reasons(object: Option<IpcObject>) -> Vec<DestroyReason> {
    let _exhaustive = |r: DestroyReason| match r {
        DestroyReason::Rmid
        | DestroyReason::LastDetach
        | DestroyReason::NamespaceTeardown
        | DestroyReason::RmidForced
        | DestroyReason::Freed
        | DestroyReason::Unknown
        | DestroyReason::Unlink
        | DestroyReason::LastClose => {}
    };
    match object {
        None => vec![DestroyReason::Freed, DestroyReason::Unknown],
        Some(IpcObject::Shm) => vec![
            DestroyReason::Rmid,
            DestroyReason::LastDetach,
            DestroyReason::NamespaceTeardown,
            DestroyReason::RmidForced,
            DestroyReason::Unknown,
        ],
        Some(IpcObject::Msg | IpcObject::Sem) => vec![
            DestroyReason::Rmid,
            DestroyReason::NamespaceTeardown,
            DestroyReason::Unknown,
        ],
    }
}

fn all_join_kinds() -> [JoinKind; 3] {
    let _exhaustive = |k: JoinKind| match k {
        JoinKind::Exec | JoinKind::Share | JoinKind::Setns => {}
    };
    [JoinKind::Exec, JoinKind::Share, JoinKind::Setns]
}

fn all_vias() -> [Via; 2] {
    let _exhaustive = |v: Via| match v {
        Via::Unshare | Via::Clone => {}
    };
    [Via::Unshare, Via::Clone]
}

fn all_orphan_causes() -> [OrphanCause; 2] {
    let _exhaustive = |c: OrphanCause| match c {
        OrphanCause::ContainerEnded | OrphanCause::CreatorExited { .. } => {}
    };
    [
        OrphanCause::ContainerEnded,
        OrphanCause::CreatorExited { pid: 4242 },
    ]
}

fn all_resync_causes() -> [ResyncCause; 3] {
    let _exhaustive = |c: ResyncCause| match c {
        ResyncCause::Lost | ResyncCause::KfreeSkipped | ResyncCause::KfreeUnverified => {}
    };
    [
        ResyncCause::Lost,
        ResyncCause::KfreeSkipped,
        ResyncCause::KfreeUnverified,
    ]
}

fn all_free_hooks() -> [FreeHooks; 3] {
    let _exhaustive = |f: FreeHooks| match f {
        FreeHooks::Fentry | FreeHooks::Kprobe | FreeHooks::Kfree => {}
    };
    [FreeHooks::Fentry, FreeHooks::Kprobe, FreeHooks::Kfree]
}

/// The signals that end `trace` with an `agent.stop` (trace/mod.rs's `Ending::Signal`).
const STOP_SIGNALS: [&str; 2] = ["SIGINT", "SIGTERM"];

/// Every errno value the kernel has (and one past them, which has no name here): named ones
/// are written as names, the others as numbers.
/// The limit a failed get names: a count with its use for `ENOSPC`, a size with what was asked
/// for `EINVAL`.
fn sample_limit(object: IpcObject, errno: i32) -> Option<LimitHit> {
    let (name, asked) = match (object, errno) {
        (IpcObject::Msg, libc::ENOSPC) => ("msgmni", None),
        (IpcObject::Shm, libc::ENOSPC) => ("shmmni", None),
        (IpcObject::Sem, libc::ENOSPC) => ("semmni", None),
        (IpcObject::Shm, libc::EINVAL) => ("shmmax", Some(8192)),
        (IpcObject::Sem, libc::EINVAL) => ("semmsl", Some(300)),
        _ => return None,
    };
    Some(LimitHit {
        name,
        value: 4096,
        used: asked.is_none().then_some(4096),
        asked,
    })
}

fn errnos() -> impl Iterator<Item = i32> {
    (1..=133).chain([4095])
}

/// The sample's own process as a task, so that its command line can be read from /proc (the
/// `cmdline` field), and a task whose process is gone (no `cmdline`).
struct Tasks {
    live: Task,
    gone: Task,
}

fn tasks() -> Tasks {
    let own_comm = std::fs::read("/proc/self/comm").expect("reading /proc/self/comm");
    let own_comm = own_comm.strip_suffix(b"\n").unwrap_or(&own_comm);
    let mut comm = [0u8; nsipc_common::COMM_LEN];
    let n = own_comm.len().min(comm.len() - 1);
    comm[..n].copy_from_slice(&own_comm[..n]);
    let live = Task {
        pid: std::process::id(),
        tid: std::process::id(),
        ppid: 1,
        uid: 0,
        euid: 0,
        comm,
        cgroup: 0,
        container: ContainerRef::NONE,
    };
    let mut gone_comm = [0u8; nsipc_common::COMM_LEN];
    gone_comm[..6].copy_from_slice(b"ipcmk\xff");
    let gone = Task {
        pid: u32::MAX - 1,
        tid: u32::MAX - 1,
        // The parent is not known (0): no `ppid`.
        ppid: 0,
        uid: 1000,
        euid: 1001,
        comm: gone_comm,
        cgroup: 77,
        container: ContainerRef::NONE,
    };
    Tasks { live, gone }
}

/// An attribution that knows a container of every runtime, with and without a name and a pod,
/// and the command line of this process.
fn attribution(live: &Task) -> (Attribution, Vec<ContainerRef>) {
    let mut attribution = Attribution::none().with_cmdlines(true);
    attribution.note_process(live, 0);
    assert!(
        attribution.cmdline(live).is_some(),
        "this process's command line is readable"
    );
    let refs = all_runtimes()
        .into_iter()
        .enumerate()
        .map(|(i, runtime)| {
            attribution.intern(Container {
                id: format!("{i:x}").repeat(64),
                runtime,
                name: (i % 2 == 0).then(|| format!("c{i}")),
                pod: (i % 3 == 0).then(|| Pod {
                    name: "web-0".into(),
                    namespace: "default".into(),
                    uid: "6f0c1b1e-1".into(),
                }),
            })
        })
        .collect();
    (attribution, refs)
}

const LIVE_NS: NsRef = NsRef {
    id: 4105,
    inum: 4026532177,
    life: 0,
};

/// Namespace refs with and without a kernel id (kernels before 6.18).
fn ns_refs() -> [NsRef; 3] {
    [
        LIVE_NS,
        NsRef {
            id: 0,
            inum: 4026532178,
            life: 0,
        },
        NsRef {
            id: 1,
            inum: HOST_IPC_NS_INUM,
            life: 0,
        },
    ]
}

/// Namespace identities with an `ns_id` and with an `ns_gen`.
fn idents() -> [NsIdent; 3] {
    [
        NsIdent {
            inum: 4026532177,
            id: 4105,
            generation: 1,
        },
        NsIdent {
            inum: 4026532178,
            id: 0,
            generation: 2,
        },
        NsIdent {
            inum: HOST_IPC_NS_INUM,
            id: 1,
            generation: 1,
        },
    ]
}

fn results(success: i64) -> Vec<SysResult<i64>> {
    std::iter::once(Ok(success))
        .chain(errnos().map(Err))
        .collect()
}

/// The bodies of every raw event kind, with every result, command and option.
fn bodies() -> Vec<Body> {
    let mut bodies = Vec::new();
    let [a, b, _] = ns_refs();
    for object in all_objects() {
        for result in results(3) {
            for (key, flags) in [(0x5eed, 0o1600), (0, 0o666), (-1, 0o3644)] {
                bodies.push(Body::Get {
                    object,
                    key,
                    flags,
                    size: 4096,
                    result,
                });
            }
        }
        // Every command number, named or not, with and without IPC_64.
        for cmd in (0..=24).chain((0..=24).map(|c| c | 0x100)) {
            for result in [Ok(0), Err(libc::EINVAL), Err(4095)] {
                bodies.push(Body::Ctl {
                    object,
                    id: 7,
                    cmd,
                    semnum: 2,
                    still_listed: false,
                    result,
                });
            }
        }
    }
    for result in results(0x7f00_0000_0000) {
        bodies.push(Body::ShmAttach {
            id: 5,
            requested_addr: 0,
            flags: 4096,
            result,
        });
        bodies.push(Body::ShmDetach {
            addr: 0x7f00_0000_0000,
            rmid_forced: result.is_ok(),
            result,
        });
    }
    for from in [a, b] {
        for result in results(0) {
            bodies.push(Body::Unshare {
                flags: 0x0800_0000,
                from,
                result,
            });
            bodies.push(Body::Setns {
                fd: 3,
                nstype: 0x0800_0000,
                from,
                result,
            });
        }
        for result in results(200) {
            bodies.push(Body::Clone {
                flags: 0x0800_0011,
                child_pid: 199,
                from,
                result,
            });
        }
    }
    for rmid_forced in [false, true] {
        bodies.push(Body::ProcessExit { rmid_forced });
    }
    bodies.push(Body::NsFreed);
    for (ns_dying, ns_freed, rmid_forced) in [(false, false, false), (true, true, true)] {
        bodies.push(Body::ShmFreed {
            id: 3,
            key: 0x5eed,
            ns_dying,
            ns_freed,
            rmid_forced,
        });
    }
    bodies.push(Body::CgroupMkdir { cgroup: 77 });
    bodies.push(Body::CgroupRmdir {
        cgroup: 77,
        container: ContainerRef::NONE,
    });
    for result in results(3) {
        for (maxmsg, msgsize) in [(4, 64), (0, 0)] {
            bodies.push(Body::MqueueOpen {
                name: MqueueName(b"jobs".as_slice().into()),
                oflag: 0o102,
                mode: 0o640,
                maxmsg,
                msgsize,
                ino: 31337,
                result,
            });
        }
        bodies.push(Body::MqueueUnlink {
            name: MqueueName(b"jobs\xff".as_slice().into()),
            result,
        });
    }
    for ino in [Some(31337), None] {
        for syscall in [3, 0] {
            bodies.push(Body::MqueueEvicted { ino, syscall });
        }
    }
    // Every body variant is here: a new one does not compile until it is.
    let _exhaustive = |body: Body| match body {
        Body::Get { .. }
        | Body::Ctl { .. }
        | Body::ShmAttach { .. }
        | Body::ShmDetach { .. }
        | Body::Unshare { .. }
        | Body::Setns { .. }
        | Body::Clone { .. }
        | Body::ProcessExit { .. }
        | Body::NsFreed
        | Body::ShmFreed { .. }
        | Body::CgroupMkdir { .. }
        | Body::CgroupRmdir { .. }
        | Body::MqueueOpen { .. }
        | Body::MqueueUnlink { .. }
        | Body::MqueueEvicted { .. } => {}
    };
    bodies
}

/// The raw events' lines (`trace --raw`), as the sink writes them.
fn raw_lines(
    out: &mut Vec<String>,
    tasks: &Tasks,
    attribution: &Attribution,
    containers: &[ContainerRef],
) {
    let clock = WallClock::with_offset(1_700_000_000_000_000_000);
    for (i, body) in bodies().into_iter().enumerate() {
        // Each body with the tasks in turn: in a container or not, in the host's namespace or
        // not, its command line known or not, its parent known or not.
        for variant in 0..4 {
            let mut task = if variant % 2 == 0 {
                tasks.live
            } else {
                tasks.gone
            };
            task.container = if variant >= 2 {
                containers[i % containers.len()]
            } else {
                ContainerRef::NONE
            };
            let ns = ns_refs()[(i + variant) % 3];
            let event = KernelEvent {
                ts_ns: 5_000 + i as u64,
                task,
                ns,
                body: body.clone(),
            };
            out.push(
                serde_json::to_string(&KernelEventJson {
                    event: &event,
                    clock: &clock,
                    attribution,
                })
                .expect("a raw event serializes"),
            );
        }
    }
}

/// Every lifecycle event, with and without each of its optional parts.
fn lifecycles(tasks: &Tasks, containers: &[ContainerRef]) -> Vec<Lifecycle> {
    let mut events = Vec::new();
    let [with_id, with_gen, host] = idents();
    let ts = 1_000;
    let homes = vec![
        KeyHome {
            ns: with_id,
            containers: containers.to_vec(),
        },
        KeyHome {
            ns: with_gen,
            containers: Vec::new(),
        },
    ];
    // `ipc_ns.exists` and `*.exists` are not here: the stream writes those as the inventory
    // does ([`output::inventory::Found`], sampled with the inventory's lines).
    for task in [tasks.live, tasks.gone] {
        for ns in [with_id, with_gen, host] {
            for (via, child_pid) in all_vias().into_iter().zip([None, Some(199)]) {
                for from in [with_id, with_gen] {
                    // Limits with and without fs.mqueue, and none (the creator gone).
                    let limits =
                        (from == with_id).then(|| Box::new(limits::sample(child_pid.is_none())));
                    events.push(Lifecycle::NsCreate {
                        ts,
                        task,
                        ns,
                        from,
                        via,
                        child_pid,
                        limits,
                    });
                }
            }
            for kind in all_join_kinds() {
                for (from, members) in [(with_id, containers.to_vec()), (with_gen, Vec::new())] {
                    events.push(Lifecycle::NsJoin {
                        ts,
                        task,
                        ns,
                        from,
                        into_host: ns.inum == HOST_IPC_NS_INUM,
                        kind,
                        members,
                    });
                }
            }
            for reason in destroy_reasons(None) {
                for (lifetime_ns, late, members) in [
                    (Some(5_000), false, containers.to_vec()),
                    (None, reason == DestroyReason::Freed, Vec::new()),
                ] {
                    events.push(Lifecycle::NsDestroy {
                        ts,
                        ns,
                        containers: members,
                        lifetime_ns,
                        destroyed: ObjectCounts {
                            msg: 1,
                            shm: 2,
                            sem: 0,
                        },
                        reason,
                        late,
                    });
                }
            }
            for object in all_objects() {
                events.push(Lifecycle::ObjectCreate {
                    ts,
                    task,
                    ns,
                    object,
                    id: 32768,
                    key: 0x5eed,
                    mode: 0o600,
                    size: 4096,
                });
                for reason in destroy_reasons(Some(object)) {
                    let task = (reason == DestroyReason::Rmid).then_some(task);
                    for (lifetime_ns, late) in [(Some(5_000), false), (None, true)] {
                        events.push(Lifecycle::ObjectDestroy {
                            ts,
                            task,
                            ns,
                            object,
                            id: 1,
                            key: 0,
                            reason,
                            lifetime_ns,
                            late,
                        });
                    }
                }
                for errno in errnos() {
                    events.push(Lifecycle::GetFailed {
                        ts,
                        task,
                        ns,
                        object,
                        key: 0x5eed,
                        flags: 0o600,
                        errno,
                        key_lives_in: if errno % 2 == 0 {
                            homes.clone()
                        } else {
                            Vec::new()
                        },
                        limit: sample_limit(object, errno),
                    });
                }
                for cause in all_orphan_causes() {
                    for &container in [ContainerRef::NONE].iter().chain(containers) {
                        events.push(Lifecycle::ObjectOrphaned {
                            ts,
                            ns,
                            object,
                            id: 2,
                            key: 0x5eed,
                            container,
                            cause,
                        });
                    }
                }
            }
            events.push(Lifecycle::ShmRemove {
                ts,
                task,
                ns,
                id: 3,
                key: 0x5eed,
            });
            for key in [Some(0x5eed), None] {
                events.push(Lifecycle::ShmAttach {
                    ts,
                    task,
                    ns,
                    id: 3,
                    key,
                    addr: 0x7f00_0000_0000,
                });
                for id in [Some(3), None] {
                    events.push(Lifecycle::ShmDetach {
                        ts,
                        task,
                        ns,
                        id,
                        key,
                        addr: 0x7f00_0000_0000,
                    });
                }
            }
            events.push(Lifecycle::ContainerHostIpc { ts, task, ns });
            let queue = MqueueIdent {
                name: MqueueName(b"jobs".as_slice().into()),
                ino: 31337,
            };
            for (maxmsg, msgsize) in [(4, 64), (0, 0)] {
                events.push(Lifecycle::MqueueCreate {
                    ts,
                    task,
                    ns,
                    queue: queue.clone(),
                    mode: 0o640,
                    maxmsg,
                    msgsize,
                });
            }
            for errno in errnos() {
                events.push(Lifecycle::MqueueOpenFailed {
                    ts,
                    task,
                    ns,
                    name: queue.name.clone(),
                    oflag: 0o102,
                    errno,
                    name_lives_in: if errno % 2 == 0 {
                        homes.clone()
                    } else {
                        Vec::new()
                    },
                    limit: limits::mqueue_hit(errno, true, [11, 64], &limits::sample(true), 3),
                });
            }
            events.push(Lifecycle::MqueueUnlink {
                ts,
                task,
                ns,
                queue: queue.clone(),
            });
            for reason in MQUEUE_DESTROY_REASONS {
                let by_task = matches!(reason, DestroyReason::Unlink | DestroyReason::LastClose);
                for (lifetime_ns, late) in [(Some(5_000), false), (None, true)] {
                    events.push(Lifecycle::MqueueDestroy {
                        ts,
                        task: by_task.then_some(task),
                        ns,
                        queue: queue.clone(),
                        reason,
                        lifetime_ns,
                        late,
                    });
                }
            }
        }
    }
    // Every variant is here: a new one does not compile until it is.
    let _exhaustive = |event: &Lifecycle| match event {
        Lifecycle::NsExists { .. }
        | Lifecycle::NsCreate { .. }
        | Lifecycle::NsJoin { .. }
        | Lifecycle::NsDestroy { .. }
        | Lifecycle::ObjectExists { .. }
        | Lifecycle::ObjectCreate { .. }
        | Lifecycle::ObjectDestroy { .. }
        | Lifecycle::ShmRemove { .. }
        | Lifecycle::ShmAttach { .. }
        | Lifecycle::ShmDetach { .. }
        | Lifecycle::GetFailed { .. }
        | Lifecycle::ContainerHostIpc { .. }
        | Lifecycle::ObjectOrphaned { .. }
        | Lifecycle::MqueueCreate { .. }
        | Lifecycle::MqueueOpenFailed { .. }
        | Lifecycle::MqueueUnlink { .. }
        | Lifecycle::MqueueDestroy { .. } => {}
    };
    events
}

/// The lifecycle events' lines, as the hot path writes them, each in a container and not.
fn lifecycle_lines(
    out: &mut Vec<String>,
    tasks: &Tasks,
    attribution: &Attribution,
    containers: &[ContainerRef],
) {
    let clock = WallClock::with_offset(1_700_000_000_000_000_000);
    for (i, mut event) in lifecycles(tasks, containers).into_iter().enumerate() {
        for container in [ContainerRef::NONE, containers[i % containers.len()]] {
            match &mut event {
                Lifecycle::NsCreate { task, .. }
                | Lifecycle::NsJoin { task, .. }
                | Lifecycle::ObjectCreate { task, .. }
                | Lifecycle::ShmRemove { task, .. }
                | Lifecycle::ShmAttach { task, .. }
                | Lifecycle::ShmDetach { task, .. }
                | Lifecycle::GetFailed { task, .. }
                | Lifecycle::ContainerHostIpc { task, .. }
                | Lifecycle::MqueueCreate { task, .. }
                | Lifecycle::MqueueOpenFailed { task, .. }
                | Lifecycle::MqueueUnlink { task, .. }
                | Lifecycle::ObjectDestroy {
                    task: Some(task), ..
                }
                | Lifecycle::MqueueDestroy {
                    task: Some(task), ..
                } => task.container = container,
                _ => {}
            }
            let mut buf = Vec::new();
            LifecycleJson {
                event: &event,
                clock: &clock,
                attribution,
            }
            .write_json(&mut buf);
            out.push(String::from_utf8(buf).expect("lines are UTF-8"));
        }
    }
}

/// The inventory's lines (`snapshot`, and `trace` at its start), with and without `ns_id`,
/// `ns_gen` and every optional part.
fn inventory_lines(out: &mut Vec<String>) {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let docker_id = "ab".repeat(32);
    let namespace = |inum, ns_id, full: bool| NamespaceInfo {
        inum,
        ns_id,
        seen_at: at,
        processes: if full {
            vec![
                ProcessInfo {
                    pid: 42,
                    tids: None,
                    comm: "sleep".into(),
                    uid: 0,
                    container: Some(docker_id.clone()),
                },
                ProcessInfo {
                    pid: 43,
                    tids: Some(vec![44]),
                    comm: "perl".into(),
                    uid: 1000,
                    container: None,
                },
            ]
        } else {
            Vec::new()
        },
        container_cgroups: if full {
            vec![format!("/docker/{docker_id}")]
        } else {
            Vec::new()
        },
        limits: full.then(|| limits::sample(inum == 4026532177)),
        fds: if full {
            vec![FdHolder {
                pid: 50,
                comm: "sh".into(),
                fd: 3,
            }]
        } else {
            Vec::new()
        },
        mounts: if full {
            vec![MountHolder {
                pid: 1,
                mnt_ns: 4026531841,
                mount_point: PathBuf::from("/run/ipc/x"),
            }]
        } else {
            Vec::new()
        },
    };
    let perm = |id, key, mode| IpcPerm {
        id,
        key,
        uid: 1000,
        gid: 100,
        cuid: 0,
        cgid: 0,
        mode,
    };
    let object = |ns, ns_id, detail, perm| ObjectInfo {
        ns,
        ns_id,
        seen_at: at,
        perm,
        detail,
    };
    let mut objects = Vec::new();
    for (ns, ns_id) in [(4026532177, Some(4105)), (4026532178, None)] {
        for qbytes in [Some(16384), None] {
            objects.push(object(
                ns,
                ns_id,
                ObjectDetail::Msg {
                    cbytes: 5,
                    qnum: 1,
                    qbytes,
                },
                perm(0, 0x1234, 0o600),
            ));
        }
        for mode in [0o640, 0o3600] {
            objects.push(object(
                ns,
                ns_id,
                ObjectDetail::Shm {
                    size: 4096,
                    nattch: 1,
                    cpid: 42,
                },
                perm(1, 0, mode),
            ));
        }
        objects.push(object(
            ns,
            ns_id,
            ObjectDetail::Sem { nsems: 3 },
            perm(2, -5, 0o600),
        ));
    }
    // `snapshot`'s queues: with attributes and a notified process, and without (the queue
    // went away between its listing and its opening).
    let mqueue = |ns, ns_id, attr: Option<MqueueAttr>| MqueueInfo {
        ns,
        ns_id,
        seen_at: at,
        name: "/jobs".into(),
        ino: 31337,
        uid: 1000,
        gid: 100,
        mode: 0o640,
        qsize: attr.map_or(0, |_| 129),
        notify_pid: attr.map_or(0, |_| 42),
        attr,
    };
    let attr = MqueueAttr {
        maxmsg: 10,
        msgsize: 8192,
        curmsgs: 2,
    };
    let inventory = Inventory {
        namespaces: vec![
            namespace(4026532177, Some(4105), true),
            namespace(4026532178, None, false),
            namespace(4026532179, None, true),
        ],
        objects,
        unreadable: Vec::new(),
        mqueues: vec![
            mqueue(4026532177, Some(4105), Some(attr)),
            mqueue(4026532178, None, None),
        ],
        mqueues_unlisted: Vec::new(),
    };
    let mut buf = Vec::new();
    {
        let mut sink = JsonLines::new(&mut buf);
        // `snapshot`: no generations; `trace`: the generation where there is no ns_id.
        output::inventory::write_lines(&inventory, &mut sink, &|_| None)
            .expect("writing to memory");
        output::inventory::write_lines(&inventory, &mut sink, &|_| Some(1))
            .expect("writing to memory");
        // What a resynchronisation found: the engine's `exists` events, written as the
        // inventory's lines (trace/stream.rs).
        let found = output::inventory::Found::new(&inventory);
        let ns_ident = |inum: u32| NsIdent {
            inum,
            id: 0,
            generation: 3,
        };
        for ns in &inventory.namespaces {
            let event = Lifecycle::NsExists {
                ts: 1_000,
                ns: ns_ident(ns.inum),
            };
            sink.write(&found.line(&event).expect("an inventory line"))
                .expect("writing to memory");
        }
        for object in &inventory.objects {
            let event = Lifecycle::ObjectExists {
                ts: 1_000,
                ns: ns_ident(object.ns),
                object: object.object(),
                id: object.perm.id,
                key: object.perm.key,
            };
            sink.write(&found.line(&event).expect("an inventory line"))
                .expect("writing to memory");
        }
        sink.flush().expect("writing to memory");
    }
    out.extend(
        String::from_utf8(buf)
            .expect("lines are UTF-8")
            .lines()
            .map(str::to_owned),
    );
}

/// The activity report's lines: a queue with a sender in a container, a receiver on the host
/// and their flow, found full, in a namespace with and without an `ns_id`, its object known and
/// not; a semaphore set's last line.
fn activity_lines(out: &mut Vec<String>, attribution: &Attribution, containers: &[ContainerRef]) {
    use crate::{
        activity::{Flow, Known, ObjectActivity, ObjectRef, Participant, QueueFull, Role},
        output::activity_events::{ActivityLine, FlowLine, FullLine},
    };
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let participant = |pid, role, calls, units| Participant {
        pid,
        comm: *b"producer\0\0\0\0\0\0\0\0",
        cgroup: 0,
        role,
        calls,
        units,
        refused: 0,
    };
    let sender = Participant {
        refused: 2,
        ..participant(41, Role::Sender, 3, 300)
    };
    let receiver = participant(42, Role::Receiver, 3, 300);
    let mut buf = Vec::new();
    let mut sink = JsonLines::new(&mut buf);
    let ident = |id, generation| NsIdent {
        inum: LIVE_NS.inum,
        id,
        generation,
    };
    let no_id = NsRef { id: 0, ..LIVE_NS };
    for (ns, known) in [
        (LIVE_NS, Some(ident(LIVE_NS.id, 1))),
        (no_id, Some(ident(0, 2))),
        (no_id, None),
    ] {
        let queue = ObjectActivity {
            object: ObjectRef {
                ns,
                object: IpcObject::Msg,
                id: 32768,
            },
            known: known.map(|ns| Known { ns, key: 0x5eed }),
            ended: known.is_none(),
            participants: vec![sender, receiver],
            flows: vec![Flow {
                from: sender,
                to: receiver,
            }],
            full: Some(QueueFull {
                sender,
                queued: 16_300,
                limit: 16_384,
                fills: 1,
                refused: 2,
            }),
        };
        let pair = [containers[0], ContainerRef::NONE];
        // The sender in a container, and on the host.
        for container in pair {
            sink.write(&FullLine {
                queue: &queue,
                full: queue.full.as_ref().expect("set above"),
                container,
                time,
                attribution,
            })
            .expect("writing to memory");
        }
        sink.write(&ActivityLine {
            activity: &queue,
            containers: &pair,
            time,
            interval_ms: 10_000,
            attribution,
        })
        .expect("writing to memory");
        sink.write(&FlowLine {
            via: &queue,
            flow: &queue.flows[0],
            containers: pair,
            time,
            interval_ms: 10_000,
            attribution,
        })
        .expect("writing to memory");
    }
    // A semaphore set in each kind of namespace, as its queue above: with an ns_id, with the
    // agent's generation (kernels before 6.18), and unknown to the engine.
    for (ns, known) in [
        (LIVE_NS, Some(ident(LIVE_NS.id, 1))),
        (no_id, Some(ident(0, 2))),
        (no_id, None),
    ] {
        let sems = ObjectActivity {
            object: ObjectRef {
                ns,
                object: IpcObject::Sem,
                id: 3,
            },
            known: known.map(|ns| Known { ns, key: -5 }),
            ended: known.is_none(),
            participants: vec![participant(43, Role::Operator, 2, 4)],
            flows: Vec::new(),
            full: None,
        };
        sink.write(&ActivityLine {
            activity: &sems,
            containers: &[containers[1]],
            time,
            interval_ms: 2_500,
            attribution,
        })
        .expect("writing to memory");
    }
    sink.flush().expect("writing to memory");
    drop(sink);
    out.extend(
        String::from_utf8(buf)
            .expect("lines are UTF-8")
            .lines()
            .map(str::to_owned),
    );
}

/// The agent's own lines, as the sink writes them.
fn agent_lines(out: &mut Vec<String>) {
    let time = || crate::output::fields::Rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
    let refused: BTreeMap<Backend, String> = [
        (Backend::Fentry, "fentry refused: EINVAL".to_owned()),
        (Backend::Kprobe, "no such function".to_owned()),
    ]
    .into();
    let choices = [
        HookChoice {
            backend: Backend::Tracepoint,
            refused: refused.clone(),
        },
        HookChoice {
            backend: Backend::Kprobe,
            refused: BTreeMap::new(),
        },
    ];
    let degraded: BTreeMap<&str, &HookChoice> =
        [("msgget", &choices[0]), ("shmat", &choices[1])].into();
    let frees_refused: BTreeMap<FreeHooks, String> = all_free_hooks()
        .into_iter()
        .map(|hooks| (hooks, format!("{} refused", hooks.name())))
        .collect();
    let no_frees_refused = BTreeMap::new();
    let mut events: Vec<AgentEvent<'_>> = Vec::new();
    for (i, backend) in Backend::ALL.into_iter().enumerate() {
        for frees in all_free_hooks() {
            events.push(AgentEvent::Ready {
                time: time(),
                version: env!("CARGO_PKG_VERSION"),
                backend,
                hooks: [("msgget", backend), ("shmat", Backend::Tracepoint)].into(),
                degraded: if i == 0 {
                    degraded.clone()
                } else {
                    BTreeMap::new()
                },
                frees,
                frees_refused: if frees == FreeHooks::Kfree {
                    &frees_refused
                } else {
                    &no_frees_refused
                },
                kernel: "6.18.0",
                fallbacks: if i == 0 {
                    crate::kernel::fallbacks(&KernelOffsets::UNKNOWN)
                } else {
                    BTreeMap::new()
                },
                programs: 30,
                ns_id: i == 0,
                host_ns: HOST_IPC_NS_INUM,
                ring_buffer_bytes: 1 << 22,
                pid: 4242,
                inventory_namespaces: 3,
                inventory_objects: 10,
                inventory_ms: 12,
                cgroup_hierarchy: [Some("unified"), Some("memory"), None][i],
                metrics_addr: (i == 1).then(|| "127.0.0.1:9464".to_owned()),
            });
        }
    }
    let kinds: BTreeMap<&'static str, u64> = (0..=nsipc_common::LOST_SLOTS)
        .map(|slot| (kind_name(slot), u64::from(slot) + 1))
        .collect();
    events.push(AgentEvent::Lost {
        time: time(),
        count: kinds.values().sum(),
        total: 1000,
        kinds,
    });
    events.push(AgentEvent::Missed {
        time: time(),
        count: 3,
        total: 7,
    });
    for after in all_resync_causes() {
        events.push(AgentEvent::Resync {
            time: time(),
            after,
            namespaces_gone: 1,
            namespaces_found: 2,
            objects_gone: 3,
            objects_found: 4,
        });
    }
    for (ok, error) in [(true, None), (false, Some("inconclusive: 3 records lost"))] {
        events.push(AgentEvent::KfreeCheck {
            time: time(),
            ok,
            namespace_free_seen: ok,
            segment_free_seen: ok,
            ms: 40,
            error,
        });
    }
    events.push(AgentEvent::DecodeError {
        time: time(),
        error: "a record of 12 bytes".into(),
        total: 1,
    });
    for reason in STOP_SIGNALS {
        events.push(AgentEvent::Stop {
            time: time(),
            reason,
            events: 100,
            lost: 0,
            missed: 0,
            decode_errors: 0,
            late_destroys: 0,
            kfree_skipped: 0,
        });
    }
    let _exhaustive = |event: &AgentEvent<'_>| match event {
        AgentEvent::Ready { .. }
        | AgentEvent::Lost { .. }
        | AgentEvent::Missed { .. }
        | AgentEvent::Resync { .. }
        | AgentEvent::KfreeCheck { .. }
        | AgentEvent::DecodeError { .. }
        | AgentEvent::Stop { .. } => {}
    };
    let mut buf = Vec::new();
    {
        let mut sink = JsonLines::new(&mut buf);
        for event in &events {
            sink.write(event).expect("writing to memory");
        }
        sink.flush().expect("writing to memory");
    }
    out.extend(
        String::from_utf8(buf)
            .expect("lines are UTF-8")
            .lines()
            .map(str::to_owned),
    );
}

/// Every sample line, in the order of the writers above.
pub fn lines() -> Vec<String> {
    lines_by_writer()
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .collect()
}

/// The sample lines of each writer, by its name: `raw`, `lifecycle`, `inventory`, `agent`.
pub fn lines_by_writer() -> [(&'static str, Vec<String>); 5] {
    let tasks = tasks();
    let (attribution, containers) = attribution(&tasks.live);
    let mut raw = Vec::new();
    raw_lines(&mut raw, &tasks, &attribution, &containers);
    let mut lifecycle = Vec::new();
    lifecycle_lines(&mut lifecycle, &tasks, &attribution, &containers);
    let mut inventory = Vec::new();
    inventory_lines(&mut inventory);
    let mut agent = Vec::new();
    agent_lines(&mut agent);
    let mut activity = Vec::new();
    activity_lines(&mut activity, &attribution, &containers);
    [
        ("raw", raw),
        ("lifecycle", lifecycle),
        ("inventory", inventory),
        ("agent", agent),
        ("activity", activity),
    ]
}
