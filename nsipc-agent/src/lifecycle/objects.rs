//! SysV objects: creation, destruction, shm segments removed while attached (marked, they die
//! at their last detach), and removals whose record came before their object's create.

use std::collections::hash_map::Entry;

use nsipc_common::NsRef;

use super::{
    DestroyReason, EarlyRemoval, Engine, Lifecycle, MAX_EARLY_REMOVALS, NsIdent, ObjectKey,
    ObjectState, state::shrink,
};
use crate::{decode::Task, names::IpcObject};

impl Engine {
    pub(super) fn object(&self, key: ObjectKey) -> Option<&ObjectState> {
        self.namespaces.get(&key.ns)?.objects.get(&key.in_ns())
    }

    pub(super) fn object_mut(&mut self, key: ObjectKey) -> Option<&mut ObjectState> {
        self.namespaces
            .get_mut(&key.ns)?
            .objects
            .get_mut(&key.in_ns())
    }

    /// Records a new object of a namespace the engine knows, made by process `creator` (0:
    /// not seen), of `size` bytes for a segment; returns false if it was known.
    pub(super) fn insert_object(
        &mut self,
        key: ObjectKey,
        ipc_key: i32,
        size: u64,
        created_ns: Option<u64>,
        creator: u32,
    ) -> bool {
        let Some(ns) = self.namespaces.get_mut(&key.ns) else {
            debug_assert!(false, "objects are inserted into known namespaces");
            return false;
        };
        match ns.objects.entry(key.in_ns()) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(vacant) => vacant.insert(ObjectState::new(ipc_key, created_ns, creator)),
        };
        self.objects_live += 1;
        if key.object == IpcObject::Shm
            && let Some(sizes) = &mut self.shm_sizes
        {
            sizes.insert((key.ns, key.id), size);
        }
        self.count_creation(creator);
        self.index_key(key.object, ipc_key, key.ns);
        true
    }

    /// A segment removed while attached: the kernel only marks it and makes its key private;
    /// it dies at its last detach.
    pub(super) fn mark_removed(
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
    pub(super) fn remember_early_removal(
        &mut self,
        key: ObjectKey,
        ts: u64,
        task: Task,
        attached: bool,
    ) {
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
    pub(super) fn removed_early(&mut self, key: ObjectKey, ns: NsIdent, out: &mut Vec<Lifecycle>) {
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

    pub(super) fn destroy_object(
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
    pub(super) fn destroyed(
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
        self.forget_creation(key, state.creator);
        self.forced_frees.remove(&key);
        if state.removed() {
            self.removed_segments.remove(&key);
        } else {
            self.unindex_key(key.object, state.key, key.ns);
        }
        if key.object == IpcObject::Shm {
            if let Some(sizes) = &mut self.shm_sizes {
                sizes.remove(&(key.ns, key.id));
            }
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
}

impl Engine {
    /// The namespace life and key of live object `id` of type `object` in namespace `ns`, if
    /// the engine holds it (for activity lines, which name an object the probes counted).
    pub fn live_object(&self, ns: &NsRef, object: IpcObject, id: i32) -> Option<(NsIdent, i32)> {
        let state = self.namespaces.get(&ns.inum)?;
        if !state.is_life_of(ns) {
            return None;
        }
        let found = state.objects.get(&(object, id))?;
        Some((state.ident, found.key))
    }
}
