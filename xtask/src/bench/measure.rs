//! One setup on one workload: attach the tracer, run the workload and read what it measured,
//! detach; and the JSON path's run.

use std::{
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    kernel,
    plan::{STRESSORS, Workload, WorkloadKind},
    report::{JsonPath, Run},
    setups::{AgentOptions, Setup, Tools, Tracer},
    workload,
};

/// What one workload run measured.
pub struct Measured {
    /// Elapsed ns per op, one per row.
    pub ns_per_op: Vec<f64>,
    /// CPU ns per op (the workload's own user + system time), one per row.
    pub cpu_ns_per_op: Vec<f64>,
    pub seconds: f64,
    /// The workload's CPU time in all (user + system, its children included).
    pub cpu_seconds: f64,
    /// Lifecycle events nsipc should write for it, where the workload knows.
    pub expected_events: Option<u64>,
    /// Those of them that carry the workload's comm: what the pipe reader can count as its.
    pub expected_comm_events: Option<u64>,
}

fn run_generator(tools: &Tools, kind: workload::Kind, iterations: u64) -> Result<Measured> {
    let kind_name = kind.name();
    let out = Command::new(&tools.xtask)
        .args(["bench-workload", &kind_name, "--iterations"])
        .arg(iterations.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running the workload generator")?;
    if !out.status.success() {
        bail!("the {kind_name} workload failed ({})", out.status);
    }
    let result: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the {kind_name} workload's result"))?;
    let ns = result["ns"].as_u64().context("no ns")? as f64;
    let cpu_ns = result["cpu_ns"].as_u64().context("no cpu_ns")? as f64;
    let ops = result["ops"].as_u64().context("no ops")? as f64;
    Ok(Measured {
        ns_per_op: vec![ns / ops],
        cpu_ns_per_op: vec![cpu_ns / ops],
        seconds: ns / 1e9,
        cpu_seconds: cpu_ns / 1e9,
        expected_events: result["events"].as_u64(),
        expected_comm_events: result["comm_events"].as_u64(),
    })
}

/// `key: value` of the stressor `stressor` in stress-ng's YAML report.
fn stress_metric(yaml: &str, stressor: &str, key: &str) -> Option<f64> {
    let start = yaml.find(&format!("- stressor: {stressor}\n"))?;
    yaml[start..]
        .lines()
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with("- stressor:"))
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

fn run_stress_ng(seconds: u64) -> Result<Measured> {
    let yaml_path = std::env::temp_dir().join(format!("nsipc-bench-{}.yaml", std::process::id()));
    let out = Command::new("stress-ng")
        .args(["--msg", "1", "--shm-sysv", "1", "--shm-sysv-bytes", "1M"])
        .args(["--sem-sysv", "1", "--metrics-brief", "--timeout"])
        .arg(format!("{seconds}s"))
        .arg("--yaml")
        .arg(&yaml_path)
        .stdin(Stdio::null())
        .output()
        .context("running stress-ng")?;
    let yaml = fs::read_to_string(&yaml_path);
    let _ = fs::remove_file(&yaml_path);
    if !out.status.success() {
        bail!(
            "stress-ng failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let yaml = yaml.context("reading stress-ng's YAML report")?;
    let mut ns_per_op = Vec::new();
    let mut cpu_ns_per_op = Vec::new();
    let mut wall = 0f64;
    let mut stress_cpu_seconds = 0f64;
    for stressor in STRESSORS {
        let rate = |key| {
            stress_metric(&yaml, stressor, key)
                .filter(|rate| *rate > 0.0)
                .with_context(|| format!("no {key} for {stressor} in stress-ng's report"))
        };
        ns_per_op.push(1e9 / rate("bogo-ops-per-second-real-time")?);
        cpu_ns_per_op.push(1e9 / rate("bogo-ops-per-second-usr-sys-time")?);
        wall = wall.max(stress_metric(&yaml, stressor, "wall-clock-time").unwrap_or(0.0));
        stress_cpu_seconds += stress_metric(&yaml, stressor, "user-time").unwrap_or(0.0)
            + stress_metric(&yaml, stressor, "system-time").unwrap_or(0.0);
    }
    Ok(Measured {
        ns_per_op,
        cpu_ns_per_op,
        seconds: wall,
        cpu_seconds: stress_cpu_seconds,
        expected_events: None,
        expected_comm_events: None,
    })
}

fn run_workload(tools: &Tools, workload: &Workload) -> Result<Measured> {
    match workload.kind {
        WorkloadKind::Generator(kind, iterations) => run_generator(tools, kind, iterations),
        WorkloadKind::StressNg { seconds } => run_stress_ng(seconds),
    }
}

/// Waiting, before a run, for other users' tracing programs to go away: at most this long per
/// run, and this long in all (past it, runs start at once and are only marked).
pub(super) const QUIET_WAIT_PER_RUN: Duration = Duration::from_secs(20);
const QUIET_WAIT_BUDGET: Duration = Duration::from_secs(180);

/// What is left of the time the bench may wait for other users' tracing programs to go away.
pub(super) struct Quiet {
    pub(super) waited: Duration,
}

impl Quiet {
    /// Waits (within the budget) until no other tracing program is loaded; returns those that
    /// are still there.
    pub(super) fn wait(&mut self) -> Result<Vec<String>> {
        let start = Instant::now();
        let limit = QUIET_WAIT_PER_RUN.min(QUIET_WAIT_BUDGET.saturating_sub(self.waited));
        loop {
            let foreign = kernel::tracing_programs()?;
            if foreign.is_empty() || start.elapsed() >= limit {
                self.waited += start.elapsed();
                return Ok(foreign);
            }
            thread::sleep(Duration::from_millis(500));
        }
    }
}

/// One setup on one workload: attach, measure, detach.
pub(super) fn run_once(
    tools: &mut Tools,
    quiet: &mut Quiet,
    setup: Setup,
    workload: &Workload,
    options: AgentOptions,
    profile: bool,
) -> Result<Run> {
    let mut foreign_programs = quiet.wait()?;
    let tracer = match setup {
        Setup::Bare => None,
        _ => Some(Tracer::start(tools, setup, options, workload.comm_prefix)?),
    };
    let measured = run_workload(tools, workload)
        .with_context(|| format!("{} under {}", workload.name, setup.label()))?;
    let traced = match tracer {
        Some(tracer) => Some(
            tracer
                .stop(tools, workload.comm_prefix, profile)
                .with_context(|| format!("stopping {} after {}", setup.label(), workload.name))?,
        ),
        None => None,
    };
    // Ours are gone by now (stop waits for that): what is loaded belongs to someone else.
    // Whichever of before and after had more, so that the count means "at once".
    let after = kernel::tracing_programs()?;
    if after.len() > foreign_programs.len() {
        foreign_programs = after;
    }
    Ok(Run {
        measured,
        traced,
        foreign_programs,
    })
}

pub(super) fn run_json_path(tools: &Tools, records: u64) -> Result<JsonPath> {
    let out = Command::new(&tools.bench)
        .args(["json", "--records"])
        .arg(records.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running nsipc-bench json")?;
    if !out.status.success() {
        bail!("nsipc-bench json failed ({})", out.status);
    }
    let result: Value = serde_json::from_slice(&out.stdout).context("parsing nsipc-bench json")?;
    let field = |key: &str| {
        result[key]
            .as_u64()
            .with_context(|| format!("nsipc-bench json: no {key}"))
    };
    Ok(JsonPath {
        records: field("records")?,
        ns: field("ns")?,
        cpu_ns: field("cpu_ns")?,
        bytes: field("bytes")?,
        container_cpu_ns: field("container_cpu_ns")?,
        container_bytes: field("container_bytes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "metrics:\n    - stressor: msg\n      bogo-ops: 192463\n      \
        bogo-ops-per-second-real-time: 94549.058999\n      wall-clock-time: 2.035589\n\n    \
        - stressor: shm-sysv\n      bogo-ops: 37\n      bogo-ops-per-second-real-time: 17.65\n";

    #[test]
    fn reads_stress_ng_metrics_per_stressor() {
        assert_eq!(
            stress_metric(YAML, "msg", "bogo-ops-per-second-real-time"),
            Some(94549.058999)
        );
        assert_eq!(
            stress_metric(YAML, "msg", "wall-clock-time"),
            Some(2.035589)
        );
        assert_eq!(stress_metric(YAML, "shm-sysv", "bogo-ops"), Some(37.0));
        assert_eq!(stress_metric(YAML, "shm-sysv", "wall-clock-time"), None);
        assert_eq!(stress_metric(YAML, "sem-sysv", "bogo-ops"), None);
    }
}
