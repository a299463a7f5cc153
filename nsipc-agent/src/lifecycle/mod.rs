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

mod events;

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::Entry},
    hash::{BuildHasher, Hash},
    num::NonZeroU64,
    sync::LazyLock,
};

/// The engine's maps are looked up several times per event: foldhash (seeded at random per
/// process, so key collisions cannot be planned) costs a fraction of std's SipHash.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A namespace's objects. There is one such map per live namespace, so its hasher keeps its
/// seed outside: [`ProcessSeed`] takes no room where a `RandomState` would take 8 bytes.
type ObjectMap = HashMap<ObjectId, ObjectState, ProcessSeed>;

/// foldhash with one random seed for the whole process.
#[derive(Clone, Copy, Debug, Default)]
struct ProcessSeed;

impl BuildHasher for ProcessSeed {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        static STATE: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);
        STATE.build_hasher()
    }
}

use nsipc_common::{HOST_IPC_NS_INUM, NsRef};

pub use self::events::{
    DestroyReason, JoinKind, KeyHome, Lifecycle, LifecycleJson, NsIdent, ObjectCounts, Via,
};
use crate::{
    decode::{Body, ContainerRef, KernelEvent, Task},
    inventory::HELPER_THREAD_NAME,
    names::IpcObject,
};

/// `IPC_RMID` (include/uapi/linux/ipc.h), after masking `IPC_64`.
const IPC_RMID: i32 = 0;
const IPC_64: i32 = 0x100;
/// `IPC_PRIVATE`: a get with this key always creates, and its key names nothing.
const IPC_PRIVATE: i32 = 0;

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

/// What the engine keeps per live object, packed in 12 bytes aligned to 4 so that an entry
/// of a namespace's object map, with its 8-byte id, takes 20 bytes rather than 32: there can
/// be hundreds of thousands.
#[derive(Debug)]
struct ObjectState {
    key: i32,
    /// The low 63 bits: monotonic ns of creation + 1, 0 when it was not seen. The top bit:
    /// shm only, IPC_RMID happened while attached; the segment waits for its last detach.
    /// In two halves, which keep the alignment at 4.
    created_and_removed: [u32; 2],
}

const REMOVED: u64 = 1 << 63;

impl ObjectState {
    fn new(key: i32, created_ns: Option<u64>) -> Self {
        // 2^63 ns is 292 years of uptime: nothing real is cut by the `min`.
        let created = created_ns.map_or(0, |ns| ns.min(REMOVED - 2) + 1);
        let mut state = Self {
            key,
            created_and_removed: [0; 2],
        };
        state.set(created);
        state
    }

    fn get(&self) -> u64 {
        u64::from(self.created_and_removed[0]) | u64::from(self.created_and_removed[1]) << 32
    }

    fn set(&mut self, value: u64) {
        self.created_and_removed = [value as u32, (value >> 32) as u32];
    }

    /// Monotonic ns of creation, when it was seen.
    fn created_ns(&self) -> Option<u64> {
        (self.get() & !REMOVED).checked_sub(1)
    }

    fn removed(&self) -> bool {
        self.get() & REMOVED != 0
    }

    fn set_removed(&mut self) {
        self.set(self.get() | REMOVED);
    }
}

/// What the engine keeps per live namespace, in 56 bytes: there can be tens of thousands.
#[derive(Debug)]
struct NamespaceState {
    ident: NsIdent,
    /// Monotonic ns of its creation + 1, when it was seen (+ 1: the niche keeps it at 8 bytes).
    created: Option<NonZeroU64>,
    /// Its live objects. Per namespace rather than one map for all: a namespace's teardown
    /// takes its own map instead of scanning every object.
    objects: ObjectMap,
}

impl NamespaceState {
    fn created_ns(&self) -> Option<u64> {
        self.created.map(|created| created.get() - 1)
    }
}

/// A namespace as an inventory found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExistingNamespace {
    pub inum: u32,
    /// Its `ns_id` where the kernel tells, else 0.
    pub id: u64,
}

/// An object as an inventory found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExistingObject {
    pub ns: u32,
    pub object: IpcObject,
    pub id: i32,
    pub key: i32,
}

/// What a resynchronisation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResyncCounts {
    pub namespaces_gone: u64,
    pub namespaces_found: u64,
    pub objects_gone: u64,
    pub objects_found: u64,
}

/// What the records made from an inventory's start on say, so that the reconciliation with
/// it does not contradict them (see [`Engine::resync`]).
#[derive(Default)]
struct Racing {
    /// Namespaces some record shows alive when it was made: a task's own, one it left or
    /// joined, one where a segment was freed (a teardown's frees come before the namespace's).
    named: HashSet<u32>,
    /// Inums given to a new namespace (`unshare`, `clone`).
    born: HashSet<u32>,
    /// Namespaces whose free came.
    freed: Vec<NsRef>,
    /// Objects a successful call named (get, ctl, attach), or whose free came.
    objects: HashSet<ObjectKey>,
    /// Objects a successful get returned: created then, unless they were opened.
    created: HashSet<ObjectKey>,
}

