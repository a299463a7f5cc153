//! What the lifecycle engine reports, and its JSON form (documented in docs/events.md).

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{
    decode::Task,
    names::{IpcObject, errno_name},
    render::{Rfc3339, WallClock, put_task},
};

/// One life of an IPC namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsIdent {
    pub inum: u32,
    /// The kernel's never-reused id (6.18+), 0 where it has none (or it is not known yet).
    pub id: u64,
    /// Which life of this inum the engine has seen (from 1); printed where there is no `id`.
    pub generation: u32,
}

/// Objects per type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    pub msg: u64,
    pub shm: u64,
    pub sem: u64,
}

impl ObjectCounts {
    pub fn add(&mut self, object: IpcObject, delta: i64) {
        let count = match object {
            IpcObject::Msg => &mut self.msg,
            IpcObject::Shm => &mut self.shm,
            IpcObject::Sem => &mut self.sem,
        };
        *count = count.saturating_add_signed(delta);
    }
}

impl Serialize for ObjectCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("msg", &self.msg)?;
        map.serialize_entry("shm", &self.shm)?;
        map.serialize_entry("sem", &self.sem)?;
        map.end()
    }
}

/// Why something stopped existing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyReason {
    /// `*ctl(IPC_RMID)` (for shm: with nothing attached).
    Rmid,
    /// The last detach of a shm segment already removed with IPC_RMID (shmdt, munmap, exit, exec).
    LastDetach,
    /// Its namespace was torn down.
    NamespaceTeardown,
    /// A shm segment destroyed without IPC_RMID while its namespace lives: shm_rmid_forced.
    RmidForced,
    /// A namespace's memory was freed.
    Freed,
    /// Found gone by a resynchronisation after lost events: when and why are not known.
    Unknown,
}

impl DestroyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::Rmid => "rmid",
            DestroyReason::LastDetach => "last_detach",
            DestroyReason::NamespaceTeardown => "namespace_teardown",
            DestroyReason::RmidForced => "rmid_forced",
            DestroyReason::Freed => "freed",
            DestroyReason::Unknown => "unknown",
        }
    }
}

/// How a namespace was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Unshare,
    Clone,
}

/// A lifecycle event. `ts` is CLOCK_MONOTONIC ns (0: not known, for inventory results).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    NsExists {
        ns: NsIdent,
    },
    NsCreate {
        ts: u64,
        task: Task,
        ns: NsIdent,
        from: NsIdent,
        via: Via,
        child_pid: Option<u32>,
    },
    NsJoin {
        ts: u64,
        task: Task,
        ns: NsIdent,
        from: NsIdent,
        into_host: bool,
    },
    NsDestroy {
        ts: u64,
        ns: NsIdent,
        lifetime_ns: Option<u64>,
        destroyed: ObjectCounts,
        reason: DestroyReason,
    },
    ObjectExists {
        ns: NsIdent,
        object: IpcObject,
        id: i32,
        key: i32,
    },
    ObjectCreate {
        ts: u64,
        task: Task,
        ns: NsIdent,
        object: IpcObject,
        id: i32,
        key: i32,
        mode: i32,
        size: u64,
    },
    ObjectDestroy {
        ts: u64,
        /// The task whose syscall destroyed it, for `rmid`.
        task: Option<Task>,
        ns: NsIdent,
        object: IpcObject,
        id: i32,
        key: i32,
        reason: DestroyReason,
        lifetime_ns: Option<u64>,
    },
    ShmRemove {
        ts: u64,
        task: Task,
        ns: NsIdent,
        id: i32,
        key: i32,
    },
    ShmAttach {
        ts: u64,
        task: Task,
        ns: NsIdent,
        id: i32,
        key: Option<i32>,
        addr: u64,
    },
    /// `id`/`key` are unknown when the attachment predates the agent or came with a fork.
    ShmDetach {
        ts: u64,
        task: Task,
        ns: NsIdent,
        id: Option<i32>,
        key: Option<i32>,
        addr: u64,
    },
    GetFailed {
        ts: u64,
        task: Task,
        ns: NsIdent,
        object: IpcObject,
        key: i32,
        flags: i32,
        errno: i32,
        /// Other namespaces where a live object of this type has this key.
        key_lives_in: Vec<u32>,
    },
}

