//! At startup, checks that the probes see the two frees the stream relies on, on the kernel
//! that runs: a namespace's and a shm segment's (nsipc-ebpf/src/tracked.rs). They are seen
//! through `kfree`, filtered by call site (probes/kfree_callers.rs); a kernel that frees these
//! objects from elsewhere, or not through `kfree`, would hide every namespace's end and every
//! removed segment's last detach, with no loss counted anywhere.
//!
//! A thread of the agent makes a namespace of its own (`unshare(CLONE_NEWIPC)`), a segment in
//! it, attaches it, removes it and detaches it (its last detach frees it), then goes back to
//! its namespace, which ends the new one. Both frees must come within [`DEADLINE`]. The
//! thread's name, [`THREAD_NAME`], marks its records: every nsipc-agent leaves them out of its
//! stream, and the frees of a namespace it never announced change nothing.
//!
//! The outcome is one `agent.kfree_check` line. On failure the agent falls back on looking
//! at the kernel: a resynchronisation every 10 s finds what died unseen (trace/resync.rs).

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    ptr,
    sync::{Arc, OnceLock},
    thread,
    time::{Duration, Instant},
};

use crate::decode::{Body, KernelEvent};

/// The checking thread's name (its `comm`, at most 15 bytes).
pub const THREAD_NAME: &str = "nsipc-kfreechk";

/// How long both frees may take: an RCU grace period for the segment, the namespace's free
/// work and a grace period for the namespace, on a loaded machine or a slow VM.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// What the thread made: its namespace's inum and its segment's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Made {
    pub inum: u32,
    pub id: i32,
}

/// What the thread says: what it made, and why it could not finish, if it could not.
#[derive(Default)]
struct Progress {
    made: OnceLock<Made>,
    error: OnceLock<String>,
}

type Report = Arc<Progress>;

/// How the check ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub namespace_free_seen: bool,
    pub segment_free_seen: bool,
    /// From the start to the last free seen, or to the deadline.
    pub elapsed: Duration,
    /// Why the check could not be made, if it could not.
    pub error: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.namespace_free_seen && self.segment_free_seen
    }
}

pub struct KfreeCheck {
    started: Instant,
    report: Report,
    namespace_free_seen: bool,
    segment_free_seen: bool,
    ended: bool,
}

impl KfreeCheck {
    /// Starts the check's thread. The probes must be attached.
    pub fn start() -> Self {
        let report = Report::default();
        let thread_report = Arc::clone(&report);
        let spawned = thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                if let Err(err) = make_and_free(&thread_report) {
                    let _ = thread_report.error.set(err.to_string());
                }
            });
        if let Err(err) = spawned {
            let _ = report
                .error
                .set(format!("starting the check's thread: {err}"));
        }
        Self::watching(report, Instant::now())
    }

    fn watching(report: Report, started: Instant) -> Self {
        Self {
            started,
            report,
            namespace_free_seen: false,
            segment_free_seen: false,
            ended: false,
        }
    }

    /// Whether `event` is a record of a checking thread, this agent's or another's.
    pub fn is_checking_thread(event: &KernelEvent) -> bool {
        event.task.comm_bytes() == THREAD_NAME.as_bytes()
    }

    /// Whether `event` is the check's own: a record of a checking thread (this agent's or
    /// another's), or the first free of what this check made, noted; the stream leaves them
    /// out. Nothing else of that inum is: an inum is reused as soon as its namespace ends.
    pub fn is_own(&mut self, event: &KernelEvent) -> bool {
        if Self::is_checking_thread(event) {
            return true;
        }
        let Some(made) = self.report.made.get() else {
            return false;
        };
        if event.ns.inum != made.inum {
            return false;
        }
        match event.body {
            Body::NsFreed if !self.namespace_free_seen => {
                self.namespace_free_seen = true;
                true
            }
            Body::ShmFreed { id, .. } if id == made.id && !self.segment_free_seen => {
                self.segment_free_seen = true;
                true
            }
            _ => false,
        }
    }

    /// The outcome, once: when both frees were seen, when the thread failed, or at the
    /// deadline.
    pub fn outcome(&mut self, now: Instant) -> Option<Outcome> {
        if self.ended {
            return None;
        }
        let error = self.report.error.get().cloned();
        let elapsed = now.saturating_duration_since(self.started);
        let passed = self.namespace_free_seen && self.segment_free_seen;
        if !passed && error.is_none() && elapsed < DEADLINE {
            return None;
        }
        self.ended = true;
        Some(Outcome {
            namespace_free_seen: self.namespace_free_seen,
            segment_free_seen: self.segment_free_seen,
            elapsed,
            error,
        })
    }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if rc == -1 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(rc)
}

