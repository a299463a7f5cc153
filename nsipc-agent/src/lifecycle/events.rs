//! What the lifecycle engine reports: its events and their parts. How they are written is
//! [`crate::output::lifecycle_events`]'s.

pub use super::mqueues::MqueueIdent;
use crate::{
    decode::{ContainerRef, MqueueName, Task},
    limits::{LimitHit, Limits},
    names::IpcObject,
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
    // u32: the kernel allows at most 2^24 objects of a type per namespace (IPCMNI_EXTEND).
    pub msg: u32,
    pub shm: u32,
    pub sem: u32,
}

impl ObjectCounts {
    pub fn add(&mut self, object: IpcObject, delta: i32) {
        let count = match object {
            IpcObject::Msg => &mut self.msg,
            IpcObject::Shm => &mut self.shm,
            IpcObject::Sem => &mut self.sem,
        };
        *count = count.saturating_add_signed(delta);
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
    /// A POSIX message queue unlinked while nothing held it open.
    Unlink,
    /// A POSIX message queue unlinked earlier, at the last close of a descriptor on it.
    LastClose,
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
            DestroyReason::Unlink => "unlink",
            DestroyReason::LastClose => "last_close",
        }
    }
}

/// Who joins a namespace, as far as containers tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// A container entering a namespace it already lives in (`docker exec`).
    Exec,
    /// A container entering another's namespace (`--ipc=container:NAME`).
    Share,
    /// A task outside any container (`nsenter`, a runtime before it moved the task).
    Setns,
}

impl JoinKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinKind::Exec => "exec",
            JoinKind::Share => "share",
            JoinKind::Setns => "setns",
        }
    }
}

/// A namespace where a key lives, and the containers living there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHome {
    pub ns: NsIdent,
    pub containers: Vec<ContainerRef>,
}

/// How a namespace was created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Unshare,
    Clone,
}

/// A lifecycle event. `ts` is CLOCK_MONOTONIC ns: when it happened or, for what an inventory
/// found (`exists`, `unknown` destroys), when the agent looked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    NsExists {
        ts: u64,
        ns: NsIdent,
    },
    NsCreate {
        ts: u64,
        task: Task,
        ns: NsIdent,
        from: NsIdent,
        via: Via,
        child_pid: Option<u32>,
        /// Its IPC sysctls, read by the agent (not the engine) when it wrote the event:
        /// `None` when no thread of the creator (or the clone's child) was in it any more.
        limits: Option<Box<Limits>>,
    },
    NsJoin {
        ts: u64,
        task: Task,
        ns: NsIdent,
        from: NsIdent,
        into_host: bool,
        kind: JoinKind,
        /// The containers living in `ns` before the join.
        members: Vec<ContainerRef>,
    },
    NsDestroy {
        ts: u64,
        ns: NsIdent,
        /// The containers that lived in it.
        containers: Vec<ContainerRef>,
        lifetime_ns: Option<u64>,
        destroyed: ObjectCounts,
        reason: DestroyReason,
        /// Freed unseen: found gone by looking, after the free (`lifetime_ns` is an upper
        /// bound).
        late: bool,
    },
    ObjectExists {
        ts: u64,
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
        /// Its free was never seen: a check found it gone at `ts`, so it died before `ts`
        /// (and `lifetime_ns` is an upper bound). See [`crate::lifecycle::Engine::found_gone`].
        late: bool,
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
        key_lives_in: Vec<KeyHome>,
        /// The limit an `ENOSPC`/`EINVAL` hit, when the namespace's limits were given
        /// ([`crate::lifecycle::Engine::apply_with_limits`]).
        limit: Option<LimitHit>,
    },
    /// A container's task seen in the host's IPC namespace for the first time
    /// (`--ipc=host`).
    ContainerHostIpc {
        ts: u64,
        task: Task,
        ns: NsIdent,
    },
    /// An object a container made in the host's namespace (`--ipc=host`) outlives it.
    ObjectOrphaned {
        ts: u64,
        ns: NsIdent,
        object: IpcObject,
        id: i32,
        key: i32,
        /// The container that made it (ended, for [`OrphanCause::ContainerEnded`]).
        container: ContainerRef,
        cause: OrphanCause,
    },
    /// A POSIX message queue made by `mq_open(O_CREAT)`. `maxmsg`/`msgsize` as asked, 0 when
    /// the call gave no attributes (the namespace's defaults then apply).
    MqueueCreate {
        ts: u64,
        task: Task,
        ns: NsIdent,
        queue: MqueueIdent,
        mode: u32,
        maxmsg: u64,
        msgsize: u64,
    },
    MqueueOpenFailed {
        ts: u64,
        task: Task,
        ns: NsIdent,
        name: MqueueName,
        oflag: i32,
        errno: i32,
        /// Other namespaces where a queue of this name lives.
        name_lives_in: Vec<KeyHome>,
        /// The limit an `ENOSPC`/`EINVAL` hit, when the namespace's limits were given.
        limit: Option<LimitHit>,
    },
    MqueueUnlink {
        ts: u64,
        task: Task,
        ns: NsIdent,
        queue: MqueueIdent,
    },
    MqueueDestroy {
        ts: u64,
        /// The task whose call ended it (its unlink, its last close), where known.
        task: Option<Task>,
        ns: NsIdent,
        queue: MqueueIdent,
        reason: DestroyReason,
        lifetime_ns: Option<u64>,
        /// Found gone by a resynchronisation: it died before `ts`.
        late: bool,
    },
}

