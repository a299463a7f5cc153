//! Traffic through SysV objects, from the probes' running totals (`ACTIVITY` map: per object,
//! process and kind of call) to what each report says: per object, who sent, received or
//! operated and how much since the last report (`msg.activity`, `sem.activity`), and per queue
//! each sender → receiver pair (`ipc.flow`). Pure: the totals and what is alive come in, the
//! report and the map entries to delete go out; trace/activity.rs reads and writes the map.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use nsipc_common::{ActivityCount, ActivityKey, COMM_LEN, EventKind, NsRef};

use crate::{lifecycle::NsIdent, names::IpcObject};

/// One object, as the probes name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub ns: NsRef,
    pub object: IpcObject,
    pub id: i32,
}

/// What a call did to its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// msgsnd
    Sender,
    /// msgrcv
    Receiver,
    /// semop, semtimedop
    Operator,
}

impl Role {
    /// The role and object type of an `ActivityKey::kind`; None for any other id.
    fn of_kind(kind: u32) -> Option<(Role, IpcObject)> {
        Some(match EventKind::from_u32(kind)? {
            EventKind::MsgSend => (Role::Sender, IpcObject::Msg),
            EventKind::MsgReceive => (Role::Receiver, IpcObject::Msg),
            EventKind::SemOp => (Role::Operator, IpcObject::Sem),
            _ => return None,
        })
    }
}

/// One process's calls of one role on one object since the last report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Participant {
    pub pid: u32,
    pub comm: [u8; COMM_LEN],
    /// Its cgroup at its first call (the container it is attributed to).
    pub cgroup: u64,
    pub role: Role,
    pub calls: u64,
    /// Bytes for a queue, operations for a semaphore set.
    pub units: u64,
    /// A sender's sends refused because the queue was full (`IPC_NOWAIT`).
    pub refused: u64,
}

/// The name and namespace life of an object, as the lifecycle engine knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub ns: NsIdent,
    pub key: i32,
}

/// One object's activity since the last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectActivity {
    pub object: ObjectRef,
    /// None: the engine never knew it (its creation unseen and not inventoried).
    pub known: Option<Known>,
    /// The object is gone: this is its last line.
    pub ended: bool,
    /// Processes with calls since the last report, by role then pid.
    pub participants: Vec<Participant>,
    /// A queue's messages received since the last report, by who sent them.
    pub flows: Vec<Flow>,
    /// A queue found full for the first time in its life (`msg.full`).
    pub full: Option<QueueFull>,
}

/// A queue that was full: a send left no room for another message of its size, or was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull {
    /// The sender that found it full (the one with the most bytes queued, if several did).
    pub sender: Participant,
    /// The queue's bytes right after that sender's latest fill or refusal.
    pub queued: u64,
    /// Its limit (`q_qbytes`: `msgmnb` at its creation, or what IPC_SET made it).
    pub limit: u64,
    /// Sends since the last report that left it full, and sends it refused, of every sender.
    pub fills: u64,
    pub refused: u64,
}

impl ObjectActivity {
    pub fn of_role(&self, role: Role) -> impl Iterator<Item = &Participant> {
        self.participants.iter().filter(move |p| p.role == role)
    }

    /// Calls and units of one role, summed.
    pub fn total(&self, role: Role) -> (u64, u64) {
        self.of_role(role).fold((0, 0), |(calls, units), p| {
            (calls + p.calls, units + p.units)
        })
    }
}

/// Messages one process received from a queue that another had sent into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The sender, with what it sent of them: `calls` messages, `units` bytes.
    pub from: Participant,
    /// The receiver, with what it received of them.
    pub to: Participant,
}

/// A queue's messages not yet received, per sender in the order they were counted, and
/// receives not yet matched to a send.
#[derive(Debug, Default)]
struct QueueFlows {
    backlog: VecDeque<Participant>,
    /// Receives counted before their sends (a receiver's exit probe can run before the
    /// sender's): matched at the next report, else dropped (messages sent before the agent
    /// started, or whose sends were not counted).
    waiting: Vec<Participant>,
}

