//! POSIX message queues: created by `mq_open(O_CREAT)`, unlinked by `mq_unlink`, destroyed
//! when their inode is evicted (after the unlink and the last close, or with their
//! namespace's mqueue mount).
//!
//! A queue is known by its inode number (unique on the machine while it lives: `get_next_ino`)
//! and, while linked, by its name in its namespace. Its end is the eviction of its inode. Where
//! the probes name the inode (fentry, kprobe: `mqueue_evict_inode`), that is exact. Where they
//! cannot (the kfree program only sees that an eviction happened, and by which thread), an
//! eviction is explained by the same thread's `mq_unlink`, whose record follows at once, or
//! by its namespace's teardown; any other is a last close, and the agent finds which unlinked
//! queue went by looking which ones are still open ([`Engine::mqueues_looked`]).
//!
//! The eviction inside an `mq_unlink` (nothing held the queue open) is recorded before the
//! unlink's own record: the engine holds it until that record comes, so that the stream says
//! `unlink` then `destroy`.

use std::collections::HashSet;

use super::{DestroyReason, Engine, KeyHome, Lifecycle, Map, NsIdent};
use crate::{
    decode::{Body, MqueueName, Task},
    inventory::mqueue::MqueueInfo,
    limits,
};

/// `O_CREAT` (include/uapi/asm-generic/fcntl.h).
const O_CREAT: i32 = 0o100;

/// How long an eviction the probes could not name waits for its thread's `mq_unlink` record
/// before the agent looks which queue went: records reach userspace within milliseconds.
pub const UNNAMED_EVICTION_WAIT_NS: u64 = 200_000_000;

/// A live queue the stream announced.
#[derive(Clone, Debug)]
struct Queue {
    ns: NsIdent,
    name: MqueueName,
    /// Its name still leads to it.
    linked: bool,
    /// Monotonic ns of its creation, when seen.
    created: Option<u64>,
}

/// The queues part of the engine's state.
#[derive(Default)]
pub(super) struct Mqueues {
    /// Inode number → live queue.
    queues: Map<u64, Queue>,
    /// (namespace, name) → inode number of the linked queue of that name.
    linked: Map<(u32, MqueueName), u64>,
    /// Queues evicted while still linked, → the evicting thread: its `mq_unlink`'s record is
    /// still to come, or their namespace is being torn down.
    evicted_linked: Map<u64, u32>,
    /// Evictions the probes could not name, not explained yet: by whom, when (monotonic ns).
    unnamed: Vec<(Task, u64)>,
}

/// A queue as the stream names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqueueIdent {
    pub name: MqueueName,
    pub ino: u64,
}

impl Engine {
    /// The queues an inventory found (listed as `mqueue.exists` by the caller).
    pub fn observe_existing_mqueues(&mut self, queues: &[MqueueInfo]) {
        for queue in queues {
            let Some(state) = self.namespaces.get(&queue.ns) else {
                continue; // its namespace ended since
            };
            let name = MqueueName(queue.name.trim_start_matches('/').as_bytes().into());
            self.mqueues
                .linked
                .insert((queue.ns, name.clone()), queue.ino);
            self.mqueues.queues.insert(
                queue.ino,
                Queue {
                    ns: state.ident,
                    name,
                    linked: true,
                    created: None,
                },
            );
        }
    }

