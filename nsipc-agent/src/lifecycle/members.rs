//! Containers in the engine: who lives in each namespace (for joins and destroys), containers
//! in the host's namespace (`--ipc=host`), and what they leave behind there.

use nsipc_common::{HOST_IPC_NS_INUM, NsRef};

use super::{Engine, Lifecycle, ObjectKey, OrphanCause};
use crate::{
    decode::{ContainerRef, KernelEvent, Task},
    inventory::HELPER_THREAD_NAME,
};

/// Containers remembered per namespace, at most (a namespace shared by more is unusual, and
/// its lines would grow without bound).
const MAX_MEMBERS: usize = 64;

impl Engine {
    /// The containers seen living in namespace `inum`.
    pub(super) fn members_of(&self, inum: u32) -> Vec<ContainerRef> {
        self.members.get(&inum).cloned().unwrap_or_default()
    }

    /// Announces, before the first event it makes there, a container whose task is in the
    /// host's namespace (`--ipc=host`).
    pub(super) fn announce_host_ipc(&mut self, event: &KernelEvent, out: &mut Vec<Lifecycle>) {
        let task = event.task;
        if event.ns.inum == HOST_IPC_NS_INUM
            && task.container.is_some()
            && !self.is_agent(&task)
            && self.host_ipc.insert(task.container)
        {
            let ns = self.ident(event.ns, event.ts_ns, out);
            out.push(Lifecycle::ContainerHostIpc {
                ts: event.ts_ns,
                task,
                ns,
            });
        }
    }

    /// Whether `task` is this agent, or the inventory helper of any nsipc-agent (which enters
    /// namespaces to read them, and is nobody's join).
    pub(super) fn is_agent(&self, task: &Task) -> bool {
        task.pid == self.agent_pid || task.comm_bytes() == HELPER_THREAD_NAME.as_bytes()
    }

    /// Notes that `task` was seen in namespace `ns` (its namespace after the event): a
    /// container there is one of its members.
    pub(super) fn note_member(&mut self, task: Task, ns: NsRef) {
        let container = task.container;
        if !container.is_some()
            || ns.inum == HOST_IPC_NS_INUM
            || self.is_agent(&task)
            || !self.namespaces.contains_key(&ns.inum)
        {
            return;
        }
        let members = self.members.entry(ns.inum).or_default();
        if !members.contains(&container) && members.len() < MAX_MEMBERS {
            members.push(container);
        }
    }

    /// A container's cgroup went: what it made in the host's namespace and is still there
    /// outlives it (`--ipc=host` leftovers), each reported once.
    pub(super) fn container_ended(
        &mut self,
        container: ContainerRef,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        if !container.is_some() || !self.host_ipc.contains(&container) {
            return;
        }
        let mut left: Vec<ObjectKey> = self
            .made_in_host
            .iter()
            .filter(|&(_, &maker)| maker == container)
            .map(|(&key, _)| key)
            .collect();
        left.sort_unstable_by_key(|key| (key.object, key.id));
        for key in left {
            self.made_in_host.remove(&key);
            self.orphaned(key, OrphanCause::ContainerEnded, container, ts, out);
        }
    }
}