impl Racing {
    fn of(events: &[KernelEvent]) -> Self {
        let mut racing = Self::default();
        for event in events {
            let ns = event.ns.inum;
            // An exiting task may have no namespaces any more (inum 0); a free is no sign of
            // life, and another life of the inum may be the one freed.
            if ns != 0 && event.body != Body::NsFreed {
                racing.named.insert(ns);
            }
            let object = |object, id| ObjectKey { ns, object, id };
            match event.body {
                Body::Get {
                    object: kind,
                    result: Ok(id),
                    ..
                } => {
                    racing.objects.insert(object(kind, id as i32));
                    racing.created.insert(object(kind, id as i32));
                }
                Body::Ctl {
                    object: kind,
                    id,
                    result: Ok(_),
                    ..
                } => {
                    racing.objects.insert(object(kind, id));
                }
                Body::ShmAttach {
                    id, result: Ok(_), ..
                }
                | Body::ShmFreed {
                    id,
                    ns_freed: false,
                    ..
                } => {
                    racing.objects.insert(object(IpcObject::Shm, id));
                }
                Body::Unshare {
                    from,
                    result: Ok(_),
                    ..
                }
                | Body::Clone {
                    from,
                    result: Ok(_),
                    ..
                } => {
                    racing.born.insert(ns);
                    racing.named.insert(from.inum);
                }
                Body::Unshare { from, .. }
                | Body::Clone { from, .. }
                | Body::Setns { from, .. } => {
                    racing.named.insert(from.inum);
                }
                Body::NsFreed => racing.freed.push(event.ns),
                _ => {}
            }
        }
        racing.named.remove(&0);
        racing
    }

    /// Whether a racing free ends this life (any free of the inum where an id is unknown).
    fn frees(&self, ident: NsIdent) -> bool {
        self.freed.iter().any(|freed| {
            freed.inum == ident.inum && (freed.id == 0 || ident.id == 0 || freed.id == ident.id)
        })
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
    /// them): what [`Self::removed_unattached`] looks through, rather than every object.
    removed_segments: HashSet<ObjectKey>,
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
    /// Live namespaces the stream has not announced (no `create`, no `exists`): first named by
    /// a record of something done inside them, their creation's record lost or yet to come.
    /// The next inventory that lists one announces it. Empty but for losses and races.
    unannounced: HashSet<u32>,
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

/// Containers remembered per namespace, at most (a namespace shared by more is unusual, and
/// its lines would grow without bound).
const MAX_MEMBERS: usize = 64;

/// How many emptied object maps the engine keeps, at most, and the largest it keeps: enough
/// for a steady churn of containers, and a few kilobytes in all.
const SPARE_MAPS: usize = 64;
const SPARE_MAP_CAPACITY: usize = 64;

/// Gives a map's memory back once most of it is unused, after many deaths: hash tables never
/// shrink on their own, and the engine's memory should follow what is alive. Halving the
/// population again is needed to shrink again, so this costs nothing per event on average,
/// and nothing at all to small maps.
fn shrink<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if let Some(capacity) = shrunk_capacity(map.len(), map.capacity()) {
        map.shrink_to(capacity);
    }
}

/// [`shrink`]'s rule: the capacity to shrink to, if any.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    const SMALL: usize = 1024;
    (capacity > SMALL && len < capacity / 4).then_some(len * 2)
}

/// How the engine learnt that a namespace's life ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LifeEnd {
    /// Its free was seen: at `ts`.
    Freed,
    /// Freed unseen, before `ts`: found gone while no record was lost.
    FreedUnseen,
    /// Ended unseen, how not known: records were lost, or its inum's next life came first.
    Unknown,
}

impl Engine {
    pub fn new(agent_pid: u32) -> Self {
        Self {
            agent_pid,
            namespaces: Map::default(),
            next_generation: Map::default(),
            attachments: Map::default(),
            removed_segments: HashSet::new(),
            keys: Map::default(),
            more_keys: Map::default(),
            torn_down: Map::default(),
            dead: Vec::new(),
            objects_live: 0,
            spare_maps: Vec::with_capacity(SPARE_MAPS),
            members: Map::default(),
            host_ipc: HashSet::new(),
            unannounced: HashSet::new(),
            made_in_host: Map::default(),
            early_removals: Map::default(),
            early_order: VecDeque::new(),
        }
    }

    /// How many namespaces and objects the engine holds, together: what its memory follows.
    pub fn population(&self) -> usize {
        self.namespaces.len() + self.objects_live
    }

    /// Live namespaces and objects.
    #[cfg(test)]
    pub fn live_counts(&self) -> (usize, usize) {
        (self.namespaces.len(), self.objects_live)
    }

