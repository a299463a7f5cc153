//! The workload generator (`xtask bench-workload`, run from a release build): one workload in a
//! tight loop, timed by itself with CLOCK_MONOTONIC, reported as one JSON line.

use std::{io, ptr};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;
use serde_json::json;

/// The workload's `comm`, inherited by its children: how the pipe reader tells the workload's
/// events from everything else on the machine.
pub const COMM: &str = "nsipc-bench-wl";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// msgget/shmget/semget(IPC_PRIVATE) + *ctl(IPC_RMID): 6 traced syscalls an iteration.
    Storm,
    /// fork; the child unshares its IPC namespace and exits; the parent waits.
    Churn,
    /// getppid: a syscall nsipc does not trace.
    Getppid,
    /// open("/dev/null") + close: syscalls nsipc does not trace, with a kernel allocation and
    /// free (the file) each.
    OpenClose,
    /// fork; the child exits at once; wait: task creation and exit, which nsipc hooks, with no
    /// IPC.
    ForkExit,
    /// hackbench (`perf bench sched messaging`, 4 groups): processes passing messages over
    /// sockets, no IPC call, a kfree per message.
    Hackbench,
    /// Two processes pass a message back and forth through two SysV queues: msgsnd and
    /// msgrcv, what `trace --activity-interval` counts.
    PingPong,
}

impl Kind {
    /// Its name on the command line (`fork-exit`).
    pub fn name(self) -> String {
        self.to_possible_value()
            .expect("no variant is skipped")
            .get_name()
            .to_owned()
    }
}

#[derive(clap::Args)]
pub struct WorkloadArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    #[arg(long)]
    pub iterations: u64,
}

pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) of this process and its waited-for children: unlike the elapsed
/// time, it does not count the time other work on the machine held the CPU.
pub(super) fn cpu_ns() -> u64 {
    let mut total = 0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: rusage is plain integers; getrusage fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer.
        unsafe { libc::getrusage(who, &mut usage) };
        for tv in [usage.ru_utime, usage.ru_stime] {
            total += tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
        }
    }
    total
}

pub(super) fn check(ret: libc::c_int, call: &str) -> Result<libc::c_int> {
    if ret < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("{call} failed"));
    }
    Ok(ret)
}

/// Runs the workload and prints `{"kind", "iterations", "ops", "events", "comm_events", "ns",
/// "cpu_ns", "pid"}`: `ops` is what the per-op time is counted in, `events` how many lifecycle
/// events `nsipc-agent trace` (its default stream) should write for it, `comm_events` how many
/// of those carry the workload's comm (what a reader can tell apart from other processes'
/// events), `ns` the elapsed time and `cpu_ns` the CPU time it took.
pub fn run(args: &WorkloadArgs) -> Result<()> {
    set_comm()?;
    let n = args.iterations;
    let start_cpu = cpu_ns();
    let start = monotonic_ns();
    // Storm: a create and a destroy (rmid, by the caller) per object. Churn: the child's
    // ipc_ns.create, and the ipc_ns.destroy of its namespace, which the kernel frees from a
    // worker after the child's exit: no comm (process.exit is in --raw only).
    let (ops, events, comm_events) = match args.kind {
        Kind::Storm => (storm(n)?, 6 * n, 6 * n),
        Kind::Churn => (churn(n)?, 2 * n, n),
        Kind::Getppid => (getppid(n), 0, 0),
        Kind::OpenClose => (open_close(n)?, 0, 0),
        Kind::ForkExit => (fork_exit(n)?, 0, 0),
        Kind::Hackbench => (hackbench(n)?, 0, 0),
        // Two queues made and removed by the workload (activity lines have no comm).
        Kind::PingPong => (ping_pong(n)?, 4, 4),
    };
    let ns = monotonic_ns() - start;
    let cpu_ns = cpu_ns() - start_cpu;
    println!(
        "{}",
        json!({
            "kind": args.kind.name(),
            "iterations": n,
            "ops": ops,
            "events": events,
            "comm_events": comm_events,
            "ns": ns,
            "cpu_ns": cpu_ns,
            "pid": std::process::id(),
        })
    );
    Ok(())
}

/// Names this process (and the children it will have) [`COMM`].
pub(super) fn set_comm() -> Result<()> {
    let comm = std::ffi::CString::new(COMM).expect("no NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    check(
        unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) },
        "prctl(PR_SET_NAME)",
    )?;
    Ok(())
}

/// Returns the syscalls made: every one is traced (msg/shm/sem.get, msg/shm/sem.ctl).
fn storm(iterations: u64) -> Result<u64> {
    let flags = libc::IPC_CREAT | 0o600;
    for _ in 0..iterations {
        // SAFETY: plain syscalls; the ctl calls pass no buffer, which IPC_RMID does not use.
        unsafe {
            let id = check(libc::msgget(libc::IPC_PRIVATE, flags), "msgget")?;
            check(libc::msgctl(id, libc::IPC_RMID, ptr::null_mut()), "msgctl")?;
            let id = check(libc::shmget(libc::IPC_PRIVATE, 4096, flags), "shmget")?;
            check(libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()), "shmctl")?;
            let id = check(libc::semget(libc::IPC_PRIVATE, 1, flags), "semget")?;
            check(libc::semctl(id, 0, libc::IPC_RMID), "semctl")?;
        }
    }
    Ok(6 * iterations)
}