impl QueueFlows {
    /// Adds a report's sends to the backlog, and matches the receives to it: first what was
    /// sent first. Returns the flows, one per sender → receiver pair.
    fn report(&mut self, participants: &[Participant]) -> Vec<Flow> {
        self.backlog.extend(
            participants
                .iter()
                // A sender whose sends were all refused sent nothing.
                .filter(|p| p.role == Role::Sender && p.calls > 0)
                .copied(),
        );
        let waited = std::mem::take(&mut self.waiting);
        let new = participants.iter().filter(|p| p.role == Role::Receiver);
        let mut flows: Vec<Flow> = Vec::new();
        for (mut receiver, waited_already) in waited
            .into_iter()
            .map(|r| (r, true))
            .chain(new.map(|r| (*r, false)))
        {
            while receiver.calls > 0
                && let Some(sender) = self.backlog.front_mut()
            {
                let messages = receiver.calls.min(sender.calls);
                let sent = share(sender.units, messages, sender.calls);
                let received = share(receiver.units, messages, receiver.calls);
                let flow = Flow {
                    from: Participant {
                        calls: messages,
                        units: sent,
                        ..*sender
                    },
                    to: Participant {
                        calls: messages,
                        units: received,
                        ..receiver
                    },
                };
                match flows
                    .iter_mut()
                    .find(|f| f.from.pid == flow.from.pid && f.to.pid == flow.to.pid)
                {
                    Some(same) => {
                        same.from.calls += messages;
                        same.from.units += sent;
                        same.to.calls += messages;
                        same.to.units += received;
                    }
                    None => flows.push(flow),
                }
                sender.calls -= messages;
                sender.units -= sent;
                receiver.calls -= messages;
                receiver.units -= received;
                if sender.calls == 0 {
                    self.backlog.pop_front();
                }
            }
            if receiver.calls > 0 && !waited_already {
                self.waiting.push(receiver);
            }
        }
        flows
    }
}

/// `messages` of `calls` calls' `units`: all of them for all the calls, else their share.
fn share(units: u64, messages: u64, calls: u64) -> u64 {
    if messages >= calls {
        units
    } else {
        (u128::from(units) * u128::from(messages) / u128::from(calls)) as u64
    }
}

/// What one report says, and the map entries it is done with.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects with calls since the last report, in object order.
    pub objects: Vec<ObjectActivity>,
    /// Entries to delete from the map: those of ended objects and of exited processes, whose
    /// counts this report includes.
    pub delete: Vec<ActivityKey>,
}

/// The running totals of one map entry already reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reported {
    calls: u64,
    units: u64,
    fills: u64,
    refused: u64,
}

impl Reported {
    fn of(count: &ActivityCount) -> Self {
        Self {
            calls: count.calls,
            units: count.units,
            fills: count.fills,
            refused: count.refused,
        }
    }

    /// What `count` adds to these totals. Totals below them: the entry was deleted and made
    /// again, and all of it is new.
    fn since(&self, count: &ActivityCount) -> Self {
        let now = Self::of(count);
        if now.calls < self.calls || now.fills < self.fills || now.refused < self.refused {
            return now;
        }
        Self {
            calls: now.calls - self.calls,
            units: now.units.saturating_sub(self.units),
            fills: now.fills - self.fills,
            refused: now.refused - self.refused,
        }
    }
}

/// The totals already reported, per map entry, and what is known of the objects counted.
#[derive(Debug, Default)]
pub struct ActivityTracker {
    reported: HashMap<ActivityKey, Reported>,
    /// Queues already reported full: `msg.full` comes once in a queue's life.
    full: HashSet<ObjectRef>,
    /// Objects the engine held at some report: named by their last lines after their end.
    known: HashMap<ObjectRef, Known>,
    /// Objects counted but unknown to the engine at the last report: their creation's record
    /// may have been read after the counts. Unknown twice, they are taken as ended.
    unknown_once: HashSet<ObjectRef>,
    /// Objects destroyed since the last report (namespace inum, type, id), with their names:
    /// one made and gone between two reports ends at the next, named.
    destroyed: HashMap<(u32, IpcObject, i32), Known>,
    /// Per queue with messages not yet matched to their receiver.
    queues: HashMap<ObjectRef, QueueFlows>,
}

impl ActivityTracker {
    /// A queue or semaphore set was destroyed (the engine's `*.destroy`).
    pub fn destroyed(&mut self, object: IpcObject, id: i32, known: Known) {
        if object != IpcObject::Shm {
            self.destroyed.insert((known.ns.inum, object, id), known);
        }
    }

