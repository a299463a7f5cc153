//! The startup inventory: every live IPC namespace, what keeps it alive, and the SysV IPC
//! objects inside it, read from /proc.
//!
//! A namespace is found through any of the three things that can hold it: a thread in it
//! (`/proc/PID/task/TID/ns/ipc`), an open namespace fd (`/proc/PID/fd/N` → `ipc:[N]`), or a
//! bind mount of an nsfs file (an `nsfs` line in `/proc/PID/mountinfo`). `lsns` only knows the
//! first. Its objects are read from `/proc/sysvipc/*` by a helper thread that joins it (those
//! files show the namespace of the thread that opens them); the calling thread never moves.

mod enter;
pub(crate) mod mqueue;
mod procfs;
mod sysvipc;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, Result, ensure};
use serde::{Serialize, Serializer};

pub use self::{
    mqueue::MqueueInfo,
    procfs::segment_attached,
    sysvipc::{IpcPerm, ObjectDetail},
};

/// The name (comm) of the helper threads that enter namespaces to read their objects: the
/// setns of any nsipc-agent's inventory (another agent's `snapshot`, say) is not a user's join.
pub const HELPER_THREAD_NAME: &str = "nsipc-setns";
use crate::{
    lifecycle::{ExistingNamespace, ExistingObject},
    limits::Limits,
    names::IpcObject,
};

/// Everything found, namespaces by inum, objects by (namespace, kind, id).
#[derive(Debug)]
pub struct Inventory {
    pub namespaces: Vec<NamespaceInfo>,
    pub objects: Vec<ObjectInfo>,
    /// Processes whose /proc entries this process may not read (EACCES/EPERM: e.g. one with
    /// capabilities this one lacks, or under an LSM). A namespace held only by them is missing.
    pub unreadable: Vec<u32>,
    /// POSIX message queues by namespace and name ([`take_inventory_with_mqueues`] only: the
    /// looks after lost records and for late frees do not list them).
    pub mqueues: Vec<MqueueInfo>,
    /// Namespaces whose queues could not be listed, and why.
    pub mqueues_unlisted: Vec<(u32, String)>,
}

/// One live IPC namespace and what holds it. Kernel threads (all in the host namespace) are
/// left out.
#[derive(Debug)]
pub struct NamespaceInfo {
    /// Inode number, what `readlink /proc/PID/ns/ipc` shows.
    pub inum: u32,
    /// The never-reused 64-bit namespace id (`NS_GET_ID`, Linux 6.18+); `None` before.
    pub ns_id: Option<u64>,
    /// When the holders were scanned.
    pub seen_at: SystemTime,
    /// Processes with threads in it.
    pub processes: Vec<ProcessInfo>,
    /// The cgroup paths of those processes that name containers, each once, first seen first:
    /// resolved to containers only when the namespace is written (`snapshot`, `trace`'s start,
    /// and a namespace a resynchronisation of `trace` found), not for every namespace of the
    /// inventories that resynchronise `trace`.
    pub container_cgroups: Vec<String>,
    /// Open namespace fds referring to it.
    pub fds: Vec<FdHolder>,
    /// Bind mounts of it (one entry per mount namespace that shows the mount).
    pub mounts: Vec<MountHolder>,
    /// Its IPC sysctls, read inside it with its objects; `None` when they could not be read.
    pub limits: Option<Limits>,
}

/// A process with threads in a namespace. Field names are part of the JSON contract
/// (docs/events.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The threads in the namespace when not all of the process's threads are; `None` when all are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tids: Option<Vec<u32>>,
    pub comm: String,
    /// Real uid.
    pub uid: u32,
    /// Container id from the process's cgroup path, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// An open fd on the namespace's nsfs file (e.g. from `open("/proc/PID/ns/ipc")`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FdHolder {
    pub pid: u32,
    pub comm: String,
    pub fd: u32,
}

/// A bind mount of the namespace's nsfs file (`unshare --ipc=FILE`, `ip netns`-style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountHolder {
    /// A process that sees the mount (the mount point is relative to its root).
    pub pid: u32,
    /// The mount namespace the mount is in.
    pub mnt_ns: u32,
    #[serde(serialize_with = "lossy_path")]
    pub mount_point: PathBuf,
}

/// Mount points are bytes; non-UTF-8 ones are shown with U+FFFD rather than failing the line.
fn lossy_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// One SysV IPC object in one namespace.
#[derive(Debug)]
pub struct ObjectInfo {
    pub ns: u32,
    pub ns_id: Option<u64>,
    /// When its namespace's `/proc/sysvipc` files were read.
    pub seen_at: SystemTime,
    pub perm: IpcPerm,
    pub detail: ObjectDetail,
}

impl ObjectInfo {
    pub fn object(&self) -> IpcObject {
        self.detail.object()
    }
}

