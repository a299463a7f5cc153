//! The lifecycle engine: kernel events in, what exists and what was born or died out.
//!
//! Pure: no I/O, no clock. It keeps one entry per live IPC namespace and per live SysV object,
//! so its memory follows what is alive, not how many events went by.
//!
//! Identity: the kernel reuses a namespace inum as soon as it is freed, so a namespace is an
//! inum plus the kernel's never-reused `ns_id` (6.18+) or, on older kernels, a generation the
//! engine counts per inum. Objects are keyed by (namespace, type, id): ids repeat across
//! namespaces. Each namespace holds the map of its own objects, so that its death costs what
//! it held, not what the whole machine holds.

#[cfg(test)]
mod checks;
mod events;
mod forced;
mod gauges;
mod keys;
mod members;
mod mqueues;
mod namespaces;
mod objects;
mod orphans;
mod resync;
mod state;

use std::collections::{HashMap, HashSet, VecDeque};

use nsipc_common::HOST_IPC_NS_INUM;

pub use self::events::{
    DestroyReason, JoinKind, KeyHome, Lifecycle, MqueueIdent, NsIdent, ObjectCounts, OrphanCause,
    Via,
};
pub use self::mqueues::UNNAMED_EVICTION_WAIT_NS;
pub use self::resync::{ExistingNamespace, ExistingObject, Look};
use self::state::{NamespaceState, ObjectMap, ObjectState, SPARE_MAPS};
use crate::{
    decode::{Body, ContainerRef, KernelEvent, Task},
    limits::{self, Limits},
    names::IpcObject,
};

/// The engine's maps are looked up several times per event: foldhash (seeded at random per
/// process, so key collisions cannot be planned) costs a fraction of std's SipHash.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// `IPC_RMID` (include/uapi/linux/ipc.h), after masking `IPC_64`.
const IPC_RMID: i32 = 0;
const IPC_64: i32 = 0x100;
/// `IPC_PRIVATE`: a get with this key always creates, and its key names nothing.
const IPC_PRIVATE: i32 = 0;
/// x86-64's `__NR_mq_open`.
const SYS_MQ_OPEN: i64 = 240;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ObjectKey {
    ns: u32,
    object: IpcObject,
    id: i32,
}

/// An object within its namespace: the key of a namespace's object map.
type ObjectId = (IpcObject, i32);

impl ObjectKey {
    fn in_ns(self) -> ObjectId {
        (self.object, self.id)
    }
}