    fn object(&self, key: ObjectKey) -> Option<&ObjectState> {
        self.namespaces.get(&key.ns)?.objects.get(&key.in_ns())
    }

    fn object_mut(&mut self, key: ObjectKey) -> Option<&mut ObjectState> {
        self.namespaces
            .get_mut(&key.ns)?
            .objects
            .get_mut(&key.in_ns())
    }

    /// The identity the engine gives namespace `ns`, starting a new life when needed (and
    /// reporting the end of the one it replaces, at `ts`: when that came to light).
    fn namespace(&mut self, ns: NsRef, ts: u64, out: &mut Vec<Lifecycle>) -> &mut NamespaceState {
        let known_life = self.namespaces.get(&ns.inum).is_some_and(|state| {
            // Same life unless both ids are known and differ (a destroy was missed).
            state.ident.id == 0 || ns.id == 0 || state.ident.id == ns.id
        });
        if !known_life {
            if self.namespaces.contains_key(&ns.inum) {
                self.ended_unseen(ns.inum, ts, LifeEnd::Unknown, out);
            }
            let generation = self.next_generation.entry(ns.inum).or_insert(1);
            let ident = NsIdent {
                inum: ns.inum,
                id: ns.id,
                generation: *generation,
            };
            *generation += 1;
            self.unannounced.insert(ns.inum);
            self.namespaces.insert(
                ns.inum,
                NamespaceState {
                    ident,
                    created: None,
                    objects: self.spare_maps.pop().unwrap_or_default(),
                },
            );
        }
        let state = self.namespaces.get_mut(&ns.inum).expect("inserted above");
        if state.ident.id == 0 {
            state.ident.id = ns.id;
        }
        state
    }

    fn ident(&mut self, ns: NsRef, ts: u64, out: &mut Vec<Lifecycle>) -> NsIdent {
        self.namespace(ns, ts, out).ident
    }

    /// The life of `inum` the engine knows ended without its free being seen: reports it and
    /// what was still in it destroyed, so the stream never leaves a life it announced open.
    /// `ts`: when the agent found out (when it died is not known). Returns how many objects
    /// that was.
    fn ended_unseen(&mut self, inum: u32, ts: u64, end: LifeEnd, out: &mut Vec<Lifecycle>) -> u64 {
        let Some(state) = self.namespaces.remove(&inum) else {
            return 0;
        };
        self.end_life(state, ts, end, out)
    }

    /// Reports the end of a namespace taken out of the map and of every object still in it.
    /// Returns how many objects.
    fn end_life(
        &mut self,
        mut state: NamespaceState,
        ts: u64,
        end: LifeEnd,
        out: &mut Vec<Lifecycle>,
    ) -> u64 {
        let ident = state.ident;
        self.unannounced.remove(&ident.inum);
        if !self.early_removals.is_empty() {
            self.early_removals.retain(|key, _| key.ns != ident.inum);
            let removals = &self.early_removals;
            self.early_order.retain(|key| removals.contains_key(key));
        }
        let mut dead = std::mem::take(&mut self.dead);
        dead.extend(state.objects.drain());
        let objects = dead.len() as u64;
        self.recycle(std::mem::take(&mut state.objects));
        dead.sort_unstable_by_key(|&(id, _)| id);
        // Unseen, only what its teardown was already seen destroying counts: the agent does
        // not know that anything else died with it.
        let mut destroyed = ObjectCounts {
            shm: self.torn_down.remove(&ident.inum).unwrap_or(0),
            ..ObjectCounts::default()
        };
        let late = end == LifeEnd::FreedUnseen;
        for ((object, id), object_state) in dead.drain(..) {
            let reason = if end == LifeEnd::Unknown {
                DestroyReason::Unknown
            } else if object_state.removed() {
                // A segment removed while attached cannot outlive its attachments, which
                // hold the namespace: it died at its last detach, whose free has not arrived.
                DestroyReason::LastDetach
            } else {
                destroyed.add(object, 1);
                DestroyReason::NamespaceTeardown
            };
            let key = ObjectKey {
                ns: ident.inum,
                object,
                id,
            };
            self.destroyed(key, object_state, ident, reason, None, ts, out);
            if let Some(Lifecycle::ObjectDestroy { late: flag, .. }) = out.last_mut() {
                *flag = late;
            }
        }
        self.dead = dead;
        let freed = end != LifeEnd::Unknown;
        out.push(Lifecycle::NsDestroy {
            ts,
            ns: ident,
            containers: self.members.remove(&ident.inum).unwrap_or_default(),
            lifetime_ns: freed
                .then(|| state.created_ns().map(|created| ts.saturating_sub(created)))
                .flatten(),
            destroyed,
            reason: if freed {
                DestroyReason::Freed
            } else {
                DestroyReason::Unknown
            },
            late,
        });
        objects
    }

