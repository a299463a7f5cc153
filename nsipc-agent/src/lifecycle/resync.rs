//! The engine and the inventory: what an inventory found (at startup, or after lost records,
//! reconciled without contradicting the records that raced with it), and removed segments
//! whose free may have gone unseen.

use std::collections::HashSet;

use nsipc_common::NsRef;

use super::{
    DestroyReason, Engine, IPC_PRIVATE, Lifecycle, Map, NsIdent, ObjectKey, namespaces::LifeEnd,
};
use crate::{
    decode::{Body, KernelEvent},
    names::IpcObject,
};

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
    /// A segment's size in bytes (0 for queues and semaphore sets): for the metrics.
    pub size: u64,
}

/// What an inventory found, and when it began.
#[derive(Clone, Copy)]
pub struct Look<'a> {
    pub ts: u64,
    pub namespaces: &'a [ExistingNamespace],
    pub objects: &'a [ExistingObject],
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

impl Engine {
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
            self.insert_object(key, existing.key, existing.size, None, 0);
            out.push(Lifecycle::ObjectExists {
                ts,
                ns,
                object: existing.object,
                id: existing.id,
                key: existing.key,
            });
        }
    }

    /// After lost events: makes the state equal to a fresh inventory (`look`), reporting what
    /// vanished (`destroy` with reason `unknown`) and what appeared (`exists`) unseen, at
    /// `look.ts` (when the inventory began: when the agent looked).
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
    ///
    /// A namespace can live with no task, fd or mount in it, which is all an inventory finds
    /// namespaces by: a segment of it attached by a process of another namespace holds it
    /// (the attachment's file holds the namespace). So one the inventory misses, but where the
    /// engine knows of an attachment that `still_attached(pid, addr, id)` confirms, lives on.
    pub fn resync(
        &mut self,
        look: Look,
        frees_only: bool,
        racing: &[KernelEvent],
        mut still_attached: impl FnMut(u32, u64, i32) -> bool,
        out: &mut Vec<Lifecycle>,
    ) -> ResyncCounts {
        let Look {
            ts,
            namespaces,
            objects,
        } = look;
        let mut counts = ResyncCounts::default();
        let racing = Racing::of(racing);
        // The state is made right again below, losses or not.
        self.records_lost = false;
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

        let mut held_by_attachment: HashSet<u32> = HashSet::new();
        for (&(pid, addr), segment) in &self.attachments {
            if !listed_ns.contains_key(&segment.ns)
                && !held_by_attachment.contains(&segment.ns)
                && still_attached(pid, addr, segment.id)
            {
                held_by_attachment.insert(segment.ns);
            }
        }

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
                    None => !held_by_attachment.contains(&ident.inum),
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
            // Its free follows; or the inventory did not reach it (its /proc scan is not
            // atomic: a namespace held only by a process moving between namespaces can be
            // missed; one held only by attachments cannot be entered) and it lives on: there
            // is no listing to judge its objects by.
            if racing.frees(namespace.ident) || !listed_ns.contains_key(&namespace.ident.inum) {
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
                    // Destroyed by kernel.shm_rmid_forced, unseen.
                    _ if self.forced_frees.contains(&key) => detached_unseen.push(key),
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

    /// Segments whose free should follow, as (namespace inum, id), that no attachment the
    /// engine knows of holds: those removed while attached (their last detach may have come: a
    /// detach, or the exit of a process that inherited the attachment by fork, which the
    /// engine cannot see), and those kernel.shm_rmid_forced destroyed ([`super::forced`]). If
    /// the free never comes (a free the probes did not see), only a look at the kernel tells:
    /// [`Self::found_gone`].
    pub fn awaiting_free(&self) -> Vec<(u32, i32)> {
        if self.removed_segments.is_empty() && self.forced_frees.is_empty() {
            return Vec::new();
        }
        let attached: HashSet<ObjectKey> = self.attachments.values().copied().collect();
        let mut found: Vec<(u32, i32)> = self
            .removed_segments
            .iter()
            .chain(&self.forced_frees)
            .filter(|key| !attached.contains(key))
            .map(|key| (key.ns, key.id))
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// A segment awaiting its free ([`Self::awaiting_free`]) is no longer listed in its
    /// namespace (an inventory that started at `ts` says so), though its free never came: it
    /// died before `ts`, of its last detach if it was removed, else of kernel.shm_rmid_forced.
    /// Reported so, flagged `late`; nothing if the engine has no such segment (its free came
    /// meanwhile).
    pub fn found_gone(&mut self, inum: u32, id: i32, ts: u64, out: &mut Vec<Lifecycle>) {
        let key = ObjectKey {
            ns: inum,
            object: IpcObject::Shm,
            id,
        };
        let reason = match self.object(key) {
            Some(state) if state.removed() => DestroyReason::LastDetach,
            Some(_) if self.forced_frees.contains(&key) => DestroyReason::RmidForced,
            _ => return,
        };
        let ns = self.namespaces[&inum].ident;
        let first = out.len();
        self.destroy_object(key, ns, reason, None, ts, out);
        if let Some(Lifecycle::ObjectDestroy { late, .. }) = out.get_mut(first) {
            *late = true;
        }
    }
}
