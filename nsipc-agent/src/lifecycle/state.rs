//! What the engine keeps per live object and per live namespace, packed small, and how its
//! maps give memory back: shrunk after mass deaths, emptied object maps kept for new namespaces.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
    num::NonZeroU64,
    sync::LazyLock,
};

use nsipc_common::NsRef;

use super::{Engine, NsIdent, ObjectId};

/// A namespace's objects. There is one such map per live namespace, so its hasher keeps its
/// seed outside: [`ProcessSeed`] takes no room where a `RandomState` would take 8 bytes.
pub(super) type ObjectMap = HashMap<ObjectId, ObjectState, ProcessSeed>;

/// foldhash with one random seed for the whole process.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProcessSeed;

impl BuildHasher for ProcessSeed {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        static STATE: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);
        STATE.build_hasher()
    }
}

/// What the engine keeps per live object, packed in 16 bytes aligned to 4 so that an entry
/// of a namespace's object map, with its 8-byte id, takes 24 bytes rather than 32: there can
/// be hundreds of thousands.
#[derive(Debug)]
pub(super) struct ObjectState {
    pub(super) key: i32,
    /// The process (tgid) seen creating it, until its exit; 0 when not known or gone: its
    /// exit makes the object orphaned ([`super::orphans`]).
    pub(super) creator: u32,
    /// The low 63 bits: monotonic ns of creation + 1, 0 when it was not seen. The top bit:
    /// shm only, IPC_RMID happened while attached; the segment waits for its last detach.
    /// In two halves, which keep the alignment at 4.
    created_and_removed: [u32; 2],
}

const REMOVED: u64 = 1 << 63;

impl ObjectState {
    pub(super) fn new(key: i32, created_ns: Option<u64>, creator: u32) -> Self {
        // 2^63 ns is 292 years of uptime: nothing real is cut by the `min`.
        let created = created_ns.map_or(0, |ns| ns.min(REMOVED - 2) + 1);
        let mut state = Self {
            key,
            creator,
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
    pub(super) fn created_ns(&self) -> Option<u64> {
        (self.get() & !REMOVED).checked_sub(1)
    }

    pub(super) fn removed(&self) -> bool {
        self.get() & REMOVED != 0
    }

    pub(super) fn set_removed(&mut self) {
        self.set(self.get() | REMOVED);
    }
}

/// What the engine keeps per live namespace, in 56 bytes: there can be tens of thousands.
#[derive(Debug)]
pub(super) struct NamespaceState {
    pub(super) ident: NsIdent,
    /// [`NsRef::life`] of this life, 0 until a record tells it (an inventoried namespace).
    pub(super) life: u32,
    /// Monotonic ns of its creation + 1, when it was seen (+ 1: the niche keeps it at 8 bytes).
    pub(super) created: Option<NonZeroU64>,
    /// Its live objects. Per namespace rather than one map for all: a namespace's teardown
    /// takes its own map instead of scanning every object.
    pub(super) objects: ObjectMap,
}

impl NamespaceState {
    /// Whether `ns` names this life (see [`NsRef::same_life`]).
    pub(super) fn is_life_of(&self, ns: &NsRef) -> bool {
        ns.same_life(&NsRef {
            id: self.ident.id,
            inum: self.ident.inum,
            life: self.life,
        })
    }

    /// Keeps what `ns`, a reference to this life, tells that was not known yet.
    pub(super) fn learn(&mut self, ns: &NsRef) {
        if self.ident.id == 0 {
            self.ident.id = ns.id;
        }
        if self.life == 0 {
            self.life = ns.life;
        }
    }

    pub(super) fn created_ns(&self) -> Option<u64> {
        self.created.map(|created| created.get() - 1)
    }
}

/// How many emptied object maps the engine keeps, at most, and the largest it keeps: enough
/// for a steady churn of containers, and a few kilobytes in all.
pub(super) const SPARE_MAPS: usize = 64;
const SPARE_MAP_CAPACITY: usize = 64;

/// Gives a map's memory back once most of it is unused, after many deaths: hash tables never
/// shrink on their own, and the engine's memory should follow what is alive. Halving the
/// population again is needed to shrink again, so this costs nothing per event on average,
/// and nothing at all to small maps.
pub(super) fn shrink<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if let Some(capacity) = shrunk_capacity(map.len(), map.capacity()) {
        map.shrink_to(capacity);
    }
}

/// [`shrink`]'s rule: the capacity to shrink to, if any.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    const SMALL: usize = 1024;
    (capacity > SMALL && len < capacity / 4).then_some(len * 2)
}

impl Engine {
    /// Keeps the object map of a dead namespace for a new one, if it is small and there is room.
    pub(super) fn recycle(&mut self, mut map: ObjectMap) {
        map.clear();
        let capacity = map.capacity();
        if self.spare_maps.len() < SPARE_MAPS && capacity > 0 && capacity <= SPARE_MAP_CAPACITY {
            self.spare_maps.push(map);
        }
    }

    /// See [`shrink`]. A namespace's object map shrinks as its objects die
    /// ([`Self::destroy_object`]), and goes with the namespace.
    pub(super) fn shrink_maps(&mut self) {
        shrink(&mut self.keys);
        shrink(&mut self.namespaces);
        shrink(&mut self.attachments);
        if let Some(sizes) = &mut self.shm_sizes {
            shrink(sizes);
        }
        let removed = &mut self.removed_segments;
        if let Some(capacity) = shrunk_capacity(removed.len(), removed.capacity()) {
            removed.shrink_to(capacity);
        }
    }
}