/// Why an object is reported orphaned: nothing that made it is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanCause {
    /// The container that made it in the host's namespace ended (`--ipc=host` leftovers).
    ContainerEnded,
    /// The process that made it exited, and no process has it attached.
    CreatorExited { pid: u32 },
}

impl OrphanCause {
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanCause::ContainerEnded => "container_ended",
            OrphanCause::CreatorExited { .. } => "creator_exited",
        }
    }
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
            Lifecycle::ContainerHostIpc { .. } => "container.host_ipc",
            Lifecycle::ObjectOrphaned { object: Msg, .. } => "msg.orphaned",
            Lifecycle::ObjectOrphaned { object: Shm, .. } => "shm.orphaned",
            Lifecycle::ObjectOrphaned { object: Sem, .. } => "sem.orphaned",
            Lifecycle::MqueueCreate { .. } => "mqueue.create",
            Lifecycle::MqueueOpenFailed { .. } => "mqueue.open_failed",
            Lifecycle::MqueueUnlink { .. } => "mqueue.unlink",
            Lifecycle::MqueueDestroy { .. } => "mqueue.destroy",
        }
    }

    pub fn ts(&self) -> u64 {
        match self {
            Lifecycle::NsExists { ts, .. }
            | Lifecycle::ObjectExists { ts, .. }
            | Lifecycle::NsCreate { ts, .. }
            | Lifecycle::NsJoin { ts, .. }
            | Lifecycle::ObjectCreate { ts, .. }
            | Lifecycle::ShmRemove { ts, .. }
            | Lifecycle::ShmAttach { ts, .. }
            | Lifecycle::ShmDetach { ts, .. }
            | Lifecycle::GetFailed { ts, .. }
            | Lifecycle::ContainerHostIpc { ts, .. }
            | Lifecycle::ObjectOrphaned { ts, .. }
            | Lifecycle::NsDestroy { ts, .. }
            | Lifecycle::ObjectDestroy { ts, .. }
            | Lifecycle::MqueueCreate { ts, .. }
            | Lifecycle::MqueueOpenFailed { ts, .. }
            | Lifecycle::MqueueUnlink { ts, .. }
            | Lifecycle::MqueueDestroy { ts, .. } => *ts,
        }
    }

    pub fn task(&self) -> Option<&Task> {
        match self {
            Lifecycle::NsCreate { task, .. }
            | Lifecycle::NsJoin { task, .. }
            | Lifecycle::ObjectCreate { task, .. }
            | Lifecycle::ShmRemove { task, .. }
            | Lifecycle::ShmAttach { task, .. }
            | Lifecycle::ShmDetach { task, .. }
            | Lifecycle::GetFailed { task, .. }
            | Lifecycle::ContainerHostIpc { task, .. }
            | Lifecycle::MqueueCreate { task, .. }
            | Lifecycle::MqueueOpenFailed { task, .. }
            | Lifecycle::MqueueUnlink { task, .. } => Some(task),
            Lifecycle::ObjectDestroy { task, .. } | Lifecycle::MqueueDestroy { task, .. } => {
                task.as_ref()
            }
            Lifecycle::NsExists { .. }
            | Lifecycle::ObjectExists { .. }
            | Lifecycle::NsDestroy { .. }
            | Lifecycle::ObjectOrphaned { .. } => None,
        }
    }

    pub fn ns(&self) -> &NsIdent {
        match self {
            Lifecycle::NsExists { ns, .. }
            | Lifecycle::NsCreate { ns, .. }
            | Lifecycle::NsJoin { ns, .. }
            | Lifecycle::NsDestroy { ns, .. }
            | Lifecycle::ObjectExists { ns, .. }
            | Lifecycle::ObjectCreate { ns, .. }
            | Lifecycle::ObjectDestroy { ns, .. }
            | Lifecycle::ShmRemove { ns, .. }
            | Lifecycle::ShmAttach { ns, .. }
            | Lifecycle::ShmDetach { ns, .. }
            | Lifecycle::GetFailed { ns, .. }
            | Lifecycle::ContainerHostIpc { ns, .. }
            | Lifecycle::ObjectOrphaned { ns, .. }
            | Lifecycle::MqueueCreate { ns, .. }
            | Lifecycle::MqueueOpenFailed { ns, .. }
            | Lifecycle::MqueueUnlink { ns, .. }
            | Lifecycle::MqueueDestroy { ns, .. } => ns,
        }
    }
}
