//! The report: medians, overheads, ratios and targets, as Markdown (docs/bench.md).

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    MEMORY_NAMESPACES, Measured, Workload,
    memory::{IDLE_WINDOW, MemoryRun, SETTLE, Seen},
    setups::{Setup, Traced},
};

/// One setup on one workload, once.
pub struct Run {
    pub measured: Measured,
    pub traced: Option<Traced>,
    /// Tracing programs of others loaded when the run started.
    pub foreign_programs: Vec<String>,
}

#[derive(Default)]
pub struct WorkloadResults {
    /// The runs the statistics are made of, in round order.
    pub runs: BTreeMap<Setup, Vec<Run>>,
    /// Runs of rounds left out because other users' tracing programs were loaded.
    pub excluded: BTreeMap<Setup, Vec<Run>>,
}

pub struct ForcedLoss {
    pub case: &'static str,
    pub run: Run,
}

pub struct Profile {
    pub setup: Setup,
    pub run: Run,
}

/// One `bench-json` run: the same records as from a host task and as from a container's.
pub struct JsonPath {
    pub records: u64,
    pub ns: u64,
    pub cpu_ns: u64,
    pub bytes: u64,
    pub container_cpu_ns: u64,
    pub container_bytes: u64,
}

pub struct Environment {
    pub date: String,
    pub kernel: String,
    pub cpus: String,
    pub bpftrace: String,
    pub stress_ng: String,
    pub load_before: String,
    pub load_after: String,
    /// At the start of each round.
    pub load_per_round: Vec<String>,
    /// Spent waiting for other users' tracing programs to go away.
    pub quiet_wait_seconds: f64,
    pub nice: i32,
    pub rounds: usize,
    pub quick: bool,
    /// `--only`'s parts (empty: everything).
    pub only: Vec<String>,
    pub minutes: f64,
}

pub struct Report<'a> {
    pub environment: Environment,
    pub hooks: usize,
    /// Probes of the bpftrace script (it reads arguments at syscall entry, so it has an entry
    /// probe for every syscall where nsipc mostly has the exit one alone).
    pub bpftrace_probes: usize,
    pub workloads: &'a [Workload],
    pub results: Vec<WorkloadResults>,
    pub forced: Vec<ForcedLoss>,
    pub profiles: Vec<Profile>,
    pub json_path: Vec<JsonPath>,
    pub memory: Option<MemoryRun>,
}

/// The storm's target: agent overhead at most this many times the floor's.
const OVERHEAD_TARGET: f64 = 1.25;
/// Per-run wait for other users' tracing programs (see `super::QUIET_WAIT_PER_RUN`).
const QUIET_WAIT_PER_RUN_SECONDS: u64 = super::QUIET_WAIT_PER_RUN.as_secs();
/// Fewer events in a run than this, and no CPU time per event is computed.
const MIN_EVENTS_PER_RUN: u64 = 1_000;
/// The JSON path's target, events per second on one core.
const JSON_TARGET: f64 = 1e6;
/// The memory target: peak RSS with the memory scenario's namespaces and objects alive.
const PEAK_RSS_TARGET_MIB: f64 = 32.0;
/// "Memory returns when they die": at least this share of what the live namespaces and
/// objects added to the agent's RSS is gone once they died.
const RETURNED_TARGET: f64 = 0.9;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Which time of a workload run.
#[derive(Clone, Copy)]
enum Metric {
    /// Elapsed (CLOCK_MONOTONIC): everything, including the CPU the tracer's consumer and
    /// other work on the machine took from the workload.
    Elapsed,
    /// The workload's own CPU time: the probes run in its context and count; waiting for a
    /// CPU does not.
    Cpu,
}

impl Metric {
    fn of(self, measured: &Measured, row: usize) -> f64 {
        match self {
            Metric::Elapsed => measured.ns_per_op[row],
            Metric::Cpu => measured.cpu_ns_per_op[row],
        }
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "—".to_owned())
}