/// The check's work, on its own thread: everything it makes dies before it returns, or with
/// the thread.
fn make_and_free(report: &Report) -> io::Result<()> {
    let home = File::open("/proc/thread-self/ns/ipc")?;
    // SAFETY: plain syscalls on this thread; an IPC namespace can be left and joined by one
    // thread of a multi-threaded process. The segment is attached at an address the kernel
    // picks and detached before the thread ends.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWIPC), "unshare(CLONE_NEWIPC)")?;
        let inum = std::fs::metadata("/proc/thread-self/ns/ipc")?.ino() as u32;
        let id = check(
            libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600),
            "shmget",
        )?;
        let _ = report.made.set(Made { inum, id });
        let addr = libc::shmat(id, ptr::null(), 0);
        if addr as isize == -1 {
            let err = io::Error::last_os_error();
            libc::shmctl(id, libc::IPC_RMID, ptr::null_mut());
            return Err(io::Error::new(err.kind(), format!("shmat: {err}")));
        }
        // Removed while attached: its last detach frees it, as the probes must see.
        check(
            libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()),
            "IPC_RMID",
        )?;
        check(libc::shmdt(addr), "shmdt")?;
        check(
            libc::setns(home.as_raw_fd(), libc::CLONE_NEWIPC),
            "setns back to the agent's IPC namespace",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nsipc_common::NsRef;

    use super::*;
    use crate::decode::{ContainerRef, Task};

    const MADE: Made = Made {
        inum: 4026532999,
        id: 65536,
    };

    fn event(comm: &str, inum: u32, body: Body) -> KernelEvent {
        let mut task = Task {
            pid: 7,
            tid: 7,
            ppid: 1,
            uid: 0,
            euid: 0,
            comm: [0; nsipc_common::COMM_LEN],
            cgroup: 0,
            container: ContainerRef::NONE,
        };
        task.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        KernelEvent {
            ts_ns: 1,
            task,
            ns: NsRef {
                inum,
                id: 0,
                life: 0,
            },
            body,
        }
    }

    fn segment_freed(id: i32) -> Body {
        Body::ShmFreed {
            id,
            key: 0,
            ns_dying: false,
            ns_freed: false,
            rmid_forced: false,
        }
    }

    fn check_of(made: Result<Made, &str>) -> (KfreeCheck, Instant) {
        let report = Report::default();
        match made {
            Ok(made) => report.made.set(made).expect("first"),
            Err(err) => report.error.set(err.to_owned()).expect("first"),
        }
        let t0 = Instant::now();
        (KfreeCheck::watching(report, t0), t0)
    }

    #[test]
    fn passes_once_both_frees_are_seen() {
        let (mut check, t0) = check_of(Ok(MADE));
        assert!(check.is_own(&event(
            THREAD_NAME,
            MADE.inum,
            Body::ProcessExit { rmid_forced: false }
        )));
        assert!(!check.is_own(&event("postgres", 4026531839, segment_freed(MADE.id))));
        assert!(check.is_own(&event("", MADE.inum, segment_freed(MADE.id))));
        assert_eq!(check.outcome(t0 + Duration::from_millis(5)), None, "waits");
        assert!(check.is_own(&event("", MADE.inum, Body::NsFreed)));
        let outcome = check.outcome(t0 + Duration::from_millis(9)).expect("ended");
        assert!(outcome.passed(), "{outcome:?}");
        assert_eq!(outcome.elapsed, Duration::from_millis(9));
        assert_eq!(check.outcome(t0 + DEADLINE), None, "once");
    }

    #[test]
    fn a_new_namespace_with_the_checks_inum_is_not_the_checks() {
        let (mut check, _) = check_of(Ok(MADE));
        assert!(!check.is_own(&event(
            "unshare",
            MADE.inum,
            Body::ProcessExit { rmid_forced: false }
        )));
        assert!(check.is_own(&event("", MADE.inum, Body::NsFreed)));
        assert!(
            !check.is_own(&event("", MADE.inum, Body::NsFreed)),
            "the free of the inum's next life"
        );
    }

    #[test]
    fn fails_at_the_deadline_saying_which_free_was_missing() {
        let (mut check, t0) = check_of(Ok(MADE));
        check.is_own(&event("", MADE.inum, Body::NsFreed));
        // Another segment of that inum is not the check's.
        assert!(!check.is_own(&event("", MADE.inum, segment_freed(MADE.id + 1))));
        assert_eq!(check.outcome(t0 + DEADLINE / 2), None);
        let outcome = check.outcome(t0 + DEADLINE).expect("ended");
        assert!(!outcome.passed());
        assert!(outcome.namespace_free_seen && !outcome.segment_free_seen);
        assert_eq!(outcome.error, None);
    }

    #[test]
    fn fails_at_once_when_the_thread_could_not_do_its_work() {
        let (mut check, t0) = check_of(Err("unshare(CLONE_NEWIPC): EPERM"));
        let outcome = check.outcome(t0).expect("ended");
        assert!(!outcome.passed());
        assert_eq!(
            outcome.error.as_deref(),
            Some("unshare(CLONE_NEWIPC): EPERM")
        );
        // Another agent's checking thread is left out all the same.
        assert!(check.is_own(&event(
            THREAD_NAME,
            4026532000,
            Body::ProcessExit { rmid_forced: false }
        )));
    }
}