    /// Keeps the object map of a dead namespace for a new one, if it is small and there is room.
    fn recycle(&mut self, mut map: ObjectMap) {
        map.clear();
        let capacity = map.capacity();
        if self.spare_maps.len() < SPARE_MAPS && capacity > 0 && capacity <= SPARE_MAP_CAPACITY {
            self.spare_maps.push(map);
        }
    }

    fn index_key(&mut self, object: IpcObject, key: i32, ns: u32) {
        if key != IPC_PRIVATE {
            match self.keys.entry((object, key)) {
                Entry::Vacant(vacant) => {
                    vacant.insert(ns);
                }
                Entry::Occupied(_) => self.more_keys.entry((object, key)).or_default().push(ns),
            }
        }
    }

    fn unindex_key(&mut self, object: IpcObject, key: i32, ns: u32) {
        let index = (object, key);
        let first = self.keys.get(&index).copied();
        if let Some(more) = self.more_keys.get_mut(&index) {
            if first == Some(ns) {
                let next = more.pop().expect("never left empty");
                self.keys.insert(index, next);
            } else if let Some(at) = more.iter().position(|&n| n == ns) {
                more.swap_remove(at);
            }
            if more.is_empty() {
                self.more_keys.remove(&index);
            }
        } else if first == Some(ns) {
            self.keys.remove(&index);
        }
    }

    /// Records what an inventory found, before or after events: returns `exists` events for
    /// what the engine did not know yet, at `ts` (when the inventory looked).
    pub fn observe_existing(
        &mut self,
        ts: u64,
        namespaces: &[ExistingNamespace],
        objects: &[ExistingObject],
        out: &mut Vec<Lifecycle>,
    ) {
        for existing in namespaces {
            let announced = self.namespaces.contains_key(&existing.inum)
                && !self.unannounced.contains(&existing.inum);
            if !announced {
                let ident = self.ident(
                    NsRef {
                        inum: existing.inum,
                        id: existing.id,
                        ..NsRef::default()
                    },
                    ts,
                    out,
                );
                self.unannounced.remove(&existing.inum);
                out.push(Lifecycle::NsExists { ts, ns: ident });
            }
        }
        for existing in objects {
            let key = ObjectKey {
                ns: existing.ns,
                object: existing.object,
                id: existing.id,
            };
            if self.object(key).is_some() {
                continue;
            }
            let ns = self.ident(
                NsRef {
                    inum: existing.ns,
                    ..NsRef::default()
                },
                ts,
                out,
            );
            self.insert_object(key, existing.key, None);
            out.push(Lifecycle::ObjectExists {
                ts,
                ns,
                object: existing.object,
                id: existing.id,
                key: existing.key,
            });
        }
    }

