//! Orphaned objects: the process that made an object exited and no process has it attached.
//! SysV objects outlive their makers by design, so this is not a leak in itself; but a queue
//! or segment nobody is left to use or remove is what an operator looks for after a crash (a
//! PostgreSQL postmaster killed with `-9` leaves its segment), and the stream says when it
//! happens: at the creator's exit, or, for a segment others still had attached, at its last
//! detach. Once per object, and only for objects whose creation the engine saw.
//!
//! A process's exit record names the namespace it exits in: its objects are looked for there
//! first, and in the other namespaces only if some are still missing (a creator that moved).

use super::{Engine, Lifecycle, ObjectKey, OrphanCause, state::NamespaceState};
use crate::{
    decode::{ContainerRef, Task},
    names::IpcObject,
};

impl Engine {
    /// One more live object made by process `creator` (0: not known).
    pub(super) fn count_creation(&mut self, creator: u32) {
        if creator != 0 {
            *self.live_by_creator.entry(creator).or_default() += 1;
        }
    }

    /// Object `key`, made by `creator` (0: not known, or exited), is gone.
    pub(super) fn forget_creation(&mut self, key: ObjectKey, creator: u32) {
        self.orphans_at_last_detach.remove(&key);
        if creator == 0 {
            return;
        }
        if let Some(live) = self.live_by_creator.get_mut(&creator) {
            *live -= 1;
            if *live == 0 {
                self.live_by_creator.remove(&creator);
            }
        }
    }

    /// Process `task` (its leader) exited in namespace `exit_ns`, its attachments already let
    /// go: what it made and nobody has attached is orphaned now; a segment others still have
    /// attached, at its last detach. A segment removed while attached is neither: it dies at
    /// its last detach.
    pub(super) fn creator_exited(
        &mut self,
        task: &Task,
        exit_ns: u32,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(mut left) = self.live_by_creator.remove(&task.pid) else {
            return;
        };
        let mut made = std::mem::take(&mut self.orphan_candidates);
        if let Some(state) = self.namespaces.get_mut(&exit_ns) {
            left -= take_made_by(task.pid, exit_ns, state, &mut made);
        }
        if left > 0 {
            for (&inum, state) in &mut self.namespaces {
                if inum != exit_ns {
                    left -= take_made_by(task.pid, inum, state, &mut made);
                }
                if left == 0 {
                    break;
                }
            }
        }
        made.sort_unstable_by_key(|key| (key.ns, key.object, key.id));
        let cause = OrphanCause::CreatorExited { pid: task.pid };
        for key in made.drain(..) {
            match self.object(key) {
                Some(state) if state.removed() => {}
                Some(_) if self.is_attached(key) => {
                    self.orphans_at_last_detach
                        .insert(key, (cause, task.container));
                }
                Some(_) => {
                    self.orphaned(key, cause, task.container, ts, out);
                    self.expect_forced_free(key);
                }
                None => {}
            }
        }
        self.orphan_candidates = made;
    }

    /// Whether some process has segment `key` attached (a walk of the attachments: only for
    /// an exited creator's segments, segments waiting to be orphaned, and segments of
    /// namespaces with kernel.shm_rmid_forced that lost an attachment, which are few).
    pub(super) fn is_attached(&self, key: ObjectKey) -> bool {
        key.object == IpcObject::Shm && self.attachments.values().any(|&held| held == key)
    }

    /// Segments waiting for their last detach to be orphaned that have none left now.
    pub(super) fn orphaned_at_last_detach(&mut self, ts: u64, out: &mut Vec<Lifecycle>) {
        if self.orphans_at_last_detach.is_empty() {
            return;
        }
        let mut due = std::mem::take(&mut self.orphan_candidates);
        due.extend(
            self.orphans_at_last_detach
                .keys()
                .filter(|&&key| !self.is_attached(key)),
        );
        due.sort_unstable_by_key(|key| (key.ns, key.id));
        for key in due.drain(..) {
            let Some((cause, container)) = self.orphans_at_last_detach.remove(&key) else {
                continue;
            };
            if self.object(key).is_some_and(|state| !state.removed()) {
                self.orphaned(key, cause, container, ts, out);
            }
        }
        self.orphan_candidates = due;
    }

    /// Reports live object `key` orphaned.
    pub(super) fn orphaned(
        &mut self,
        key: ObjectKey,
        cause: OrphanCause,
        container: ContainerRef,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(ipc_key) = self.object(key).map(|state| state.key) else {
            return;
        };
        out.push(Lifecycle::ObjectOrphaned {
            ts,
            ns: self.namespaces[&key.ns].ident,
            object: key.object,
            id: key.id,
            key: ipc_key,
            container,
            cause,
        });
    }
}

/// Takes the objects of namespace `inum` that process `pid` made into `made` (they have no
/// creator any more); returns how many.
fn take_made_by(pid: u32, inum: u32, state: &mut NamespaceState, made: &mut Vec<ObjectKey>) -> u32 {
    let mut taken = 0;
    for (&(object, id), object_state) in &mut state.objects {
        if object_state.creator == pid {
            object_state.creator = 0;
            made.push(ObjectKey {
                ns: inum,
                object,
                id,
            });
            taken += 1;
        }
    }
    taken
}