    /// An `mq_open` (`open`: its record's body) by `task` in namespace `ns`.
    pub(super) fn mqueue_open(
        &mut self,
        ts: u64,
        task: Task,
        ns: NsIdent,
        open: &Body,
        out: &mut Vec<Lifecycle>,
    ) {
        let &Body::MqueueOpen {
            ref name,
            oflag,
            mode,
            maxmsg,
            msgsize,
            ino,
            result,
        } = open
        else {
            return;
        };
        if let Err(errno) = result {
            let queues = self.mqueues_in(ns.inum);
            let limit = self.given_limits.take().and_then(|limits| {
                let create = oflag & O_CREAT != 0;
                limits::mqueue_hit(errno, create, [maxmsg, msgsize], &limits, queues)
            });
            out.push(Lifecycle::MqueueOpenFailed {
                ts,
                task,
                ns,
                name: name.clone(),
                oflag,
                errno,
                name_lives_in: self.name_lives_in(name, ns.inum),
                limit,
            });
            return;
        }
        // Only a queue the agent does not know yet can have been made by this call; an open
        // without O_CREAT of an unknown one is of a queue that predates the agent's look.
        if ino == 0 || oflag & O_CREAT == 0 || self.mqueues.queues.contains_key(&ino) {
            return;
        }
        if let Some(previous) = self
            .mqueues
            .linked
            .insert((ns.inum, name.clone()), ino)
            .and_then(|old| self.mqueues.queues.get_mut(&old))
        {
            previous.linked = false; // its unlink was not seen
        }
        self.mqueues.queues.insert(
            ino,
            Queue {
                ns,
                name: name.clone(),
                linked: true,
                created: Some(ts),
            },
        );
        out.push(Lifecycle::MqueueCreate {
            ts,
            task,
            ns,
            queue: MqueueIdent {
                name: name.clone(),
                ino,
            },
            mode: mode & 0o777,
            maxmsg,
            msgsize,
        });
    }

    /// The queues of namespace `inum`, unlinked ones still open included: what the kernel
    /// counts against `fs.mqueue.queues_max`.
    fn mqueues_in(&self, inum: u32) -> u64 {
        let queues = self.mqueues.queues.values();
        queues.filter(|queue| queue.ns.inum == inum).count() as u64
    }

    /// The namespaces other than `except` where a queue named `name` lives, with the
    /// containers that live in each.
    fn name_lives_in(&self, name: &MqueueName, except: u32) -> Vec<KeyHome> {
        let homes = self
            .mqueues
            .linked
            .keys()
            .filter(|(inum, queue)| *inum != except && queue == name)
            .map(|&(inum, _)| inum)
            .collect();
        self.homes(homes)
    }

    pub(super) fn mqueue_unlinked(
        &mut self,
        ts: u64,
        task: Task,
        ns: NsIdent,
        name: &MqueueName,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(ino) = self.mqueues.linked.remove(&(ns.inum, name.clone())) else {
            return; // a queue the agent never knew
        };
        let Some(queue) = self.mqueues.queues.get_mut(&ino) else {
            return;
        };
        queue.linked = false;
        let queue_ns = queue.ns;
        let ident = MqueueIdent {
            name: name.clone(),
            ino,
        };
        out.push(Lifecycle::MqueueUnlink {
            ts,
            task,
            ns: queue_ns,
            queue: ident,
        });
        // Evicted inside this unlink: nothing held it open.
        let evicted_here = self.mqueues.evicted_linked.remove(&ino).is_some()
            || self.take_unnamed_eviction_of(task.tid);
        if evicted_here {
            self.mqueue_destroyed(ino, DestroyReason::Unlink, Some(task), ts, false, out);
        }
    }

    /// Takes one unexplained unnamed eviction made by thread `tid`, if any.
    fn take_unnamed_eviction_of(&mut self, tid: u32) -> bool {
        let unnamed = &mut self.mqueues.unnamed;
        match unnamed.iter().position(|(by, _)| by.tid == tid) {
            Some(i) => {
                unnamed.remove(i);
                true
            }
            None => false,
        }
    }

    /// An inode of the mqueue filesystem was evicted by thread `tid`: `ino` None where the
    /// probes could not say which.
    pub(super) fn mqueue_evicted(
        &mut self,
        ts: u64,
        task: Task,
        ino: Option<u64>,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(ino) = ino else {
            self.mqueues.unnamed.push((task, ts));
            return;
        };
        let Some(queue) = self.mqueues.queues.get(&ino) else {
            return; // a namespace's root directory, or a queue the agent never knew
        };
        if queue.linked {
            self.mqueues.evicted_linked.insert(ino, task.tid);
        } else {
            self.mqueue_destroyed(ino, DestroyReason::LastClose, Some(task), ts, false, out);
        }
    }

