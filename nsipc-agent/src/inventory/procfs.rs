//! Scanning /proc for what holds IPC namespaces: threads, open fds, nsfs bind mounts.

use std::{
    collections::{BTreeMap, HashSet},
    ffi::OsString,
    fs, io,
    os::unix::{ffi::OsStringExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::{FdHolder, MountHolder, ProcessInfo, Scan};
use crate::containers::container_id;

/// `PF_KTHREAD` in the flags field of /proc/PID/stat (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Whether an error means the process, thread or fd went away while we looked: normal on a
/// live system, and skipped silently.
pub(super) fn vanished(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// `Ok(None)` when the thing vanished, the error with its path otherwise.
fn unless_vanished<T>(result: io::Result<T>, path: &Path) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if vanished(&err) => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// The inum in a namespace link such as `ipc:[4026532177]`; `None` for any other link.
pub(super) fn parse_ns_link(kind: &str, link: &str) -> Option<u32> {
    link.strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The namespace a `/proc/.../ns/<kind>` or `/proc/PID/fd/N` link points to; `None` when it
/// vanished or is not a namespace of that kind.
fn read_ns_link(path: &Path, kind: &str) -> Result<Option<u32>> {
    Ok(unless_vanished(fs::read_link(path), path)?
        .and_then(|link| parse_ns_link(kind, link.to_str()?)))
}

/// The IPC namespace of the calling thread.
pub(super) fn thread_ipc_ns() -> Result<u32> {
    let path = Path::new("/proc/thread-self/ns/ipc");
    read_ns_link(path, "ipc")?.with_context(|| format!("{} is not an ipc link", path.display()))
}

/// Whether a line of /proc/PID/maps is a SysV segment's mapping that starts at `addr`: the
/// kernel names the segment's file `/SYSV<key>` and shows its id as the inode (ipc/shm.c:
/// newseg, "shmid gets reported as inode# in /proc/pid/maps").
pub(super) fn maps_line_is_segment_at(line: &str, addr: u64, id: i32) -> bool {
    let mut fields = line.split_ascii_whitespace();
    let start = fields
        .next()
        .and_then(|range| range.split_once('-'))
        .and_then(|(start, _)| u64::from_str_radix(start, 16).ok());
    // perms, offset, device, then the inode and the path.
    let mut rest = fields.skip(3);
    let inode = rest.next().and_then(|inode| inode.parse::<i64>().ok());
    let path = rest.next().unwrap_or("");
    start == Some(addr) && inode == Some(i64::from(id)) && path.starts_with("/SYSV")
}

/// Whether process `pid` still has segment `id` attached at `addr`. A process gone says no;
/// one whose maps cannot be read says yes: what cannot be seen is not declared ended.
pub fn segment_attached(pid: u32, addr: u64, id: i32) -> bool {
    let path = PathBuf::from(format!("/proc/{pid}/maps"));
    match fs::read_to_string(&path) {
        Ok(maps) => maps
            .lines()
            .any(|line| maps_line_is_segment_at(line, addr, id)),
        Err(err) => !vanished(&err),
    }
}

/// `comm` and flags from /proc/PID/stat. comm sits in parentheses and may itself contain
/// spaces and parentheses, so the fields after it are counted from the last `)`.
pub(super) fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // After the `)`: state (field 3), ppid, pgrp, session, tty_nr, tpgid, flags (field 9).
    let flags = stat
        .get(close + 1..)?
        .split_whitespace()
        .nth(6)?
        .parse()
        .ok()?;
    Some((comm, flags))
}

/// The real uid from /proc/PID/status (`Uid:` real, effective, saved, filesystem).
pub(super) fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Undoes the octal escapes (`\040` for a space, `\134` for a backslash, …) the kernel puts in
/// mountinfo paths.
fn unescape_mount_path(escaped: &str) -> PathBuf {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes
            .get(at + 1..at + 4)
            .filter(|digits| bytes[at] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                at += 4;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// A bind mount of an IPC namespace, from a mountinfo line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct IpcMount {
    /// The mount's id, unique on the system (a mount copied into another mount namespace is
    /// another mount, with another id).
    pub id: u32,
    pub inum: u32,
    pub mount_point: PathBuf,
}

/// The IPC namespace bind mounts in a mountinfo file.
///
/// A line is `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`;
/// for an nsfs mount ROOT is the namespace link text, e.g. `ipc:[4026532177]`.
pub(super) fn parse_ipc_mounts(mountinfo: &str) -> Vec<IpcMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            if *fields.get(separator + 1)? != "nsfs" {
                return None;
            }
            Some(IpcMount {
                id: fields.first()?.parse().ok()?,
                inum: parse_ns_link("ipc", fields.get(3)?)?,
                mount_point: unescape_mount_path(fields.get(4)?),
            })
        })
        .collect()
}

/// The numeric entries of a /proc directory (`/proc`, `/proc/PID/task`, `/proc/PID/fd`).
fn numeric_entries(dir: &Path) -> Result<Vec<u32>> {
    let Some(entries) = unless_vanished(fs::read_dir(dir), dir)? else {
        return Ok(Vec::new());
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let Some(entry) = unless_vanished(entry, dir)? else {
            continue;
        };
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn read_text(path: &Path) -> Result<Option<String>> {
    unless_vanished(fs::read_to_string(path), path)
}

/// Whether an error (anywhere in its chain) is a refusal to look at a process: EACCES or EPERM
/// from the ptrace access check on its /proc entries, e.g. for a process with capabilities
/// this one lacks, or under an LSM.
fn denied(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::EACCES | libc::EPERM)))
    })
}