pub struct Engine {
    /// Events of the agent's own threads (the inventory enters namespaces) are not users'.
    agent_pid: u32,
    namespaces: Map<u32, NamespaceState>,
    /// Generation to give the next life of an inum (kernels without `ns_id`).
    next_generation: Map<u32, u32>,
    /// Live attachments: (pid, address) → segment.
    attachments: Map<(u32, u64), ObjectKey>,
    /// Live segments removed while attached (IPC_RMID marked them; their last detach frees
    /// them): what [`Self::awaiting_free`] looks through, rather than every object.
    removed_segments: HashSet<ObjectKey>,
    /// Namespaces whose latest record said kernel.shm_rmid_forced is set ([`forced`]).
    rmid_forced_namespaces: HashSet<u32>,
    /// Segments of those namespaces that lost their creator or last known attachment: the
    /// kernel destroyed them, and their free should follow ([`forced`]). Few.
    forced_frees: HashSet<ObjectKey>,
    /// (type, key) → namespaces where a live object of that type has that key, for
    /// `key_lives_in` without scanning every object. IPC_PRIVATE is not indexed.
    keys: Map<(IpcObject, i32), u32>,
    /// The other namespaces where the same (type, key) is live, for the rare key used in
    /// several: kept apart so that `keys` holds one small entry per keyed object.
    more_keys: Map<(IpcObject, i32), Vec<u32>>,
    /// Inum → shm segments of its teardown already reported destroyed, their frees having
    /// come before the namespace's own: counted in its `objects_destroyed`. Rare and brief, so
    /// kept apart rather than in every namespace's state.
    torn_down: Map<u32, u32>,
    /// Reused by [`Self::namespace_freed`], so a teardown does not allocate.
    dead: Vec<(ObjectId, ObjectState)>,
    /// Live objects, all namespaces together.
    objects_live: usize,
    /// (inum, id) → size in bytes of each live shm segment, for the metrics' gauges: kept
    /// apart from the objects' packed state, only for segments, and only when asked
    /// ([`Self::keep_shm_sizes`]): without metrics the engine's memory stays as it was.
    shm_sizes: Option<Map<(u32, i32), u64>>,
    /// Emptied object maps of dead namespaces, for new ones: namespaces come and go without
    /// allocating (up to [`SPARE_MAPS`] small ones are kept).
    spare_maps: Vec<ObjectMap>,
    /// Inum → the containers whose tasks were seen in that (non-host) namespace, in the order
    /// first seen (its creator's first): who lives there, for joins and its destroy. Only
    /// namespaces with containers have an entry.
    members: Map<u32, Vec<ContainerRef>>,
    /// Containers already seen in the host's namespace (`--ipc=host`): each is announced once.
    host_ipc: HashSet<ContainerRef>,
    /// Removals (IPC_RMID) of objects the engine did not know, by namespace and id, oldest
    /// first in `early_order`: records reach the ring buffer in the order they were reserved,
    /// from every CPU, so a thread's removal can come before the record of the get that made
    /// the object on another CPU. A create that comes after its object's removal dies at once
    /// ([`Self::removed_early`]); an id comes back only after 2^16 turns of its index, so the
    /// removal is that object's. At most [`MAX_EARLY_REMOVALS`].
    early_removals: Map<ObjectKey, EarlyRemoval>,
    early_order: VecDeque<ObjectKey>,
    /// Live objects of the host's namespace made by a container's task (`--ipc=host`), with
    /// the container: reported orphaned if it ends before them. Few, and only such objects.
    made_in_host: Map<ObjectKey, ContainerRef>,
    /// Process (tgid) → how many live objects it was seen creating: its exit orphans them
    /// ([`orphans`]). Only processes with some have an entry.
    live_by_creator: Map<u32, u32>,
    /// Segments whose creator exited while other processes had them attached: orphaned at
    /// their last detach. Few.
    orphans_at_last_detach: Map<ObjectKey, (OrphanCause, ContainerRef)>,
    /// Reused by [`orphans`], so that exits and detaches do not allocate.
    orphan_candidates: Vec<ObjectKey>,
    /// Live namespaces the stream has not announced (no `create`, no `exists`): first named by
    /// a record of something done inside them, their creation's record lost or yet to come.
    /// The next inventory that lists one announces it. Empty but for losses and races.
    unannounced: HashSet<u32>,
    /// Records were lost (or probe runs skipped) since the last resynchronisation: the engine
    /// cannot tell what a namespace ending unseen still held.
    records_lost: bool,
    /// The limits of the namespace of the event being applied, given by
    /// [`Self::apply_with_limits`] for a failed get: the engine reads nothing itself.
    given_limits: Option<Limits>,
    /// POSIX message queues ([`mqueues`]).
    mqueues: mqueues::Mqueues,
    /// The probes name the queue each eviction is of ([`Self::mqueue_evictions_unnamed`]).
    mqueue_evictions_named: bool,
}

/// A removal of an object not known yet.
#[derive(Clone, Copy, Debug)]
struct EarlyRemoval {
    ts: u64,
    task: Task,
    /// A segment still attached: only marked removed.
    attached: bool,
}

/// Early removals remembered at most: a removal's create comes within a few records, and one
/// whose create was lost is forgotten in turn.
const MAX_EARLY_REMOVALS: usize = 1024;

