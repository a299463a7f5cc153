//! The report: medians, overheads, ratios and targets, as Markdown (docs/bench.md).
//!
//! Each section of the report has its own file. This one holds what the bench hands over
//! ([`Report`] and the runs in it), the order of the sections, and the formatting helpers
//! several sections share.

mod forced_loss;
mod header;
mod json_path;
mod memory;
mod profile;
mod stats;
mod targets;
mod workloads;

use std::collections::BTreeMap;

use super::{
    Measured, Workload,
    memory::MemoryRun,
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
    /// The workload's name.
    pub workload: &'static str,
    pub setup: Setup,
    pub run: Run,
}

/// One `nsipc-bench json` run: the same records as from a host task and as from a container's.
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

/// Fewer events in a run than this, and no CPU time per event is computed.
const MIN_EVENTS_PER_RUN: u64 = 1_000;

impl Report<'_> {
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
            memory::memory_section(&mut out, memory);
        }
        out
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_units() {
        assert_eq!(si(1_234_567.0), "1.23 M");
        assert_eq!(si(12_345.0), "12.3 k");
        assert_eq!(si(999.0), "999");
    }
}
