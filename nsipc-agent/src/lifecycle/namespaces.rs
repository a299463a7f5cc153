//! Namespace lives: the identity the engine gives a namespace (a new life once its inum's
//! known life was replaced), its birth, and its end, seen (its free) or unseen, with what was
//! still in it.

use std::num::NonZeroU64;

use nsipc_common::NsRef;

use super::{DestroyReason, Engine, Lifecycle, NamespaceState, NsIdent, ObjectCounts, ObjectKey};

/// How the engine learnt that a namespace's life ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum LifeEnd {
    /// Its free was seen: at `ts`.
    Freed,
    /// Freed unseen, before `ts`: found gone while no record was lost.
    FreedUnseen,
    /// Ended unseen, how not known: records were lost.
    Unknown,
}

impl Engine {
    /// The identity the engine gives namespace `ns`, starting a new life when needed (and
    /// reporting the end of the one it replaces, at `ts`: when that came to light).
    fn namespace(&mut self, ns: NsRef, ts: u64, out: &mut Vec<Lifecycle>) -> &mut NamespaceState {
        let known_life = self
            .namespaces
            .get(&ns.inum)
            .is_some_and(|state| state.is_life_of(&ns));
        if !known_life {
            if self.namespaces.contains_key(&ns.inum) {
                self.replaced(ns.inum, ts, out);
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
                    life: ns.life,
                    created: None,
                    objects: self.spare_maps.pop().unwrap_or_default(),
                },
            );
        }
        let state = self.namespaces.get_mut(&ns.inum).expect("inserted above");
        state.learn(&ns);
        state
    }

    /// Another life of `inum` showed up while the engine knew one: only free_ipc_ns() gives
    /// an inum back, after the namespace's teardown, so the known life was freed, its free's
    /// record still to come (it will be dropped as stale) or skipped. Reported freed and
    /// `late`, with what was left in it, unless records were lost since the last full
    /// resynchronisation: then what was left in it is not known.
    fn replaced(&mut self, inum: u32, ts: u64, out: &mut Vec<Lifecycle>) {
        let end = if self.records_lost {
            LifeEnd::Unknown
        } else {
            LifeEnd::FreedUnseen
        };
        self.ended_unseen(inum, ts, end, out);
    }

    pub(super) fn ident(&mut self, ns: NsRef, ts: u64, out: &mut Vec<Lifecycle>) -> NsIdent {
        self.namespace(ns, ts, out).ident
    }

    /// The life of `inum` the engine knows ended without its free being seen: reports it and
    /// what was still in it destroyed, so the stream never leaves a life it announced open.
    /// `ts`: when the agent found out (when it died is not known). Returns how many objects
    /// that was.
    pub(super) fn ended_unseen(
        &mut self,
        inum: u32,
        ts: u64,
        end: LifeEnd,
        out: &mut Vec<Lifecycle>,
    ) -> u64 {
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
        self.rmid_forced_namespaces.remove(&ident.inum);
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
        let queues_reason = if freed {
            DestroyReason::NamespaceTeardown
        } else {
            DestroyReason::Unknown
        };
        self.mqueues_of_ended_namespace(ident, queues_reason, ts, late, out);
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

    /// A namespace came into being: a new life of its inum, unless this is the life already
    /// known and announced (a creation replayed after the inventory saw the namespace).
    pub(super) fn born(
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
                // again; one only inventoried, or named by what was done in it, can be this
                // one if the lives agree.
                state.created.is_none() && state.is_life_of(&ns)
            };
            if !same_life {
                self.replaced(ns.inum, ts, out);
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
    pub(super) fn namespace_freed(&mut self, ns: NsRef, ts: u64, out: &mut Vec<Lifecycle>) {
        let Some(state) = self.namespaces.get(&ns.inum) else {
            return;
        };
        if !state.is_life_of(&ns) {
            return; // a stale free of a life already replaced
        }
        let state = self.namespaces.remove(&ns.inum).expect("present above");
        self.end_life(state, ts, LifeEnd::Freed, out);
    }
}