    /// Reports queue `ino` destroyed and forgets it.
    fn mqueue_destroyed(
        &mut self,
        ino: u64,
        reason: DestroyReason,
        task: Option<Task>,
        ts: u64,
        late: bool,
        out: &mut Vec<Lifecycle>,
    ) {
        let Some(queue) = self.mqueues.queues.remove(&ino) else {
            return;
        };
        self.mqueues.evicted_linked.remove(&ino);
        if queue.linked {
            self.mqueues
                .linked
                .remove(&(queue.ns.inum, queue.name.clone()));
        }
        out.push(Lifecycle::MqueueDestroy {
            ts,
            task,
            ns: queue.ns,
            queue: MqueueIdent {
                name: queue.name,
                ino,
            },
            reason,
            lifetime_ns: queue.created.map(|created| ts.saturating_sub(created)),
            late,
        });
    }

    /// Namespace `ns` ended (`reason`: freed, or found gone): its mqueue mount went with it,
    /// and with it every queue still linked there that nothing held open. Where the probes
    /// name evictions, a linked queue not evicted by now is held open by a descriptor and
    /// lives on, nameless; where they do not, the agent cannot tell, and reports it destroyed.
    pub(super) fn mqueues_of_ended_namespace(
        &mut self,
        ns: NsIdent,
        reason: DestroyReason,
        ts: u64,
        late: bool,
        out: &mut Vec<Lifecycle>,
    ) {
        let mut ended: Vec<(u64, bool)> = self
            .mqueues
            .queues
            .iter()
            .filter(|(_, queue)| queue.ns.inum == ns.inum && queue.linked)
            .map(|(&ino, _)| (ino, self.mqueues.evicted_linked.contains_key(&ino)))
            .collect();
        ended.sort_unstable();
        let mut torn_down = 0;
        for (ino, evicted) in ended {
            if evicted || !self.mqueue_evictions_named || reason == DestroyReason::Unknown {
                let reason = if reason == DestroyReason::Unknown {
                    DestroyReason::Unknown
                } else {
                    DestroyReason::NamespaceTeardown
                };
                self.mqueue_destroyed(ino, reason, None, ts, late, out);
                torn_down += 1;
            } else if let Some(queue) = self.mqueues.queues.get_mut(&ino) {
                queue.linked = false;
                self.mqueues.linked.remove(&(ns.inum, queue.name.clone()));
            }
        }
        // Where evictions are unnamed, the teardown's own are the latest ones: it began when
        // the namespace's last reference went, after whatever that did.
        if !self.mqueue_evictions_named && reason != DestroyReason::Unknown {
            let unnamed = &mut self.mqueues.unnamed;
            unnamed.truncate(unnamed.len().saturating_sub(torn_down));
        }
    }

    /// The unlinked queues to look for among open descriptors, when an eviction the probes
    /// could not name, made before `before_ts`, is still unexplained: empty when none is.
    pub fn mqueues_to_look_for(&self, before_ts: u64) -> Option<Vec<u64>> {
        if !self.mqueues.unnamed.iter().any(|&(_, ts)| ts < before_ts) {
            return None;
        }
        let mut unlinked: Vec<u64> = self
            .mqueues
            .queues
            .iter()
            .filter(|(_, queue)| !queue.linked)
            .map(|(&ino, _)| ino)
            .collect();
        unlinked.sort_unstable();
        Some(unlinked)
    }

    /// What a look for `looked_for` ([`Self::mqueues_to_look_for`] with `before_ts`) found:
    /// the ones in `open` are still open; the others ended by their last close, which the
    /// unnamed evictions made before `before_ts` stand for. One queue gone for one eviction
    /// is that eviction's, by its task and at its time; else they are reported as of `ts`,
    /// when the look began (their teardown's evictions are among them, explained already).
    pub fn mqueues_looked(
        &mut self,
        looked_for: &[u64],
        open: &HashSet<u64>,
        before_ts: u64,
        ts: u64,
        out: &mut Vec<Lifecycle>,
    ) {
        let (explained, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mqueues.unnamed)
            .into_iter()
            .partition(|&(_, at)| at < before_ts);
        self.mqueues.unnamed = waiting;
        let gone: Vec<u64> = looked_for
            .iter()
            .copied()
            .filter(|ino| !open.contains(ino))
            .collect();
        let (task, at) = match (&gone[..], &explained[..]) {
            ([_], [(task, at)]) => (Some(*task), *at),
            _ => (None, ts),
        };
        for ino in gone {
            self.mqueue_destroyed(ino, DestroyReason::LastClose, task, at, false, out);
        }
    }
}