impl Engine {
    pub fn new(agent_pid: u32) -> Self {
        Self {
            agent_pid,
            namespaces: Map::default(),
            next_generation: Map::default(),
            attachments: Map::default(),
            removed_segments: HashSet::new(),
            rmid_forced_namespaces: HashSet::new(),
            forced_frees: HashSet::new(),
            keys: Map::default(),
            more_keys: Map::default(),
            torn_down: Map::default(),
            dead: Vec::new(),
            objects_live: 0,
            shm_sizes: None,
            spare_maps: Vec::with_capacity(SPARE_MAPS),
            members: Map::default(),
            host_ipc: HashSet::new(),
            unannounced: HashSet::new(),
            records_lost: false,
            given_limits: None,
            made_in_host: Map::default(),
            live_by_creator: Map::default(),
            orphans_at_last_detach: Map::default(),
            orphan_candidates: Vec::new(),
            early_removals: Map::default(),
            early_order: VecDeque::new(),
            mqueues: mqueues::Mqueues::default(),
            mqueue_evictions_named: true,
        }
    }

    /// The probes see queue evictions without knowing which queue's (the kfree program): the
    /// engine then explains them by unlinks and teardowns, and the agent looks for the rest
    /// ([`Self::mqueues_to_look_for`]). Call it before the first event.
    pub fn mqueue_evictions_unnamed(&mut self) {
        self.mqueue_evictions_named = false;
    }

    /// How many namespaces and objects the engine holds, together: what its memory follows.
    pub fn population(&self) -> usize {
        self.namespaces.len() + self.objects_live
    }

    /// Keeps each live segment's size from now on (call it before the first event), for
    /// [`Self::namespace_gauges`]' `shm_bytes`.
    pub fn keep_shm_sizes(&mut self) {
        self.shm_sizes.get_or_insert_with(Map::default);
    }

    /// Live namespaces and objects.
    #[cfg(test)]
    pub fn live_counts(&self) -> (usize, usize) {
        (self.namespaces.len(), self.objects_live)
    }

    /// Records were lost, or probe runs skipped: until the next resynchronisation, a namespace
    /// that ends unseen takes its objects with reason `unknown`.
    pub fn records_lost(&mut self) {
        self.records_lost = true;
    }

    /// Applies one kernel event as [`Self::apply`] does, with the limits of its namespace as the
    /// agent just read them: a failed get (`ENOSPC`, `EINVAL`) then says which limit it hit,
    /// and how much of it the namespace's live objects, as the engine knows them, use.
    pub fn apply_with_limits(
        &mut self,
        event: &KernelEvent,
        limits: Option<Limits>,
        out: &mut Vec<Lifecycle>,
    ) {
        self.given_limits = limits;
        self.apply(event, out);
        self.given_limits = None;
    }

    /// Applies one kernel event, appending what it means to `out`.
    pub fn apply(&mut self, event: &KernelEvent, out: &mut Vec<Lifecycle>) {
        // Frees run in a kworker or an RCU callback, exits in the namespace being left: no
        // container lives anywhere by them.
        let by_task = !matches!(
            event.body,
            Body::NsFreed
                | Body::ShmFreed { .. }
                | Body::MqueueEvicted { .. }
                | Body::ProcessExit { .. }
                | Body::CgroupMkdir { .. }
                | Body::CgroupRmdir { .. }
        );
        if by_task {
            self.announce_host_ipc(event, out);
        }
        self.apply_event(event, out);
        if by_task {
            self.note_member(event.task, event.ns);
        }
        self.shrink_maps();
    }

