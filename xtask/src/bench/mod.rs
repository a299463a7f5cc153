//! `cargo xtask bench`: nsipc-agent's cost, measured side by side with no tracing, a minimal
//! eBPF floor and bpftrace, on the same workloads, in one run.
//!
//! Every setup runs every workload once per round, interleaved (A B C D E A B C D E …), and the
//! median over rounds is reported, so that the noise of a shared machine falls on all setups
//! alike. Each run starts the tracer, waits until its probes are attached, runs the workload
//! (which times itself), stops the tracer and checks with bpftool that its programs are gone.

mod kernel;
mod measure;
pub mod memory;
mod plan;
mod process;
pub mod reader;
mod report;
mod setups;
pub mod workload;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub use self::{
    measure::Measured,
    plan::{Workload, WorkloadKind},
};
use self::{
    measure::{QUIET_WAIT_PER_RUN, Quiet, run_json_path, run_once},
    plan::define_workloads,
    report::{Environment, ForcedLoss, Profile, Report, WorkloadResults},
    setups::{AgentOptions, Setup, Tools},
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smoke run: one round with a tenth of the work (about two minutes).
    #[arg(long)]
    quick: bool,
    /// Rounds (runs of every setup on every workload); the median is reported.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: Option<u32>,
    /// Only these parts: workloads (storm, churn, stress-ng, ping-pong, getppid, open/close,
    /// fork/exit, hackbench) and passes (forced-loss, profile, json, memory). Default: everything.
    #[arg(long, value_delimiter = ',', value_name = "PART[,..]")]
    only: Vec<String>,
    /// Where to write the report, relative to the workspace root. Default: docs/bench.md,
    /// or target/bench-only.md with --only (a partial run does not replace the full report).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Nice value of the bench and everything it starts (workloads and tracers alike): a
    /// negative one shields the measurements from other work on a shared machine.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
}

/// How much work each run does.
struct Sizes {
    rounds: usize,
    storm_iterations: u64,
    churn_iterations: u64,
    getppid_iterations: u64,
    open_close_iterations: u64,
    fork_exit_iterations: u64,
    hackbench_loops: u64,
    ping_pong_iterations: u64,
    stress_seconds: u64,
    json_records: u64,
    memory_namespaces: u32,
}

/// The memory scenario's objects per namespace: with the full size's namespaces, the issue's
/// 100 000 objects.
const MEMORY_OBJECTS_PER_NAMESPACE: u32 = 10;
/// Its full size: the issue's 10 000 live namespaces.
pub const MEMORY_NAMESPACES: u32 = 10_000;

/// The workloads that make no IPC call: what the probes cost the rest of the host.
pub const COLLATERAL: [&str; 4] = ["hackbench", "getppid", "open/close", "fork/exit"];

/// The parts `--only` can name besides the workloads.
const PASSES: [&str; 4] = ["forced-loss", "profile", "json", "memory"];

impl Sizes {
    fn new(args: &BenchArgs) -> Self {
        // Full size: each workload runs for about 0.5-1 s untraced (several seconds under
        // bpftrace), and the whole bench for a few minutes.
        let sizes = Sizes {
            rounds: 5,
            storm_iterations: 40_000,
            churn_iterations: 1_000,
            getppid_iterations: 1_000_000,
            open_close_iterations: 500_000,
            fork_exit_iterations: 2_000,
            hackbench_loops: 300,
            ping_pong_iterations: 100_000,
            stress_seconds: 2,
            json_records: 2_000_000,
            memory_namespaces: MEMORY_NAMESPACES,
        };
        let mut sizes = if args.quick {
            Sizes {
                rounds: 1,
                storm_iterations: sizes.storm_iterations / 10,
                churn_iterations: sizes.churn_iterations / 10,
                getppid_iterations: sizes.getppid_iterations / 10,
                open_close_iterations: sizes.open_close_iterations / 10,
                fork_exit_iterations: sizes.fork_exit_iterations / 10,
                hackbench_loops: sizes.hackbench_loops / 10,
                ping_pong_iterations: sizes.ping_pong_iterations / 10,
                stress_seconds: 1,
                json_records: sizes.json_records / 10,
                memory_namespaces: sizes.memory_namespaces / 10,
            }
        } else {
            sizes
        };
        if let Some(rounds) = args.rounds {
            sizes.rounds = rounds as usize;
        }
        sizes
    }
}