impl Inventory {
    /// What the lifecycle engine needs to know of it.
    pub fn existing(&self) -> (Vec<ExistingNamespace>, Vec<ExistingObject>) {
        let namespaces = self
            .namespaces
            .iter()
            .map(|ns| ExistingNamespace {
                inum: ns.inum,
                id: ns.ns_id.unwrap_or(0),
            })
            .collect();
        let objects = self
            .objects
            .iter()
            .map(|o| ExistingObject {
                ns: o.ns,
                object: o.object(),
                id: o.perm.id,
                key: o.perm.key,
                size: match o.detail {
                    ObjectDetail::Shm { size, .. } => size,
                    ObjectDetail::Msg { .. } | ObjectDetail::Sem { .. } => 0,
                },
            })
            .collect();
        (namespaces, objects)
    }
}

/// Scans /proc for IPC namespaces and reads the objects in each. Needs CAP_SYS_ADMIN (setns)
/// and the right to read every process's /proc entries (root).
pub fn take_inventory() -> Result<Inventory> {
    take(false)
}

/// [`take_inventory`], and the POSIX message queues of each namespace (`snapshot`, and
/// `trace` at its start).
pub fn take_inventory_with_mqueues() -> Result<Inventory> {
    take(true)
}

fn take(with_mqueues: bool) -> Result<Inventory> {
    // The calling thread must end where it started: only helper threads join namespaces.
    let home = procfs::thread_ipc_ns().context("reading this thread's IPC namespace")?;

    let seen_at = SystemTime::now();
    let scan = procfs::scan().context("scanning /proc for IPC namespaces")?;
    let mut namespaces = Vec::new();
    let mut objects = Vec::new();
    let mut mqueues = Vec::new();
    let mut mqueues_unlisted = Vec::new();
    for (inum, found) in scan.namespaces {
        // The namespace can die between the scan and here (its holders went away): skip it.
        let sources = found.sources.iter().chain(&found.mount_sources);
        let Some(ns) = enter::open_namespace(inum, sources)? else {
            continue;
        };
        let ns_id = enter::namespace_id(&ns);
        let read = enter::read_objects_in(ns, inum, ns_id, with_mqueues)
            .with_context(|| format!("reading the SysV IPC objects of IPC namespace {inum}"))?;
        match read.mqueues {
            Some(Ok(found)) => mqueues.extend(found),
            Some(Err(err)) => mqueues_unlisted.push((inum, format!("{err:#}"))),
            None => {}
        }
        objects.extend(read.objects.into_iter().map(|(perm, detail)| ObjectInfo {
            ns: inum,
            ns_id,
            seen_at: read.seen_at,
            perm,
            detail,
        }));
        namespaces.push(NamespaceInfo {
            inum,
            ns_id,
            seen_at,
            processes: found.processes,
            container_cgroups: found.container_cgroups,
            fds: found.fds,
            mounts: found.mounts,
            limits: read.limits,
        });
    }
    objects.sort_by_key(|o| (o.ns, o.object(), o.perm.id));

    let now = procfs::thread_ipc_ns().context("reading this thread's IPC namespace")?;
    ensure!(
        now == home,
        "internal error: the inventory moved the calling thread from IPC namespace {home} to {now}"
    );
    Ok(Inventory {
        namespaces,
        objects,
        unreadable: scan.unreadable,
        mqueues,
        mqueues_unlisted,
    })
}

/// The IPC sysctls of namespace `inum`, read by a helper thread that joins it through the
/// namespace link of task `tid` of process `pid`; `None` when that task is gone or no longer in
/// it (checked: the link must lead to `inum`), or the read failed. One thread start, a setns
/// and ten small reads: about 0.1 ms (95 µs measured here, at nice 19 beside a busy VM).
/// The path is made on the stack: a task already gone (a short `ipcmk`) costs no allocation.
pub fn read_limits_of_task(pid: u32, tid: u32, inum: u32) -> Option<Limits> {
    use std::{ffi::OsStr, io::Write as _, os::unix::ffi::OsStrExt as _};
    let mut buf = [0u8; 64];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        write!(cursor, "/proc/{pid}/task/{tid}/ns/ipc").ok()?;
        cursor.position() as usize
    };
    let link = Path::new(OsStr::from_bytes(&buf[..len]));
    let ns = enter::open_namespace_at(inum, link).ok()??;
    enter::read_limits_in(ns, inum).ok()
}

/// What the /proc scan found for one namespace, before it is opened.
#[derive(Debug, Default)]
struct Found {
    processes: Vec<ProcessInfo>,
    fds: Vec<FdHolder>,
    mounts: Vec<MountHolder>,
    /// Paths that lead to the namespace's nsfs file: its threads' ns links and the fds on it.
    sources: Vec<PathBuf>,
    /// The cgroup paths of its processes that name containers, each once.
    container_cgroups: Vec<String>,
    /// Paths through its bind mounts, tried last: a file open through a mount keeps that mount
    /// busy, and a plain `umount` of it would fail meanwhile with EBUSY.
    mount_sources: Vec<PathBuf>,
}

/// The scan's result: namespaces by inum (so the output is ordered).
#[derive(Debug, Default)]
struct Scan {
    namespaces: BTreeMap<u32, Found>,
    /// See [`Inventory::unreadable`].
    unreadable: Vec<u32>,
}
