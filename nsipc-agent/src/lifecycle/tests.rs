//! The engine, exhaustively, without a kernel: each test feeds kernel events as the probes
//! would produce them and checks what comes out and what stays alive.

use nsipc_common::{HOST_IPC_NS_INUM, NsRef};

use super::{gauges::NamespaceGauge, resync::ResyncCounts, *};
use crate::output::json::FieldsLine;
use crate::{
    attribution::Attribution,
    decode::{Body, KernelEvent, Task},
    inventory::HELPER_THREAD_NAME,
    names::IpcObject,
    output::{
        fields::{Rfc3339, WallClock},
        lifecycle_events::LifecycleJson,
    },
};

mod containers;
mod gauges;
mod json;
mod keys;
mod limits;
mod memory;
mod mqueues;
mod namespaces;
mod objects;
mod ordering;
mod orphans;
mod resync;
mod shm;

const AGENT_PID: u32 = 999;
const NS_A: u32 = 4026532177;
const NS_B: u32 = 4026532178;

fn ns(inum: u32, id: u64) -> NsRef {
    NsRef { id, inum, life: 0 }
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

/// A lifecycle event as the stream writes it, with no containers known. The hot path's line
/// ([`FieldsLine::write_json`] of [`LifecycleJson`]) and serde's are checked to be the same bytes.
fn to_json(event: &Lifecycle) -> serde_json::Value {
    let json = LifecycleJson {
        event,
        clock: &WallClock::with_offset(0),
        attribution: &Attribution::none(),
    };
    let serde_line = serde_json::to_string(&json).unwrap();
    let mut fast = Vec::new();
    json.write_json(&mut fast);
    assert_eq!(
        String::from_utf8(fast).unwrap(),
        serde_line,
        "the hot path writes what serde writes"
    );
    serde_json::from_str(&serde_line).unwrap()
}

/// Feeds events, collecting the output.
struct Harness {
    engine: Engine,
    ts: u64,
    out: Vec<Lifecycle>,
    /// Attachments (pid, address) the engine knows of that the kernel no longer has (a
    /// process that exec'd, or whose detach the engine never saw); every other is still there.
    unmapped: HashSet<(u32, u64)>,
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
        // As `trace --metrics-addr` has it: every test checks the sizes kept too.
        engine.keep_shm_sizes();
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
            unmapped: HashSet::new(),
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
        let unmapped = &self.unmapped;
        let look = Look {
            ts: self.ts,
            namespaces,
            objects,
        };
        let counts = self.engine.resync(
            look,
            frees_only,
            racing,
            |pid, addr, _| !unmapped.contains(&(pid, addr)),
            &mut out,
        );
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

fn listed_ns(inum: u32, id: u64) -> ExistingNamespace {
    ExistingNamespace { inum, id }
}

fn listed(ns: u32, object: IpcObject, id: i32, key: i32) -> ExistingObject {
    ExistingObject {
        ns,
        object,
        id,
        key,
        size: 0,
    }
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
            rmid_forced: false,
            result: Ok(0),
        },
    )
}
