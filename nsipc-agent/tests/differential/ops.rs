//! The workload's operations, picked at random by weight: namespaces made (`unshare`, `clone`,
//! bind mounts), entered (`nsenter`, `setns`), held (fds) and let go (exits, kills, `umount`);
//! objects created, removed (`IPC_RMID`, `ipcrm`), attached and detached; children forked and
//! released; `shm_rmid_forced` set; and gets whose outcome the kernel's listing predicts.

use std::{
    collections::{BTreeSet, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    process::Command,
};

use serde_json::Value;

use super::Workload;
use crate::{
    support::{WAIT, model::*},
    worker::{Attachment, CLONE_LAUNCHER_PL, Kid, run, umount},
};

const MAX_NAMESPACES: usize = 6;
const MAX_WORKERS: usize = 7;
const MAX_KIDS: usize = 2;
const MAX_ATTACHMENTS: usize = 4;
const MAX_FDS: usize = 4;

const IPC_CREAT: i64 = 0o1000;
const IPC_EXCL: i64 = 0o2000;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;

#[derive(Clone, Copy, Debug)]
enum Op {
    SpawnUnshare,
    SpawnClone,
    BindMount,
    WorkerUnshare,
    SpawnNsenter,
    WorkerSetns,
    OpenFd,
    CloseFd,
    Umount,
    WorkerExit,
    WorkerKill,
    Create,
    VerifiedGet,
    Remove,
    Ipcrm,
    Attach,
    Detach,
    Fork,
    ReleaseKid,
    RmidForced,
}

const OPS: &[(Op, u64)] = &[
    (Op::SpawnUnshare, 4),
    (Op::SpawnClone, 3),
    (Op::BindMount, 3),
    (Op::WorkerUnshare, 2),
    (Op::SpawnNsenter, 5),
    (Op::WorkerSetns, 4),
    (Op::OpenFd, 3),
    (Op::CloseFd, 3),
    (Op::Umount, 3),
    (Op::WorkerExit, 4),
    (Op::WorkerKill, 2),
    (Op::Create, 22),
    (Op::VerifiedGet, 4),
    (Op::Remove, 9),
    (Op::Ipcrm, 4),
    (Op::Attach, 10),
    (Op::Detach, 6),
    (Op::Fork, 4),
    (Op::ReleaseKid, 4),
    (Op::RmidForced, 1),
];

impl Workload {
    pub(super) fn step(&mut self) {
        let total: u64 = OPS.iter().map(|(_, w)| w).sum();
        for _ in 0..1000 {
            let mut roll = self.rng.next() % total;
            let op = OPS
                .iter()
                .find(|(_, weight)| {
                    if roll < *weight {
                        true
                    } else {
                        roll -= weight;
                        false
                    }
                })
                .map(|(op, _)| *op)
                .unwrap();
            if let Some(text) = self.apply(op) {
                self.log.push(format!("#{:03} {text}", self.op));
                self.note_releases();
                return;
            }
        }
        panic!("no operation applies (seed {})", self.seed);
    }

    fn apply(&mut self, op: Op) -> Option<String> {
        let live = self.live().len();
        let room = live < MAX_NAMESPACES && self.workers.len() < MAX_WORKERS;
        match op {
            Op::SpawnUnshare if room => {
                let mut command = Command::new("unshare");
                command.arg("--ipc").arg("perl").arg(&self.script);
                let (wi, inum) = self.spawn_worker(command);
                let pid = self.workers[wi].pid;
                let ns = self.new_namespace(inum, "unshare --ipc perl", pid, None);
                self.workers[wi].ns = ns;
                Some(format!("unshare --ipc: new {}", self.worker_label(wi)))
            }
            Op::SpawnClone if room => {
                let mut command = Command::new("perl");
                command.arg("-e").arg(CLONE_LAUNCHER_PL).arg(&self.script);
                let (wi, inum) = self.spawn_worker(command);
                let pid = self.workers[wi].pid;
                let ns = self.new_namespace(inum, "clone(CLONE_NEWIPC)", pid, None);
                self.workers[wi].ns = ns;
                Some(format!(
                    "clone(CLONE_NEWIPC): new {}",
                    self.worker_label(wi)
                ))
            }
            Op::BindMount if live < MAX_NAMESPACES => {
                let name = self.name("mnt");
                let path = self.dir.join(name);
                fs::write(&path, "").unwrap();
                let mut child = Command::new("unshare")
                    .arg(format!("--ipc={}", path.display()))
                    .arg("true")
                    .spawn()
                    .unwrap();
                let pid = child.id();
                assert!(
                    child.wait().unwrap().success(),
                    "unshare --ipc={path:?} true"
                );
                let inum = fs::metadata(&path).unwrap().ino();
                let ns = self.new_namespace(inum, "unshare --ipc=FILE", pid, Some(path.clone()));
                Some(format!(
                    "unshare --ipc={} true: new {} held by the bind mount",
                    path.display(),
                    self.ns_name(ns)
                ))
            }
            Op::WorkerUnshare if live < MAX_NAMESPACES => {
                let wi = self.pick_worker(|_| true)?;
                let before = self.worker_label(wi);
                let inum = self.workers[wi].call_number("unshare").expect("unshare") as u64;
                let pid = self.workers[wi].pid;
                let ns = self.new_namespace(inum, "unshare(2) by a worker", pid, None);
                self.workers[wi].ns = ns;
                Some(format!(
                    "{before} unshare(CLONE_NEWIPC) -> {}",
                    self.ns_name(ns)
                ))
            }
            Op::SpawnNsenter if self.workers.len() < MAX_WORKERS => {
                let reachable = self.reachable();
                let ns = self.rng.pick(&reachable)?;
                let path = self.path_of(ns).unwrap();
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--ipc={path}"))
                    .arg("perl")
                    .arg(&self.script);
                let (wi, inum) = self.spawn_worker(command);
                assert_eq!(inum, self.namespaces[ns].inum, "nsenter --ipc={path}");
                self.workers[wi].ns = ns;
                Some(format!(
                    "nsenter --ipc={path}: new {}",
                    self.worker_label(wi)
                ))
            }
            Op::WorkerSetns => {
                let wi = self.pick_worker(|_| true)?;
                let from = self.workers[wi].ns;
                let targets: Vec<usize> = if from != 0 && self.rng.chance(15) {
                    vec![0]
                } else {
                    self.reachable()
                        .into_iter()
                        .filter(|&ns| ns != from)
                        .collect()
                };
                let ns = self.rng.pick(&targets)?;
                let path = self.path_of(ns).unwrap();
                let before = self.worker_label(wi);
                let inum = self.workers[wi]
                    .call_number(&format!("setns {path}"))
                    .expect("setns") as u64;
                assert_eq!(inum, self.namespaces[ns].inum, "setns {path}");
                self.workers[wi].ns = ns;
                Some(format!("{before} setns({path}) -> {}", self.ns_name(ns)))
            }
            Op::OpenFd if self.fds.len() < MAX_FDS => {
                let reachable = self.reachable();
                let ns = self.rng.pick(&reachable)?;
                let path = self.path_of(ns).unwrap();
                let fd = self
                    .keeper
                    .call_number(&format!("open {path}"))
                    .expect("open");
                self.fds.push((ns, fd));
                Some(format!(
                    "keeper opens {path} as fd {fd}: holds {}",
                    self.ns_name(ns)
                ))
            }
            Op::CloseFd => {
                let i = self.rng.pick(&(0..self.fds.len()).collect::<Vec<_>>())?;
                let (ns, fd) = self.fds.remove(i);
                self.keeper.call(&format!("close {fd}")).expect("close");
                Some(format!("keeper closes fd {fd} of {}", self.ns_name(ns)))
            }
            Op::Umount => {
                let mounted: Vec<usize> = self
                    .live()
                    .into_iter()
                    .filter(|&ns| self.namespaces[ns].mount.is_some())
                    .collect();
                let ns = self.rng.pick(&mounted)?;
                let path = self.namespaces[ns].mount.take().unwrap();
                let how = umount(&path);
                Some(format!("{how} {} ({})", path.display(), self.ns_name(ns)))
            }
            Op::WorkerExit => {
                let wi = self.pick_worker(|_| true)?;
                Some(self.finish_worker(wi, false))
            }
            Op::WorkerKill => {
                let wi = self.pick_worker(|_| true)?;
                Some(self.finish_worker(wi, true))
            }
            Op::Create => {
                let wi = self.pick_worker(|w| w.ns != 0)?;
                let kind = KINDS[self.rng.below(3)];
                let key = if self.rng.chance(20) {
                    0
                } else {
                    self.keys[self.rng.below(self.keys.len())]
                };
                let mode = [0o600, 0o640, 0o666][self.rng.below(3)];
                let excl = if self.rng.chance(20) { IPC_EXCL } else { 0 };
                let size = match kind {
                    Kind::Msg => 0,
                    Kind::Shm => 4096 * (1 + self.rng.below(2) as i64),
                    Kind::Sem => 1 + self.rng.below(3) as i64,
                };
                let flags = IPC_CREAT | excl | mode;
                let label = self.worker_label(wi);
                let result = self.workers[wi]
                    .call_number(&format!("get {} {key} {flags} {size}", kind.name()));
                if let Ok(id) = result {
                    // Without IPC_EXCL, the get may have opened an object already noted.
                    self.note_object(self.workers[wi].ns, kind, id, key);
                }
                Some(format!(
                    "{label} {}get(key {key:#x}, flags {flags:#o}, {size}) -> {result:?}",
                    kind.name()
                ))
            }
            Op::VerifiedGet => self.verified_get(),
            Op::Remove => {
                let wi = self.pick_worker(|w| w.ns != 0)?;
                let ns = self.workers[wi].ns;
                // Often an attached segment: removed while attached, it dies at its last detach.
                let attached: HashSet<(usize, i64)> =
                    self.all_attachments().map(|a| (a.ns, a.id)).collect();
                let target = match self.pick_object(|o| {
                    o.kind == Kind::Shm && attached.contains(&(o.ns, o.id)) && o.ns == ns
                }) {
                    Some(o) if self.rng.chance(50) => Some(o),
                    _ => self.pick_object(|o| o.ns == ns),
                };
                let (kind, id) = match target {
                    Some(o) if !self.rng.chance(10) => (o.kind, o.id),
                    _ => (KINDS[self.rng.below(3)], 0x7fff_0000),
                };
                let label = self.worker_label(wi);
                let result = self.workers[wi].call(&format!("rm {} {id}", kind.name()));
                if result.is_ok() {
                    self.removed_by_rmid(ns, kind, id);
                }
                Some(format!(
                    "{label} {}ctl({id}, IPC_RMID) -> {result:?}",
                    kind.name()
                ))
            }
            Op::Ipcrm => {
                let reachable = self.reachable();
                let o = self.pick_object(|o| reachable.contains(&o.ns))?;
                let path = self.path_of(o.ns).unwrap();
                let by_key = o.key != 0 && !o.removed && self.rng.chance(50);
                let (flag, what) = if by_key {
                    (o.kind.ipcrm_key(), o.key.to_string())
                } else {
                    (o.kind.ipcrm_id(), o.id.to_string())
                };
                let (ok, out) = run(Command::new("nsenter")
                    .arg(format!("--ipc={path}"))
                    .args(["ipcrm", flag, &what]));
                if ok {
                    self.removed_by_rmid(o.ns, o.kind, o.id);
                }
                Some(format!(
                    "nsenter --ipc={path} ipcrm {flag} {what} ({} {} id {}) -> {} {out}",
                    self.ns_name(o.ns),
                    o.kind.name(),
                    o.id,
                    if ok { "ok" } else { "failed" }
                ))
            }
            Op::Attach => {
                let wi =
                    self.pick_worker(|w| w.ns != 0 && w.attachments.len() < MAX_ATTACHMENTS)?;
                let ns = self.workers[wi].ns;
                let o = self.pick_object(|o| o.ns == ns && o.kind == Kind::Shm)?;
                let label = self.worker_label(wi);
                let result = self.workers[wi].call_number(&format!("shmat {}", o.id));
                if let Ok(addr) = result {
                    self.workers[wi].attachments.push(Attachment {
                        addr: addr as u64,
                        ns,
                        id: o.id,
                    });
                }
                Some(format!(
                    "{label} shmat({}{}) -> {result:?}",
                    o.id,
                    if o.removed { ", removed" } else { "" }
                ))
            }
            Op::Detach => {
                let wi = self.pick_worker(|w| !w.attachments.is_empty())?;
                let i = self.rng.below(self.workers[wi].attachments.len());
                let a = self.workers[wi].attachments[i];
                let label = self.worker_label(wi);
                let result = self.workers[wi].call(&format!("shmdt {}", a.addr));
                assert!(result.is_ok(), "{label} shmdt {a:?}: {result:?}");
                self.workers[wi].attachments.remove(i);
                Some(format!(
                    "{label} shmdt({:#x}: segment {} of {})",
                    a.addr,
                    a.id,
                    self.ns_name(a.ns)
                ))
            }
            Op::Fork => {
                let wi = self.pick_worker(|w| w.kids.len() < MAX_KIDS)?;
                let pid = self.workers[wi].call_number("fork").expect("fork") as u32;
                let worker = &mut self.workers[wi];
                let kid = Kid {
                    pid,
                    ns: worker.ns,
                    attachments: worker.attachments.clone(),
                };
                let n = kid.attachments.len();
                worker.kids.push(kid);
                Some(format!(
                    "{} forks child {pid} ({n} attachments inherited)",
                    self.worker_label(wi)
                ))
            }
            Op::ReleaseKid => {
                let wi = self.pick_worker(|w| !w.kids.is_empty())?;
                let i = self.rng.below(self.workers[wi].kids.len());
                let kid = self.workers[wi].kids.remove(i);
                self.workers[wi]
                    .call(&format!("release {}", kid.pid))
                    .expect("release");
                Some(format!(
                    "{}'s child {} exits ({} attachments)",
                    self.worker_label(wi),
                    kid.pid,
                    kid.attachments.len()
                ))
            }
            Op::RmidForced => {
                let reachable: Vec<usize> = self
                    .reachable()
                    .into_iter()
                    .filter(|&ns| !self.namespaces[ns].rmid_forced)
                    .collect();
                let ns = self.rng.pick(&reachable)?;
                let path = self.path_of(ns).unwrap();
                let (ok, out) = run(Command::new("nsenter").arg(format!("--ipc={path}")).args([
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/kernel/shm_rmid_forced",
                ]));
                assert!(ok, "setting shm_rmid_forced: {out}");
                self.namespaces[ns].rmid_forced = true;
                Some(format!("kernel.shm_rmid_forced=1 in {}", self.ns_name(ns)))
            }
            _ => None,
        }
    }

    /// A get whose outcome the kernel's own listing predicts, made once the stream agrees with
    /// the kernel: when it fails, `key_lives_in` must name exactly the namespaces where the
    /// kernel lists an object of that type with that key.
    fn verified_get(&mut self) -> Option<String> {
        let wi = self.pick_worker(|w| w.ns != 0)?;
        let here = self.workers[wi].ns;
        // Mostly a key that some object (live or removed) has or had elsewhere.
        let elsewhere = self.pick_object(|o| o.ns != here && o.created_key != 0);
        let (kind, key) = match elsewhere {
            Some(o) if self.rng.chance(60) => (o.kind, o.created_key),
            _ => (
                KINDS[self.rng.below(3)],
                self.keys[self.rng.below(self.keys.len())],
            ),
        };
        let excl = self.rng.chance(35);
        let views = self.checkpoint("before a verified get")?;
        self.stats.verified_gets += 1;
        let ns = self.workers[wi].ns;
        let existing = views[&ns]
            .iter()
            .find(|((k, _), listed)| *k == kind && listed.key == key)
            .map(|((_, id), _)| *id);
        let (flags, size) = match (excl, kind) {
            (false, _) => (0, 0),
            (true, Kind::Msg) => (IPC_CREAT | IPC_EXCL | 0o600, 0),
            (true, Kind::Shm) => (IPC_CREAT | IPC_EXCL | 0o600, 4096),
            (true, Kind::Sem) => (IPC_CREAT | IPC_EXCL | 0o600, 1),
        };
        let cursor = self.agent().events.len();
        let label = self.worker_label(wi);
        let pid = self.workers[wi].pid;
        let result =
            self.workers[wi].call_number(&format!("get {} {key} {flags} {size}", kind.name()));
        let text = format!(
            "{label} verified {}get(key {key:#x}, flags {flags:#o}) -> {result:?} (kernel listed: {existing:?})",
            kind.name()
        );
        let as_expected = match (existing, excl, result) {
            (Some(id), false, Ok(got)) => id == got,
            (Some(_), true, Err(e)) => e == EEXIST,
            (None, false, Err(e)) => e == ENOENT,
            (None, true, Ok(_)) => true,
            _ => false,
        };
        if !as_expected {
            self.diverge(format!(
                "{text}: the kernel's answer contradicts its own listing"
            ));
        }
        if let (None, true, Ok(id)) = (existing, excl, result) {
            self.note_object(ns, kind, id, key);
        }
        let Err(errno) = result else {
            return Some(text);
        };
        if self.live().iter().any(|ns| !views.contains_key(ns)) {
            // A namespace held only by attachments cannot be listed: the truth is unknown.
            self.stats.key_lives_in_skipped += 1;
            return Some(format!(
                "{text}; key_lives_in not checked (an unlistable namespace lives)"
            ));
        }
        let expected: BTreeSet<u64> = views
            .iter()
            .filter(|(other, view)| {
                **other != ns && view.iter().any(|((k, _), l)| *k == kind && l.key == key)
            })
            .map(|(other, _)| self.namespaces[*other].inum)
            .collect();
        let event_name = format!("{}.get_failed", kind.name());
        let matches =
            |e: &Value| e["event"] == event_name.as_str() && e["pid"] == pid && e["key"] == key;
        let found = self
            .agent()
            .read_until(WAIT, |events| events[cursor..].iter().any(matches));
        let Some(event) = found
            .then(|| {
                self.agent().events[cursor..]
                    .iter()
                    .find(|e| matches(e))
                    .cloned()
            })
            .flatten()
        else {
            self.diverge(format!("{text}: no {event_name} in the stream"));
            return Some(text);
        };
        self.stats.key_lives_in_checked += 1;
        let lives_in: BTreeSet<u64> = event["key_lives_in"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let errno_name = if errno == ENOENT { "ENOENT" } else { "EEXIST" };
        if event["errno"] != errno_name
            || lives_in != expected
            || event["ns"] != self.namespaces[ns].inum
        {
            self.diverge(format!(
                "{text}: the stream says {event}, the kernel lists the key in {expected:?}"
            ));
        }
        Some(format!(
            "{text}; key_lives_in {lives_in:?} as the kernel lists"
        ))
    }
}