impl Lifecycle {
    pub fn name(&self) -> &'static str {
        use IpcObject::{Msg, Sem, Shm};
        match self {
            Lifecycle::NsExists { .. } => "ipc_ns.exists",
            Lifecycle::NsCreate { .. } => "ipc_ns.create",
            Lifecycle::NsJoin { .. } => "ipc_ns.join",
            Lifecycle::NsDestroy { .. } => "ipc_ns.destroy",
            Lifecycle::ObjectExists { object: Msg, .. } => "msg.exists",
            Lifecycle::ObjectExists { object: Shm, .. } => "shm.exists",
            Lifecycle::ObjectExists { object: Sem, .. } => "sem.exists",
            Lifecycle::ObjectCreate { object: Msg, .. } => "msg.create",
            Lifecycle::ObjectCreate { object: Shm, .. } => "shm.create",
            Lifecycle::ObjectCreate { object: Sem, .. } => "sem.create",
            Lifecycle::ObjectDestroy { object: Msg, .. } => "msg.destroy",
            Lifecycle::ObjectDestroy { object: Shm, .. } => "shm.destroy",
            Lifecycle::ObjectDestroy { object: Sem, .. } => "sem.destroy",
            Lifecycle::ShmRemove { .. } => "shm.remove",
            Lifecycle::ShmAttach { .. } => "shm.attach",
            Lifecycle::ShmDetach { .. } => "shm.detach",
            Lifecycle::GetFailed { object: Msg, .. } => "msg.get_failed",
            Lifecycle::GetFailed { object: Shm, .. } => "shm.get_failed",
            Lifecycle::GetFailed { object: Sem, .. } => "sem.get_failed",
        }
    }

    fn ts(&self) -> Option<u64> {
        match self {
            Lifecycle::NsExists { .. } | Lifecycle::ObjectExists { .. } => None,
            Lifecycle::NsCreate { ts, .. }
            | Lifecycle::NsJoin { ts, .. }
            | Lifecycle::ObjectCreate { ts, .. }
            | Lifecycle::ShmRemove { ts, .. }
            | Lifecycle::ShmAttach { ts, .. }
            | Lifecycle::ShmDetach { ts, .. }
            | Lifecycle::GetFailed { ts, .. } => Some(*ts),
            Lifecycle::NsDestroy { ts, .. } | Lifecycle::ObjectDestroy { ts, .. } => {
                (*ts != 0).then_some(*ts)
            }
        }
    }

    fn task(&self) -> Option<&Task> {
        match self {
            Lifecycle::NsCreate { task, .. }
            | Lifecycle::NsJoin { task, .. }
            | Lifecycle::ObjectCreate { task, .. }
            | Lifecycle::ShmRemove { task, .. }
            | Lifecycle::ShmAttach { task, .. }
            | Lifecycle::ShmDetach { task, .. }
            | Lifecycle::GetFailed { task, .. } => Some(task),
            Lifecycle::ObjectDestroy { task, .. } => task.as_ref(),
            Lifecycle::NsExists { .. }
            | Lifecycle::ObjectExists { .. }
            | Lifecycle::NsDestroy { .. } => None,
        }
    }

    fn ns(&self) -> &NsIdent {
        match self {
            Lifecycle::NsExists { ns }
            | Lifecycle::NsCreate { ns, .. }
            | Lifecycle::NsJoin { ns, .. }
            | Lifecycle::NsDestroy { ns, .. }
            | Lifecycle::ObjectExists { ns, .. }
            | Lifecycle::ObjectCreate { ns, .. }
            | Lifecycle::ObjectDestroy { ns, .. }
            | Lifecycle::ShmRemove { ns, .. }
            | Lifecycle::ShmAttach { ns, .. }
            | Lifecycle::ShmDetach { ns, .. }
            | Lifecycle::GetFailed { ns, .. } => ns,
        }
    }
}

