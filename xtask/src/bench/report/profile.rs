//! The "Where the time goes" section: eBPF run time per program, from the profile pass.

use std::fmt::Write as _;

use super::Report;

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
        for profile in &self.profiles {
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
    }
}
