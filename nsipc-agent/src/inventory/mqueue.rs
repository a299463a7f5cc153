//! The POSIX message queues of the IPC namespace the calling (helper) thread is in.
//!
//! Each IPC namespace has its own mqueue filesystem (ipc/mqueue.c: `mq_init_ns` mounts one per
//! namespace), which shows only where someone mounted it (`/dev/mqueue` of a container, say).
//! A new mount of type mqueue is of the mounting task's IPC namespace (`mqueue_init_fs_context`
//! takes `current->nsproxy->ipc_ns`, and `get_tree_keyed` finds that namespace's superblock),
//! so a thread that joined the namespace gets its queues from a mount of its own: made with
//! `fsopen`/`fsmount` (Linux 5.2+), detached (in no mount namespace, gone at its last close),
//! so nothing on the host changes. Each queue's attributes come from an `mq_open` of it
//! (read-only, closed at once), which the namespace's own queues resolve against.

use std::{
    ffi::{CStr, CString},
    fs::File,
    io::{self, Read as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    },
    time::SystemTime,
};

use anyhow::{Context as _, Result};

/// include/uapi/linux/mount.h
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;

/// One POSIX message queue as an inventory found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqueueInfo {
    /// Its namespace's inum.
    pub ns: u32,
    pub ns_id: Option<u64>,
    /// When its namespace's queues were listed.
    pub seen_at: SystemTime,
    /// As `mq_open` takes it: with the leading `/`.
    pub name: String,
    /// Its inode number (what `stat` says, and the probes' `i_ino`).
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Bytes of the messages it holds (`QSIZE`, ipc/mqueue.c: `mqueue_read_file`).
    pub qsize: u64,
    /// The process registered for notification (`mq_notify`), 0 for none.
    pub notify_pid: u32,
    /// `mq_getattr`'s view; `None` when the queue could not be opened (it went away meanwhile).
    pub attr: Option<MqueueAttr>,
}

/// A queue's attributes (`struct mq_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqueueAttr {
    /// Messages it can hold.
    pub maxmsg: u64,
    /// Bytes a message can have.
    pub msgsize: u64,
    /// Messages it holds.
    pub curmsgs: u64,
}

