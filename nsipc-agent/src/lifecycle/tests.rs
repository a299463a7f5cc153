//! The engine, exhaustively, without a kernel: each test feeds kernel events as the probes
//! would produce them and checks what comes out and what stays alive.

use nsipc_common::{HOST_IPC_NS_INUM, NsRef};

use super::*;
use crate::{
    attribution::Attribution,
    decode::{Body, KernelEvent, Task},
    names::IpcObject,
    render::{Rfc3339, WallClock},
};

mod containers;

const AGENT_PID: u32 = 999;
const NS_A: u32 = 4026532177;
const NS_B: u32 = 4026532178;

fn ns(inum: u32, id: u64) -> NsRef {
    NsRef { id, inum, _pad: 0 }
}
fn host() -> NsRef {
    ns(HOST_IPC_NS_INUM, 1)
}
fn task(pid: u32) -> Task {
    let mut comm = [0; 16];
    comm[..4].copy_from_slice(b"test");
    Task {
        pid,
        tid: pid,
        ppid: 1,
        uid: 1000,
        euid: 1000,
        comm,
        cgroup: 0,
        container: ContainerRef::NONE,
    }
}

/// The inums of `key_lives_in`.
fn inums(homes: &[KeyHome]) -> Vec<u32> {
    homes.iter().map(|home| home.ns.inum).collect()
}

/// A lifecycle event as the stream writes it, with no containers known.
fn to_json(event: &Lifecycle) -> serde_json::Value {
    serde_json::to_value(LifecycleJson {
        event,
        clock: &WallClock::with_offset(0),
        attribution: &Attribution::none(),
    })
    .unwrap()
}

/// Feeds events, collecting the output.
struct Harness {
    engine: Engine,
    ts: u64,
    out: Vec<Lifecycle>,
}

/// A successful `unshare(CLONE_NEWIPC)` from the host's namespace.
fn unshared() -> Body {
    Body::Unshare {
        flags: 0x0800_0000,
        from: host(),
        result: Ok(0),
    }
}

/// A successful get of `object` `key` (IPC_CREAT | 0600) that returned `id`.
fn got(object: IpcObject, key: i32, id: i64) -> Body {
    Body::Get {
        object,
        key,
        flags: 0o1600,
        size: 4096,
        result: Ok(id),
    }
}

impl Harness {
    /// An engine started as `trace` starts one: with the host's namespace inventoried.
    fn new() -> Self {
        let mut engine = Engine::new(AGENT_PID);
        engine.observe_existing(
            0,
            &[ExistingNamespace {
                inum: HOST_IPC_NS_INUM,
                id: host().id,
            }],
            &[],
            &mut Vec::new(),
        );
        Self {
            engine,
            ts: 1_000,
            out: Vec::new(),
        }
    }

    /// The next event by `pid` in namespace `at`, not applied.
    fn event(&mut self, pid: u32, at: NsRef, body: Body) -> KernelEvent {
        self.ts += 1_000;
        KernelEvent {
            ts_ns: self.ts,
            task: task(pid),
            ns: at,
            body,
        }
    }

    /// Applies one event by `pid` in namespace `at`; returns what it produced.
    fn feed(&mut self, pid: u32, at: NsRef, body: Body) -> Vec<Lifecycle> {
        self.feed_in(ContainerRef::NONE, pid, at, body)
    }

    /// Applies one event by `pid`, a task of `container`, in namespace `at`.
    fn feed_in(
        &mut self,
        container: ContainerRef,
        pid: u32,
        at: NsRef,
        body: Body,
    ) -> Vec<Lifecycle> {
        let mut event = self.event(pid, at, body);
        event.task.container = container;
        let before = self.out.len();
        self.engine.apply(&event, &mut self.out);
        self.out[before..].to_vec()
    }

    /// Reconciles with an inventory after lost records, while `racing` events were made, then
    /// applies them, as `trace` does; returns the counts and everything produced, in order.
    fn resync(
        &mut self,
        namespaces: &[ExistingNamespace],
        objects: &[ExistingObject],
        racing: &[KernelEvent],
    ) -> (ResyncCounts, Vec<Lifecycle>) {
        self.reconcile(false, namespaces, objects, racing)
    }

    /// As [`Self::resync`], after frees were skipped while no record was lost.
    fn resync_after_skipped_frees(
        &mut self,
        namespaces: &[ExistingNamespace],
        objects: &[ExistingObject],
    ) -> (ResyncCounts, Vec<Lifecycle>) {
        self.reconcile(true, namespaces, objects, &[])
    }

    fn reconcile(
        &mut self,
        frees_only: bool,
        namespaces: &[ExistingNamespace],
        objects: &[ExistingObject],
        racing: &[KernelEvent],
    ) -> (ResyncCounts, Vec<Lifecycle>) {
        let mut out = Vec::new();
        self.ts += 1_000;
        let counts = self
            .engine
            .resync(self.ts, frees_only, namespaces, objects, racing, &mut out);
        for event in racing {
            self.engine.apply(event, &mut out);
        }
        (counts, out)
    }

    fn names(events: &[Lifecycle]) -> Vec<&'static str> {
        events.iter().map(Lifecycle::name).collect()
    }

    fn unshare(&mut self, pid: u32, new: NsRef) -> Vec<Lifecycle> {
        self.feed(pid, new, unshared())
    }

    fn get(&mut self, at: NsRef, object: IpcObject, key: i32, id: i64) -> Vec<Lifecycle> {
        self.feed(10, at, got(object, key, id))
    }

    fn rmid(
        &mut self,
        at: NsRef,
        object: IpcObject,
        id: i32,
        still_listed: bool,
    ) -> Vec<Lifecycle> {
        let body = Body::Ctl {
            object,
            id,
            cmd: 0,
            semnum: 0,
            still_listed,
            result: Ok(0),
        };
        self.feed(11, at, body)
    }

    fn freed(&mut self, which: NsRef) -> Vec<Lifecycle> {
        self.feed(0, which, Body::NsFreed)
    }

    fn shm_freed(&mut self, at: NsRef, id: i32, ns_dying: bool) -> Vec<Lifecycle> {
        self.shm_freed_forced(at, id, ns_dying, false)
    }

    fn shm_freed_forced(
        &mut self,
        at: NsRef,
        id: i32,
        ns_dying: bool,
        rmid_forced: bool,
    ) -> Vec<Lifecycle> {
        self.feed(
            0,
            at,
            Body::ShmFreed {
                id,
                key: 0,
                ns_dying,
                ns_freed: false,
                rmid_forced,
            },
        )
    }
}

fn destroy_reason(event: &Lifecycle) -> DestroyReason {
    match event {
        Lifecycle::ObjectDestroy { reason, .. } | Lifecycle::NsDestroy { reason, .. } => *reason,
        other => panic!("not a destroy: {other:?}"),
    }
}

#[test]
fn unshare_creates_a_namespace_with_its_origin() {
    let mut h = Harness::new();
    let out = h.unshare(5, ns(NS_A, 42));
    assert_eq!(out.len(), 1);
    let Lifecycle::NsCreate {
        ns,
        from,
        via,
        child_pid,
        task,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (ns.inum, ns.id, *via, *child_pid),
        (NS_A, 42, Via::Unshare, None)
    );
    assert_eq!(from.inum, HOST_IPC_NS_INUM);
    assert_eq!(task.pid, 5);
}

