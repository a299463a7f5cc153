//! The "Where the time goes" section: eBPF run time per program, from the profile pass.

use std::fmt::Write as _;

use super::Report;
use crate::bench::COLLATERAL;

impl Report<'_> {
    pub(super) fn profile(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## Where the time goes (storm, one run each, kernel eBPF run-time statistics on)\n\n\
             `run_time_ns` / `run_cnt` of each program (bpf_stats; they add two clock reads per \
             run, so this pass is not in the tables above). The hits include the rest of the \
             machine's syscalls on the same hooks. `floor_enter` and `floor_raw` (on kfree) \
             are empty programs: the cost of running any program there. nsipc's `sys_enter_*` \
             minus `floor_enter` is its work at entry (unshare and setns only: reading the \
             arguments, remembering them per thread in its LRU hash map); its `sys_exit_*` \
             minus `floor_exit` is its extra work at exit (the arguments from the saved user \
             registers, the task's IPC namespace, ids, uid and comm read from its task_struct, \
             the time; for shm calls, finding the segment's kernel pointer in the namespace's \
             id tree and remembering it in a hash map); `kfree` and `kfree_again` minus \
             `floor_raw` are its looking for the frees of what it remembered (a hash lookup \
             when the caller is one that frees such objects) and writing `shm.freed` \
             records.\n"
        );
        for profile in self.profiles.iter().filter(|p| p.workload == "storm") {
            let Some(traced) = &profile.run.traced else {
                continue;
            };
            let mut programs: Vec<_> = traced.programs.iter().collect();
            programs.sort_by_key(|p| std::cmp::Reverse(p.run_time_ns));
            let total: u64 = programs.iter().map(|p| p.run_time_ns).sum();
            let ops = profile.run.measured.expected_events.unwrap_or(0).max(1);
            let _ = writeln!(
                out,
                "**{}**: {:.0} ns of eBPF per storm syscall ({:.1} ms in all), {:.0} ns/syscall \
                 in this run, tracer CPU {:.0} ms.\n\n\
                 | program | runs | ns/run |\n|---|---:|---:|",
                profile.setup.label(),
                total as f64 / ops as f64,
                total as f64 / 1e6,
                profile.run.measured.ns_per_op[0],
                traced.cpu_ns as f64 / 1e6,
            );
            for p in programs {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} |",
                    p.name,
                    p.runs,
                    p.run_time_ns as f64 / p.runs as f64
                );
            }
            let _ = writeln!(out);
        }
        self.collateral(out);
    }

    /// The probes' run time on work they do not trace, as a share of that work's CPU time.
    fn collateral(&self, out: &mut String) {
        let rows: Vec<_> = self
            .profiles
            .iter()
            .filter(|p| COLLATERAL.contains(&p.workload))
            .filter_map(|p| Some((p, p.run.traced.as_ref()?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## The cost to work nsipc does not trace (one run each, eBPF statistics on)\n\n\
             Every program's `run_time_ns` summed from the tracer's attachment to its stop (all of \
             the machine's hits in that time, the workload's and everyone else's; not the \
             tracer's own start-up), against the workload's own CPU time. The elapsed \
             and CPU overheads of these workloads per setup are in their sections above; this \
             is the part spent inside the programs (what the tracepoint backend's syscall \
             slow path costs besides is only in those).\n\n\
             | workload | setup | workload CPU ms | program runs | program ms | share of the \
             workload's CPU | busiest program (runs, ns/run) |\n|---|---|---:|---:|---:|---:|---|"
        );
        for (profile, traced) in rows {
            let runs: u64 = traced.programs.iter().map(|p| p.runs).sum();
            let total: u64 = traced.programs.iter().map(|p| p.run_time_ns).sum();
            let cpu = profile.run.measured.cpu_seconds;
            let busiest = traced
                .programs
                .iter()
                .filter(|p| p.runs > 0)
                .max_by_key(|p| p.run_time_ns)
                .map_or("—".to_owned(), |p| {
                    format!(
                        "{} ({}, {:.0})",
                        p.name,
                        p.runs,
                        p.run_time_ns as f64 / p.runs as f64
                    )
                });
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {:.1} | {:.2}% | {} |",
                profile.workload,
                profile.setup.label(),
                cpu * 1e3,
                runs,
                total as f64 / 1e6,
                collateral_share(total, cpu) * 100.0,
                busiest
            );
        }
        let _ = writeln!(out);
    }
}

/// Program time over the workload's CPU time (0 when the workload took none).
pub(super) fn collateral_share(program_ns: u64, workload_cpu_seconds: f64) -> f64 {
    if workload_cpu_seconds > 0.0 {
        program_ns as f64 / (workload_cpu_seconds * 1e9)
    } else {
        0.0
    }
}