/// Returns the iterations: each is an unshare (ipc_ns.create) and an exit in the new namespace,
/// the namespace's last reference (ipc_ns.destroy once the kernel frees it).
fn churn(iterations: u64) -> Result<u64> {
    for _ in 0..iterations {
        // SAFETY: this process is single-threaded; the child only makes async-signal-safe
        // calls (unshare, _exit).
        let pid = check(unsafe { libc::fork() }, "fork")?;
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let ok = libc::unshare(libc::CLONE_NEWIPC) == 0;
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let status = wait_for(pid)?;
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("unshare(CLONE_NEWIPC) failed in the child (wait status {status})");
        }
    }
    Ok(iterations)
}

/// Reaps child `pid`; returns its wait status.
fn wait_for(pid: libc::pid_t) -> Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("waitpid");
        }
    }
}

fn getppid(iterations: u64) -> u64 {
    for _ in 0..iterations {
        // SAFETY: getppid cannot fail. The raw syscall, so no libc caching can skip it.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    iterations
}

/// Returns the syscalls made (an open and a close per iteration).
fn open_close(iterations: u64) -> Result<u64> {
    let path = c"/dev/null";
    for _ in 0..iterations {
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        unsafe {
            let fd = check(libc::open(path.as_ptr(), libc::O_RDONLY), "open(/dev/null)")?;
            check(libc::close(fd), "close")?;
        }
    }
    Ok(2 * iterations)
}

/// Returns the iterations: a fork and the child's exit each.
fn fork_exit(iterations: u64) -> Result<u64> {
    for _ in 0..iterations {
        // SAFETY: this process is single-threaded; the child only calls _exit.
        let pid = check(unsafe { libc::fork() }, "fork")?;
        if pid == 0 {
            // SAFETY: see above.
            unsafe { libc::_exit(0) };
        }
        wait_for(pid)?;
    }
    Ok(iterations)
}

/// hackbench's groups, and its senders and receivers per group (perf's default).
const HACKBENCH_GROUPS: u64 = 4;
const HACKBENCH_FDS: u64 = 20;

/// Runs `perf bench sched messaging` with `loops` loops; returns the messages passed: each of a
/// group's senders writes `loops` messages to each of its receivers.
fn hackbench(loops: u64) -> Result<u64> {
    let out = std::process::Command::new("perf")
        .args(["bench", "sched", "messaging", "-g"])
        .arg(HACKBENCH_GROUPS.to_string())
        .arg("-l")
        .arg(loops.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .context("running perf bench sched messaging (package linux-perf)")?;
    if !out.status.success() {
        bail!(
            "perf bench sched messaging failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(HACKBENCH_GROUPS * HACKBENCH_FDS * HACKBENCH_FDS * loops)
}

/// A ping-pong message: a type and 64 bytes.
#[repr(C)]
struct Message {
    mtype: libc::c_long,
    text: [u8; PING_PONG_BYTES],
}

const PING_PONG_BYTES: usize = 64;

/// Returns the round trips: the parent sends a 64-byte message into one private queue, the
/// child receives it and sends it back through another, the parent receives it (4 syscalls,
/// each counted by `--activity-interval`). Both queues are removed at the end.
fn ping_pong(iterations: u64) -> Result<u64> {
    let flags = libc::IPC_CREAT | 0o600;
    // SAFETY: plain syscalls.
    let (ping, pong) = unsafe {
        (
            check(libc::msgget(libc::IPC_PRIVATE, flags), "msgget")?,
            check(libc::msgget(libc::IPC_PRIVATE, flags), "msgget")?,
        )
    };
    let mut message = Message {
        mtype: 1,
        text: [b'x'; PING_PONG_BYTES],
    };
    let message_ptr = (&raw mut message).cast::<libc::c_void>();
    // SAFETY: this process is single-threaded; the child only makes msgrcv, msgsnd and _exit.
    let pid = check(unsafe { libc::fork() }, "fork")?;
    if pid == 0 {
        for _ in 0..iterations {
            // SAFETY: `message` holds a type and PING_PONG_BYTES bytes.
            let ok = unsafe {
                libc::msgrcv(ping, message_ptr, PING_PONG_BYTES, 0, 0) >= 0
                    && libc::msgsnd(pong, message_ptr, PING_PONG_BYTES, 0) == 0
            };
            if !ok {
                // SAFETY: see above.
                unsafe { libc::_exit(1) };
            }
        }
        // SAFETY: see above.
        unsafe { libc::_exit(0) };
    }
    let mut result = Ok(());
    for _ in 0..iterations {
        // SAFETY: as in the child.
        let ok = unsafe {
            libc::msgsnd(ping, message_ptr, PING_PONG_BYTES, 0) == 0
                && libc::msgrcv(pong, message_ptr, PING_PONG_BYTES, 0, 0) >= 0
        };
        if !ok {
            result = Err(io::Error::last_os_error()).context("msgsnd/msgrcv");
            break;
        }
    }
    // SAFETY: IPC_RMID uses no buffer; a child blocked in msgrcv gets EIDRM and exits.
    unsafe {
        libc::msgctl(ping, libc::IPC_RMID, ptr::null_mut());
        libc::msgctl(pong, libc::IPC_RMID, ptr::null_mut());
    }
    let status = wait_for(pid)?;
    result?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the ping-pong child failed (wait status {status})");
    }
    Ok(iterations)
}