#[test]
fn clone_creates_a_namespace_naming_the_child() {
    let mut h = Harness::new();
    let out = h.feed(
        5,
        ns(NS_A, 42),
        Body::Clone {
            flags: 0x0800_0011,
            child_pid: 77,
            from: host(),
            result: Ok(77),
        },
    );
    let Lifecycle::NsCreate { via, child_pid, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*via, *child_pid), (Via::Clone, Some(77)));
}

#[test]
fn failed_namespace_calls_create_nothing() {
    let mut h = Harness::new();
    assert!(
        h.feed(
            5,
            host(),
            Body::Unshare {
                flags: 0x0800_0000,
                from: host(),
                result: Err(1)
            }
        )
        .is_empty()
    );
    assert!(
        h.feed(
            5,
            host(),
            Body::Clone {
                flags: 0,
                child_pid: 0,
                from: host(),
                result: Err(1)
            }
        )
        .is_empty()
    );
    assert!(
        h.feed(
            5,
            host(),
            Body::Setns {
                fd: 3,
                nstype: 0,
                from: host(),
                result: Err(22)
            }
        )
        .is_empty()
    );
}

#[test]
fn get_creates_once_then_opens() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    for object in IpcObject::ALL {
        let out = h.get(ns(NS_A, 42), object, 0x1234, 7);
        assert_eq!(out.len(), 1, "{object:?} create");
        let Lifecycle::ObjectCreate {
            id,
            key,
            mode,
            ns: created_in,
            ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            (*id, *key, *mode, created_in.inum),
            (7, 0x1234, 0o600, NS_A)
        );
        assert!(
            h.get(ns(NS_A, 42), object, 0x1234, 7).is_empty(),
            "{object:?}: a second get opens"
        );
    }
    assert_eq!(
        h.engine.live_counts(),
        (2, 3),
        "host (as origin) + A; three objects"
    );
}

#[test]
fn the_same_id_in_two_namespaces_is_two_objects() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    h.unshare(6, ns(NS_B, 43));
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 42), IpcObject::Msg, 1, 0)),
        ["msg.create"]
    );
    assert_eq!(
        Harness::names(&h.get(ns(NS_B, 43), IpcObject::Msg, 1, 0)),
        ["msg.create"]
    );
    let out = h.rmid(ns(NS_A, 42), IpcObject::Msg, 0, false);
    assert_eq!(Harness::names(&out), ["msg.destroy"]);
    assert_eq!(h.engine.live_counts().1, 1, "B's queue lives on");
}

#[test]
fn rmid_destroys_msg_and_sem_with_the_caller() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    for object in [IpcObject::Msg, IpcObject::Sem] {
        h.get(ns(NS_A, 42), object, 9, 3);
        let out = h.rmid(ns(NS_A, 42), object, 3, false);
        assert_eq!(out.len(), 1);
        let Lifecycle::ObjectDestroy {
            reason,
            task,
            key,
            lifetime_ns,
            ..
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!((*reason, *key), (DestroyReason::Rmid, 9));
        assert_eq!(task.map(|t| t.pid), Some(11));
        assert_eq!(*lifetime_ns, Some(1_000));
    }
    assert_eq!(h.engine.live_counts().1, 0);
}

#[test]
fn rmid_of_an_unknown_object_is_not_a_ghost() {
    let mut h = Harness::new();
    assert!(h.rmid(ns(NS_A, 42), IpcObject::Sem, 3, false).is_empty());
}

#[test]
fn shm_rmid_while_attached_marks_then_last_detach_destroys() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x55, 4);
    let out = h.feed(
        12,
        a,
        Body::ShmAttach {
            id: 4,
            requested_addr: 0,
            flags: 0,
            result: Ok(0x7f00),
        },
    );
    let Lifecycle::ShmAttach { id, key, addr, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *key, *addr), (4, Some(0x55), 0x7f00));

    let out = h.rmid(a, IpcObject::Shm, 4, true);
    assert_eq!(Harness::names(&out), ["shm.remove"]);
    assert!(h.rmid(a, IpcObject::Shm, 4, true).is_empty(), "marked once");

    let out = h.feed(
        12,
        a,
        Body::ShmDetach {
            addr: 0x7f00,
            result: Ok(0),
        },
    );
    let Lifecycle::ShmDetach { id, key, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *key), (Some(4), Some(0x55)));
    // The kernel made the removed segment's key private: nobody can find it by key any more.
    let out = h.feed(
        8,
        ns(NS_B, 43),
        Body::Get {
            object: IpcObject::Shm,
            key: 0x55,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(key_lives_in.is_empty());

    let out = h.shm_freed(a, 4, false);
    assert_eq!(Harness::names(&out), ["shm.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::LastDetach);
    assert!(h.shm_freed(a, 4, false).is_empty(), "destroyed once");
}

#[test]
fn shm_rmid_unattached_destroys_at_once_and_ignores_the_later_free() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.get(a, IpcObject::Shm, 0x55, 4);
    let out = h.rmid(a, IpcObject::Shm, 4, false);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::Rmid);
    assert!(h.shm_freed(a, 4, false).is_empty());
}

#[test]
fn shm_freed_without_rmid_is_rmid_forced_or_teardown() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    for id in 1..=3 {
        h.get(a, IpcObject::Shm, id, i64::from(id));
    }
    let forced = h.shm_freed_forced(a, 1, false, true);
    assert_eq!(destroy_reason(&forced[0]), DestroyReason::RmidForced);
    assert_eq!(
        destroy_reason(&h.shm_freed(a, 2, true)[0]),
        DestroyReason::NamespaceTeardown
    );
    // Without shm_rmid_forced, only a teardown destroys a segment nobody removed.
    assert_eq!(
        destroy_reason(&h.shm_freed(a, 3, false)[0]),
        DestroyReason::NamespaceTeardown
    );
}

#[test]
fn a_removed_segment_freed_while_its_namespace_dies_died_at_its_last_detach() {
    // Its last detach (say at exit) destroyed it; the kfree came a grace period later, when the
    // namespace was already going.
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.get(a, IpcObject::Shm, 5, 5);
    h.rmid(a, IpcObject::Shm, 5, true);
    assert_eq!(
        destroy_reason(&h.shm_freed(a, 5, true)[0]),
        DestroyReason::LastDetach
    );
    // Or the namespace's own free comes first.
    h.get(a, IpcObject::Shm, 6, 6);
    h.rmid(a, IpcObject::Shm, 6, true);
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["shm.destroy", "ipc_ns.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::LastDetach);
    let Lifecycle::NsDestroy { destroyed, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(destroyed.shm, 0, "not destroyed by the teardown");
}

#[test]
fn namespace_free_destroys_what_is_left_then_the_namespace() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Sem, 2, 0);
    h.get(a, IpcObject::Shm, 3, 0);
    h.get(a, IpcObject::Shm, 4, 1);
    h.rmid(a, IpcObject::Shm, 1, false);
    let out = h.freed(a);
    assert_eq!(
        Harness::names(&out),
        [
            "msg.destroy",
            "shm.destroy",
            "sem.destroy",
            "ipc_ns.destroy"
        ]
    );
    assert!(
        out[..3]
            .iter()
            .all(|e| destroy_reason(e) == DestroyReason::NamespaceTeardown)
    );
    let Lifecycle::NsDestroy {
        destroyed,
        lifetime_ns,
        ..
    } = &out[3]
    else {
        panic!()
    };
    assert_eq!(
        *destroyed,
        ObjectCounts {
            msg: 1,
            shm: 1,
            sem: 1
        }
    );
    assert_eq!(*lifetime_ns, Some(h.ts - 2_000));
    assert_eq!(h.engine.live_counts(), (1, 0), "only the host remains");
    // The segments' RCU-deferred frees come after: already reported.
    assert!(h.shm_freed(a, 0, true).is_empty());
}