/// The mount tables read so far. A mountinfo file shows one mount namespace as seen from one
/// root directory (a chrooted process's leaves out the mounts outside its root), so one is read
/// per (mount namespace, root), and each mount is kept once.
#[derive(Default)]
struct MountViews {
    /// (mount namespace, root's device, root's inode)
    read: HashSet<(u32, u64, u64)>,
    mount_ids: HashSet<u32>,
}

/// Walks /proc once: every process's threads, fds, and (once per mount namespace and root)
/// mounts.
pub(super) fn scan() -> Result<Scan> {
    let mut scan = Scan::default();
    let mut views = MountViews::default();
    for pid in numeric_entries(Path::new("/proc"))? {
        match scan_process(&mut scan, &mut views, pid) {
            Ok(()) => {}
            Err(err) if denied(&err) => scan.unreadable.push(pid),
            Err(err) => return Err(err),
        }
    }
    Ok(scan)
}

fn scan_process(scan: &mut Scan, views: &mut MountViews, pid: u32) -> Result<()> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Some(stat) = read_text(&proc_dir.join("stat"))? else {
        return Ok(());
    };
    let Some((comm, flags)) = parse_stat(&stat) else {
        return Ok(());
    };
    if flags & PF_KTHREAD != 0 {
        return Ok(());
    }
    scan_threads(scan, pid, &proc_dir, &comm)?;
    scan_fds(scan, pid, &proc_dir, &comm)?;
    let root_path = proc_dir.join("root");
    if let Some(mnt_ns) = read_ns_link(&proc_dir.join("ns/mnt"), "mnt")?
        && let Some(root) = unless_vanished(fs::metadata(&root_path), &root_path)?
        && !views.read.contains(&(mnt_ns, root.dev(), root.ino()))
        // Marked read only once read: if this process vanished, the next one's view will do.
        && scan_mounts(scan, &mut views.mount_ids, pid, mnt_ns, &proc_dir)?
    {
        views.read.insert((mnt_ns, root.dev(), root.ino()));
    }
    Ok(())
}