/// Storm iterations of the forced-loss runs, at least: 6 × 20,000 records do not fit in 8 MiB.
const FORCED_LOSS_MIN_STORM: u64 = 20_000;
/// Runs of each forced-loss case.
const FORCED_LOSS_RUNS: usize = 3;

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

pub fn run(args: &BenchArgs, root: &Path) -> Result<()> {
    let started = Instant::now();
    let sizes = Sizes::new(args);
    let storm = define_workloads(&sizes).swap_remove(0);
    let known: Vec<&str> = define_workloads(&sizes)
        .iter()
        .map(|w| w.name)
        .chain(PASSES)
        .collect();
    if let Some(unknown) = args
        .only
        .iter()
        .find(|part| !known.contains(&part.as_str()))
    {
        bail!("--only {unknown}: the parts are {}", known.join(", "));
    }
    let selected = |part: &str| args.only.is_empty() || args.only.iter().any(|p| p == part);
    // SAFETY: plain syscall on this process; children inherit the value.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, args.nice) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the bench's nice value to {}", args.nice));
    }
    let mut tools = Tools {
        agent: root.join("target/release/nsipc-agent"),
        bench: root.join("target/release/nsipc-bench"),
        xtask: root.join("target/release/xtask"),
        hooks: None,
    };
    let mut environment = Environment {
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        kernel: command_line("uname", &["-r"]),
        cpus: command_line("nproc", &[]),
        bpftrace: command_line("bpftrace", &["--version"]),
        stress_ng: command_line("stress-ng", &["--version"]),
        load_before: load_average(),
        load_after: String::new(),
        load_per_round: Vec::new(),
        quiet_wait_seconds: 0.0,
        nice: args.nice,
        rounds: sizes.rounds,
        quick: args.quick,
        only: args.only.clone(),
        minutes: 0.0,
    };
    let workloads: Vec<Workload> = define_workloads(&sizes)
        .into_iter()
        .filter(|w| selected(w.name))
        .collect();
    let mut results: Vec<WorkloadResults> = workloads
        .iter()
        .map(|_| WorkloadResults::default())
        .collect();

    // A first floor run, not measured: it tells how many hooks the probes have (which the
    // agent and bpftrace setups wait for), and warms the caches the first real run would.
    let mut quiet = Quiet {
        waited: Duration::ZERO,
    };
    run_once(
        &mut tools,
        &mut quiet,
        Setup::Floor,
        &storm,
        AgentOptions::default(),
        false,
    )?;
    for round in 1..=sizes.rounds {
        environment.load_per_round.push(load_average());
        // The order rotates every round, so that no setup always runs right after the same
        // one (the kernel may still be freeing what the previous setup left, e.g. namespaces).
        let mut order = Setup::ALL;
        order.rotate_left((round - 1) % Setup::ALL.len());
        for (workload, results) in workloads.iter().zip(&mut results) {
            for setup in order
                .into_iter()
                .filter(|setup| workload.activity || !setup.counts_activity())
            {
                let run = run_once(
                    &mut tools,
                    &mut quiet,
                    setup,
                    workload,
                    AgentOptions::default(),
                    false,
                )?;
                eprintln!(
                    "bench: round {round}/{}: {:<9} {:<24} {}",
                    sizes.rounds,
                    workload.name,
                    setup.label(),
                    run.measured
                        .ns_per_op
                        .iter()
                        .zip(&run.measured.cpu_ns_per_op)
                        .map(|(ns, cpu)| format!("{ns:.0} ns ({cpu:.0} CPU)/{}", workload.unit))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                results.runs.entry(setup).or_default().push(run);
            }
        }
    }
    // Another user's tracing programs on the same hooks are measured along with every setup,
    // "no tracing" included: where some rounds were free of them, only those rounds count.
    for results in &mut results {
        let WorkloadResults { runs, excluded } = results;
        let clean: Vec<bool> = (0..sizes.rounds)
            .map(|round| {
                runs.values()
                    .all(|runs| runs[round].foreign_programs.is_empty())
            })
            .collect();
        if clean.contains(&true) {
            for (setup, runs) in runs.iter_mut() {
                for (run, clean) in std::mem::take(runs).into_iter().zip(&clean) {
                    if *clean {
                        runs.push(run);
                    } else {
                        excluded.entry(*setup).or_default().push(run);
                    }
                }
            }
        }
    }
    let hooks = tools.hooks.context("the floor never reported its hooks")?;

    // Losses, forced on the storm: a ring buffer that holds 34 records; a reader that reads
    // nothing until the workload is over, with a storm that overflows the default 8 MiB ring
    // buffer (about 70,000 records) whatever the size of the other runs. The agent prints raw
    // records there: in the lifecycle stream a delivered IPC_RMID of an object whose creation
    // record was lost makes no line (it only destroys what it announced), so lines and lost
    // records only add up record for record. The `agent.lost`
    // total is machine-wide: a loss among other processes' events (other people's tests on a
    // shared machine) breaks the equation, so each case runs several times, all reported.
    let loss_storm = Workload {
        kind: WorkloadKind::Generator(
            workload::Kind::Storm,
            sizes.storm_iterations.max(FORCED_LOSS_MIN_STORM),
        ),
        ..define_workloads(&sizes).swap_remove(0)
    };
    let mut forced = Vec::new();
    let forced_cases = if selected("forced-loss") {
        &[
            (
                "`--ring-buffer-size 4K`, reader keeping up",
                AgentOptions {
                    ring_buffer_size: Some("4K"),
                    raw: true,
                    ..AgentOptions::default()
                },
            ),
            (
                "default ring buffer (8M), reader stalled until the workload ends",
                AgentOptions {
                    stall_reader: true,
                    raw: true,
                    ..AgentOptions::default()
                },
            ),
        ][..]
    } else {
        &[]
    };
    for &(case, options) in forced_cases {
        for attempt in 1..=FORCED_LOSS_RUNS {
            eprintln!("bench: forced loss {attempt}/{FORCED_LOSS_RUNS}: {case}");
            let run = run_once(
                &mut tools,
                &mut quiet,
                Setup::AgentPipe,
                &loss_storm,
                options,
                false,
            )?;
            forced.push(ForcedLoss { case, run });
        }
    }

    // Where the time goes inside the kernel: the probes' own run time, with the kernel's eBPF
    // statistics on (they add two clock reads per program run, so only for this pass).
    // The same on the workloads that make no IPC call: the probes' cost to the rest of the host.
    let mut profiles = Vec::new();
    if selected("profile") {
        eprintln!("bench: profiling the probes on the storm and on work they do not trace");
        let stats = kernel::RunTimeStats::enable()?;
        for workload in define_workloads(&sizes)
            .iter()
            .filter(|w| w.name == "storm" || COLLATERAL.contains(&w.name))
        {
            for setup in [Setup::Floor, Setup::AgentNull] {
                let run = run_once(
                    &mut tools,
                    &mut quiet,
                    setup,
                    workload,
                    AgentOptions::default(),
                    true,
                )?;
                profiles.push(Profile {
                    workload: workload.name,
                    setup,
                    run,
                });
            }
        }
        drop(stats);
    }

    let mut json_path = Vec::new();
    if selected("json") {
        eprintln!("bench: JSON path");
        json_path = (0..3)
            .map(|_| run_json_path(&tools, sizes.json_records))
            .collect::<Result<Vec<_>>>()?;
    }

    // Once, not per round: it holds thousands of namespaces for tens of seconds.
    let memory = if selected("memory") {
        eprintln!(
            "bench: memory, {} namespaces × {MEMORY_OBJECTS_PER_NAMESPACE} objects",
            sizes.memory_namespaces
        );
        Some(memory::run(
            &mut tools,
            sizes.memory_namespaces,
            MEMORY_OBJECTS_PER_NAMESPACE,
        )?)
    } else {
        None
    };

    environment.load_after = load_average();
    environment.quiet_wait_seconds = quiet.waited.as_secs_f64();
    environment.minutes = started.elapsed().as_secs_f64() / 60.0;
    let report = Report {
        environment,
        hooks,
        bpftrace_probes: setups::bpftrace_probes(),
        workloads: &workloads,
        results,
        forced,
        profiles,
        json_path,
        memory,
    }
    .render();
    let output = root.join(
        args.output
            .as_deref()
            .unwrap_or(Path::new(if args.only.is_empty() {
                "docs/bench.md"
            } else {
                "target/bench-only.md"
            })),
    );
    fs::write(&output, &report).with_context(|| format!("writing {}", output.display()))?;
    print!("{report}");
    eprintln!("bench: report written to {}", output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bpftrace_script_has_an_entry_and_an_exit_probe_per_syscall() {
        // 8 SysV syscalls, unshare, setns, clone, clone3 (enter and exit), task_newtask,
        // sched_process_exit.
        assert_eq!(setups::bpftrace_probes(), 26);
    }
}