#[test]
fn inum_reuse_starts_a_new_life_with_ns_id() {
    let mut h = Harness::new();
    h.unshare(5, ns(NS_A, 42));
    h.get(ns(NS_A, 42), IpcObject::Msg, 1, 0);
    // A free of the first life arrives only after the same inum was handed out again: the new
    // life's objects must not be touched by the old life's free. The old life is ended at the
    // new one's birth (an inum names one namespace at a time), so it never stays open in the
    // stream; why it ended is not known then.
    let out = h.unshare(6, ns(NS_A, 50));
    assert_eq!(
        Harness::names(&out),
        ["msg.destroy", "ipc_ns.destroy", "ipc_ns.create"]
    );
    assert_eq!(destroy_reason(&out[1]), DestroyReason::Unknown);
    let Lifecycle::NsCreate {
        ns: second_life, ..
    } = &out[2]
    else {
        panic!("{out:?}")
    };
    assert_eq!(second_life.id, 50);
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 50), IpcObject::Msg, 1, 0)),
        ["msg.create"],
        "a new object"
    );
    assert!(
        h.freed(ns(NS_A, 42)).is_empty(),
        "stale free of the old life"
    );
    assert!(h.shm_freed(ns(NS_A, 42), 0, true).is_empty());
    assert_eq!(h.engine.live_counts().1, 1);
}

#[test]
fn inum_reuse_without_ns_id_counts_generations() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    let out = h.unshare(5, a);
    let Lifecycle::NsCreate { ns: first, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(first.generation, 1);
    h.freed(a);
    let out = h.unshare(6, a);
    let Lifecycle::NsCreate { ns: second, .. } = &out[0] else {
        panic!()
    };
    assert_eq!((second.inum, second.id, second.generation), (NS_A, 0, 2));
    // Rendered as ns_gen where there is no ns_id.
    let json = to_json(&out[0]);
    assert_eq!(json["ns_gen"], 2);
    assert!(json.get("ns_id").is_none());
}

#[test]
fn join_reports_origin_and_entering_the_host() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    let out = h.feed(
        7,
        a,
        Body::Setns {
            fd: 3,
            nstype: 0x0800_0000,
            from: host(),
            result: Ok(0),
        },
    );
    let Lifecycle::NsJoin {
        into_host, from, ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*into_host, from.inum), (false, HOST_IPC_NS_INUM));
    let out = h.feed(
        7,
        host(),
        Body::Setns {
            fd: 4,
            nstype: 0,
            from: a,
            result: Ok(0),
        },
    );
    let Lifecycle::NsJoin { into_host, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert!(*into_host, "a task leaving a namespace for the host's");
    assert!(
        h.feed(
            7,
            a,
            Body::Setns {
                fd: 3,
                nstype: 0,
                from: a,
                result: Ok(0)
            }
        )
        .is_empty(),
        "no change"
    );
    assert!(
        h.feed(
            AGENT_PID,
            a,
            Body::Setns {
                fd: 3,
                nstype: 0,
                from: host(),
                result: Ok(0)
            }
        )
        .is_empty(),
        "the agent's own inventory threads"
    );
    // Another nsipc-agent's (a `snapshot` run meanwhile, say): its helper thread's name.
    let mut event = h.event(
        4242,
        a,
        Body::Setns {
            fd: 3,
            nstype: 0,
            from: host(),
            result: Ok(0),
        },
    );
    event.task.comm = [0; 16];
    event.task.comm[..HELPER_THREAD_NAME.len()].copy_from_slice(HELPER_THREAD_NAME.as_bytes());
    let mut out = Vec::new();
    h.engine.apply(&event, &mut out);
    assert!(out.is_empty(), "another agent's inventory thread: {out:?}");
}

#[test]
fn failed_get_says_where_the_key_lives() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    h.get(a, IpcObject::Msg, 0x1234, 0);
    h.get(host(), IpcObject::Msg, 0x1234, 3);
    h.get(a, IpcObject::Sem, 0x1234, 0);
    let out = h.feed(
        8,
        b,
        Body::Get {
            object: IpcObject::Msg,
            key: 0x1234,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed {
        errno,
        key_lives_in,
        ns,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*errno, ns.inum), (2, NS_B));
    assert_eq!(
        inums(key_lives_in),
        vec![HOST_IPC_NS_INUM, NS_A],
        "msg queues only, every other namespace"
    );
    let out = h.feed(
        8,
        b,
        Body::Get {
            object: IpcObject::Shm,
            key: 0x1234,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!()
    };
    assert!(key_lives_in.is_empty());
    let out = h.feed(
        8,
        b,
        Body::Get {
            object: IpcObject::Msg,
            key: 0,
            flags: 0,
            size: 0,
            result: Err(28),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!()
    };
    assert!(key_lives_in.is_empty(), "IPC_PRIVATE names nothing");
}

/// The key index keeps its first holder apart from the others: whichever goes first, by
/// IPC_RMID or with its namespace, the rest stay findable and nothing stale is left.
#[test]
fn key_index_survives_its_holders_leaving_in_any_order() {
    let key_lives_in = |h: &mut Harness, at: NsRef| {
        let out = h.feed(
            8,
            at,
            Body::Get {
                object: IpcObject::Msg,
                key: 0x1234,
                flags: 0,
                size: 0,
                result: Err(2),
            },
        );
        let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
            panic!("{out:?}")
        };
        inums(key_lives_in)
    };
    let (a, b, c) = (ns(NS_A, 42), ns(NS_B, 43), ns(NS_A + 7, 44));
    let mut h = Harness::new();
    for (at, pid) in [(a, 5), (b, 6), (c, 7)] {
        h.unshare(pid, at);
    }
    h.get(a, IpcObject::Msg, 0x1234, 0);
    h.get(b, IpcObject::Msg, 0x1234, 0);
    h.get(c, IpcObject::Msg, 0x1234, 0);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_A, NS_B, NS_A + 7]);
    // The first holder goes by IPC_RMID, the second with its namespace.
    h.rmid(a, IpcObject::Msg, 0, false);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_B, NS_A + 7]);
    h.freed(b);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_A + 7]);
    h.get(a, IpcObject::Msg, 0x1234, 32768);
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_A, NS_A + 7]);
    h.rmid(c, IpcObject::Msg, 0, false);
    h.rmid(a, IpcObject::Msg, 32768, false);
    assert!(key_lives_in(&mut h, host()).is_empty());
    assert!(h.engine.keys.is_empty() && h.engine.more_keys.is_empty());
    // A namespace whose previous life ended unseen takes its keys with it.
    h.get(a, IpcObject::Msg, 0x1234, 0);
    h.get(b, IpcObject::Msg, 0x1234, 0);
    h.unshare(9, ns(NS_A, 99));
    assert_eq!(key_lives_in(&mut h, host()), vec![NS_B]);
}

