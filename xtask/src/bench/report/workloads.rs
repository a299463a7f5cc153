//! A workload's section: the time per op of every setup with its overhead, the ratios of the
//! overheads, and what each tracer handled, lost and cost.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    MIN_EVENTS_PER_RUN, Report, Run,
    forced_loss::accounting,
    or_dash, si,
    stats::{Metric, median},
};
use crate::bench::{
    Workload,
    setups::{Setup, Traced},
};

/// The setups that ran on `workload`, in the report's order.
fn setups(workload: &Workload) -> impl Iterator<Item = Setup> + use<> {
    let activity = workload.activity;
    Setup::ALL
        .into_iter()
        .filter(move |setup| activity || !setup.counts_activity())
}

/// Events a tracer handled in a run: what it reported, or for the agent writing to /dev/null
/// (whose stream nobody reads) what the workload made minus what was lost.
fn events(setup: Setup, run: &Run) -> Option<u64> {
    let traced = run.traced.as_ref()?;
    match setup {
        Setup::AgentNull | Setup::AgentMetrics | Setup::AgentActivity => {
            Some(run.measured.expected_events? - traced.lost?)
        }
        _ => traced.events,
    }
}

impl Report<'_> {
    pub(super) fn workload(&self, out: &mut String, index: usize, workload: &Workload) {
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
            for setup in setups(workload) {
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
                 overhead: {} elapsed, {} workload CPU. Agent with metrics scraped / without: \
                 {} elapsed, {} workload CPU.",
                ratio(Metric::Elapsed, Setup::AgentNull, Setup::Floor),
                ratio(Metric::Elapsed, Setup::AgentPipe, Setup::Floor),
                ratio(Metric::Cpu, Setup::AgentNull, Setup::Floor),
                ratio(Metric::Cpu, Setup::AgentPipe, Setup::Floor),
                ratio(Metric::Elapsed, Setup::Bpftrace, Setup::AgentNull),
                ratio(Metric::Cpu, Setup::Bpftrace, Setup::AgentNull),
                ratio(Metric::Elapsed, Setup::AgentMetrics, Setup::AgentNull),
                ratio(Metric::Cpu, Setup::AgentMetrics, Setup::AgentNull),
            );
            if workload.activity {
                let _ = writeln!(
                    out,
                    "- {name}, activity counted: agent overhead / floor (with the activity \
                     hooks) overhead: {} elapsed, {} workload CPU; agent with activity / \
                     without: {} elapsed, {} workload CPU.",
                    ratio(Metric::Elapsed, Setup::AgentActivity, Setup::FloorActivity),
                    ratio(Metric::Cpu, Setup::AgentActivity, Setup::FloorActivity),
                    ratio(Metric::Elapsed, Setup::AgentActivity, Setup::AgentNull),
                    ratio(Metric::Cpu, Setup::AgentActivity, Setup::AgentNull),
                );
            }
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
        for setup in setups(workload).skip(1) {
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
}
