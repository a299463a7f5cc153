//! Every kind of line the stream writes, numbered, so that counting a line by its kind
//! (`nsipc_events_total{event}`) is one array increment on the hot path, not a lookup by name.

use crate::{
    decode::Body,
    lifecycle::Lifecycle,
    names::IpcObject::{self, Msg, Sem, Shm},
    output::agent_events::AgentEvent,
};

/// The `"event"` names, in [`LineKind`] order.
pub const LINE_KINDS: [&str; LineKind::COUNT] = [
    "ipc_ns.exists",
    "ipc_ns.create",
    "ipc_ns.join",
    "ipc_ns.destroy",
    "msg.exists",
    "shm.exists",
    "sem.exists",
    "msg.create",
    "shm.create",
    "sem.create",
    "msg.destroy",
    "shm.destroy",
    "sem.destroy",
    "shm.remove",
    "shm.attach",
    "shm.detach",
    "msg.get_failed",
    "shm.get_failed",
    "sem.get_failed",
    "container.host_ipc",
    "msg.orphaned",
    "shm.orphaned",
    "sem.orphaned",
    "msg.get",
    "shm.get",
    "sem.get",
    "msg.ctl",
    "shm.ctl",
    "sem.ctl",
    "shm.shmat",
    "shm.shmdt",
    "ipc_ns.unshare",
    "ipc_ns.setns",
    "ipc_ns.clone",
    "process.exit",
    "ipc_ns.freed",
    "shm.freed",
    "cgroup.mkdir",
    "cgroup.rmdir",
    "msg.activity",
    "sem.activity",
    "ipc.flow",
    "msg.full",
    "mqueue.create",
    "mqueue.open_failed",
    "mqueue.unlink",
    "mqueue.destroy",
    "mqueue.mq_open",
    "mqueue.mq_unlink",
    "mqueue.evicted",
    "mqueue.exists",
    "agent.ready",
    "agent.lost",
    "agent.missed",
    "agent.resync",
    "agent.kfree_check",
    "agent.decode_error",
    "agent.stop",
];

/// How many kinds `--events` can select: every kind but the always written ones (the
/// inventory's `ipc_ns.exists` and `*.exists`, and the agent's own lines).
const SELECTABLE_COUNT: usize = LineKind::COUNT - 5 - (LineKind::COUNT - LineKind::AGENT as usize);

/// The kinds `--events` can select, in [`LINE_KINDS`] order: built from it, so that a new kind
/// is selectable (and counted) under one name, written once.
pub const SELECTABLE_KINDS: [&str; SELECTABLE_COUNT] = {
    let mut names = [""; SELECTABLE_COUNT];
    let (mut kind, mut n) = (0, 0);
    while kind < LineKind::COUNT {
        if !LineKind(kind as u8).always_written() {
            names[n] = LINE_KINDS[kind];
            n += 1;
        }
        kind += 1;
    }
    assert!(n == SELECTABLE_COUNT);
    names
};

/// A kind of line: an index into [`LINE_KINDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineKind(u8);

/// The kinds whose name depends on the object type come in msg, shm, sem order.
const fn by_object(first: u8, object: IpcObject) -> LineKind {
    LineKind(
        first
            + match object {
                Msg => 0,
                Shm => 1,
                Sem => 2,
            },
    )
}

impl LineKind {
    pub const COUNT: usize = 58;

    pub const NS_EXISTS: Self = Self(0);
    const OBJECT_EXISTS: u8 = 4;
    const GET: u8 = 23;
    const CTL: u8 = 26;
    /// `msg.activity`, `sem.activity`, `ipc.flow`, `msg.full`.
    pub const MSG_ACTIVITY: Self = Self(39);
    pub const SEM_ACTIVITY: Self = Self(40);
    pub const FLOW: Self = Self(41);
    pub const MSG_FULL: Self = Self(42);
    const MQUEUE: u8 = 43;
    /// The inventory's POSIX message queues.
    pub const MQUEUE_EXISTS: Self = Self(50);
    const AGENT: u8 = 51;