#[test]
fn inventory_then_replayed_events_give_no_duplicates_or_ghosts() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    let mut out = Vec::new();
    h.engine.observe_existing(
        h.ts,
        &[ExistingNamespace { inum: NS_A, id: 0 }],
        &[ExistingObject {
            ns: NS_A,
            object: IpcObject::Msg,
            id: 0,
            key: 7,
        }],
        &mut out,
    );
    assert_eq!(Harness::names(&out), ["ipc_ns.exists", "msg.exists"]);
    // Events that raced with the inventory, replayed from the ring buffer:
    assert!(
        h.unshare(5, a).is_empty(),
        "the namespace is already reported"
    );
    assert!(
        h.get(a, IpcObject::Msg, 7, 0).is_empty(),
        "the queue is already reported"
    );
    assert!(
        h.rmid(a, IpcObject::Sem, 9, false).is_empty(),
        "destroyed before the inventory saw it"
    );
    // Inventoried again: nothing new.
    out.clear();
    h.engine.observe_existing(
        h.ts,
        &[ExistingNamespace { inum: NS_A, id: 0 }],
        &[],
        &mut out,
    );
    assert!(out.is_empty());
    // The namespace learnt its ns_id from the events and still dies once.
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["msg.destroy", "ipc_ns.destroy"]);
    let Lifecycle::NsDestroy { lifetime_ns, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(
        *lifetime_ns, None,
        "created before the agent: lifetime unknown"
    );
}

fn listed_ns(inum: u32, id: u64) -> ExistingNamespace {
    ExistingNamespace { inum, id }
}

fn listed(ns: u32, object: IpcObject, id: i32, key: i32) -> ExistingObject {
    ExistingObject {
        ns,
        object,
        id,
        key,
    }
}

fn ns_ident(event: &Lifecycle) -> NsIdent {
    match event {
        Lifecycle::NsExists { ns, .. }
        | Lifecycle::NsCreate { ns, .. }
        | Lifecycle::NsDestroy { ns, .. }
        | Lifecycle::ObjectExists { ns, .. }
        | Lifecycle::ObjectCreate { ns, .. }
        | Lifecycle::ObjectDestroy { ns, .. } => *ns,
        other => panic!("not a life event: {other:?}"),
    }
}

#[test]
fn resync_reports_what_vanished_and_appeared_unseen() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Sem, 2, 0);
    let (counts, out) = h.resync(
        &[
            listed_ns(HOST_IPC_NS_INUM, 0),
            listed_ns(NS_A, 0),
            listed_ns(NS_B, 0),
        ],
        &[
            listed(NS_A, IpcObject::Msg, 0, 1),
            listed(NS_B, IpcObject::Shm, 5, 3),
        ],
        &[],
    );
    assert_eq!(
        Harness::names(&out),
        ["sem.destroy", "ipc_ns.exists", "shm.exists"]
    );
    assert_eq!(destroy_reason(&out[0]), DestroyReason::Unknown);
    assert_eq!(
        counts,
        ResyncCounts {
            namespaces_gone: 0,
            namespaces_found: 1,
            objects_gone: 1,
            objects_found: 1
        }
    );
    let (counts, out) = h.resync(&[listed_ns(HOST_IPC_NS_INUM, 0)], &[], &[]);
    assert_eq!(counts.namespaces_gone, 2);
    assert_eq!(counts.objects_gone, 2);
    assert_eq!(
        Harness::names(&out),
        [
            "msg.destroy",
            "ipc_ns.destroy",
            "shm.destroy",
            "ipc_ns.destroy"
        ],
        "each namespace's objects just before it"
    );
    assert!(
        out.iter()
            .all(|e| destroy_reason(e) == DestroyReason::Unknown)
    );
    assert_eq!(h.engine.live_counts(), (1, 0));
}

/// With no record lost, a namespace found gone can only have been freed unseen (a `kfree` run
/// the kernel skipped): it is reported freed, `late`, and what was in it by its teardown, or,
/// removed while attached, by its last detach; not `unknown`.
#[test]
fn a_namespace_found_gone_after_skipped_frees_was_freed_late() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Shm, 2, 0);
    attach(&mut h, 5, a, 0, 0x7000);
    h.rmid(a, IpcObject::Shm, 0, true);
    let (counts, out) = h.resync_after_skipped_frees(&[listed_ns(HOST_IPC_NS_INUM, 0)], &[]);
    assert_eq!(
        Harness::names(&out),
        ["msg.destroy", "shm.destroy", "ipc_ns.destroy"]
    );
    assert_eq!(
        out.iter().map(destroy_reason).collect::<Vec<_>>(),
        [
            DestroyReason::NamespaceTeardown,
            DestroyReason::LastDetach,
            DestroyReason::Freed
        ]
    );
    for event in &out {
        let late = match event {
            Lifecycle::ObjectDestroy { late, .. } | Lifecycle::NsDestroy { late, .. } => *late,
            other => panic!("not a destroy: {other:?}"),
        };
        assert!(late, "{event:?}");
    }
    let Lifecycle::NsDestroy { destroyed, .. } = &out[2] else {
        unreachable!("checked above")
    };
    assert_eq!((destroyed.msg, destroyed.shm), (1, 0), "teardown counts");
    assert_eq!((counts.namespaces_gone, counts.objects_gone), (1, 2));
    assert_eq!(h.engine.live_counts(), (1, 0));
}

/// A namespace whose creation record was lost is first named by what is done in it: the
/// next inventory that lists it announces it (`exists`), once, so the stream never holds a
/// live namespace it never mentioned.
#[test]
fn resync_announces_a_namespace_only_named_by_its_objects() {
    for id in [0, 42] {
        let mut h = Harness::new();
        let a = ns(NS_A, id);
        assert_eq!(
            Harness::names(&h.get(a, IpcObject::Msg, 1, 0)),
            ["msg.create"]
        );
        let inventory = [listed_ns(HOST_IPC_NS_INUM, 0), listed_ns(NS_A, id)];
        let (counts, out) = h.resync(&inventory, &[listed(NS_A, IpcObject::Msg, 0, 1)], &[]);
        assert_eq!(Harness::names(&out), ["ipc_ns.exists"], "ns_id {id}");
        assert_eq!(counts.namespaces_found, 1);
        let (_, out) = h.resync(&inventory, &[listed(NS_A, IpcObject::Msg, 0, 1)], &[]);
        assert_eq!(Harness::names(&out), [""; 0], "announced once (ns_id {id})");
    }
}

/// The creation record of a namespace can come after records of what was done in it (a clone
/// whose child works before the parent's exit is recorded): it still announces the namespace.
#[test]
fn a_creation_after_the_namespace_was_named_announces_it() {
    for id in [0, 42] {
        let mut h = Harness::new();
        let a = ns(NS_A, id);
        h.get(a, IpcObject::Msg, 1, 0);
        assert_eq!(
            Harness::names(&h.unshare(5, a)),
            ["ipc_ns.create"],
            "ns_id {id}"
        );
        assert_eq!(
            h.engine.live_counts(),
            (2, 1),
            "the host's and one life of A, its queue kept"
        );
        // With ids, the same creation again is not news (without, it is the inum's next life).
        if id != 0 {
            assert_eq!(Harness::names(&h.unshare(5, a)), [""; 0], "announced once");
        }
    }
}

