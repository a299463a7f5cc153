//! The workloads the bench runs every setup on, at the sizes of the run.

use super::{Sizes, workload};

/// What a workload is, and how its results are counted.
pub enum WorkloadKind {
    Generator(workload::Kind, u64),
    StressNg { seconds: u64 },
}

pub struct Workload {
    pub name: &'static str,
    pub description: String,
    /// What the per-op time is per.
    pub unit: &'static str,
    /// The rows it reports (stress-ng: one per stressor).
    pub rows: Vec<&'static str>,
    pub kind: WorkloadKind,
    /// Its processes' comm starts with this (how the pipe reader finds its events).
    pub comm_prefix: &'static str,
    /// It makes the calls `--activity-interval` counts: the activity setups run it too.
    pub activity: bool,
}

/// The stressors of the stress-ng workload, in its YAML's names.
pub(super) const STRESSORS: [&str; 3] = ["msg", "shm-sysv", "sem-sysv"];

pub(super) fn define_workloads(sizes: &Sizes) -> Vec<Workload> {
    vec![
        Workload {
            name: "storm",
            description: format!(
                "msgget/shmget/semget(IPC_PRIVATE) + msgctl/shmctl/semctl(IPC_RMID) in a loop, \
                 {} iterations = {} traced syscalls per run",
                sizes.storm_iterations,
                6 * sizes.storm_iterations
            ),
            unit: "syscall",
            rows: vec!["storm"],
            kind: WorkloadKind::Generator(workload::Kind::Storm, sizes.storm_iterations),
            comm_prefix: workload::COMM,
            activity: false,
        },
        Workload {
            name: "churn",
            description: format!(
                "fork; the child unshare(CLONE_NEWIPC)s and exits; wait. {} iterations per run, \
                 2 lifecycle events each: ipc_ns.create, with the workload's comm, and \
                 ipc_ns.destroy, without (the kernel frees the namespace from a worker)",
                sizes.churn_iterations
            ),
            unit: "iteration",
            rows: vec!["churn"],
            kind: WorkloadKind::Generator(workload::Kind::Churn, sizes.churn_iterations),
            comm_prefix: workload::COMM,
            activity: false,
        },
        Workload {
            name: "stress-ng",
            description: format!(
                "`stress-ng --msg 1 --shm-sysv 1 --shm-sysv-bytes 1M --sem-sysv 1 --timeout {}s` \
                 (the smallest shm size, so shm-sysv is bound by syscalls, not page faults); \
                 per bogo op of each stressor, from stress-ng's own real-time rate",
                sizes.stress_seconds
            ),
            unit: "bogo op",
            rows: STRESSORS.to_vec(),
            kind: WorkloadKind::StressNg {
                seconds: sizes.stress_seconds,
            },
            comm_prefix: "stress-ng",
            activity: true,
        },
        Workload {
            name: "ping-pong",
            description: format!(
                "two processes pass a 64-byte message back and forth through two SysV queues \
                 (msgsnd + msgrcv each way), {} round trips = {} msgsnd/msgrcv calls per run: \
                 the calls `--activity-interval` counts",
                sizes.ping_pong_iterations,
                4 * sizes.ping_pong_iterations
            ),
            unit: "round trip",
            rows: vec!["ping-pong"],
            kind: WorkloadKind::Generator(workload::Kind::PingPong, sizes.ping_pong_iterations),
            comm_prefix: workload::COMM,
            activity: true,
        },
        Workload {
            name: "getppid",
            description: format!(
                "getppid in a loop, {} calls per run: a syscall nothing traces, to show the cost \
                 of attached syscall tracepoints to everything else",
                sizes.getppid_iterations
            ),
            unit: "syscall",
            rows: vec!["getppid"],
            kind: WorkloadKind::Generator(workload::Kind::Getppid, sizes.getppid_iterations),
            comm_prefix: workload::COMM,
            activity: false,
        },
        Workload {
            name: "open/close",
            description: format!(
                "open(\"/dev/null\") + close in a loop, {} iterations per run: syscalls nothing \
                 traces, each allocating and freeing a file",
                sizes.open_close_iterations
            ),
            unit: "syscall",
            rows: vec!["open/close"],
            kind: WorkloadKind::Generator(workload::Kind::OpenClose, sizes.open_close_iterations),
            comm_prefix: workload::COMM,
            activity: false,
        },
        Workload {
            name: "fork/exit",
            description: format!(
                "fork; the child exits at once; wait. {} iterations per run: task creation and \
                 exit (which nsipc hooks, to follow namespaces and creators), no IPC",
                sizes.fork_exit_iterations
            ),
            unit: "iteration",
            rows: vec!["fork/exit"],
            kind: WorkloadKind::Generator(workload::Kind::ForkExit, sizes.fork_exit_iterations),
            comm_prefix: workload::COMM,
            activity: false,
        },
        Workload {
            name: "hackbench",
            description: format!(
                "hackbench: `perf bench sched messaging -g 4 -l {}`, 160 processes passing \
                 100-byte messages over sockets, {} messages per run; no IPC call, but a \
                 kfree for every message (what the tracepoint backend's kfree hook sees)",
                sizes.hackbench_loops,
                4 * 20 * 20 * sizes.hackbench_loops
            ),
            unit: "message",
            rows: vec!["hackbench"],
            kind: WorkloadKind::Generator(workload::Kind::Hackbench, sizes.hackbench_loops),
            comm_prefix: workload::COMM,
            activity: false,
        },
    ]
}
