//! `/proc/sysvipc/{msg,shm,sem}`: one header line naming the columns, then one line per
//! object (ipc/msg.c `sysvipc_msg_proc_show` and friends).
//!
//! Columns are found by their header names, not positions: the set has grown over the years
//! (shm gained `rss` and `swap`), and the kernel pads with printf widths that values can
//! overflow (a key of -2147483648 is wider than its 10-character column), so only
//! whitespace-separated fields are reliable. Keys are printed as signed decimal, perms in octal.

use std::{collections::HashMap, str::FromStr};

use anyhow::{Context as _, Result, bail};

use crate::names::IpcObject;

/// The `kern_ipc_perm` part every object has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcPerm {
    /// The id `*ctl` calls take (unique within the namespace and kind only).
    pub id: i32,
    /// 0 is IPC_PRIVATE (and a removed-but-attached segment's key).
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub cuid: u32,
    pub cgid: u32,
    /// Permission bits, plus SHM_DEST (0o1000) and SHM_LOCKED (0o2000) for segments.
    pub mode: u32,
}

/// What differs by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectDetail {
    Msg {
        /// Bytes in the queue's messages.
        cbytes: u64,
        /// Messages in the queue.
        qnum: u64,
        /// The queue's byte limit: not in /proc, from `msgctl(IPC_STAT)`; `None` when that was
        /// refused.
        qbytes: Option<u64>,
    },
    Shm {
        size: u64,
        nattch: u64,
        /// The creator's pid (in the agent's pid namespace).
        cpid: u32,
    },
    Sem {
        nsems: u32,
    },
}

impl ObjectDetail {
    pub fn object(&self) -> IpcObject {
        match self {
            Self::Msg { .. } => IpcObject::Msg,
            Self::Shm { .. } => IpcObject::Shm,
            Self::Sem { .. } => IpcObject::Sem,
        }
    }
}

pub(super) fn proc_path(object: IpcObject) -> &'static str {
    match object {
        IpcObject::Msg => "/proc/sysvipc/msg",
        IpcObject::Shm => "/proc/sysvipc/shm",
        IpcObject::Sem => "/proc/sysvipc/sem",
    }
}

/// One data line, looked up by column name.
struct Row<'a> {
    columns: &'a HashMap<&'a str, usize>,
    fields: Vec<&'a str>,
}

impl Row<'_> {
    fn text(&self, column: &str) -> Result<&str> {
        let at = *self
            .columns
            .get(column)
            .with_context(|| format!("no {column} column"))?;
        Ok(self.fields[at])
    }

    fn get<T: FromStr>(&self, column: &str) -> Result<T> {
        let text = self.text(column)?;
        text.parse()
            .ok()
            .with_context(|| format!("{column} {text:?} is not a number"))
    }

    fn octal(&self, column: &str) -> Result<u32> {
        let text = self.text(column)?;
        u32::from_str_radix(text, 8)
            .ok()
            .with_context(|| format!("{column} {text:?} is not octal"))
    }
}

/// Parses the text of `/proc/sysvipc/<object>`. `qbytes` is left `None` (it is not there).
pub(super) fn parse_sysvipc(object: IpcObject, text: &str) -> Result<Vec<(IpcPerm, ObjectDetail)>> {
    let mut lines = text.lines();
    let header = lines.next().context("no header line")?;
    let columns: HashMap<&str, usize> = header
        .split_whitespace()
        .enumerate()
        .map(|(at, name)| (name, at))
        .collect();
    let id_column = match object {
        IpcObject::Msg => "msqid",
        IpcObject::Shm => "shmid",
        IpcObject::Sem => "semid",
    };
    let mut objects = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != columns.len() {
            bail!(
                "{} columns in the header but {} in {line:?}",
                columns.len(),
                fields.len()
            );
        }
        let row = Row {
            columns: &columns,
            fields,
        };
        let parsed = (|| -> Result<_> {
            let perm = IpcPerm {
                id: row.get(id_column)?,
                key: row.get("key")?,
                uid: row.get("uid")?,
                gid: row.get("gid")?,
                cuid: row.get("cuid")?,
                cgid: row.get("cgid")?,
                mode: row.octal("perms")?,
            };
            let detail = match object {
                IpcObject::Msg => ObjectDetail::Msg {
                    cbytes: row.get("cbytes")?,
                    qnum: row.get("qnum")?,
                    qbytes: None,
                },
                IpcObject::Shm => ObjectDetail::Shm {
                    size: row.get("size")?,
                    nattch: row.get("nattch")?,
                    cpid: row.get("cpid")?,
                },
                IpcObject::Sem => ObjectDetail::Sem {
                    nsems: row.get("nsems")?,
                },
            };
            Ok((perm, detail))
        })()
        .with_context(|| format!("in {line:?}"))?;
        objects.push(parsed);
    }
    Ok(objects)
}