/// Removals made while the inventory read: the inventory no longer lists the objects, but
/// their records, applied after the reconciliation, say how they died.
#[test]
fn resync_leaves_a_racing_destroy_to_its_record() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Msg, 1, 0);
    h.get(a, IpcObject::Sem, 2, 0);
    let rmid = |h: &mut Harness, object| {
        h.event(
            11,
            a,
            Body::Ctl {
                object,
                id: 0,
                cmd: 0,
                semnum: 0,
                still_listed: false,
                result: Ok(0),
            },
        )
    };
    let racing = [rmid(&mut h, IpcObject::Msg), rmid(&mut h, IpcObject::Sem)];
    let (counts, out) = h.resync(
        &[listed_ns(HOST_IPC_NS_INUM, 0), listed_ns(NS_A, 0)],
        &[],
        &racing,
    );
    assert_eq!(counts, ResyncCounts::default());
    assert_eq!(Harness::names(&out), ["msg.destroy", "sem.destroy"]);
    assert!(out.iter().all(|e| destroy_reason(e) == DestroyReason::Rmid));
    assert_eq!(h.engine.live_counts(), (2, 0));
}

/// Creations made while the inventory read, the namespace's own included: listed by the
/// inventory, they are still reported as created, by whom, once.
#[test]
fn resync_leaves_a_racing_creation_to_its_record() {
    for id in [0, 77] {
        let mut h = Harness::new();
        let a = ns(NS_A, 0);
        h.unshare(5, a);
        let b = ns(NS_B, id);
        let racing = [
            h.event(5, a, got(IpcObject::Msg, 1, 3)),
            h.event(6, b, unshared()),
            h.event(6, b, got(IpcObject::Shm, 2, 0)),
        ];
        let (counts, out) = h.resync(
            &[
                listed_ns(HOST_IPC_NS_INUM, 0),
                listed_ns(NS_A, 0),
                listed_ns(NS_B, id),
            ],
            &[
                listed(NS_A, IpcObject::Msg, 3, 1),
                listed(NS_B, IpcObject::Shm, 0, 2),
            ],
            &racing,
        );
        assert_eq!(counts, ResyncCounts::default(), "ns_id {id}");
        assert_eq!(
            Harness::names(&out),
            ["msg.create", "ipc_ns.create", "shm.create"],
            "ns_id {id}"
        );
        assert_eq!(h.engine.live_counts(), (3, 2));
    }
}

/// A namespace freed while the inventory read: not listed, but its free, applied after the
/// reconciliation, reports it and what it tore down.
#[test]
fn resync_leaves_a_racing_namespace_free_to_its_record() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Sem, 2, 0);
    let racing = [h.event(0, a, Body::NsFreed)];
    let (counts, out) = h.resync(&[listed_ns(HOST_IPC_NS_INUM, 1)], &[], &racing);
    assert_eq!(counts, ResyncCounts::default());
    assert_eq!(Harness::names(&out), ["sem.destroy", "ipc_ns.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::NamespaceTeardown);
    assert_eq!(destroy_reason(&out[1]), DestroyReason::Freed);
}

/// A namespace the inventory did not find, but where a task made a call since it began:
/// alive then, so not declared gone (whatever ends it later says how).
#[test]
fn resync_keeps_what_a_racing_record_shows_alive() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 2, 4);
    let racing = [h.event(
        7,
        a,
        Body::ShmAttach {
            id: 4,
            requested_addr: 0,
            flags: 0,
            result: Ok(0x7000),
        },
    )];
    let (counts, out) = h.resync(&[listed_ns(HOST_IPC_NS_INUM, 0)], &[], &racing);
    assert_eq!(counts, ResyncCounts::default());
    assert_eq!(Harness::names(&out), ["shm.attach"]);
    assert_eq!(h.engine.live_counts(), (2, 1));
}

/// Without ns_id, an inum given to a namespace born while the inventory read, with no free of
/// the life the engine knew: that life ended unseen, and the new one is a creation, not the
/// old one continued (nor an inventoried namespace whose creation is replayed).
#[test]
fn resync_ends_the_old_life_of_an_inum_a_racing_birth_reuses() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Msg, 1, 0);
    let racing = [
        h.event(6, a, unshared()),
        h.event(6, a, got(IpcObject::Msg, 9, 0)),
    ];
    let (counts, out) = h.resync(
        &[listed_ns(HOST_IPC_NS_INUM, 0), listed_ns(NS_A, 0)],
        &[listed(NS_A, IpcObject::Msg, 0, 9)],
        &racing,
    );
    assert_eq!(
        Harness::names(&out),
        [
            "msg.destroy",
            "ipc_ns.destroy",
            "ipc_ns.create",
            "msg.create"
        ]
    );
    assert_eq!(destroy_reason(&out[0]), DestroyReason::Unknown);
    assert_eq!(destroy_reason(&out[1]), DestroyReason::Unknown);
    let lives: Vec<u32> = out.iter().map(|e| ns_ident(e).generation).collect();
    assert_eq!(lives, [1, 1, 2, 2]);
    assert_eq!(
        (counts.namespaces_gone, counts.objects_gone),
        (1, 1),
        "{counts:?}"
    );
}

/// With ns_id, an inventory listing another life of an inum (both ends unseen) replaces it;
/// an object listed under its id with another key is another object.
#[test]
fn resync_tells_lives_apart_by_ns_id_and_objects_by_key() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    let b = ns(NS_B, 43);
    h.unshare(5, a);
    h.unshare(6, b);
    h.get(b, IpcObject::Sem, 1, 0);
    let (counts, out) = h.resync(
        &[
            listed_ns(HOST_IPC_NS_INUM, 1),
            listed_ns(NS_A, 50),
            listed_ns(NS_B, 43),
        ],
        &[listed(NS_B, IpcObject::Sem, 0, 2)],
        &[],
    );
    assert_eq!(
        Harness::names(&out),
        [
            "ipc_ns.destroy",
            "sem.destroy",
            "ipc_ns.exists",
            "sem.exists"
        ]
    );
    assert_eq!(ns_ident(&out[0]).id, 42);
    assert_eq!(ns_ident(&out[2]).id, 50);
    assert_eq!(
        counts,
        ResyncCounts {
            namespaces_gone: 1,
            namespaces_found: 1,
            objects_gone: 1,
            objects_found: 1
        }
    );
}

/// A segment listed with the private key was removed while attached, unseen: it stays, and
/// its free later is its last detach.
#[test]
fn resync_marks_a_segment_listed_with_the_private_key_removed() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 7, 3);
    let (counts, out) = h.resync(
        &[listed_ns(HOST_IPC_NS_INUM, 0), listed_ns(NS_A, 0)],
        &[listed(NS_A, IpcObject::Shm, 3, 0)],
        &[],
    );
    assert_eq!((counts, out.len()), (ResyncCounts::default(), 0));
    let out = h.shm_freed(a, 3, false);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::LastDetach);
}

