//! `cargo xtask bench`: nsipc-agent's cost, measured side by side with no tracing, a minimal
//! eBPF floor and bpftrace, on the same workloads, in one run.
//!
//! Every setup runs every workload once per round, interleaved (A B C D E A B C D E …), and the
//! median over rounds is reported, so that the noise of a shared machine falls on all setups
//! alike. Each run starts the tracer, waits until its probes are attached, runs the workload
//! (which times itself), stops the tracer and checks with bpftool that its programs are gone.

mod kernel;
pub mod memory;
mod process;
pub mod reader;
mod report;
mod setups;
pub mod workload;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use self::{
    report::{Environment, ForcedLoss, JsonPath, Profile, Report, Run, WorkloadResults},
    setups::{AgentOptions, Setup, Tools, Tracer},
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Smoke run: one round with a tenth of the work (about two minutes).
    #[arg(long)]
    quick: bool,
    /// Rounds (runs of every setup on every workload); the median is reported.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: Option<u32>,
    /// Only these parts: workloads (storm, churn, stress-ng, getppid, open/close, fork/exit,
    /// hackbench) and passes (forced-loss, profile, json, memory). Default: everything.
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
}

/// Storm iterations of the forced-loss runs, at least: 6 × 20,000 records do not fit in 8 MiB.
const FORCED_LOSS_MIN_STORM: u64 = 20_000;
/// Runs of each forced-loss case.
const FORCED_LOSS_RUNS: usize = 3;

/// The stressors of the stress-ng workload, in its YAML's names.
const STRESSORS: [&str; 3] = ["msg", "shm-sysv", "sem-sysv"];

fn define_workloads(sizes: &Sizes) -> Vec<Workload> {
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
        },
    ]
}

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
const QUIET_WAIT_PER_RUN: Duration = Duration::from_secs(20);
const QUIET_WAIT_BUDGET: Duration = Duration::from_secs(180);

/// What is left of the time the bench may wait for other users' tracing programs to go away.
struct Quiet {
    waited: Duration,
}

impl Quiet {
    /// Waits (within the budget) until no other tracing program is loaded; returns those that
    /// are still there.
    fn wait(&mut self) -> Result<Vec<String>> {
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
fn run_once(
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

fn run_json_path(tools: &Tools, records: u64) -> Result<JsonPath> {
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
            for setup in order {
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

    #[test]
    fn the_bpftrace_script_has_an_entry_and_an_exit_probe_per_syscall() {
        // 8 SysV syscalls, unshare, setns, clone, clone3 (enter and exit), task_newtask,
        // sched_process_exit.
        assert_eq!(setups::bpftrace_probes(), 26);
    }
}