    /// After lost events: makes the state equal to a fresh inventory, reporting what vanished
    /// (`destroy` with reason `unknown`) and what appeared (`exists`) unseen, at `ts` (when the
    /// inventory began: when the agent looked).
    ///
    /// `frees_only`: no record was lost since the last look, only frees may have gone unseen
    /// (skipped `kfree` runs, or a kernel whose frees the startup check did not see). A
    /// namespace found gone was then freed, and what was left in it died of its teardown (or,
    /// removed, of its last detach): so reported, `late`, rather than `unknown`.
    ///
    /// The engine must already have applied every record produced before the inventory began
    /// (the caller drains the ring buffer around it and applies those first): the inventory
    /// reflects them, so an engine lagging behind it would see a difference where there is
    /// none. `racing` holds the records produced from the inventory's start on, which the
    /// caller applies right after this: the inventory may or may not reflect each of them
    /// (it reads /proc one namespace at a time while the kernel goes on), so wherever one of
    /// them speaks, it decides, not the inventory:
    /// - nothing a racing record shows alive, or whose death it reports, is declared gone:
    ///   the record's own destroy comes with its real reason;
    /// - nothing a racing record creates is declared found: its `create` follows;
    /// - a namespace whose inum a racing record gives to a new namespace, without the free of
    ///   the life the engine knows, ended unseen (an inum names one live namespace at a time).
    ///
    /// A record lost after the inventory began cannot mislead this reconciliation unnoticed:
    /// its loss is counted after the counters were read for it, so another one follows.
    pub fn resync(
        &mut self,
        ts: u64,
        frees_only: bool,
        namespaces: &[ExistingNamespace],
        objects: &[ExistingObject],
        racing: &[KernelEvent],
        out: &mut Vec<Lifecycle>,
    ) -> ResyncCounts {
        let mut counts = ResyncCounts::default();
        let racing = Racing::of(racing);
        let listed_ns: Map<u32, u64> = namespaces.iter().map(|n| (n.inum, n.id)).collect();
        let listed: Map<ObjectKey, i32> = objects
            .iter()
            .map(|o| {
                let key = ObjectKey {
                    ns: o.ns,
                    object: o.object,
                    id: o.id,
                };
                (key, o.key)
            })
            .collect();

        // Namespaces first: one that ended takes all its objects with it, whatever racing
        // records say of them (those would be of the inum's next life).
        let mut gone_ns: Vec<u32> = self
            .namespaces
            .values()
            .filter(|state| {
                let ident = state.ident;
                if racing.frees(ident) {
                    return false; // its free follows, with what it tore down
                }
                if racing.born.contains(&ident.inum) {
                    return true; // its inum went to a namespace born since
                }
                if racing.named.contains(&ident.inum) {
                    return false; // alive when the record was made
                }
                match listed_ns.get(&ident.inum) {
                    // Another life of the inum, where both ids tell.
                    Some(&id) => ident.id != 0 && id != 0 && id != ident.id,
                    None => true,
                }
            })
            .map(|state| state.ident.inum)
            .collect();
        gone_ns.sort_unstable();
        // With every record since the last look read, a namespace's end can only have been
        // missed as its free (a `kfree` the probes skipped, or never see): no syscall ends one.
        let gone_end = if frees_only {
            LifeEnd::FreedUnseen
        } else {
            LifeEnd::Unknown
        };
        for inum in gone_ns {
            counts.objects_gone += self.ended_unseen(inum, ts, gone_end, out);
            counts.namespaces_gone += 1;
        }

        let mut gone: Vec<(ObjectKey, NsIdent)> = Vec::new();
        let mut removed_unseen: Vec<ObjectKey> = Vec::new();
        let mut detached_unseen: Vec<ObjectKey> = Vec::new();
        for namespace in self.namespaces.values() {
            if racing.frees(namespace.ident) {
                continue;
            }
            for (&(object, id), state) in &namespace.objects {
                let key = ObjectKey {
                    ns: namespace.ident.inum,
                    object,
                    id,
                };
                if racing.objects.contains(&key) {
                    continue;
                }
                match listed.get(&key) {
                    // A segment removed while attached is listed with the private key.
                    Some(&listed_key) if state.removed() && listed_key == IPC_PRIVATE => {}
                    Some(&listed_key) if !state.removed() && listed_key == state.key => {}
                    // Removed while attached, unseen: it now waits for its last detach.
                    Some(&IPC_PRIVATE) if object == IpcObject::Shm => removed_unseen.push(key),
                    // Removed while attached, and gone (or its id taken by another): only its
                    // last detach could end it while its namespace lives; its free was unseen.
                    _ if state.removed() => detached_unseen.push(key),
                    // Not listed, or listed with another key: another object took its id.
                    _ => gone.push((key, namespace.ident)),
                }
            }
        }
        for key in removed_unseen {
            let state = self.object_mut(key).expect("listed above");
            state.set_removed();
            let ipc_key = state.key;
            self.removed_segments.insert(key);
            self.unindex_key(IpcObject::Shm, ipc_key, key.ns);
        }
        detached_unseen.sort_unstable_by_key(|key| (key.ns, key.id));
        for key in detached_unseen {
            self.found_gone(key.ns, key.id, ts, out);
            counts.objects_gone += 1;
        }
        gone.sort_by_key(|(k, _)| (k.ns, k.object, k.id));
        for (key, ns) in gone {
            self.destroy_object(key, ns, DestroyReason::Unknown, None, ts, out);
            counts.objects_gone += 1;
        }

        // What the inventory found that the engine does not know, except what racing records
        // create: their `create` says more (who, when), and an `exists` before it would make
        // the creation look like an open. Objects of a namespace born meanwhile are all its
        // own records' to create.
        let found_ns: Vec<ExistingNamespace> = namespaces
            .iter()
            .filter(|n| !racing.born.contains(&n.inum))
            .copied()
            .collect();
        let found_objects: Vec<ExistingObject> = objects
            .iter()
            .filter(|o| {
                let key = ObjectKey {
                    ns: o.ns,
                    object: o.object,
                    id: o.id,
                };
                !racing.born.contains(&o.ns) && !racing.created.contains(&key)
            })
            .copied()
            .collect();
        let before = out.len();
        self.observe_existing(ts, &found_ns, &found_objects, out);
        for event in &out[before..] {
            match event {
                Lifecycle::NsExists { .. } => counts.namespaces_found += 1,
                _ => counts.objects_found += 1,
            }
        }
        self.shrink_maps();
        counts
    }