/// Lists the queues of this thread's IPC namespace, `ns` (`ns_id`), read at `seen_at`.
pub(super) fn read_mqueues_here(
    ns: u32,
    ns_id: Option<u64>,
    seen_at: SystemTime,
) -> Result<Vec<MqueueInfo>> {
    let root = mount_mqueue_here().context("mounting this IPC namespace's mqueue filesystem")?;
    // The mount's fd is a path to its root: listed through its /proc link, opened relative.
    let mut queues = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/thread-self/fd/{}", root.as_raw_fd()))
        .context("listing the mqueue mount")?
    {
        let entry = entry.context("listing the mqueue mount")?;
        let file_name = entry.file_name();
        let Ok(name) = CString::new(file_name.as_bytes()) else {
            continue;
        };
        // The queue can be unlinked at any moment: what vanished is skipped.
        let Some(file) = open_at(&root, &name)? else {
            continue;
        };
        let meta = file.metadata().context("stat of a queue")?;
        let Some((qsize, notify_pid)) = read_status(file)? else {
            continue;
        };
        queues.push(MqueueInfo {
            ns,
            ns_id,
            seen_at,
            name: format!("/{}", file_name.to_string_lossy()),
            ino: meta.ino(),
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
            qsize,
            notify_pid,
            attr: attributes(&name),
        });
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(queues)
}

/// A detached mount of this thread's IPC namespace's mqueue filesystem.
fn mount_mqueue_here() -> io::Result<OwnedFd> {
    let owned = |fd: libc::c_long| {
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a new fd, owned from here on.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        }
    };
    // SAFETY: fsopen with a NUL-terminated filesystem name.
    let context =
        owned(unsafe { libc::syscall(libc::SYS_fsopen, c"mqueue".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: a command with no key nor value.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if created != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fsmount of a created context, no attributes.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, context.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

/// Opens `name` in the directory `dir` to read it; `None` when it is gone.
fn open_at(dir: &OwnedFd, name: &CStr) -> Result<Option<File>> {
    // SAFETY: openat with a NUL-terminated name relative to an open directory.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(err).with_context(|| format!("opening queue {name:?}"));
    }
    // SAFETY: a new fd, owned from here on.
    Ok(Some(unsafe { File::from_raw_fd(fd) }))
}

/// `QSIZE` and `NOTIFY_PID` from a queue file; `None` when it says something else. (A read
/// sets the queue's access time, as `cat /dev/mqueue/NAME` does; nothing else.)
fn read_status(mut file: File) -> Result<Option<(u64, u32)>> {
    let mut text = String::new();
    file.read_to_string(&mut text).context("reading a queue")?;
    Ok(parse_status(&text))
}

/// The text of a queue file: `QSIZE:%-10lu NOTIFY:%-5d SIGNO:%-5d NOTIFY_PID:%-6d`
/// (ipc/mqueue.c: `mqueue_read_file`).
fn parse_status(text: &str) -> Option<(u64, u32)> {
    let mut qsize = None;
    let mut notify_pid = None;
    for field in text.split_ascii_whitespace() {
        match field.split_once(':')? {
            ("QSIZE", value) => qsize = value.parse().ok(),
            ("NOTIFY_PID", value) => notify_pid = value.parse().ok(),
            _ => {}
        }
    }
    Some((qsize?, notify_pid?))
}

/// `mq_getattr` of queue `name` of this thread's namespace; `None` when it cannot be opened.
fn attributes(name: &CStr) -> Option<MqueueAttr> {
    // SAFETY: mq_open (the syscall takes the name without its leading '/') read-only, no
    // creation: mode and attributes are not read.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
            std::ptr::null::<libc::mq_attr>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd, owned (closed) from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: mq_attr is plain data; the kernel fills it.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: mq_getsetattr with no new attributes, the old ones written to `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mq_getsetattr,
            fd.as_raw_fd(),
            std::ptr::null::<libc::mq_attr>(),
            &mut attr as *mut libc::mq_attr,
        )
    };
    (rc == 0).then_some(MqueueAttr {
        maxmsg: attr.mq_maxmsg as u64,
        msgsize: attr.mq_msgsize as u64,
        curmsgs: attr.mq_curmsgs as u64,
    })
}

/// `MQUEUE_MAGIC` (include/uapi/linux/magic.h): `statfs`'s `f_type` of an mqueue filesystem.
const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// Which of the queues with inode numbers `inos` some process holds open: every descriptor in
/// /proc/*/fd whose file has one of those numbers on an mqueue filesystem. What the agent does
/// where the probes cannot tell which queue ended at an eviction (the kfree program): an
/// unlinked queue that no process holds open any more is gone. Processes that end meanwhile
/// and unreadable entries are skipped.
pub fn open_among(inos: &[u64]) -> std::collections::HashSet<u64> {
    let mut open = std::collections::HashSet::new();
    if inos.is_empty() {
        return open;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return open;
    };
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let path = fd.path();
            // Follows the link to the open file.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if inos.contains(&meta.ino()) && is_mqueue_file(&path) {
                open.insert(meta.ino());
            }
        }
    }
    open
}

/// Whether `path` leads to a file of an mqueue filesystem.
fn is_mqueue_file(path: &std::path::Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == MQUEUE_MAGIC }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_file_gives_its_size_and_notified_pid() {
        let text = "QSIZE:129        NOTIFY:0     SIGNO:0     NOTIFY_PID:4242  \n";
        assert_eq!(parse_status(text), Some((129, 4242)));
        assert_eq!(
            parse_status("QSIZE:0          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     "),
            Some((0, 0))
        );
        assert_eq!(parse_status("QSIZE:12"), None, "no NOTIFY_PID");
        assert_eq!(parse_status("nonsense"), None);
    }
}