/// Groups the process's threads by IPC namespace (namespaces are per thread).
fn scan_threads(scan: &mut Scan, pid: u32, proc_dir: &Path, comm: &str) -> Result<()> {
    let mut by_ns: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for tid in numeric_entries(&proc_dir.join("task"))? {
        if let Some(inum) = read_ns_link(&proc_dir.join(format!("task/{tid}/ns/ipc")), "ipc")? {
            by_ns.entry(inum).or_default().push(tid);
        }
    }
    if by_ns.is_empty() {
        // A zombie: its namespaces are gone already.
        return Ok(());
    }
    let Some(status) = read_text(&proc_dir.join("status"))? else {
        return Ok(());
    };
    let Some(uid) = parse_status_uid(&status) else {
        return Ok(());
    };
    let Some(cgroup) = read_text(&proc_dir.join("cgroup"))? else {
        return Ok(());
    };
    let (container, container_path) = container_id(&cgroup).unzip();
    let split = by_ns.len() > 1;
    for (inum, tids) in by_ns {
        let found = scan.namespaces.entry(inum).or_default();
        found
            .sources
            .push(proc_dir.join(format!("task/{}/ns/ipc", tids[0])));
        if let Some(path) = container_path
            && !found.container_cgroups.iter().any(|known| known == path)
        {
            found.container_cgroups.push(path.to_owned());
        }
        found.processes.push(ProcessInfo {
            pid,
            tids: split.then_some(tids),
            comm: comm.to_owned(),
            uid,
            container: container.clone(),
        });
    }
    Ok(())
}

/// Open fds on IPC nsfs files. Only /proc/PID/fd is read, the thread group leader's fd table:
/// not the table of a thread that unshared its own (CLONE_FILES off), and nothing when the
/// leader has exited while other threads run on (its table is gone).
fn scan_fds(scan: &mut Scan, pid: u32, proc_dir: &Path, comm: &str) -> Result<()> {
    let fd_dir = proc_dir.join("fd");
    for fd in numeric_entries(&fd_dir)? {
        let link = fd_dir.join(fd.to_string());
        if let Some(inum) = read_ns_link(&link, "ipc")? {
            let found = scan.namespaces.entry(inum).or_default();
            found.sources.push(link);
            found.fds.push(FdHolder {
                pid,
                comm: comm.to_owned(),
                fd,
            });
        }
    }
    Ok(())
}