/// A segment removed while attached can only die of its last detach (its namespace lives):
/// one a resync no longer finds died so, unseen, before the inventory; reported so, `late`,
/// rather than as an `unknown` end.
#[test]
fn resync_reports_a_removed_segment_found_gone_as_its_late_last_detach() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 7, 3);
    h.get(a, IpcObject::Shm, 8, 4);
    attach(&mut h, 12, a, 3, 0x7f00);
    attach(&mut h, 12, a, 4, 0x7e00);
    h.rmid(a, IpcObject::Shm, 3, true);
    h.rmid(a, IpcObject::Shm, 4, true);
    // Id 4 went to a new segment since: the removed one died all the same.
    let (counts, out) = h.resync(
        &[listed_ns(HOST_IPC_NS_INUM, 0), listed_ns(NS_A, 0)],
        &[listed(NS_A, IpcObject::Shm, 4, 9)],
        &[],
    );
    assert_eq!(counts.objects_gone, 2, "{out:?}");
    assert_eq!(counts.objects_found, 1, "{out:?}");
    for id in [3, 4] {
        let json = out
            .iter()
            .map(to_json)
            .find(|json| json["event"] == "shm.destroy" && json["id"] == id)
            .unwrap_or_else(|| panic!("no destroy of {id}: {out:?}"));
        assert_eq!(json["reason"], "last_detach", "{json}");
        assert_eq!(json["late"], true, "{json}");
    }
    assert!(h.engine.removed_unattached().is_empty());
}

#[test]
fn detach_of_an_unknown_attachment_still_reports_the_address() {
    let mut h = Harness::new();
    let out = h.feed(
        12,
        host(),
        Body::ShmDetach {
            addr: 0x9000,
            result: Ok(0),
        },
    );
    let Lifecycle::ShmDetach { id, key, addr, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((*id, *key, *addr), (None, None, 0x9000));
}

#[test]
fn memory_follows_what_lives_through_a_storm() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    for round in 0..10_000 {
        let object = IpcObject::ALL[round % 3];
        h.get(a, object, 0, (round as i64) << 15);
        h.rmid(a, object, (round as i32) << 15, false);
        h.out.clear();
    }
    assert_eq!(h.engine.live_counts(), (2, 0));
    assert_eq!(h.engine.attachments.len(), 0);
}

#[test]
fn lifecycle_json_has_the_documented_fields() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    let out = h.get(a, IpcObject::Sem, 0x77, 3);
    let json = to_json(&out[0]);
    for field in [
        "event",
        "time",
        "pid",
        "tid",
        "uid",
        "comm",
        "ns",
        "ns_id",
        "id",
        "key",
        "owner_uid",
        "mode",
        "nsems",
    ] {
        assert!(
            json.get(field).is_some(),
            "sem.create lacks {field}: {json}"
        );
    }
    let out = h.freed(a);
    let json = to_json(&out[0]);
    assert_eq!(json["reason"], "namespace_teardown");
    assert!(
        json.get("pid").is_none(),
        "a teardown has no process behind it"
    );
    let json = to_json(&out[1]);
    assert_eq!(
        json["objects_destroyed"],
        serde_json::json!({"msg": 0, "shm": 0, "sem": 1})
    );
}

/// Issue 10, defect 7: docs/events.md promises `time` on every line. Every kind of line the
/// engine makes, the ones a resynchronisation and an unseen end make included, carries one.
#[test]
fn every_lifecycle_line_has_a_time() {
    let mut h = Harness::new();
    let mut out = Vec::new();
    // What an inventory found (as at startup; `trace` prints the inventory's own lines then).
    h.engine.observe_existing(
        h.ts,
        &[listed_ns(NS_B, 0)],
        &[listed(NS_B, IpcObject::Msg, 0, 1)],
        &mut out,
    );
    let a = ns(NS_A, 42);
    out.extend(h.unshare(5, a));
    out.extend(h.feed(
        6,
        host(),
        Body::Setns {
            fd: 3,
            nstype: 0,
            from: a,
            result: Ok(0),
        },
    ));
    for object in IpcObject::ALL {
        out.extend(h.get(a, object, 0x10, 0));
    }
    out.extend(h.get(a, IpcObject::Shm, 0x11, 1));
    out.extend(h.feed(
        7,
        a,
        Body::Get {
            object: IpcObject::Msg,
            key: 0x12,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    ));
    out.extend(h.feed(
        7,
        a,
        Body::ShmAttach {
            id: 1,
            requested_addr: 0,
            flags: 0,
            result: Ok(0x9000),
        },
    ));
    out.extend(h.rmid(a, IpcObject::Shm, 1, true));
    out.extend(h.feed(
        7,
        a,
        Body::ShmDetach {
            addr: 0x9000,
            result: Ok(0),
        },
    ));
    out.extend(h.shm_freed(a, 1, false));
    out.extend(h.rmid(a, IpcObject::Msg, 0, false));
    // Lost records: a resynchronisation finds the queue of NS_B and the semaphore set gone, a
    // namespace and objects it did not know, and NS_B gone.
    let (_, resynced) = h.resync(
        &[
            listed_ns(HOST_IPC_NS_INUM, 0),
            listed_ns(NS_A, 42),
            listed_ns(0xF000_0001, 0),
        ],
        &[
            listed(NS_A, IpcObject::Shm, 0, 0x10),
            listed(NS_A, IpcObject::Msg, 5, 0x13),
            listed(0xF000_0001, IpcObject::Sem, 0, 0x14),
        ],
        &[],
    );
    assert_eq!(
        Harness::names(&resynced),
        [
            "msg.destroy",
            "ipc_ns.destroy",
            "sem.destroy",
            "ipc_ns.exists",
            "msg.exists",
            "sem.exists"
        ],
        "{resynced:?}"
    );
    // What the resynchronisation found is stamped with when it looked.
    let clock = WallClock::with_offset(0);
    let looked = serde_json::to_value(Rfc3339(clock.wall_time(h.ts))).unwrap();
    for event in &resynced {
        let json = to_json(event);
        assert_eq!(json.get("time"), Some(&looked), "{json}");
        assert!(json.get("lifetime_ns").is_none(), "not known: {json}");
    }
    out.extend(resynced);
    // A new life of NS_A's inum before the old one's free came: the old life ended unseen.
    out.extend(h.get(ns(NS_A, 43), IpcObject::Msg, 0x15, 0));
    out.extend(h.freed(ns(NS_A, 43)));
    let mut kinds = std::collections::BTreeSet::new();
    for event in &out {
        let json = to_json(event);
        assert!(
            json.get("time").is_some_and(serde_json::Value::is_string),
            "{} lacks time: {json}",
            event.name()
        );
        kinds.insert(match event {
            Lifecycle::ObjectDestroy { reason, .. } | Lifecycle::NsDestroy { reason, .. } => {
                format!("{} {}", event.name(), reason.as_str())
            }
            _ => event.name().to_owned(),
        });
    }
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ipc_ns.create",
            "ipc_ns.destroy freed",
            "ipc_ns.destroy unknown",
            "ipc_ns.exists",
            "ipc_ns.join",
            "msg.create",
            "msg.destroy namespace_teardown",
            "msg.destroy rmid",
            "msg.destroy unknown",
            "msg.exists",
            "msg.get_failed",
            "sem.create",
            "sem.destroy unknown",
            "sem.exists",
            "shm.attach",
            "shm.create",
            "shm.destroy last_detach",
            "shm.destroy unknown",
            "shm.detach",
            "shm.remove",
        ],
        "every kind of line, every destroy reason but rmid_forced (the same line)"
    );
}