/// 1234567 → "1.23 M", 12345 → "12.3 k".
fn si(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// Events a tracer handled in a run: what it reported, or for the agent writing to /dev/null
/// (whose stream nobody reads) what the workload made minus what was lost.
fn events(setup: Setup, run: &Run) -> Option<u64> {
    let traced = run.traced.as_ref()?;
    match setup {
        Setup::AgentNull => Some(run.measured.expected_events? - traced.lost?),
        _ => traced.events,
    }
}

impl Report<'_> {
    fn runs(&self, workload: usize, setup: Setup) -> &[Run] {
        self.results[workload]
            .runs
            .get(&setup)
            .map_or(&[], Vec::as_slice)
    }

    /// Median ns per op of `setup` on row `row` of `workload`.
    fn ns_per_op(&self, metric: Metric, workload: usize, setup: Setup, row: usize) -> Option<f64> {
        median(
            self.runs(workload, setup)
                .iter()
                .map(|r| metric.of(&r.measured, row))
                .collect(),
        )
    }

    fn overhead(&self, metric: Metric, workload: usize, setup: Setup, row: usize) -> Option<f64> {
        Some(
            self.ns_per_op(metric, workload, setup, row)?
                - self.ns_per_op(metric, workload, Setup::Bare, row)?,
        )
    }

    /// Whether the overhead of `setup` is smaller than twice the median absolute deviation of
    /// the no-tracing runs, i.e. not told apart from the noise (robust to one outlier run).
    fn within_noise(&self, metric: Metric, workload: usize, setup: Setup, row: usize) -> bool {
        let bare: Vec<f64> = self
            .runs(workload, Setup::Bare)
            .iter()
            .map(|r| metric.of(&r.measured, row))
            .collect();
        let deviation = median(bare.clone())
            .and_then(|m| median(bare.iter().map(|v| (v - m).abs()).collect()))
            .unwrap_or(0.0);
        self.overhead(metric, workload, setup, row)
            .is_none_or(|o| o.abs() < 2.0 * deviation)
    }

    /// `a`'s overhead over `b`'s within each round (the runs of one round are minutes apart at
    /// most, so a load that drifts over the whole bench cancels out), for the rounds where `b`'s
    /// overhead is positive.
    fn paired_ratios(
        &self,
        metric: Metric,
        workload: usize,
        row: usize,
        a: Setup,
        b: Setup,
    ) -> Vec<f64> {
        let time = |setup| {
            self.runs(workload, setup)
                .iter()
                .map(|r| metric.of(&r.measured, row))
                .collect::<Vec<f64>>()
        };
        let (bare, a, b) = (time(Setup::Bare), time(a), time(b));
        bare.iter()
            .zip(a.iter().zip(&b))
            .filter(|(bare, (_, b))| **b > **bare)
            .map(|(bare, (a, b))| (a - bare) / (b - bare))
            .collect()
    }

    /// `a`'s overhead over `b`'s, when `b` has a positive one.
    fn ratio(
        &self,
        metric: Metric,
        workload: usize,
        row: usize,
        a: Setup,
        b: Setup,
    ) -> Option<f64> {
        let denominator = self.overhead(metric, workload, b, row)?;
        (denominator > 0.0).then(|| {
            self.overhead(metric, workload, a, row)
                .map(|o| o / denominator)
        })?
    }

    /// The largest loss of the agent setups over all runs of `workload`.
    fn agent_max_lost(&self, workload: usize) -> Option<u64> {
        [Setup::AgentNull, Setup::AgentPipe]
            .iter()
            .flat_map(|s| self.runs(workload, *s))
            .map(|r| r.traced.as_ref().and_then(|t| t.lost))
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.targets(&mut out);
        for (index, workload) in self.workloads.iter().enumerate() {
            self.workload(&mut out, index, workload);
        }
        if !self.forced.is_empty() {
            self.forced_loss(&mut out);
        }
        if !self.profiles.is_empty() {
            self.profile(&mut out);
        }
        if !self.json_path.is_empty() {
            self.json(&mut out);
        }
        if let Some(memory) = &self.memory {
            memory_section(&mut out, memory);
        }
        out
    }

    fn header(&self, out: &mut String) {
        let env = &self.environment;
        let traced_runs = self
            .results
            .iter()
            .flat_map(|w| w.runs.values().chain(w.excluded.values()).flatten())
            .chain(self.forced.iter().map(|f| &f.run))
            .chain(self.profiles.iter().map(|p| &p.run))
            .filter(|r| r.traced.is_some())
            .count();
        let all_runs: Vec<&Run> = self
            .results
            .iter()
            .flat_map(|w| w.runs.values().chain(w.excluded.values()).flatten())
            .chain(self.forced.iter().map(|f| &f.run))
            .chain(self.profiles.iter().map(|p| &p.run))
            .collect();
        let with_foreign = all_runs
            .iter()
            .filter(|r| !r.foreign_programs.is_empty())
            .count();
        let most_foreign = all_runs
            .iter()
            .map(|r| r.foreign_programs.len())
            .max()
            .unwrap_or(0);
        let mut foreign_names: Vec<&str> = all_runs
            .iter()
            .flat_map(|r| r.foreign_programs.iter().map(String::as_str))
            .collect();
        foreign_names.sort_unstable();
        foreign_names.dedup();
        let _ = writeln!(
            out,
            "# nsipc-agent benchmark\n\n\
             Generated by `cargo xtask bench{}{}` on {}: kernel {}, {} CPUs (shared with other \
             work: load average {} before, {} at the start of each round, {} after; the bench \
             and all it starts ran at nice {}), {}, {}. {} round{} of every setup on every \
             workload, interleaved, the order rotated each round; medians (min–max over \
             rounds). Took {:.1} minutes.\n",
            if env.quick { " --quick" } else { "" },
            if env.only.is_empty() {
                String::new()
            } else {
                format!(" --only {}", env.only.join(","))
            },
            env.date,
            env.kernel,
            env.cpus,
            env.load_before,
            env.load_per_round
                .iter()
                .map(|l| l.split_whitespace().next().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", "),
            env.load_after,
            env.nice,
            env.bpftrace,
            env.stress_ng,
            env.rounds,
            if env.rounds == 1 { "" } else { "s" },
            env.minutes,
        );
        let _ = writeln!(
            out,
            "Other users' tracing programs (tracepoint, kprobe, fentry… listed by `bpftool \
             prog list` before and after each run, after waiting up to {}s for them to go away, \
             {:.0}s in all): {}. They run along with every setup, no tracing included, so the \
             rounds with some are left out of a workload's statistics whenever it has rounds \
             without.\n",
            QUIET_WAIT_PER_RUN_SECONDS,
            env.quiet_wait_seconds,
            if with_foreign == 0 {
                format!("none, in all {} runs", all_runs.len())
            } else {
                format!(
                    "loaded around {with_foreign} of {} runs, up to {most_foreign} at once \
                     ({})",
                    all_runs.len(),
                    foreign_names.join(", ")
                )
            }
        );
        let _ = writeln!(
            out,
            "Setups:\n\
             - **no tracing**.\n\
             - **floor**: `nsipc-agent bench-floor`, a minimal eBPF program on the same {hooks} \
             hooks as nsipc (empty at syscall entry and on `kfree`, where nsipc looks for the \
             frees of its objects among every kfree on the machine, and on the cgroup ones; at \
             syscall exit and on task creation and exit it writes one 128-byte record to a \
             ring buffer, stored as \
             nsipc stores its records, nsipc's wakeup policy, no filtering, nothing else), \
             drained by a consumer that discards.\n\
             - **nsipc-agent > /dev/null**: `nsipc-agent trace`, full JSON stream to /dev/null \
             (lost records read from its `LOST` map with bpftool; events = expected − lost).\n\
             - **nsipc-agent | reader**: the same into a pipe read by another process \
             (`xtask bench-reader`, which counts lines, the workload's events by comm, and \
             `agent.lost`).\n\
             - **bpftrace > /dev/null**: `xtask/src/bench/nsipc.bt`, the same syscalls and \
             filters on {bpftrace_probes} probes (bpftrace reads a syscall's arguments at its \
             entry tracepoint and keeps them in a map until its exit; nsipc reads them at the \
             exit from the saved user registers, except for unshare and setns), one `printf` \
             JSON line per event.\n\n\
             Times are per op of the workload: elapsed (CLOCK_MONOTONIC, what the brief's \
             targets are about) and the workload's own CPU time (getrusage, self + children: \
             the probes run in its context, but time spent waiting for a CPU that other work \
             holds does not count, so it is the steadier of the two on a shared machine). \
             Overhead = setup − no tracing. A ratio of overheads is given from the medians, \
             and \"per round\" as the median of the ratios computed within each round (the \
             runs of a round are close in time, so a load that drifts cancels out). Every tracer is started, awaited until all its \
             probes are attached (counted in /proc/PID/fd), stopped with SIGINT, and its \
             programs were gone from `bpftool prog list` after each of the {traced_runs} tracer \
             runs. Tracer CPU is user + system time from attached to exit (wait4 minus \
             /proc/PID/task/*/schedstat at attach), so it includes fixed costs (the 50 ms poll \
             timer, detaching), which the getppid runs, with no events, show alone (CPU ns per \
             event is only given for runs with at least {MIN_EVENTS_PER_RUN} events); peak RSS \
             is ru_maxrss (= VmHWM, start-up included).\n",
            hooks = self.hooks,
            bpftrace_probes = self.bpftrace_probes,
        );
    }

    fn targets(&self, out: &mut String) {
        let _ = writeln!(out, "## Targets\n");
        let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
        let storm = self.workloads.iter().position(|w| w.name == "storm");
        let storm_rows = if storm.is_some() {
            &[
                (Setup::AgentNull, "/dev/null", Metric::Elapsed, "elapsed"),
                (Setup::AgentPipe, "pipe", Metric::Elapsed, "elapsed"),
                (Setup::AgentNull, "/dev/null", Metric::Cpu, "workload CPU"),
                (Setup::AgentPipe, "pipe", Metric::Cpu, "workload CPU"),
            ][..]
        } else {
            &[]
        };
        let storm = storm.unwrap_or(0);
        for &(setup, what, metric, time) in storm_rows {
            let paired = self.paired_ratios(metric, storm, 0, setup, Setup::Floor);
            let paired = format!(
                "{}× [{}]",
                or_dash(median(paired.clone()).map(|r| format!("{r:.2}"))),
                paired
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let (measured, verdict) = match self.ratio(metric, storm, 0, setup, Setup::Floor) {
                Some(r) => (
                    format!("{r:.2}× (per round: median {paired})"),
                    if r <= OVERHEAD_TARGET {
                        "met".to_owned()
                    } else {
                        format!("**missed** by {:.0}%", (r / OVERHEAD_TARGET - 1.0) * 100.0)
                    },
                ),
                None => (
                    "—".to_owned(),
                    "not measurable (no floor overhead)".to_owned(),
                ),
            };
            let verdict = if self.within_noise(metric, storm, setup, 0)
                || self.within_noise(metric, storm, Setup::Floor, 0)
            {
                format!("{verdict} (but an overhead is within the noise)")
            } else {
                verdict
            };
            let _ = writeln!(
                out,
                "| storm: agent ({what}) overhead ≤ {OVERHEAD_TARGET} × floor overhead, {time} \
                 time, medians | {measured} | {verdict} |"
            );
        }
        for (index, workload) in self.workloads.iter().enumerate() {
            if !matches!(workload.name, "storm" | "stress-ng") {
                continue;
            }
            let lost = self.agent_max_lost(index);
            let _ = writeln!(
                out,
                "| {}: zero lost events, default ring buffer (all agent runs) | max lost {} | {} |",
                workload.name,
                or_dash(lost.map(|l| l.to_string())),
                match lost {
                    Some(0) => "met",
                    Some(_) => "**missed**",
                    None => "not measured",
                }
            );
        }
        let mut cases: Vec<&str> = self.forced.iter().map(|f| f.case).collect();
        cases.dedup();
        for case in cases {
            let counts: Vec<LossCounts> = self
                .forced
                .iter()
                .filter(|f| f.case == case)
                .filter_map(|f| forced_counts(&f.run))
                .collect();
            let exact = counts
                .iter()
                .filter(|c| c.seen + c.lost == c.expected)
                .count();
            let short = counts.iter().any(|c| c.seen + c.lost < c.expected);
            let excess: Vec<String> = counts
                .iter()
                .map(|c| format!("{:+}", (c.seen + c.lost) as i64 - c.expected as i64))
                .collect();
            let _ = writeln!(
                out,
                "| forced loss ({case}): emitted + lost == generated (lost records of the \
                 storm's kinds) | exact in {exact} of {} runs (emitted + lost − \
                 generated: {}) | {} |",
                counts.len(),
                excess.join(", "),
                if counts.is_empty() {
                    "not measured"
                } else if exact == counts.len() {
                    "met"
                } else if short {
                    "**missed**: events went missing uncounted"
                } else {
                    "**not exact here**: never below generated (no loss went uncounted); the \
                     excess is lost get/ctl records of other processes, which `agent.lost`'s \
                     kinds cannot tell from the workload's (see Forced loss)"
                }
            );
        }
        if let Some(rate) = median(self.json_path.iter().map(cpu_rate).collect()) {
            let _ = writeln!(
                out,
                "| JSON path ≥ 1 M events/s on one core | {} events/s | {} |",
                si(rate),
                if rate >= JSON_TARGET {
                    "met"
                } else {
                    "**missed**"
                }
            );
        }
        if let Some(memory) = &self.memory {
            memory_targets(out, memory);
        }
        let _ = writeln!(out);
    }

    fn workload(&self, out: &mut String, index: usize, workload: &Workload) {
        let _ = writeln!(out, "## {}\n\n{}.\n", workload.name, workload.description);
        let rounds =
            |runs: &BTreeMap<Setup, Vec<Run>>| runs.values().map(Vec::len).max().unwrap_or(0);
        let (used, left_out) = (
            rounds(&self.results[index].runs),
            rounds(&self.results[index].excluded),
        );
        let with_foreign = self.results[index]
            .runs
            .values()
            .flatten()
            .any(|r| !r.foreign_programs.is_empty());
        if left_out > 0 {
            let _ = writeln!(
                out,
                "Rounds used: {used} of {}; {left_out} left out (other users' tracing programs \
                 were loaded).\n",
                used + left_out
            );
        } else if with_foreign {
            let _ = writeln!(
                out,
                "Every round had other users' tracing programs loaded around some run: all \
                 {used} are used, and measure those programs too.\n"
            );
        }
        // Timing: elapsed and CPU, each with its overhead; a table per row.
        let unit = workload.unit.replace(' ', "\u{a0}");
        for (row, name) in workload.rows.iter().enumerate() {
            if workload.rows.len() > 1 {
                let _ = writeln!(out, "**{name}**\n");
            }
            let _ = writeln!(
                out,
                "| setup | ns/{unit} | overhead | CPU ns/{unit} | overhead |\n\
                 |---|---:|---:|---:|---:|"
            );
            for setup in Setup::ALL {
                let runs = self.runs(index, setup);
                let mut line = format!("| {} |", setup.label());
                for metric in [Metric::Elapsed, Metric::Cpu] {
                    let values: Vec<f64> =
                        runs.iter().map(|r| metric.of(&r.measured, row)).collect();
                    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let high = values.iter().copied().fold(0f64, f64::max);
                    let cell = self
                        .ns_per_op(metric, index, setup, row)
                        .map(|m| format!("{m:.0} ({low:.0}–{high:.0})"));
                    let overhead = match (setup, self.overhead(metric, index, setup, row)) {
                        (Setup::Bare, _) | (_, None) => None,
                        (_, Some(o)) => {
                            let bare = self
                                .ns_per_op(metric, index, Setup::Bare, row)
                                .unwrap_or(f64::NAN);
                            Some(format!("{o:+.0} ({:+.0}%)", o / bare * 100.0))
                        }
                    };
                    let _ = write!(line, " {} | {} |", or_dash(cell), or_dash(overhead));
                }
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out);
        }
        let any_noise = std::cell::Cell::new(false);
        for (row, name) in workload.rows.iter().enumerate() {
            let ratio = |metric, a, b| {
                let of_medians = self.ratio(metric, index, row, a, b);
                let paired = median(self.paired_ratios(metric, index, row, a, b));
                let noise = self.within_noise(metric, index, a, row)
                    || self.within_noise(metric, index, b, row);
                any_noise.set(any_noise.get() || noise);
                format!(
                    "**{}**{} (per round: {})",
                    or_dash(of_medians.map(|r| format!("{r:.2}"))),
                    if noise { " †" } else { "" },
                    or_dash(paired.map(|r| format!("{r:.2}")))
                )
            };
            let _ = writeln!(
                out,
                "- {name}, agent overhead / floor overhead: {} (/dev/null) and {} (pipe) \
                 elapsed, {} (/dev/null) and {} (pipe) workload CPU. bpftrace overhead / agent \
                 overhead: {} elapsed, {} workload CPU.",
                ratio(Metric::Elapsed, Setup::AgentNull, Setup::Floor),
                ratio(Metric::Elapsed, Setup::AgentPipe, Setup::Floor),
                ratio(Metric::Cpu, Setup::AgentNull, Setup::Floor),
                ratio(Metric::Cpu, Setup::AgentPipe, Setup::Floor),
                ratio(Metric::Elapsed, Setup::Bpftrace, Setup::AgentNull),
                ratio(Metric::Cpu, Setup::Bpftrace, Setup::AgentNull),
            );
        }
        if any_noise.get() {
            let _ = writeln!(
                out,
                "\n† One of the two overheads is smaller than twice the median absolute \
                 deviation of the no-tracing runs: that ratio is mostly noise."
            );
        }
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "| setup | attach s | events/s | workload's events (with its comm): emitted + lost = expected | \
             lost (max) | tracer CPU ms | CPU ns/event | peak RSS MiB | RSS at end MiB |\n\
             |---|---:|---:|---|---:|---:|---:|---:|---:|"
        );
        for setup in Setup::ALL.into_iter().skip(1) {
            let runs = self.runs(index, setup);
            let traced: Vec<&Traced> = runs.iter().filter_map(|r| r.traced.as_ref()).collect();
            let per_run = |f: &dyn Fn(&Run) -> Option<f64>| {
                median(runs.iter().filter_map(f).collect::<Vec<f64>>())
            };
            let rate = per_run(&|r| Some(events(setup, r)? as f64 / r.measured.seconds));
            let cpu_ms = median(traced.iter().map(|t| t.cpu_ns as f64 / 1e6).collect());
            let reader_ms = median(
                traced
                    .iter()
                    .filter_map(|t| Some(t.reader_cpu_ns? as f64 / 1e6))
                    .collect(),
            );
            // With few events, the tracer's fixed costs would make a meaningless per-event cost.
            let cpu_per_event = per_run(&|r| {
                let events = events(setup, r)?;
                (events >= MIN_EVENTS_PER_RUN)
                    .then(|| r.traced.as_ref().map(|t| t.cpu_ns as f64 / events as f64))?
            });
            let lost: Option<Vec<u64>> = traced.iter().map(|t| t.lost).collect();
            let accounting = if setup == Setup::AgentPipe {
                accounting(runs)
            } else {
                None
            };
            let attach = median(traced.iter().map(|t| t.attach_seconds).collect());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                setup.label(),
                or_dash(attach.map(|s| format!("{s:.1}"))),
                or_dash(rate.map(si)),
                or_dash(accounting),
                lost.and_then(|l| l.into_iter().max())
                    .map_or_else(|| "n/a".to_owned(), |l| l.to_string()),
                or_dash(cpu_ms.map(|ms| match reader_ms {
                    Some(reader) => format!("{ms:.0} (+ reader {reader:.0})"),
                    None => format!("{ms:.0}"),
                })),
                or_dash(cpu_per_event.map(|ns| format!("{ns:.0}"))),
                or_dash(
                    median(
                        traced
                            .iter()
                            .map(|t| t.max_rss_kib as f64 / 1024.0)
                            .collect()
                    )
                    .map(|m| format!("{m:.1}"))
                ),
                or_dash(
                    median(
                        traced
                            .iter()
                            .map(|t| t.end_rss_kib as f64 / 1024.0)
                            .collect()
                    )
                    .map(|m| format!("{m:.1}"))
                ),
            );
        }
        let _ = writeln!(out);
    }

    fn forced_loss(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## Forced loss (storm, nsipc-agent --raw | reader)\n\n\
             The workload knows how many events it caused; the reader counts the ones the agent \
             emitted for it (by comm) and sums `agent.lost` by the kinds it names. The agent \
             prints raw records here (`--raw`), one line each: in the lifecycle stream, an \
             IPC_RMID whose object's creation record was lost makes no line (the stream only \
             destroys what it announced), so lines and lost records would not add up there. \"lost\" is \
             the lost records of the kinds the storm makes (msg/shm/sem get and ctl); \
             \"lost, other kinds\" the rest: the probes' own `shm.freed` records (one per \
             segment, written at its kfree, from whatever context frees it), the agent's own \
             setns into namespaces while it takes an inventory after losses, other processes' \
             events. Lost records of other processes' get/ctl calls cannot be told from the \
             workload's (\"other events\" counts the events of others seen).\n\n\
             | case | expected | emitted | lost | emitted + lost | lost, other kinds | other events | exact |\n\
             |---|---:|---:|---:|---:|---:|---:|---|"
        );
        for forced in &self.forced {
            let Some(c) = forced_counts(&forced.run) else {
                let _ = writeln!(
                    out,
                    "| {} | — | — | — | — | — | — | no counts |",
                    forced.case
                );
                continue;
            };
            let total = c.seen + c.lost;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                forced.case,
                c.expected,
                c.seen,
                c.lost,
                total,
                c.lost_other_kinds,
                c.other,
                if total == c.expected {
                    "yes".to_owned()
                } else {
                    format!("no (off by {})", total as i64 - c.expected as i64)
                }
            );
        }
        let _ = writeln!(out);
    }

    fn profile(&self, out: &mut String) {
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

    fn json(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## JSON path\n\n\
             `nsipc-agent bench-json`: `trace`'s own decode + serialize code on one thread, fed \
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

/// Why the memory run's figures are not a verdict on the target, if they are not.
fn memory_caveat(run: &MemoryRun) -> Option<String> {
    let live = &run.seen_live;
    if run.namespaces < u64::from(MEMORY_NAMESPACES) {
        Some(format!(
            "not at the target's size ({} namespaces)",
            run.namespaces
        ))
    } else if live.namespaces_created < run.namespaces || live.objects_created < run.objects {
        Some(format!(
            "not measured: the stream showed {} of {} namespaces and {} of {} objects created",
            live.namespaces_created, run.namespaces, live.objects_created, run.objects
        ))
    } else if run.lost.is_none_or(|lost| lost > 0) {
        Some(format!(
            "not measured cleanly: {} records lost",
            or_dash(run.lost.map(|l| l.to_string()))
        ))
    } else {
        None
    }
}

fn memory_targets(out: &mut String, run: &MemoryRun) {
    let caveat = memory_caveat(run);
    // ru_maxrss at exit and VmHWM while alive are the same counter, read at different times.
    let peak = mib(run.hwm_end.max(run.hwm_live));
    let _ = writeln!(
        out,
        "| peak RSS under {PEAK_RSS_TARGET_MIB:.0} MiB with 10 000 namespaces and 100 000 \
         objects | {peak:.1} MiB (VmHWM over the agent's whole life; VmRSS with all {} \
         namespaces and {} objects alive: {:.1} MiB) | {} |",
        run.namespaces,
        run.objects,
        mib(run.rss_live),
        caveat.clone().unwrap_or_else(|| {
            if peak < PEAK_RSS_TARGET_MIB {
                "met".to_owned()
            } else {
                "**missed**".to_owned()
            }
        })
    );
    let dead = &run.seen_dead;
    let all_died =
        dead.namespaces_destroyed >= run.namespaces && dead.objects_destroyed >= run.objects;
    let grown = run.rss_live.saturating_sub(run.rss_before);
    let returned = run.rss_live.saturating_sub(run.rss_after);
    let share = returned as f64 / grown.max(1) as f64;
    let _ = writeln!(
        out,
        "| memory returns when they die (≥ {:.0}% of what they added to the RSS) | VmRSS {:.1} \
         MiB before, {:.1} MiB with all alive, {:.1} MiB once all died: {:.0}% given back | {} |",
        RETURNED_TARGET * 100.0,
        mib(run.rss_before),
        mib(run.rss_live),
        mib(run.rss_after),
        share * 100.0,
        if !all_died {
            format!(
                "not measured: the stream showed {} of {} namespaces and {} of {} objects \
                 destroyed",
                dead.namespaces_destroyed, run.namespaces, dead.objects_destroyed, run.objects
            )
        } else {
            caveat.unwrap_or_else(|| {
                if share >= RETURNED_TARGET {
                    "met".to_owned()
                } else {
                    "**missed**".to_owned()
                }
            })
        }
    );
}

fn memory_section(out: &mut String, run: &MemoryRun) {
    let seconds = |s: Option<f64>| or_dash(s.map(|s| format!("{s:.1} s")));
    let _ = writeln!(
        out,
        "## memory\n\n\
         `xtask bench-memory-workload` under `nsipc-agent trace | xtask bench-reader \
         --namespaces`, once: {} IPC namespaces, each made by `unshare(CLONE_NEWIPC)` with {} \
         objects (message queues, one-page shm segments never touched, one-semaphore sets, in \
         turn; the same keys in every namespace, as one application in many containers) and \
         held by a bind mount of its namespace file in the workload's own private mount \
         namespace; all alive at once; then one lazy unmount of them all lets everything die. \
         The reader follows the workload's namespaces (by `ns` and `ns_id`), so it counts the \
         destroys, which carry no comm. The agent's VmRSS and VmHWM (/proc/PID/status) are read \
         after it attached and wrote its inventory, once its stream showed every creation, and \
         {:.1} s after it showed every destruction.\n",
        run.namespaces,
        run.objects / run.namespaces.max(1),
        SETTLE.as_secs_f64(),
    );
    let row = |what: &str, seen: &Seen, created: bool| {
        let (ns, objects) = if created {
            (seen.namespaces_created, seen.objects_created)
        } else {
            (seen.namespaces_destroyed, seen.objects_destroyed)
        };
        format!("| {what} | {ns} | {objects} |")
    };
    let _ = writeln!(
        out,
        "| | namespaces | objects |\n|---|---:|---:|\n\
         | made by the workload | {} | {} |\n{}\n{}\n",
        run.namespaces,
        run.objects,
        row("created, in the stream", &run.seen_live, true),
        row("destroyed, in the stream", &run.seen_dead, false),
    );
    let _ = writeln!(
        out,
        "- The workload took {:.1} s to create everything ({:.1} s of CPU); the stream showed \
         every creation {} after that, every destruction {} after the unmount.\n\
         - With everything alive and quiet, the agent used {:.2}% of a CPU over {} s (its \
         periodic work with that much state).\n\
         - Records lost: {}.\n\
         - Objects in the host's IPC namespace: {} before, {} after (the workload's never are \
         there; other users of the machine may change it).\n",
        run.create_seconds,
        run.create_cpu_seconds,
        seconds(run.created_seen_after),
        seconds(run.destroyed_seen_after),
        run.idle_cpu_share * 100.0,
        IDLE_WINDOW.as_secs(),
        or_dash(run.lost.map(|l| l.to_string())),
        run.host_objects.0,
        run.host_objects.1,
    );
    let _ = writeln!(
        out,
        "| agent | VmRSS MiB | of which RssAnon (heap) MiB | VmHWM MiB |\n|---|---:|---:|---:|\n\
         | attached, before the workload | {:.1} | {:.1} | — |\n\
         | everything alive | {:.1} | {:.1} | {:.1} |\n\
         | everything dead | {:.1} | {:.1} | {:.1} (at exit) |\n",
        mib(run.rss_before),
        mib(run.anon[0]),
        mib(run.rss_live),
        mib(run.anon[1]),
        mib(run.hwm_live),
        mib(run.rss_after),
        mib(run.anon[2]),
        mib(run.hwm_end),
    );
}

fn cpu_rate(run: &JsonPath) -> f64 {
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

struct LossCounts {
    expected: u64,
    seen: u64,
    /// Lost records of the kinds the storm's syscalls make.
    lost: u64,
    /// Lost records of other kinds: the probes' own `shm.freed`, the agent's own setns
    /// into namespaces while it takes an inventory, other processes' events.
    lost_other_kinds: u64,
    other: u64,
}

/// The record kinds the storm's syscalls make.
const STORM_KINDS: [&str; 6] = [
    "msg.get", "shm.get", "sem.get", "msg.ctl", "shm.ctl", "sem.ctl",
];

fn forced_counts(run: &Run) -> Option<LossCounts> {
    let traced = run.traced.as_ref()?;
    let seen = traced.workload_events?;
    let total = traced.lost?;
    // Without kinds (no loss, or an agent that does not name them) all count.
    let lost = if traced.lost_kinds.is_empty() {
        total
    } else {
        STORM_KINDS
            .iter()
            .filter_map(|kind| traced.lost_kinds.get(*kind))
            .sum()
    };
    Some(LossCounts {
        expected: run.measured.expected_comm_events?,
        seen,
        lost,
        lost_other_kinds: total.saturating_sub(lost),
        other: traced.events?.saturating_sub(seen),
    })
}

/// "emitted + lost = expected" for the pipe runs, and in how many runs it held exactly.
fn accounting(runs: &[Run]) -> Option<String> {
    let counts: Vec<LossCounts> = runs.iter().filter_map(forced_counts).collect();
    let first = counts.first()?;
    let exact = counts
        .iter()
        .filter(|c| c.seen + c.lost == c.expected)
        .count();
    let off: Vec<String> = counts
        .iter()
        .filter(|c| c.seen + c.lost != c.expected)
        .map(|c| {
            format!(
                "{:+} with {} lost",
                (c.seen + c.lost) as i64 - c.expected as i64,
                c.lost
            )
        })
        .collect();
    Some(format!(
        "{} + {} = {} of {} (exact in {exact}/{} runs{})",
        first.seen,
        first.lost,
        first.seen + first.lost,
        first.expected,
        counts.len(),
        if off.is_empty() {
            String::new()
        } else {
            format!("; the others off by {}", off.join(", "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    fn memory_run(namespaces: u64, rss_after: u64, hwm_end: u64) -> MemoryRun {
        let objects = namespaces * 10;
        let seen = Seen {
            namespaces_created: namespaces,
            objects_created: objects,
            objects_destroyed: objects,
            namespaces_destroyed: namespaces,
        };
        MemoryRun {
            namespaces,
            objects,
            create_seconds: 1.0,
            create_cpu_seconds: 1.0,
            created_seen_after: Some(0.1),
            destroyed_seen_after: Some(1.0),
            seen_live: seen,
            seen_dead: seen,
            rss_before: 20 * 1024,
            rss_live: 30 * 1024,
            hwm_live: 30 * 1024,
            rss_after,
            hwm_end,
            anon: [1024, 10 * 1024, 1024],
            idle_cpu_share: 0.001,
            lost: Some(0),
            host_objects: (0, 0),
        }
    }

    /// The verdict column of each memory target row.
    fn memory_verdicts(run: &MemoryRun) -> Vec<String> {
        let mut out = String::new();
        memory_targets(&mut out, run);
        out.lines()
            .map(|row| {
                row.trim_end_matches(" |")
                    .rsplit(" | ")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn memory_targets_are_judged_on_full_clean_runs() {
        let full = u64::from(MEMORY_NAMESPACES);
        // Peak 30 MiB; 9 of the 10 MiB the live state added given back.
        assert_eq!(
            memory_verdicts(&memory_run(full, 21 * 1024, 30 * 1024)),
            ["met", "met"]
        );
        assert_eq!(
            memory_verdicts(&memory_run(full, 22 * 1024, 33 * 1024)),
            ["**missed**", "**missed**"]
        );
        let small = memory_verdicts(&memory_run(full / 10, 21 * 1024, 30 * 1024));
        assert!(
            small
                .iter()
                .all(|v| v.starts_with("not at the target's size")),
            "{small:?}"
        );
        let mut lossy = memory_run(full, 21 * 1024, 30 * 1024);
        lossy.lost = Some(3);
        assert!(memory_verdicts(&lossy)[0].starts_with("not measured cleanly"));
        let mut unseen = memory_run(full, 21 * 1024, 30 * 1024);
        unseen.seen_dead.objects_destroyed -= 1;
        assert!(memory_verdicts(&unseen)[1].starts_with("not measured"));
    }

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

    #[test]
    fn si_units() {
        assert_eq!(si(1_234_567.0), "1.23 M");
        assert_eq!(si(12_345.0), "12.3 k");
        assert_eq!(si(999.0), "999");
    }
}