/// What `*ctl(IPC_STAT)` on an object said.
enum Stat<T> {
    Found(T),
    /// Removed since /proc was read.
    Gone,
    /// Not allowed to look (no read permission and no CAP_IPC_OWNER).
    Refused,
}

fn stat_result<T>(rc: libc::c_int, buf: T) -> Result<Stat<T>> {
    if rc == 0 {
        return Ok(Stat::Found(buf));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL | libc::EIDRM) => Ok(Stat::Gone),
        Some(libc::EACCES | libc::EPERM) => Ok(Stat::Refused),
        _ => Err(err.into()),
    }
}

/// Completes one object with `IPC_STAT`, from inside its namespace (the calling thread must be
/// in it); `None` when it was removed meanwhile.
///
/// Segments get `shmctl(IPC_STAT)` even though /proc had everything: the tracing probes learn a
/// segment's kernel pointer (its `shmid_kernel`) from that syscall, and a segment is destroyed
/// without any syscall of its own (at last detach, or at namespace teardown), seen only as the
/// `kfree` of that pointer. Stat-ing every existing segment at startup makes the later
/// destruction of segments created before the agent visible too.
pub(super) fn complete(
    perm: IpcPerm,
    detail: ObjectDetail,
) -> Result<Option<(IpcPerm, ObjectDetail)>> {
    let detail = match detail {
        ObjectDetail::Msg { cbytes, qnum, .. } => {
            // SAFETY: an all-zero msqid_ds is valid; msgctl writes at most one.
            let mut buf: libc::msqid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: buf is a valid out-pointer for IPC_STAT.
            let rc = unsafe { libc::msgctl(perm.id, libc::IPC_STAT, &mut buf) };
            let qbytes = match stat_result(rc, buf).context("msgctl(IPC_STAT)")? {
                Stat::Found(buf) => Some(buf.msg_qbytes),
                Stat::Gone => return Ok(None),
                Stat::Refused => None,
            };
            ObjectDetail::Msg {
                cbytes,
                qnum,
                qbytes,
            }
        }
        ObjectDetail::Shm { .. } => {
            // SAFETY: an all-zero shmid_ds is valid; shmctl writes at most one.
            let mut buf: libc::shmid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: buf is a valid out-pointer for IPC_STAT.
            let rc = unsafe { libc::shmctl(perm.id, libc::IPC_STAT, &mut buf) };
            match stat_result(rc, ()).context("shmctl(IPC_STAT)")? {
                Stat::Found(()) | Stat::Refused => detail,
                Stat::Gone => return Ok(None),
            }
        }
        ObjectDetail::Sem { .. } => detail,
    };
    Ok(Some((perm, detail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on this machine (Linux 6.18) in fresh namespaces after
    // `msgget(0x1234, 01600)` + one 5-byte message, `msgget(IPC_PRIVATE, 01644)`,
    // `shmget(0x4d2, 4096, 01640)` attached then IPC_RMID'd, `shmget(-2, 65536, 01600)`,
    // `semget(0x80000000, 250, 01600)`, `semget(-5, 1, 01600)`. Trailing blanks as the kernel
    // writes them.
    const MSG: &str = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
      4660          0   600           5          1 18092     0     0     0     0     0 1795473844          0 1795473844
         0          1   644           0          0     0     0     0     0     0     0          0          0 1795473844
";
    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0          0  1640                  4096 20227 20228      1     0     0     0     0 1795473954 1795473954 1795473954                     0                     0
        -2          1   600                 65536 20227     0      0     0     0     0     0          0          0 1795473954                     0                     0
";
    const SEM: &str =
        "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
-2147483648          0   600        250     0     0     0     0          0 1795473954
        -5          1   600          1     0     0     0     0          0 1795473844
";

    fn perm(id: i32, key: i32, mode: u32) -> IpcPerm {
        IpcPerm {
            id,
            key,
            uid: 0,
            gid: 0,
            cuid: 0,
            cgid: 0,
            mode,
        }
    }

    #[test]
    fn message_queues() {
        let queues = parse_sysvipc(IpcObject::Msg, MSG).unwrap();
        assert_eq!(
            queues,
            [
                (
                    perm(0, 0x1234, 0o600),
                    ObjectDetail::Msg {
                        cbytes: 5,
                        qnum: 1,
                        qbytes: None
                    }
                ),
                (
                    perm(1, 0, 0o644),
                    ObjectDetail::Msg {
                        cbytes: 0,
                        qnum: 0,
                        qbytes: None
                    }
                ),
            ]
        );
    }

    #[test]
    fn segments_with_a_removed_one() {
        let segments = parse_sysvipc(IpcObject::Shm, SHM).unwrap();
        // IPC_RMID while attached: key reset to IPC_PRIVATE, SHM_DEST (0o1000) in perms.
        assert_eq!(
            segments[0],
            (
                perm(0, 0, 0o1640),
                ObjectDetail::Shm {
                    size: 4096,
                    nattch: 1,
                    cpid: 20227
                }
            )
        );
        assert_eq!(
            segments[1].0.key, -2,
            "keys are signed decimal (0xfffffffe)"
        );
        assert_eq!(segments[1].1.object(), IpcObject::Shm);
    }

    #[test]
    fn semaphores_with_an_overflowing_key() {
        let sets = parse_sysvipc(IpcObject::Sem, SEM).unwrap();
        assert_eq!(
            sets,
            [
                (perm(0, i32::MIN, 0o600), ObjectDetail::Sem { nsems: 250 }),
                (perm(1, -5, 0o600), ObjectDetail::Sem { nsems: 1 }),
            ]
        );
    }

    #[test]
    fn columns_are_found_by_name() {
        // The same queue with columns reordered and one added: still parsed right.
        let text = "msqid key perms extra uid gid cuid cgid qnum cbytes\n\
                    7 4660 640 x 1000 100 1001 101 2 10\n";
        let queues = parse_sysvipc(IpcObject::Msg, text).unwrap();
        assert_eq!(
            queues[0].0,
            IpcPerm {
                id: 7,
                key: 0x1234,
                uid: 1000,
                gid: 100,
                cuid: 1001,
                cgid: 101,
                mode: 0o640
            }
        );
        assert_eq!(
            queues[0].1,
            ObjectDetail::Msg {
                cbytes: 10,
                qnum: 2,
                qbytes: None
            }
        );
    }

    #[test]
    fn empty_tables_and_bad_ones() {
        // An empty namespace: the header only.
        let header = MSG.lines().next().unwrap();
        assert!(parse_sysvipc(IpcObject::Msg, header).unwrap().is_empty());
        assert!(parse_sysvipc(IpcObject::Msg, "").is_err());
        // A missing column, a short line, a non-number: errors naming the problem.
        let err = parse_sysvipc(IpcObject::Sem, MSG).unwrap_err();
        assert!(format!("{err:#}").contains("no semid column"), "{err:#}");
        let err = parse_sysvipc(IpcObject::Sem, "key semid\n1\n").unwrap_err();
        assert!(format!("{err:#}").contains("2 columns"), "{err:#}");
        let bad = SEM.replace("250", "2x0");
        let err = parse_sysvipc(IpcObject::Sem, &bad).unwrap_err();
        assert!(format!("{err:#}").contains("nsems \"2x0\""), "{err:#}");
        let bad = SEM.replace("600        250", "680        250");
        assert!(
            parse_sysvipc(IpcObject::Sem, &bad).is_err(),
            "perms is octal"
        );
    }
}