/// Writes a namespace identity as `<inum_key>` plus `<prefix>_id` or `<prefix>_gen`.
fn put_ns_ident<M: SerializeMap>(
    map: &mut M,
    keys: (&'static str, &'static str, &'static str),
    ns: &NsIdent,
) -> Result<(), M::Error> {
    let (inum_key, id_key, gen_key) = keys;
    map.serialize_entry(inum_key, &ns.inum)?;
    if ns.id != 0 {
        map.serialize_entry(id_key, &ns.id)
    } else {
        map.serialize_entry(gen_key, &ns.generation)
    }
}

/// A lifecycle event ready to serialize as one JSON object.
pub struct LifecycleJson<'a> {
    pub event: &'a Lifecycle,
    pub clock: &'a WallClock,
}

impl Serialize for LifecycleJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("event", event.name())?;
        if let Some(ts) = event.ts() {
            map.serialize_entry("time", &Rfc3339(self.clock.wall_time(ts)))?;
        }
        if let Some(task) = event.task() {
            put_task(&mut map, task)?;
        }
        put_ns_ident(&mut map, ("ns", "ns_id", "ns_gen"), event.ns())?;
        match event {
            Lifecycle::NsExists { .. } => {}
            Lifecycle::NsCreate {
                from,
                via,
                child_pid,
                ..
            } => {
                put_ns_ident(&mut map, ("from_ns", "from_ns_id", "from_ns_gen"), from)?;
                map.serialize_entry(
                    "via",
                    match via {
                        Via::Unshare => "unshare",
                        Via::Clone => "clone",
                    },
                )?;
                if let Some(child_pid) = child_pid {
                    map.serialize_entry("child_pid", child_pid)?;
                }
            }
            Lifecycle::NsJoin {
                from, into_host, ..
            } => {
                put_ns_ident(&mut map, ("from_ns", "from_ns_id", "from_ns_gen"), from)?;
                map.serialize_entry("into_host", into_host)?;
            }
            Lifecycle::NsDestroy {
                lifetime_ns,
                destroyed,
                reason,
                ..
            } => {
                map.serialize_entry("reason", reason.as_str())?;
                if let Some(lifetime_ns) = lifetime_ns {
                    map.serialize_entry("lifetime_ns", lifetime_ns)?;
                }
                map.serialize_entry("objects_destroyed", destroyed)?;
            }
            Lifecycle::ObjectExists { id, key, .. } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("key", key)?;
            }
            Lifecycle::ObjectCreate {
                object,
                id,
                key,
                mode,
                size,
                task,
                ..
            } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("key", key)?;
                map.serialize_entry("owner_uid", &task.uid)?;
                map.serialize_entry("mode", mode)?;
                match object {
                    IpcObject::Msg => {}
                    IpcObject::Shm => map.serialize_entry("size", size)?,
                    IpcObject::Sem => map.serialize_entry("nsems", size)?,
                }
            }
            Lifecycle::ObjectDestroy {
                id,
                key,
                reason,
                lifetime_ns,
                ..
            } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("key", key)?;
                map.serialize_entry("reason", reason.as_str())?;
                if let Some(lifetime_ns) = lifetime_ns {
                    map.serialize_entry("lifetime_ns", lifetime_ns)?;
                }
            }
            Lifecycle::ShmRemove { id, key, .. } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("key", key)?;
            }
            Lifecycle::ShmAttach { id, key, addr, .. } => {
                map.serialize_entry("id", id)?;
                if let Some(key) = key {
                    map.serialize_entry("key", key)?;
                }
                map.serialize_entry("addr", addr)?;
            }
            Lifecycle::ShmDetach { id, key, addr, .. } => {
                if let Some(id) = id {
                    map.serialize_entry("id", id)?;
                }
                if let Some(key) = key {
                    map.serialize_entry("key", key)?;
                }
                map.serialize_entry("addr", addr)?;
            }
            Lifecycle::GetFailed {
                key,
                flags,
                errno,
                key_lives_in,
                ..
            } => {
                map.serialize_entry("key", key)?;
                map.serialize_entry("flags", flags)?;
                match errno_name(*errno) {
                    Some(name) => map.serialize_entry("errno", name)?,
                    None => map.serialize_entry("errno", errno)?,
                }
                map.serialize_entry("key_lives_in", key_lives_in)?;
            }
        }
        map.end()
    }
}