/// Found by tests/differential.rs (seeds 3 and 5): in a namespace with kernel.shm_rmid_forced
/// set, the creator of an unattached segment exits as the namespace's last holder. exit_shm()
/// destroys the segment, exit_task_namespaces() drops the last reference, and the segment's
/// RCU-deferred kfree comes while the namespace is dying but not yet freed, ~4-12 ms before the
/// namespace's own kfree. The engine called it `namespace_teardown`, on its own, and the
/// namespace's destroy then said `objects_destroyed.shm: 0`. The probe now reads
/// shm_rmid_forced while the namespace's memory is there, dying or not.
#[test]
fn a_forced_destroy_freed_while_the_namespace_dies_is_rmid_forced() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 7, 1);
    h.get(a, IpcObject::Msg, 8, 0);
    let out = h.shm_freed_forced(a, 1, true, true);
    assert_eq!(Harness::names(&out), ["shm.destroy"]);
    assert_eq!(destroy_reason(&out[0]), DestroyReason::RmidForced);
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["msg.destroy", "ipc_ns.destroy"]);
    let Lifecycle::NsDestroy { destroyed, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(
        *destroyed,
        ObjectCounts {
            msg: 1,
            shm: 0,
            sem: 0
        },
        "the segment died before the teardown"
    );
}

/// A teardown free that comes before the namespace's own free (the kworker between
/// shm_exit_ns() and kfree(ns) was held up for a grace period) is reported at once, and the
/// namespace's destroy still counts it: objects_destroyed equals the namespace_teardown destroys
/// of that namespace.
#[test]
fn an_early_teardown_free_is_counted_in_the_namespace_destroy() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 7, 1);
    h.get(a, IpcObject::Shm, 8, 2);
    let early = h.shm_freed(a, 1, true);
    assert_eq!(destroy_reason(&early[0]), DestroyReason::NamespaceTeardown);
    let out = h.freed(a);
    assert_eq!(Harness::names(&out), ["shm.destroy", "ipc_ns.destroy"]);
    let Lifecycle::NsDestroy { destroyed, .. } = &out[1] else {
        panic!()
    };
    assert_eq!(destroyed.shm, 2, "both segments died with the namespace");
    // A later life of the inum starts from nothing.
    let b = ns(NS_A, 43);
    h.unshare(6, b);
    h.get(b, IpcObject::Sem, 9, 0);
    let out = h.freed(b);
    let Lifecycle::NsDestroy { destroyed, .. } = out.last().unwrap() else {
        panic!()
    };
    assert_eq!(
        *destroyed,
        ObjectCounts {
            msg: 0,
            shm: 0,
            sem: 1
        }
    );
}

/// The engine's memory is mostly its object maps: keep an entry at 20 bytes (the key index's
/// at 12, a namespace's at 64), what bench-memory's figure was measured with.
#[test]
fn map_entries_stay_small() {
    use super::{NamespaceState, ObjectId, ObjectState};
    assert_eq!(size_of::<(ObjectId, ObjectState)>(), 20);
    assert_eq!(size_of::<((IpcObject, i32), u32)>(), 12);
    assert_eq!(size_of::<(u32, NamespaceState)>(), 64);
    let mut state = ObjectState::new(7, Some(0));
    assert_eq!((state.created_ns(), state.removed()), (Some(0), false));
    state.set_removed();
    assert_eq!(
        (state.created_ns(), state.removed(), state.key),
        (Some(0), true, 7)
    );
    let state = ObjectState::new(7, Some(u64::MAX));
    assert_eq!(state.created_ns(), Some((1 << 63) - 2));
    assert!(!state.removed());
    assert_eq!(ObjectState::new(7, None).created_ns(), None);
}

/// Once most objects and namespaces died, their maps give the memory back.
#[test]
fn maps_shrink_after_mass_deaths() {
    let mut h = Harness::new();
    let namespaces: Vec<NsRef> = (0..100)
        .map(|i| ns(NS_A + 100 + i, 1000 + u64::from(i)))
        .collect();
    for (i, &at) in namespaces.iter().enumerate() {
        h.unshare(100 + i as u32, at);
        for id in 0..100 {
            let key = 0x1000 + 100 * i as i32 + id;
            h.get(at, IpcObject::Sem, key, i64::from(id) << 15);
        }
    }
    let full = (h.engine.object_capacity(), h.engine.keys.capacity());
    assert!(full.0 >= 10_000 && full.1 >= 10_000, "{full:?}");
    for &at in &namespaces[..95] {
        h.freed(at);
    }
    // The five left, and the host they were created from.
    assert_eq!(h.engine.live_counts(), (6, 500));
    let left = (h.engine.object_capacity(), h.engine.keys.capacity());
    assert!(left.0 <= 2048 && left.1 <= 2048, "{left:?}");
    // A namespace that lives on gives back the room of its dead objects.
    let survivor = namespaces[99];
    for id in 100..10_000 {
        h.get(survivor, IpcObject::Msg, 0, i64::from(id) << 15);
    }
    assert!(h.engine.object_capacity() >= 10_000);
    for id in 100..10_000 {
        h.rmid(survivor, IpcObject::Msg, id << 15, false);
    }
    assert_eq!(h.engine.live_counts(), (6, 500));
    assert!(
        h.engine.object_capacity() <= 2048,
        "{}",
        h.engine.object_capacity()
    );
    h.engine.check_indexes().unwrap();
}

/// A namespace's free destroys its own objects, whatever their ids and keys share with other
/// namespaces' objects, and nothing else: the others stay alive, findable by key, and
/// destroyable.
#[test]
fn a_namespace_free_destroys_exactly_its_own_objects() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    // The same ids and keys in A, B and the host.
    for at in [a, b, host()] {
        for (i, object) in IpcObject::ALL.into_iter().enumerate() {
            for seq in 0..3 {
                h.get(at, object, 0x100 + i as i32, seq << 15);
            }
        }
    }
    h.engine.check_indexes().unwrap();
    let before = h.engine.live_objects();
    assert_eq!(before.len(), 27);
    let out = h.freed(a);
    let Some((Lifecycle::NsDestroy { ns, destroyed, .. }, objects)) = out.split_last() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (ns.inum, destroyed.msg + destroyed.shm + destroyed.sem),
        (NS_A, 9)
    );
    let mut destroyed: Vec<(u32, IpcObject, i32)> = objects
        .iter()
        .map(|event| match event {
            Lifecycle::ObjectDestroy { ns, object, id, .. } => (ns.inum, *object, *id),
            other => panic!("{other:?}"),
        })
        .collect();
    destroyed.sort_unstable();
    let (of_a, others): (Vec<_>, Vec<_>) = before.into_iter().partition(|o| o.0 == NS_A);
    assert_eq!(destroyed, of_a);
    assert_eq!(h.engine.live_objects(), others);
    h.engine.check_indexes().unwrap();
    // B's objects are still there: found by key from elsewhere, destroyed by IPC_RMID.
    let out = h.feed(
        8,
        host(),
        Body::Get {
            object: IpcObject::Sem,
            key: 0x102,
            flags: 0,
            size: 0,
            result: Err(2),
        },
    );
    let Lifecycle::GetFailed { key_lives_in, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(inums(key_lives_in), [NS_B]);
    assert_eq!(
        Harness::names(&h.rmid(b, IpcObject::Sem, 1 << 15, false)),
        ["sem.destroy"]
    );
    assert_eq!(h.engine.live_counts(), (2, 17));
}