    fn apply_event(&mut self, event: &KernelEvent, out: &mut Vec<Lifecycle>) {
        let ts = event.ts_ns;
        let task = event.task;
        match event.body {
            Body::Get {
                object,
                key,
                flags,
                size,
                result: Ok(id),
            } => {
                let ns = self.ident(event.ns, ts, out);
                let obj_key = ObjectKey {
                    ns: ns.inum,
                    object,
                    id: id as i32,
                };
                // A get of an object already known opens it; only a new one was created.
                // `size` is a set's nsems for semget: only a segment's is bytes.
                let shm_bytes = if object == IpcObject::Shm { size } else { 0 };
                if self.insert_object(obj_key, key, shm_bytes, Some(ts), task.pid) {
                    if ns.inum == HOST_IPC_NS_INUM && task.container.is_some() {
                        self.made_in_host.insert(obj_key, task.container);
                    }
                    out.push(Lifecycle::ObjectCreate {
                        ts,
                        task,
                        ns,
                        object,
                        id: id as i32,
                        key,
                        mode: flags & 0o777,
                        size,
                    });
                    self.removed_early(obj_key, ns, out);
                }
            }
            Body::Get {
                object,
                key,
                flags,
                size,
                result: Err(errno),
            } => {
                let ns = self.ident(event.ns, ts, out);
                let key_lives_in = if key == IPC_PRIVATE {
                    Vec::new()
                } else {
                    self.key_lives_in(object, key, ns.inum)
                };
                let limit = self.given_limits.take().and_then(|limits| {
                    limits::hit(object, errno, size, &limits, &self.namespace_use(ns.inum))
                });
                out.push(Lifecycle::GetFailed {
                    ts,
                    task,
                    ns,
                    object,
                    key,
                    flags,
                    errno,
                    key_lives_in,
                    limit,
                });
            }
            Body::Ctl {
                object,
                id,
                cmd,
                still_listed,
                result: Ok(_),
                ..
            } if cmd & !IPC_64 == IPC_RMID => {
                let ns = self.ident(event.ns, ts, out);
                let key = ObjectKey {
                    ns: ns.inum,
                    object,
                    id,
                };
                let attached = object == IpcObject::Shm && still_listed;
                if self.object(key).is_none() {
                    self.remember_early_removal(key, ts, task, attached);
                } else if attached {
                    self.mark_removed(key, ns, task, ts, out);
                } else {
                    self.destroy_object(key, ns, DestroyReason::Rmid, Some(task), ts, out);
                }
            }
            Body::ShmAttach {
                id,
                result: Ok(addr),
                ..
            } => {
                let ns = self.ident(event.ns, ts, out);
                let key = ObjectKey {
                    ns: ns.inum,
                    object: IpcObject::Shm,
                    id,
                };
                let ipc_key = self.object(key).map(|state| state.key);
                self.attachments.insert((task.pid, addr as u64), key);
                out.push(Lifecycle::ShmAttach {
                    ts,
                    task,
                    ns,
                    id,
                    key: ipc_key,
                    addr: addr as u64,
                });
            }
            Body::ShmDetach {
                addr,
                rmid_forced,
                result: Ok(_),
            } => {
                let caller_ns = self.ident(event.ns, ts, out);
                self.learn_rmid_forced(caller_ns.inum, rmid_forced);
                let segment = self.attachments.remove(&(task.pid, addr));
                // The segment's namespace, which the caller may have left since it attached.
                let ns = segment
                    .and_then(|key| self.namespaces.get(&key.ns))
                    .map_or(caller_ns, |namespace| namespace.ident);
                let id = segment.map(|key| key.id);
                let key = segment
                    .and_then(|key| self.object(key))
                    .map(|state| state.key);
                out.push(Lifecycle::ShmDetach {
                    ts,
                    task,
                    ns,
                    id,
                    key,
                    addr,
                });
                if let Some(segment) = segment {
                    self.expect_forced_free(segment);
                }
                self.orphaned_at_last_detach(ts, out);
            }
            Body::Unshare {
                from,
                result: Ok(_),
                ..
            } => {
                let from = self.ident(from, ts, out);
                self.born(event.ns, ts, out, |ns| Lifecycle::NsCreate {
                    ts,
                    task,
                    ns,
                    from,
                    via: Via::Unshare,
                    child_pid: None,
                    limits: None,
                });
            }
            Body::Clone {
                from,
                child_pid,
                result: Ok(_),
                ..
            } => {
                let from = self.ident(from, ts, out);
                self.born(event.ns, ts, out, |ns| Lifecycle::NsCreate {
                    ts,
                    task,
                    ns,
                    from,
                    via: Via::Clone,
                    child_pid: Some(child_pid),
                    limits: None,
                });
            }
            Body::Setns {
                from,
                result: Ok(_),
                ..
            } if from.inum != event.ns.inum => {
                let ns = self.ident(event.ns, ts, out);
                let from = self.ident(from, ts, out);
                if !self.is_agent(&task) {
                    let into_host = ns.inum == HOST_IPC_NS_INUM;
                    let members = self.members_of(ns.inum);
                    let kind = if !task.container.is_some() {
                        JoinKind::Setns
                    } else if members.contains(&task.container) {
                        JoinKind::Exec
                    } else {
                        JoinKind::Share
                    };
                    out.push(Lifecycle::NsJoin {
                        ts,
                        task,
                        ns,
                        from,
                        into_host,
                        kind,
                        members,
                    });
                }
            }
            Body::ProcessExit { rmid_forced } => {
                let pid = task.pid;
                self.learn_rmid_forced(event.ns.inum, rmid_forced);
                if task.pid == task.tid {
                    // Only the detaches shm_rmid_forced can end a segment by are kept: most
                    // exits, in namespaces without it, go by without allocating.
                    let mut detached = Vec::new();
                    let forced = &self.rmid_forced_namespaces;
                    self.attachments.retain(|&(attached_pid, _), &mut segment| {
                        let kept = attached_pid != pid;
                        if !kept && forced.contains(&segment.ns) {
                            detached.push(segment);
                        }
                        kept
                    });
                    for segment in detached {
                        self.expect_forced_free(segment);
                    }
                    self.creator_exited(&task, event.ns.inum, ts, out);
                    self.orphaned_at_last_detach(ts, out);
                }
            }
            Body::NsFreed => self.namespace_freed(event.ns, ts, out),
            Body::MqueueOpen { .. } => {
                let ns = self.ident(event.ns, ts, out);
                self.mqueue_open(ts, task, ns, &event.body, out);
            }
            Body::MqueueUnlink {
                ref name,
                result: Ok(_),
            } => {
                let ns = self.ident(event.ns, ts, out);
                self.mqueue_unlinked(ts, task, ns, name, out);
            }
            // The inode a failed mq_open made, never a queue.
            Body::MqueueEvicted {
                syscall: SYS_MQ_OPEN,
                ..
            } => {}
            Body::MqueueEvicted { ino, .. } => self.mqueue_evicted(ts, task, ino, out),
            // The segment of a namespace freed already: its destroy came with the namespace's,
            // and whatever has the inum now is another namespace (kernels without ns_id).
            Body::ShmFreed { ns_freed: true, .. } => {}
            Body::ShmFreed {
                id, rmid_forced, ..
            } => {
                let Some(state) = self.namespaces.get(&event.ns.inum) else {
                    return;
                };
                if !state.is_life_of(&event.ns) {
                    return; // a segment of an earlier life of this inum, already reported
                }
                let ns = state.ident;
                self.learn_rmid_forced(ns.inum, rmid_forced);
                let key = ObjectKey {
                    ns: ns.inum,
                    object: IpcObject::Shm,
                    id,
                };
                // The free comes an RCU grace period after the destroy. A removed segment still
                // attached holds its namespace alive, so it always died at its last detach; any
                // other segment dies at teardown, or by shm_rmid_forced where that is set (read
                // by the probe while the namespace's memory is there, even once its last
                // reference is gone: the creator's exit can destroy it and drop that reference).
                // A teardown's own frees normally come after the namespace's kfree, which has
                // reported them; one that comes first is counted in the namespace's destroy.
                let reason = match self.object(key) {
                    None => return,
                    Some(segment) if segment.removed() => DestroyReason::LastDetach,
                    Some(_) if rmid_forced => DestroyReason::RmidForced,
                    Some(_) => DestroyReason::NamespaceTeardown,
                };
                if reason == DestroyReason::NamespaceTeardown {
                    *self.torn_down.entry(ns.inum).or_default() += 1;
                }
                self.destroy_object(key, ns, reason, None, ts, out);
            }
            // Failed calls and other commands change nothing that lives; a new cgroup is for
            // the agent's attribution of tasks to containers.
            Body::Ctl { .. }
            | Body::ShmAttach { .. }
            | Body::ShmDetach { .. }
            | Body::Unshare { .. }
            | Body::Clone { .. }
            | Body::Setns { .. }
            | Body::MqueueUnlink { .. }
            | Body::CgroupMkdir { .. } => {}
            Body::CgroupRmdir { container, .. } => self.container_ended(container, ts, out),
        }
    }
}

#[cfg(test)]
mod tests;