    /// Records a new object of a namespace the engine knows; returns false if it was known.
    fn insert_object(&mut self, key: ObjectKey, ipc_key: i32, created_ns: Option<u64>) -> bool {
        let Some(ns) = self.namespaces.get_mut(&key.ns) else {
            debug_assert!(false, "objects are inserted into known namespaces");
            return false;
        };
        match ns.objects.entry(key.in_ns()) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(vacant) => vacant.insert(ObjectState::new(ipc_key, created_ns)),
        };
        self.objects_live += 1;
        self.index_key(key.object, ipc_key, key.ns);
        true
    }

    /// A segment removed while attached: the kernel only marks it and makes its key private;
    /// it dies at its last detach.
    fn mark_removed(
        &mut self,
        key: ObjectKey,
        ns: NsIdent,
        task: Task,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(state) = self.object_mut(key) else {
            return;
        };
        if state.removed() {
            return;
        }
        state.set_removed();
        let ipc_key = state.key;
        self.removed_segments.insert(key);
        // ipc_set_key_private(): the key no longer finds the segment.
        self.unindex_key(IpcObject::Shm, ipc_key, ns.inum);
        out.push(Lifecycle::ShmRemove {
            ts,
            task,
            ns,
            id: key.id,
            key: ipc_key,
        });
    }

    /// Keeps the removal of an object the engine does not know (see `early_removals`).
    fn remember_early_removal(&mut self, key: ObjectKey, ts: u64, task: Task, attached: bool) {
        if self.early_order.len() >= MAX_EARLY_REMOVALS
            && let Some(oldest) = self.early_order.pop_front()
        {
            self.early_removals.remove(&oldest);
        }
        if self
            .early_removals
            .insert(key, EarlyRemoval { ts, task, attached })
            .is_none()
        {
            self.early_order.push_back(key);
        }
    }

    /// The object just created was removed before its creation's record came: it is removed
    /// now, as its removal said (with that removal's time and task).
    fn removed_early(&mut self, key: ObjectKey, ns: NsIdent, out: &mut Vec<Lifecycle>) {
        let Some(removal) = self.early_removals.remove(&key) else {
            return;
        };
        self.early_order.retain(|early| *early != key);
        if removal.attached {
            self.mark_removed(key, ns, removal.task, removal.ts, out);
        } else {
            let (task, ts) = (Some(removal.task), removal.ts);
            self.destroy_object(key, ns, DestroyReason::Rmid, task, ts, out);
        }
    }

    fn destroy_object(
        &mut self,
        key: ObjectKey,
        ns: NsIdent,
        reason: DestroyReason,
        task: Option<Task>,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(namespace) = self.namespaces.get_mut(&key.ns) else {
            return;
        };
        let Some(state) = namespace.objects.remove(&key.in_ns()) else {
            return;
        };
        shrink(&mut namespace.objects);
        self.destroyed(key, state, ns, reason, task, ts, out);
    }

    /// Reports an object taken out of its namespace's map, and forgets its key and attachments.
    #[allow(clippy::too_many_arguments)]
    fn destroyed(
        &mut self,
        key: ObjectKey,
        state: ObjectState,
        ns: NsIdent,
        reason: DestroyReason,
        task: Option<Task>,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        self.objects_live -= 1;
        self.made_in_host.remove(&key);
        if state.removed() {
            self.removed_segments.remove(&key);
        } else {
            self.unindex_key(key.object, state.key, key.ns);
        }
        if key.object == IpcObject::Shm {
            self.attachments.retain(|_, attached| *attached != key);
        }
        out.push(Lifecycle::ObjectDestroy {
            ts,
            task,
            ns,
            object: key.object,
            id: key.id,
            key: state.key,
            reason,
            // Found gone (`unknown`), it died at some time before `ts`, not at `ts`.
            lifetime_ns: (reason != DestroyReason::Unknown)
                .then(|| state.created_ns().map(|created| ts.saturating_sub(created)))
                .flatten(),
            late: false,
        });
    }

    /// Segments removed while attached that no attachment the engine knows of holds any more,
    /// as (namespace inum, id): their last detach may have come (a detach, or the exit of a
    /// process that inherited the attachment by fork, which the engine cannot see), so their
    /// free should follow. If it never comes (a `kfree` the probes did not see), only a look
    /// at the kernel tells: [`Self::found_gone`].
    pub fn removed_unattached(&self) -> Vec<(u32, i32)> {
        if self.removed_segments.is_empty() {
            return Vec::new();
        }
        let attached: HashSet<ObjectKey> = self.attachments.values().copied().collect();
        let mut found: Vec<(u32, i32)> = self
            .removed_segments
            .iter()
            .filter(|key| !attached.contains(key))
            .map(|key| (key.ns, key.id))
            .collect();
        found.sort_unstable();
        found
    }

    /// A segment removed while attached is no longer listed in its namespace (an inventory
    /// that started at `ts` says so), though its free never came: it died of its last
    /// detach, before `ts`. Reported so, flagged `late`; nothing if the engine has no such
    /// segment (its free came meanwhile).
    pub fn found_gone(&mut self, inum: u32, id: i32, ts: u64, out: &mut Vec<Lifecycle>) {
        let key = ObjectKey {
            ns: inum,
            object: IpcObject::Shm,
            id,
        };
        if !self.object(key).is_some_and(ObjectState::removed) {
            return;
        }
        let ns = self.namespaces[&inum].ident;
        let first = out.len();
        self.destroy_object(key, ns, DestroyReason::LastDetach, None, ts, out);
        if let Some(Lifecycle::ObjectDestroy { late, .. }) = out.get_mut(first) {
            *late = true;
        }
    }

    /// Namespaces other than `except` where a live object of this type has `key`, with the
    /// containers that live in each.
    fn key_lives_in(&self, object: IpcObject, key: i32, except: u32) -> Vec<KeyHome> {
        let index = (object, key);
        let more = self.more_keys.get(&index).map_or(&[][..], Vec::as_slice);
        let mut found: Vec<u32> = self
            .keys
            .get(&index)
            .into_iter()
            .chain(more)
            .copied()
            .filter(|&ns| ns != except)
            .collect();
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .filter_map(|inum| {
                Some(KeyHome {
                    ns: self.namespaces.get(&inum)?.ident,
                    containers: self.members.get(&inum).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The containers seen living in namespace `inum`.
    fn members_of(&self, inum: u32) -> Vec<ContainerRef> {
        self.members.get(&inum).cloned().unwrap_or_default()
    }

    /// Announces, before the first event it makes there, a container whose task is in the
    /// host's namespace (`--ipc=host`).
    fn announce_host_ipc(&mut self, event: &KernelEvent, out: &mut Vec<Lifecycle>) {
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
    fn is_agent(&self, task: &Task) -> bool {
        task.pid == self.agent_pid || task.comm_bytes() == HELPER_THREAD_NAME.as_bytes()
    }

    /// Notes that `task` was seen in namespace `ns` (its namespace after the event): a
    /// container there is one of its members.
    fn note_member(&mut self, task: Task, ns: NsRef) {
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

    /// Applies one kernel event, appending what it means to `out`.
    pub fn apply(&mut self, event: &KernelEvent, out: &mut Vec<Lifecycle>) {
        // Frees run in a kworker or an RCU callback, exits in the namespace being left: no
        // container lives anywhere by them.
        let by_task = !matches!(
            event.body,
            Body::NsFreed
                | Body::ShmFreed { .. }
                | Body::ProcessExit
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

    /// See [`shrink`]. A namespace's object map shrinks as its objects die
    /// ([`Self::destroy_object`]), and goes with the namespace.
    fn shrink_maps(&mut self) {
        shrink(&mut self.keys);
        shrink(&mut self.namespaces);
        shrink(&mut self.attachments);
        let removed = &mut self.removed_segments;
        if let Some(capacity) = shrunk_capacity(removed.len(), removed.capacity()) {
            removed.shrink_to(capacity);
        }
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
                if self.insert_object(obj_key, key, Some(ts)) {
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
                result: Err(errno),
                ..
            } => {
                let ns = self.ident(event.ns, ts, out);
                let key_lives_in = if key == IPC_PRIVATE {
                    Vec::new()
                } else {
                    self.key_lives_in(object, key, ns.inum)
                };
                out.push(Lifecycle::GetFailed {
                    ts,
                    task,
                    ns,
                    object,
                    key,
                    flags,
                    errno,
                    key_lives_in,
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
                result: Ok(_),
            } => {
                let caller_ns = self.ident(event.ns, ts, out);
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
            Body::ProcessExit => {
                let pid = task.pid;
                if task.pid == task.tid {
                    self.attachments
                        .retain(|(attached_pid, _), _| *attached_pid != pid);
                }
            }
            Body::NsFreed => self.namespace_freed(event.ns, ts, out),
            // The segment of a namespace freed already: its destroy came with the namespace's,
            // and whatever has the inum now is another namespace (kernels without ns_id).
            Body::ShmFreed { ns_freed: true, .. } => {}
            Body::ShmFreed {
                id, rmid_forced, ..
            } => {
                let Some(state) = self.namespaces.get(&event.ns.inum) else {
                    return;
                };
                if state.ident.id != 0 && event.ns.id != 0 && state.ident.id != event.ns.id {
                    return; // a segment of an earlier life of this inum, already reported
                }
                let ns = state.ident;
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
            | Body::CgroupMkdir { .. } => {}
            Body::CgroupRmdir { container, .. } => self.container_ended(container, ts, out),
        }
    }

    /// A container's cgroup went: what it made in the host's namespace and is still there
    /// outlives it (`--ipc=host` leftovers), each reported once.
    fn container_ended(&mut self, container: ContainerRef, ts: u64, out: &mut Vec<Lifecycle>) {
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
            let Some(ipc_key) = self.object(key).map(|state| state.key) else {
                continue;
            };
            let ns = self.namespaces[&key.ns].ident;
            out.push(Lifecycle::ObjectOrphaned {
                ts,
                ns,
                object: key.object,
                id: key.id,
                key: ipc_key,
                container,
            });
        }
    }

    /// A namespace came into being: a new life of its inum, unless this is the life already
    /// known and announced (a creation replayed after the inventory saw the namespace).
    fn born(
        &mut self,
        ns: NsRef,
        ts: u64,
        out: &mut Vec<Lifecycle>,
        event: impl FnOnce(NsIdent) -> Lifecycle,
    ) {
        if let Some(state) = self.namespaces.get(&ns.inum) {
            let same_life = if state.ident.id != 0 && ns.id != 0 {
                state.ident.id == ns.id
            } else {
                // Without ids: a namespace whose creation was already seen cannot be created
                // again; one only inventoried can be this one.
                state.created.is_none()
            };
            if !same_life {
                // Its previous life ended unseen (lost events).
                self.ended_unseen(ns.inum, ts, LifeEnd::Unknown, out);
            } else if !self.unannounced.contains(&ns.inum) {
                return;
            }
            // Else named before by what was done in it: this is its announcement.
        }
        let state = self.namespace(ns, ts, out);
        state.created = NonZeroU64::new(ts.saturating_add(1));
        let ident = state.ident;
        self.unannounced.remove(&ns.inum);
        out.push(event(ident));
    }

    /// The namespace's memory was freed: everything still in it died with it.
    fn namespace_freed(&mut self, ns: NsRef, ts: u64, out: &mut Vec<Lifecycle>) {
        let Some(state) = self.namespaces.get(&ns.inum) else {
            return;
        };
        if state.ident.id != 0 && ns.id != 0 && state.ident.id != ns.id {
            return; // a stale free of a life already replaced
        }
        let state = self.namespaces.remove(&ns.inum).expect("present above");
        self.end_life(state, ts, LifeEnd::Freed, out);
    }
}

/// Views of the engine's state for tests, and its invariants, recomputed.
#[cfg(test)]
impl Engine {
    /// Every live object, as (namespace inum, type, id).
    pub fn live_objects(&self) -> Vec<(u32, IpcObject, i32)> {
        let mut live: Vec<_> = self
            .namespaces
            .iter()
            .flat_map(|(&inum, ns)| ns.objects.keys().map(move |&(o, id)| (inum, o, id)))
            .collect();
        live.sort_unstable();
        live
    }

    /// Room in the object maps, all namespaces together.
    fn object_capacity(&self) -> usize {
        self.namespaces
            .values()
            .map(|ns| ns.objects.capacity())
            .sum()
    }

    /// Checks what the engine derives from its objects against a recomputation: a namespace
    /// is filed under its own inum; the key index names, for every (type, key), each
    /// namespace once per live object with that key (removed segments' keys are private),
    /// the first apart and no other list left empty; early teardown counts are of live
    /// namespaces.
    pub fn check_indexes(&self) -> Result<(), String> {
        let mut expected: HashMap<(IpcObject, i32), Vec<u32>> = HashMap::new();
        for (&inum, ns) in &self.namespaces {
            if ns.ident.inum != inum {
                return Err(format!("namespace {:?} filed under {inum}", ns.ident));
            }
            for (&(object, _), state) in &ns.objects {
                if !state.removed() && state.key != IPC_PRIVATE {
                    expected.entry((object, state.key)).or_default().push(inum);
                }
            }
        }
        let mut indexed: HashMap<(IpcObject, i32), Vec<u32>> = HashMap::new();
        for (&key, &first) in &self.keys {
            let more = self.more_keys.get(&key).map_or(&[][..], Vec::as_slice);
            indexed.insert(
                key,
                std::iter::once(first).chain(more.iter().copied()).collect(),
            );
        }
        if let Some((key, _)) = self
            .more_keys
            .iter()
            .find(|(key, more)| more.is_empty() || !self.keys.contains_key(key))
        {
            return Err(format!(
                "more_keys[{key:?}] empty or without a first holder"
            ));
        }
        for holders in expected.values_mut().chain(indexed.values_mut()) {
            holders.sort_unstable();
        }
        if indexed != expected {
            return Err(format!("key index {indexed:?}, objects say {expected:?}"));
        }
        let objects: usize = self.namespaces.values().map(|ns| ns.objects.len()).sum();
        if objects != self.objects_live {
            return Err(format!(
                "{} live objects counted, {objects} held",
                self.objects_live
            ));
        }
        if let Some(inum) = self
            .torn_down
            .keys()
            .find(|inum| !self.namespaces.contains_key(inum))
        {
            return Err(format!("early teardown count of the dead namespace {inum}"));
        }
        let ordered: HashSet<ObjectKey> = self.early_order.iter().copied().collect();
        if ordered.len() != self.early_order.len()
            || ordered.len() != self.early_removals.len()
            || ordered
                .iter()
                .any(|key| !self.early_removals.contains_key(key))
            || ordered.len() > MAX_EARLY_REMOVALS
        {
            return Err(format!(
                "early removals {:?} in the order {:?}",
                self.early_removals.keys().collect::<Vec<_>>(),
                self.early_order
            ));
        }
        if let Some(key) = self
            .early_order
            .iter()
            .find(|key| self.object(**key).is_some())
        {
            return Err(format!("the early removal of live object {key:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
