//! Getting into a namespace: an fd to it, and a helper thread that joins it to read
//! `/proc/sysvipc/*`, which shows the IPC namespace of the thread that opens it.

use std::{
    fs::{self, File},
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, ensure};

use super::{
    ObjectDetail,
    mqueue::{MqueueInfo, read_mqueues_here},
    procfs::{thread_ipc_ns, vanished},
    sysvipc::{self, IpcPerm},
};
use crate::{
    limits::{self, Limits},
    names::IpcObject,
};

/// `NS_GET_ID`, `_IOR(0xb7, 13, __u64)` (include/uapi/linux/nsfs.h, Linux 6.18+).
const NS_GET_ID: libc::c_ulong = 0x8008_b70d;

/// Opens the namespace `inum` through the first of `sources` that still leads to it; `None`
/// when none does (every holder went away: the namespace is gone or going).
///
/// An nsfs file's inode number is its namespace's inum, so the fd is checked against `inum`:
/// a pid or fd number reused since the scan could lead elsewhere.
pub(super) fn open_namespace<'a>(
    inum: u32,
    sources: impl IntoIterator<Item = &'a PathBuf>,
) -> Result<Option<File>> {
    for path in sources {
        if let Some(file) = open_namespace_at(inum, path)? {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

/// Opens the namespace `inum` through `path`; `None` when it no longer leads there (or
/// anywhere). Allocates nothing when the path is gone.
pub(super) fn open_namespace_at(inum: u32, path: &Path) -> Result<Option<File>> {
    match open_retrying_refusals(path) {
        Ok(file) => {
            let meta = file
                .metadata()
                .with_context(|| format!("stat of {}", path.display()))?;
            Ok((meta.ino() == u64::from(inum)).then_some(file))
        }
        Err(err) if vanished(&err) => Ok(None),
        Err(err) => Err(err)
            .with_context(|| format!("opening IPC namespace {inum} through {}", path.display())),
    }
}

/// How often, and how far apart, a refused namespace link is tried again.
const REFUSAL_RETRIES: u32 = 20;
const REFUSAL_PAUSE: Duration = Duration::from_millis(1);

/// Opens `path`, trying again for a little while when it is refused (EACCES): a task's
/// namespace link is refused for a moment, to root too, while the task execs or exits (the
/// kernel's ptrace access check in `proc_ns_get_link`); after the exit it is gone (ENOENT),
/// after the exec it opens. A refusal that lasts is returned (a real lack of privilege). Seen
/// in the race test, where one such moment ended an agent's resynchronisation.
fn open_retrying_refusals(path: &Path) -> io::Result<File> {
    let mut tries = 0;
    loop {
        match File::open(path) {
            Err(err) if err.raw_os_error() == Some(libc::EACCES) && tries < REFUSAL_RETRIES => {
                tries += 1;
                thread::sleep(REFUSAL_PAUSE);
            }
            result => return result,
        }
    }
}

/// The namespace's never-reused 64-bit id; `None` on kernels before 6.18 (ENOTTY).
pub(super) fn namespace_id(ns: &File) -> Option<u64> {
    let mut id = 0u64;
    // SAFETY: NS_GET_ID writes one u64 through the pointer.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_ID, &mut id) };
    (rc == 0).then_some(id)
}

/// The objects of one namespace and when they were read, and its limits.
pub(super) struct Read {
    pub seen_at: SystemTime,
    pub objects: Vec<(IpcPerm, ObjectDetail)>,
    /// `None` when its /proc/sys files could not be read (the objects still are).
    pub limits: Option<Limits>,
    /// Its POSIX message queues, when asked for: or why they could not be listed.
    pub mqueues: Option<Result<Vec<MqueueInfo>>>,
}

/// Reads the namespace's `/proc/sysvipc/*` on a helper thread that joins it with setns and
/// ends with the read, so the calling thread never changes namespace. `ns` is closed as soon as
/// the thread has joined (which holds the namespace from then on): opened through a bind mount,
/// it keeps that mount busy.
///
/// With the probes attached (`trace` inventories after attaching), this is also how they learn
/// the kernel pointers of what predates the agent, without which its frees go unrecognised:
/// the helper's setns hands them the namespace's `struct ipc_namespace *`, and the IPC_STAT
/// that completes each segment's listing its `struct shmid_kernel *` (the probes keep what
/// the agent's own calls teach them, and record none of those calls). Tested by
/// tests/lifecycle.rs `what_existed_before_start_is_seen_dying`.
///
/// With `mqueues`, it lists the namespace's POSIX message queues too ([`read_mqueues_here`]).
pub(super) fn read_objects_in(
    ns: File,
    inum: u32,
    ns_id: Option<u64>,
    mqueues: bool,
) -> Result<Read> {
    thread::Builder::new()
        .name(super::HELPER_THREAD_NAME.to_owned())
        .spawn(move || read_here_after_setns(ns, inum, ns_id, mqueues))
        .context("starting a thread to enter the namespace")?
        .join()
        .map_err(|_| anyhow!("the thread reading the namespace panicked"))?
}

/// Moves this helper thread into the IPC namespace `ns`, and checks it is namespace `inum`.
fn join_on_this_thread(ns: File, inum: u32) -> Result<()> {
    // SAFETY: setns on this helper thread only; an IPC namespace can be joined by one thread
    // of a multi-threaded process.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWIPC) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("setns(CLONE_NEWIPC), which needs CAP_SYS_ADMIN");
    }
    drop(ns);
    let here = thread_ipc_ns()?;
    ensure!(here == inum, "setns led to IPC namespace {here}");
    Ok(())
}

fn read_here_after_setns(ns: File, inum: u32, ns_id: Option<u64>, mqueues: bool) -> Result<Read> {
    join_on_this_thread(ns, inum)?;
    let seen_at = SystemTime::now();
    let mut objects = Vec::new();
    for object in [IpcObject::Msg, IpcObject::Shm, IpcObject::Sem] {
        let path = sysvipc::proc_path(object);
        let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        for (perm, detail) in
            sysvipc::parse_sysvipc(object, &text).with_context(|| format!("parsing {path}"))?
        {
            let completed = sysvipc::complete(perm, detail)
                .with_context(|| format!("{path}: id {}", perm.id))?;
            objects.extend(completed);
        }
    }
    Ok(Read {
        seen_at,
        objects,
        limits: read_limits_here().ok(),
        mqueues: mqueues.then(|| read_mqueues_here(inum, ns_id, SystemTime::now())),
    })
}

/// Reads the namespace's IPC sysctls on a helper thread that joins it, as
/// [`read_objects_in`] reads its objects.
pub(super) fn read_limits_in(ns: File, inum: u32) -> Result<Limits> {
    thread::Builder::new()
        .name(super::HELPER_THREAD_NAME.to_owned())
        .spawn(move || {
            join_on_this_thread(ns, inum)?;
            read_limits_here()
        })
        .context("starting a thread to enter the namespace")?
        .join()
        .map_err(|_| anyhow!("the thread reading the namespace panicked"))?
}

/// The IPC sysctls of this thread's IPC namespace: /proc/sys/kernel/{msg*,shm*,sem} (and
/// /proc/sys/fs/mqueue/*, where the kernel has them) show the namespace of the thread that
/// reads them.
fn read_limits_here() -> Result<Limits> {
    let read = |file: &str| -> Result<String> {
        let path = format!("/proc/sys/{file}");
        fs::read_to_string(&path).with_context(|| format!("reading {path}"))
    };
    let one = |file: &str| -> Result<u64> {
        let text = read(file)?;
        limits::parse_one(&text).with_context(|| format!("/proc/sys/{file}: {text:?}"))
    };
    let [msgmni, msgmax, msgmnb, shmmax, shmall, shmmni, sem] = limits::KERNEL_FILES;
    let sem_text = read(sem)?;
    let [semmsl, semmns, semopm, semmni] =
        limits::parse_sem(&sem_text).with_context(|| format!("/proc/sys/{sem}: {sem_text:?}"))?;
    let [queues_max, msg_max, msgsize_max] = limits::MQUEUE_FILES.map(|file| one(file).ok());
    Ok(Limits {
        msgmni: one(msgmni)?,
        msgmax: one(msgmax)?,
        msgmnb: one(msgmnb)?,
        shmmax: one(shmmax)?,
        shmall: one(shmall)?,
        shmmni: one(shmmni)?,
        semmsl,
        semmns,
        semopm,
        semmni,
        mq_queues_max: queues_max,
        mq_msg_max: msg_max,
        mq_msgsize_max: msgsize_max,
    })
}
