//! The JSON path section: `nsipc-bench json`'s events per second, and the cost of attribution per
//! event (a container's task against a host task).

use std::fmt::Write as _;

use super::{JsonPath, Report, si, stats::median};

impl Report<'_> {
    pub(super) fn json(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## JSON path\n\n\
             `nsipc-bench json`: `trace`'s own decode + serialize code on one thread, fed \
             128-byte records shaped like the storm's (msg/shm/sem get and IPC_RMID, changing \
             ids and times) from a host task, into its 64 KiB buffered writer over a sink that \
             only counts bytes. Per CPU second of that thread (what one free core does) and per \
             wall second (on this shared machine).\n\n\
             | run | records | events/s (CPU) | events/s (wall) | bytes/event |\n\
             |---|---:|---:|---:|---:|"
        );
        for (i, run) in self.json_path.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} |",
                i + 1,
                run.records,
                si(cpu_rate(run)),
                si(run.records as f64 / run.ns as f64 * 1e9),
                run.bytes as f64 / run.records as f64,
            );
        }
        let _ = writeln!(out);
        self.attribution_cost(out);
    }

    fn attribution_cost(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Attribution cost per event\n\n\
             The same run also feeds the same records as from a task of a container the path \
             knows (Docker, named, in the host's IPC namespace: `--ipc=host`), in rounds that \
             alternate with the host task's, so that load from others falls on both alike. \
             The host task's records carry no cgroup id (as when the agent does not \
             attribute), so the difference is all that attribution costs: the lookup of the \
             cgroup id, the `container` object and `host_ipc` in every line, and the engine \
             noting the objects the container makes in the host's namespace. CPU time of \
             the thread.\n\n\
             | run | host tasks, ns/event | container tasks, ns/event | attribution cost per \
             event, ns | ratio | bytes/event (container) |\n\
             |---|---:|---:|---:|---:|---:|"
        );
        let rows: Vec<[f64; 4]> = self.json_path.iter().map(attribution_cost).collect();
        for (i, (run, [host, container, cost, ratio])) in
            self.json_path.iter().zip(&rows).enumerate()
        {
            let _ = writeln!(
                out,
                "| {} | {host:.0} | {container:.0} | {cost:+.0} | {ratio:.2} | {:.0} |",
                i + 1,
                run.container_bytes as f64 / run.records as f64,
            );
        }
        let column = |c: usize| median(rows.iter().map(|row| row[c]).collect());
        if let (Some(host), Some(container), Some(cost), Some(ratio)) =
            (column(0), column(1), column(2), column(3))
        {
            let _ = writeln!(
                out,
                "| median | {host:.0} | {container:.0} | {cost:+.0} | {ratio:.2} | |"
            );
        }
        let _ = writeln!(out);
    }
}

pub(super) fn cpu_rate(run: &JsonPath) -> f64 {
    run.records as f64 / run.cpu_ns.max(1) as f64 * 1e9
}

/// CPU ns per event for host tasks and for container tasks, the difference, and the ratio.
fn attribution_cost(run: &JsonPath) -> [f64; 4] {
    let per_event = |cpu_ns: u64| cpu_ns as f64 / run.records.max(1) as f64;
    let (host, container) = (per_event(run.cpu_ns), per_event(run.container_cpu_ns));
    [
        host,
        container,
        container - host,
        container / host.max(f64::MIN_POSITIVE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Environment;

    fn report(json_path: Vec<JsonPath>) -> Report<'static> {
        Report {
            environment: Environment {
                date: String::new(),
                kernel: String::new(),
                cpus: String::new(),
                bpftrace: String::new(),
                stress_ng: String::new(),
                load_before: String::new(),
                load_after: String::new(),
                load_per_round: Vec::new(),
                quiet_wait_seconds: 0.0,
                nice: 0,
                rounds: 0,
                quick: true,
                only: vec!["json".into()],
                minutes: 0.0,
            },
            hooks: 0,
            bpftrace_probes: 0,
            workloads: &[],
            results: Vec::new(),
            forced: Vec::new(),
            profiles: Vec::new(),
            json_path,
            memory: None,
        }
    }

    fn json_run(cpu_ns: u64, container_cpu_ns: u64) -> JsonPath {
        JsonPath {
            records: 1_000,
            ns: cpu_ns,
            cpu_ns,
            bytes: 204_000,
            container_cpu_ns,
            container_bytes: 330_000,
        }
    }

    #[test]
    fn the_json_section_shows_the_attribution_cost_per_event() {
        let mut out = String::new();
        report(vec![
            json_run(400_000, 480_000),
            json_run(500_000, 550_000),
            json_run(420_000, 630_000),
        ])
        .json(&mut out);
        let rows: Vec<&str> = out
            .split("### Attribution cost per event")
            .nth(1)
            .unwrap()
            .lines()
            .filter(|line| line.starts_with("| ") && !line.starts_with("| run"))
            .collect();
        assert_eq!(
            rows,
            [
                "| 1 | 400 | 480 | +80 | 1.20 | 330 |",
                "| 2 | 500 | 550 | +50 | 1.10 | 330 |",
                "| 3 | 420 | 630 | +210 | 1.50 | 330 |",
                "| median | 420 | 550 | +80 | 1.20 | |",
            ]
        );
    }
}