    /// One report from the map's `entries` (running totals). `live` says whether the engine
    /// holds an object (and its name); `alive` whether a process still runs. `last`: the
    /// agent stops, everything is reported and nothing kept.
    pub fn report(
        &mut self,
        entries: impl IntoIterator<Item = (ActivityKey, ActivityCount)>,
        live: impl Fn(&ObjectRef) -> Option<Known>,
        alive: impl Fn(u32) -> bool,
        last: bool,
    ) -> Report {
        let mut by_object: BTreeMap<ObjectRef, Vec<(ActivityKey, Role, ActivityCount)>> =
            BTreeMap::new();
        for (key, count) in entries {
            let Some((role, object)) = Role::of_kind(key.kind) else {
                continue;
            };
            let object = ObjectRef {
                ns: key.ns,
                object,
                id: key.id,
            };
            by_object
                .entry(object)
                .or_default()
                .push((key, role, count));
        }
        let mut report = Report::default();
        // A reported object destroyed after its processes' entries went: a last line still.
        let gone: Vec<ObjectRef> = self
            .known
            .keys()
            .filter(|object| {
                !by_object.contains_key(object)
                    && self
                        .destroyed
                        .contains_key(&(object.ns.inum, object.object, object.id))
            })
            .copied()
            .collect();
        for object in gone {
            self.queues.remove(&object);
            report.objects.push(ObjectActivity {
                object,
                known: self.known.remove(&object),
                ended: true,
                participants: Vec::new(),
                flows: Vec::new(),
                full: None,
            });
        }
        // An object whose every entry went with its processes is named no more once gone.
        self.known
            .retain(|object, _| by_object.contains_key(object) || live(object).is_some());
        self.queues
            .retain(|object, _| by_object.contains_key(object) || live(object).is_some());
        self.full
            .retain(|object| by_object.contains_key(object) || live(object).is_some());
        for (object, entries) in by_object {
            let now_known = live(&object);
            if let Some(known) = now_known {
                self.known.insert(object, known);
                self.unknown_once.remove(&object);
            } else if let Some(known) =
                self.destroyed
                    .get(&(object.ns.inum, object.object, object.id))
            {
                self.known.insert(object, *known);
            }
            let ended = now_known.is_none()
                && (last
                    || self.known.contains_key(&object)
                    || self.unknown_once.contains(&object));
            if now_known.is_none() && !ended {
                // Perhaps not created yet, for the engine: next time.
                self.unknown_once.insert(object);
                continue;
            }
            let mut participants = Vec::new();
            let mut full: Option<QueueFull> = None;
            for (key, role, count) in entries {
                let new = self
                    .reported
                    .get(&key)
                    .copied()
                    .unwrap_or_default()
                    .since(&count);
                let participant = Participant {
                    pid: key.pid,
                    comm: count.comm,
                    cgroup: count.cgroup,
                    role,
                    calls: new.calls,
                    units: new.units,
                    refused: new.refused,
                };
                if new.calls > 0 || new.refused > 0 {
                    participants.push(participant);
                }
                if new.fills > 0 || new.refused > 0 {
                    let found = full.get_or_insert(QueueFull {
                        sender: participant,
                        queued: count.queued,
                        limit: count.limit,
                        fills: 0,
                        refused: 0,
                    });
                    if count.queued > found.queued {
                        (found.sender, found.queued, found.limit) =
                            (participant, count.queued, count.limit);
                    }
                    found.fills += new.fills;
                    found.refused += new.refused;
                }
                if ended || !alive(key.pid) {
                    self.reported.remove(&key);
                    report.delete.push(key);
                } else {
                    self.reported.insert(key, Reported::of(&count));
                }
            }
            participants.sort_by_key(|p| (p.role, p.pid));
            let full = full.filter(|_| self.full.insert(object));
            let known = now_known.or_else(|| self.known.get(&object).copied());
            // A queue with receives waiting is reported even without calls: they wait one
            // report only.
            let flows = if object.object == IpcObject::Msg
                && (!participants.is_empty() || self.queues.contains_key(&object))
            {
                self.queues.entry(object).or_default().report(&participants)
            } else {
                Vec::new()
            };
            if ended {
                self.known.remove(&object);
                self.unknown_once.remove(&object);
                self.queues.remove(&object);
                self.full.remove(&object);
            }
            if !participants.is_empty() || (ended && known.is_some()) {
                report.objects.push(ObjectActivity {
                    object,
                    known,
                    ended,
                    participants,
                    flows,
                    full,
                });
            }
        }
        self.destroyed.clear();
        report.objects.sort_by_key(|activity| activity.object);
        report
    }
}

#[cfg(test)]
mod tests;