/// Records reach the ring buffer in reservation order, from every CPU: one thread's IPC_RMID
/// can come before the record of the get, on another CPU, that created the object. The
/// object then dies as soon as its create comes, by that removal.
#[test]
fn a_removal_before_its_objects_create_still_ends_it() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    assert!(h.rmid(a, IpcObject::Msg, 7, false).is_empty());
    let out = h.get(a, IpcObject::Msg, 0x55, 7);
    assert_eq!(Harness::names(&out), ["msg.create", "msg.destroy"]);
    let Lifecycle::ObjectDestroy {
        reason,
        task,
        lifetime_ns,
        ..
    } = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_eq!(*reason, DestroyReason::Rmid);
    assert_eq!(task.map(|t| t.pid), Some(11), "the remover");
    assert_eq!(
        *lifetime_ns,
        Some(0),
        "removed as soon as made, as far as anyone saw"
    );
    // A segment removed while attached, before its create: created, then marked removed.
    assert!(h.rmid(a, IpcObject::Shm, 8, true).is_empty());
    assert_eq!(
        Harness::names(&h.get(a, IpcObject::Shm, 0x56, 8)),
        ["shm.create", "shm.remove"]
    );
    assert_eq!(h.engine.live_objects(), [(NS_A, IpcObject::Shm, 8)]);
    // Removals whose creates never come are forgotten with their namespace.
    assert!(h.rmid(a, IpcObject::Sem, 9, false).is_empty());
    h.freed(a);
    h.unshare(5, ns(NS_A, 43));
    assert_eq!(
        Harness::names(&h.get(ns(NS_A, 43), IpcObject::Sem, 0x57, 9)),
        ["sem.create"]
    );
    h.engine.check_indexes().unwrap();
}

fn attach(h: &mut Harness, pid: u32, at: NsRef, id: i32, addr: u64) -> Vec<Lifecycle> {
    h.feed(
        pid,
        at,
        Body::ShmAttach {
            id,
            requested_addr: 0,
            flags: 0,
            result: Ok(addr as i64),
        },
    )
}

fn detach(h: &mut Harness, pid: u32, at: NsRef, addr: u64) -> Vec<Lifecycle> {
    h.feed(
        pid,
        at,
        Body::ShmDetach {
            addr,
            result: Ok(0),
        },
    )
}

#[test]
fn a_removed_segment_awaits_its_free_once_no_known_attachment_holds_it() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x55, 4);
    h.get(a, IpcObject::Shm, 0x56, 5);
    attach(&mut h, 12, a, 4, 0x7f00);
    attach(&mut h, 13, a, 4, 0x7f00);
    assert!(h.engine.removed_unattached().is_empty(), "not removed");
    h.rmid(a, IpcObject::Shm, 4, true);
    assert!(
        h.engine.removed_unattached().is_empty(),
        "still attached twice"
    );
    detach(&mut h, 12, a, 0x7f00);
    assert!(
        h.engine.removed_unattached().is_empty(),
        "pid 13 still attached"
    );
    h.feed(13, a, Body::ProcessExit);
    assert_eq!(h.engine.removed_unattached(), [(NS_A, 4)]);
    h.freed(a);
    assert!(
        h.engine.removed_unattached().is_empty(),
        "gone with its namespace"
    );
}

#[test]
fn a_removed_segment_found_gone_is_destroyed_late_by_its_last_detach() {
    let mut h = Harness::new();
    let a = ns(NS_A, 42);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0x55, 4);
    h.get(a, IpcObject::Shm, 0x56, 5);
    attach(&mut h, 12, a, 4, 0x7f00);
    h.rmid(a, IpcObject::Shm, 4, true);
    detach(&mut h, 12, a, 0x7f00);

    let mut out = Vec::new();
    h.engine.found_gone(NS_A, 5, 9_000_000, &mut out);
    assert!(
        out.is_empty(),
        "a segment never removed is not awaiting its free"
    );
    h.engine.found_gone(NS_A, 4, 9_000_000, &mut out);
    let json = to_json(&out[0]);
    assert_eq!(json["event"], "shm.destroy", "{json}");
    assert_eq!(json["reason"], "last_detach", "{json}");
    assert_eq!(json["late"], true, "{json}");
    assert!(h.engine.removed_unattached().is_empty());
    // Its free, should it come after all, changes nothing.
    assert!(h.shm_freed(a, 4, false).is_empty());
    let mut again = Vec::new();
    h.engine.found_gone(NS_A, 4, 9_000_001, &mut again);
    assert!(again.is_empty(), "destroyed once");
}

#[test]
fn a_detach_names_the_segments_namespace_not_the_callers() {
    let mut h = Harness::new();
    let (a, b) = (ns(NS_A, 42), ns(NS_B, 43));
    h.unshare(5, a);
    h.unshare(6, b);
    h.get(a, IpcObject::Shm, 0x55, 4);
    attach(&mut h, 12, a, 4, 0x7f00);
    // The attacher moved to namespace b (setns) before it detached.
    let out = detach(&mut h, 12, b, 0x7f00);
    let Lifecycle::ShmDetach { ns, id, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((ns.inum, *id), (NS_A, Some(4)));
    // An address the engine does not know is reported where the caller is.
    let out = detach(&mut h, 12, b, 0x9000);
    let Lifecycle::ShmDetach { ns, id, .. } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((ns.inum, *id), (NS_B, None));
}

/// Issue 10, defect 3: where the kernel has no ns_id, a namespace's inum goes to the next one
/// at once, while the frees of its segments come an RCU grace period after its own. A late
/// free of the dead namespace's segment 0 must not destroy the new namespace's segment 0: the
/// probes say its namespace was freed already (they tag each namespace life they track).
#[test]
fn a_dead_namespaces_late_segment_free_spares_the_next_life() {
    let mut h = Harness::new();
    let a = ns(NS_A, 0);
    h.unshare(5, a);
    h.get(a, IpcObject::Shm, 0, 0);
    assert_eq!(
        Harness::names(&h.freed(a)),
        ["shm.destroy", "ipc_ns.destroy"]
    );
    h.unshare(6, a);
    h.get(a, IpcObject::Shm, 0, 0);
    let late = |ns_freed| Body::ShmFreed {
        id: 0,
        key: 0,
        ns_dying: true,
        ns_freed,
        rmid_forced: false,
    };
    assert!(h.feed(0, a, late(true)).is_empty());
    assert_eq!(h.engine.live_objects(), [(NS_A, IpcObject::Shm, 0)]);
    // What the engine would otherwise have done: the inum's new life lost its segment.
    assert_eq!(Harness::names(&h.feed(0, a, late(false))), ["shm.destroy"]);
}