    #[cfg(test)]
    pub fn name(self) -> &'static str {
        LINE_KINDS[self.0 as usize]
    }

    /// The inventory's and the agent's own lines: written whatever `--events` says.
    pub const fn always_written(self) -> bool {
        self.0 == Self::NS_EXISTS.0
            || (self.0 >= Self::OBJECT_EXISTS && self.0 < Self::OBJECT_EXISTS + 3)
            || self.0 == Self::MQUEUE_EXISTS.0
            || self.0 >= Self::AGENT
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// `msg.exists`, `shm.exists`, `sem.exists`: the startup inventory's object lines.
    pub const fn object_exists(object: IpcObject) -> Self {
        by_object(Self::OBJECT_EXISTS, object)
    }

    pub fn of_lifecycle(event: &Lifecycle) -> Self {
        match event {
            Lifecycle::NsExists { .. } => Self(0),
            Lifecycle::NsCreate { .. } => Self(1),
            Lifecycle::NsJoin { .. } => Self(2),
            Lifecycle::NsDestroy { .. } => Self(3),
            Lifecycle::ObjectExists { object, .. } => by_object(Self::OBJECT_EXISTS, *object),
            Lifecycle::ObjectCreate { object, .. } => by_object(7, *object),
            Lifecycle::ObjectDestroy { object, .. } => by_object(10, *object),
            Lifecycle::ShmRemove { .. } => Self(13),
            Lifecycle::ShmAttach { .. } => Self(14),
            Lifecycle::ShmDetach { .. } => Self(15),
            Lifecycle::GetFailed { object, .. } => by_object(16, *object),
            Lifecycle::ContainerHostIpc { .. } => Self(19),
            Lifecycle::ObjectOrphaned { object, .. } => by_object(20, *object),
            Lifecycle::MqueueCreate { .. } => Self(Self::MQUEUE),
            Lifecycle::MqueueOpenFailed { .. } => Self(Self::MQUEUE + 1),
            Lifecycle::MqueueUnlink { .. } => Self(Self::MQUEUE + 2),
            Lifecycle::MqueueDestroy { .. } => Self(Self::MQUEUE + 3),
        }
    }

    /// The kind of a raw kernel event's line (`--raw`).
    pub fn of_kernel(body: &Body) -> Self {
        match body {
            Body::Get { object, .. } => by_object(Self::GET, *object),
            Body::Ctl { object, .. } => by_object(Self::CTL, *object),
            Body::ShmAttach { .. } => Self(29),
            Body::ShmDetach { .. } => Self(30),
            Body::Unshare { .. } => Self(31),
            Body::Setns { .. } => Self(32),
            Body::Clone { .. } => Self(33),
            Body::ProcessExit { .. } => Self(34),
            Body::NsFreed => Self(35),
            Body::ShmFreed { .. } => Self(36),
            Body::CgroupMkdir { .. } => Self(37),
            Body::CgroupRmdir { .. } => Self(38),
            Body::MqueueOpen { .. } => Self(Self::MQUEUE + 4),
            Body::MqueueUnlink { .. } => Self(Self::MQUEUE + 5),
            Body::MqueueEvicted { .. } => Self(Self::MQUEUE + 6),
        }
    }

    pub fn of_agent(event: &AgentEvent<'_>) -> Self {
        Self(
            Self::AGENT
                + match event {
                    AgentEvent::Ready { .. } => 0,
                    AgentEvent::Lost { .. } => 1,
                    AgentEvent::Missed { .. } => 2,
                    AgentEvent::Resync { .. } => 3,
                    AgentEvent::KfreeCheck { .. } => 4,
                    AgentEvent::DecodeError { .. } => 5,
                    AgentEvent::Stop { .. } => 6,
                },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nsipc_common::EventKind;

    use super::*;
    use crate::{
        decode::{ContainerRef, decode, tests::record_bytes, tests::task},
        filter::EVENT_NAMES,
        lifecycle::{DestroyReason, JoinKind, NsIdent, ObjectCounts, OrphanCause, Via},
        output::agent_events::ResyncCause,
        output::fields::Rfc3339,
        output::kernel_events::kind_name,
        probes::{Backend, FreeHooks},
    };

    #[test]
    fn names_are_distinct_and_cover_every_selectable_kind() {
        let mut sorted = LINE_KINDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), LineKind::COUNT);
        for name in EVENT_NAMES {
            assert!(LINE_KINDS.contains(name), "{name}");
        }
    }

    /// `--events` selects every kind but the inventory's and the agent's own lines.
    #[test]
    fn selectable_kinds_are_all_but_the_inventory_and_agent_lines() {
        let by_name: Vec<&str> = LINE_KINDS
            .iter()
            .copied()
            .filter(|name| !name.ends_with(".exists") && !name.starts_with("agent."))
            .collect();
        assert_eq!(SELECTABLE_KINDS.to_vec(), by_name);
        assert_eq!(EVENT_NAMES, SELECTABLE_KINDS);
    }

    #[test]
    fn kernel_kinds_are_their_lines_names() {
        let mut id = 1;
        while let Some(kind) = EventKind::from_record(id) {
            let event = decode(&record_bytes(kind, 0, [0; 4])).unwrap();
            assert_eq!(LineKind::of_kernel(&event.body).name(), kind_name(id));
            // Every object type of the per-type records.
            if let Body::Get { .. } | Body::Ctl { .. } = event.body {
                for object in [Msg, Shm, Sem] {
                    let mut body = event.body.clone();
                    match &mut body {
                        Body::Get { object: o, .. } | Body::Ctl { object: o, .. } => *o = object,
                        _ => unreachable!(),
                    }
                    assert_eq!(
                        LineKind::of_kernel(&body).name(),
                        crate::output::kernel_events::event_name(&body)
                    );
                }
            }
            id += 1;
        }
        assert!(id > 16, "every record kind was tried");
    }

    #[test]
    fn lifecycle_kinds_are_their_lines_names() {
        let ns = NsIdent {
            inum: 4026532177,
            id: 0,
            generation: 1,
        };
        let task = task(5, b"ipcmk", ContainerRef::NONE);
        let mut events = vec![
            Lifecycle::NsExists { ts: 0, ns },
            Lifecycle::NsCreate {
                ts: 0,
                task,
                ns,
                from: ns,
                via: Via::Unshare,
                child_pid: None,
                limits: None,
            },
            Lifecycle::NsJoin {
                ts: 0,
                task,
                ns,
                from: ns,
                into_host: false,
                kind: JoinKind::Setns,
                members: Vec::new(),
            },
            Lifecycle::NsDestroy {
                ts: 0,
                ns,
                containers: Vec::new(),
                lifetime_ns: None,
                destroyed: ObjectCounts::default(),
                reason: DestroyReason::Freed,
                late: false,
            },
            Lifecycle::ShmRemove {
                ts: 0,
                task,
                ns,
                id: 0,
                key: 0,
            },
            Lifecycle::ShmAttach {
                ts: 0,
                task,
                ns,
                id: 0,
                key: None,
                addr: 0,
            },
            Lifecycle::ShmDetach {
                ts: 0,
                task,
                ns,
                id: None,
                key: None,
                addr: 0,
            },
            Lifecycle::ContainerHostIpc { ts: 0, task, ns },
        ];
        for object in [Msg, Shm, Sem] {
            events.extend([
                Lifecycle::ObjectExists {
                    ts: 0,
                    ns,
                    object,
                    id: 0,
                    key: 0,
                },
                Lifecycle::ObjectCreate {
                    ts: 0,
                    task,
                    ns,
                    object,
                    id: 0,
                    key: 0,
                    mode: 0,
                    size: 0,
                },
                Lifecycle::ObjectDestroy {
                    ts: 0,
                    task: None,
                    ns,
                    object,
                    id: 0,
                    key: 0,
                    reason: DestroyReason::Rmid,
                    lifetime_ns: None,
                    late: false,
                },
                Lifecycle::GetFailed {
                    ts: 0,
                    task,
                    ns,
                    object,
                    key: 0,
                    flags: 0,
                    errno: 2,
                    key_lives_in: Vec::new(),
                    limit: None,
                },
                Lifecycle::ObjectOrphaned {
                    ts: 0,
                    ns,
                    object,
                    id: 0,
                    key: 0,
                    container: ContainerRef::NONE,
                    cause: OrphanCause::ContainerEnded,
                },
            ]);
        }
        assert_eq!(events.len(), 23);
        for event in &events {
            assert_eq!(LineKind::of_lifecycle(event).name(), event.name());
        }
        for object in [Msg, Shm, Sem] {
            let exists = Lifecycle::ObjectExists {
                ts: 0,
                ns,
                object,
                id: 0,
                key: 0,
            };
            assert_eq!(LineKind::object_exists(object).name(), exists.name());
        }
        assert_eq!(LineKind::NS_EXISTS.name(), "ipc_ns.exists");
    }

    #[test]
    fn agent_kinds_are_their_lines_names() {
        let time = || Rfc3339(std::time::SystemTime::UNIX_EPOCH);
        let empty = BTreeMap::new();
        let events = [
            AgentEvent::Ready {
                time: time(),
                version: "0",
                backend: Backend::Tracepoint,
                hooks: BTreeMap::new(),
                degraded: BTreeMap::new(),
                frees: FreeHooks::Kfree,
                frees_refused: &empty,
                kernel: "6.18",
                fallbacks: BTreeMap::new(),
                programs: 0,
                ns_id: true,
                host_ns: 0,
                ring_buffer_bytes: 0,
                pid: 0,
                inventory_namespaces: 0,
                inventory_objects: 0,
                inventory_ms: 0,
                cgroup_hierarchy: None,
                metrics_addr: None,
            },
            AgentEvent::Lost {
                time: time(),
                count: 1,
                total: 1,
                kinds: BTreeMap::new(),
            },
            AgentEvent::Missed {
                time: time(),
                count: 1,
                total: 1,
            },
            AgentEvent::Resync {
                time: time(),
                after: ResyncCause::Lost,
                namespaces_gone: 0,
                namespaces_found: 0,
                objects_gone: 0,
                objects_found: 0,
            },
            AgentEvent::KfreeCheck {
                time: time(),
                ok: true,
                namespace_free_seen: true,
                segment_free_seen: true,
                ms: 0,
                error: None,
            },
            AgentEvent::DecodeError {
                time: time(),
                error: String::new(),
                total: 1,
            },
            AgentEvent::Stop {
                time: time(),
                reason: "SIGINT",
                events: 0,
                lost: 0,
                missed: 0,
                decode_errors: 0,
                late_destroys: 0,
                kfree_skipped: 0,
            },
        ];
        for event in &events {
            let json = serde_json::to_value(event).unwrap();
            assert_eq!(LineKind::of_agent(event).name(), json["event"]);
        }
    }
}