/// nsfs bind mounts of IPC namespaces in one mount namespace, as `pid` sees them; false when
/// the process vanished before its mountinfo could be read.
fn scan_mounts(
    scan: &mut Scan,
    mount_ids: &mut HashSet<u32>,
    pid: u32,
    mnt_ns: u32,
    proc_dir: &Path,
) -> Result<bool> {
    let Some(mountinfo) = read_text(&proc_dir.join("mountinfo"))? else {
        return Ok(false);
    };
    for IpcMount {
        id,
        inum,
        mount_point,
    } in parse_ipc_mounts(&mountinfo)
    {
        if !mount_ids.insert(id) {
            continue;
        }
        let found = scan.namespaces.entry(inum).or_default();
        // Through the process's root, the path resolves in the process's mount namespace (and
        // under its chroot, to which mountinfo paths are relative), whatever ours is.
        let relative = mount_point.strip_prefix("/").unwrap_or(&mount_point);
        found
            .mount_sources
            .push(proc_dir.join("root").join(relative));
        found.mounts.push(MountHolder {
            pid,
            mnt_ns,
            mount_point,
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_mapping_is_known_by_its_start_and_id() {
        let line = "7f3a1c000000-7f3a1c100000 rw-s 00000000 00:01 32769                      /SYSV0000162e (deleted)";
        assert!(maps_line_is_segment_at(line, 0x7f3a_1c00_0000, 32769));
        assert!(
            !maps_line_is_segment_at(line, 0x7f3a_1c00_0000, 32770),
            "another id"
        );
        assert!(
            !maps_line_is_segment_at(line, 0x7f3a_1c10_0000, 32769),
            "its end"
        );
        let file = "7f3a1c000000-7f3a1c100000 rw-s 00000000 08:01 32769  /data/file";
        assert!(
            !maps_line_is_segment_at(file, 0x7f3a_1c00_0000, 32769),
            "not a segment"
        );
        let anonymous = "7f3a1c000000-7f3a1c100000 rw-p 00000000 00:00 0";
        assert!(!maps_line_is_segment_at(anonymous, 0x7f3a_1c00_0000, 0));
    }

    #[test]
    fn namespace_links() {
        assert_eq!(parse_ns_link("ipc", "ipc:[4026531839]"), Some(4026531839));
        assert_eq!(parse_ns_link("mnt", "mnt:[4026531841]"), Some(4026531841));
        assert_eq!(parse_ns_link("ipc", "mnt:[4026531841]"), None);
        assert_eq!(parse_ns_link("ipc", "ipc:[]"), None);
        assert_eq!(parse_ns_link("ipc", "ipc:[4026531839"), None);
        assert_eq!(parse_ns_link("ipc", "/tmp/ipc:[4026531839]"), None);
        assert_eq!(parse_ns_link("ipc", "pipe:[63745]"), None);
        assert_eq!(parse_ns_link("ipc", "anon_inode:[eventpoll]"), None);
        // Not a 32-bit inum: not a namespace link.
        assert_eq!(parse_ns_link("ipc", "ipc:[99999999999]"), None);
    }

    #[test]
    fn stat_with_awkward_comm() {
        // Captured here: `cat /proc/self/stat` and `cat /proc/2/stat`.
        let cat = "25830 (cat) R 25827 25827 17433 0 -1 4194304 97 0 0 0 0 0 0 0 20 0 1 0 151261 \
                   3133440 355 18446744073709551615 94112845430784 94112845450665 \
                   140722808181360 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94112845466672 \
                   94112845468288 94113085194240 140722808187617 140722808187637 \
                   140722808187637 140722808188907 0\n";
        assert_eq!(parse_stat(cat), Some(("cat".into(), 4194304)));
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 20 0 1 0 31 0 0 \
                        18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 \
                        0 0 0 0 0 0 0\n";
        let (comm, flags) = parse_stat(kthreadd).unwrap();
        assert_eq!(comm, "kthreadd");
        assert_ne!(flags & PF_KTHREAD, 0, "kernel threads are recognised");
        assert_eq!(4194304 & PF_KTHREAD, 0);
        // comm may contain spaces and parentheses.
        let odd = "77 (a) b (c) S 1 77 77 0 -1 4194560 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c".into(), 4194560)));
        assert_eq!(parse_stat("77 (short) S 1"), None);
    }

    #[test]
    fn status_real_uid() {
        let status = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t9\nPid:\t9\n\
                      Uid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
    }

    #[test]
    fn nsfs_bind_mounts_in_mountinfo() {
        // Captured here after `unshare --ipc=/tmp/invx true` and
        // `unshare --ipc='/tmp/inv a\b' true`, with a few ordinary lines around them.
        let mountinfo = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
44 27 0:4 ipc:[4026532177] /tmp/invx rw - nsfs nsfs rw
46 27 0:4 ipc:[4026532178] /tmp/inv\\040a\\134b rw - nsfs nsfs rw
47 27 0:4 net:[4026532180] /run/netns/x rw shared:5 - nsfs nsfs rw
48 27 0:4 ipc:[4026532181] /run/ipc/y rw shared:5 master:1 - nsfs nsfs rw
49 27 0:50 / /srv/ipc:[4026532182] rw - ext4 /dev/vda rw
";
        let mount = |id, inum, path: &str| IpcMount {
            id,
            inum,
            mount_point: PathBuf::from(path),
        };
        assert_eq!(
            parse_ipc_mounts(mountinfo),
            [
                mount(44, 4026532177, "/tmp/invx"),
                mount(46, 4026532178, "/tmp/inv a\\b"),
                mount(48, 4026532181, "/run/ipc/y"),
            ]
        );
        assert!(parse_ipc_mounts("garbage\n\n1 2 3\n").is_empty());
    }

    #[test]
    fn mount_path_escapes() {
        assert_eq!(unescape_mount_path("/a\\011b"), PathBuf::from("/a\tb"));
        assert_eq!(unescape_mount_path("/a\\012b"), PathBuf::from("/a\nb"));
        // A backslash not followed by three octal digits stays.
        assert_eq!(unescape_mount_path("/a\\9x\\"), PathBuf::from("/a\\9x\\"));
        assert_eq!(
            unescape_mount_path("/\\377"),
            PathBuf::from(OsString::from_vec(b"/\xff".to_vec()))
        );
    }
}
