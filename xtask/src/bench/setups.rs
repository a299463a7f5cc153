//! The tracing setups compared: starting each, waiting until its probes are attached, and
//! stopping it with what it cost and counted, checking that nothing stays loaded.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    kernel,
    process::{Lines, Process},
};

/// How long the agent's link count must stay the same before it counts as attached.
const LINKS_SETTLED: Duration = Duration::from_millis(300);

/// How long a tracer may take to attach, and to stop (draining a stalled pipe included).
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the kernel may take to free the programs of a tracer that exited.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setup {
    /// Nothing attached.
    Bare,
    /// `nsipc-bench floor`: minimal programs on the same hooks, a discarding consumer.
    Floor,
    /// `nsipc-agent trace > /dev/null`.
    AgentNull,
    /// `nsipc-agent trace | xtask bench-reader`.
    AgentPipe,
    /// `nsipc-agent trace --metrics-addr 127.0.0.1:PORT > /dev/null`, scraped every second.
    AgentMetrics,
    /// `bpftrace -e nsipc.bt > /dev/null`.
    Bpftrace,
    /// `nsipc-bench floor --activity`: the floor, and the empty program on the activity hooks.
    FloorActivity,
    /// `nsipc-agent trace --activity-interval 10 > /dev/null`.
    AgentActivity,
}

impl Setup {
    /// In the order of the report (and of the first round).
    pub const ALL: [Setup; 8] = [
        Setup::Bare,
        Setup::Floor,
        Setup::AgentNull,
        Setup::AgentPipe,
        Setup::AgentMetrics,
        Setup::Bpftrace,
        Setup::FloorActivity,
        Setup::AgentActivity,
    ];

    /// The setups that count activity: run only on the workloads that make such calls.
    pub fn counts_activity(self) -> bool {
        matches!(self, Setup::FloorActivity | Setup::AgentActivity)
    }

    pub fn label(self) -> &'static str {
        match self {
            Setup::Bare => "no tracing",
            Setup::Floor => "floor",
            Setup::AgentNull => "nsipc-agent > /dev/null",
            Setup::AgentPipe => "nsipc-agent | reader",
            Setup::AgentMetrics => "nsipc-agent --metrics-addr > /dev/null",
            Setup::Bpftrace => "bpftrace > /dev/null",
            Setup::FloorActivity => "floor + activity hooks",
            Setup::AgentActivity => "nsipc-agent --activity-interval 10 > /dev/null",
        }
    }
}

/// The bpftrace equivalent of the agent.
pub const BPFTRACE_SCRIPT: &str = include_str!("nsipc.bt");

/// Probes in [`BPFTRACE_SCRIPT`]: one per line that starts with a probe type.
pub fn bpftrace_probes() -> usize {
    BPFTRACE_SCRIPT
        .lines()
        .filter(|line| line.starts_with("tracepoint:"))
        .count()
}

/// The programs the setups run.
pub struct Tools {
    pub agent: PathBuf,
    /// `nsipc-bench`: the floor tracer and the JSON path alone.
    pub bench: PathBuf,
    /// A release build of xtask: the workload generator and the pipe reader.
    pub xtask: PathBuf,
    /// Hooks of the nsipc probes, as the floor reported them.
    pub hooks: Option<usize>,
}

/// Variations of the agent setups, to force losses.
#[derive(Clone, Copy, Default)]
pub struct AgentOptions {
    /// `--ring-buffer-size`, if not the default.
    pub ring_buffer_size: Option<&'static str>,
    /// `--raw`: one line per kernel record, so that lines and lost records add up.
    pub raw: bool,
    /// Start the pipe reader only once the workload is over: the agent blocks on a full pipe
    /// meanwhile and the kernel must drop what does not fit in the ring buffer.
    pub stall_reader: bool,
    /// The pipe reader follows the workload's namespaces and reports its counts as they
    /// change ([`Tracer::reader_progress`]).
    pub follow_namespaces: bool,
}

/// A program's run statistics, while [`kernel::RunTimeStats`] were on.
pub struct ProgramStats {
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

/// What a tracer cost and counted over one run.
pub struct Traced {
    /// From spawn until every probe was attached.
    pub attach_seconds: f64,
    /// CPU time (user + system) from "attached" to exit: the workload, the drain, the detach.
    pub cpu_ns: u64,
    /// Peak RSS over the whole life, start-up included (ru_maxrss = VmHWM).
    pub max_rss_kib: u64,
    /// RSS just before it was told to stop.
    pub end_rss_kib: u64,
    /// Records the kernel could not buffer (agent and floor).
    pub lost: Option<u64>,
    /// `lost` by record kind (the reader's sum of `agent.lost`'s `kinds`).
    pub lost_kinds: BTreeMap<String, u64>,
    /// Events the tracer handled: floor records, or every kernel event the reader saw.
    pub events: Option<u64>,
    /// Events the reader attributed to the workload (by comm).
    pub workload_events: Option<u64>,
    pub reader_cpu_ns: Option<u64>,
    /// Filled when asked to profile.
    pub programs: Vec<ProgramStats>,
    /// The metrics endpoint's scrapes that succeeded (metrics setup only).
    pub scrapes: Option<u64>,
}

enum Reader {
    Running {
        process: Process,
        stdout: Lines,
    },
    /// The agent's stdout, not read by anyone yet.
    Stalled(ChildStdout),
}

pub struct Tracer {
    setup: Setup,
    options: AgentOptions,
    process: Process,
    stdout: Option<Lines>,
    stderr: Lines,
    reader: Option<Reader>,
    attach_seconds: f64,
    cpu_at_ready_ns: u64,
    prog_ids: Vec<u32>,
    /// Scrapes the agent's metrics endpoint while it runs (metrics setup only).
    scraper: Option<Scraper>,
    /// Each program's (runs, run time) once attached: a profile counts from there, so the
    /// tracer's own start-up (its inventory's frees, say) is not charged to the workload.
    stats_at_ready: BTreeMap<u32, (u64, u64)>,
    map_ids: Vec<u32>,
}

fn spawn_reader(
    tools: &Tools,
    stdin: ChildStdout,
    comm_prefix: &str,
    options: AgentOptions,
) -> Result<Reader> {
    let mut cmd = Command::new(&tools.xtask);
    cmd.args(["bench-reader", "--comm-prefix", comm_prefix]);
    if options.follow_namespaces {
        cmd.arg("--namespaces");
    }
    if options.raw {
        cmd.arg("--records");
    }
    let mut process = Process::spawn(
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        "the pipe reader",
    )?;
    let stdout = Lines::new(process.child.stdout.take().expect("piped"));
    Ok(Reader::Running { process, stdout })
}

fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

impl Tracer {
    /// Starts `setup` (not [`Setup::Bare`]) and returns once all its probes are attached.
    pub fn start(
        tools: &mut Tools,
        setup: Setup,
        options: AgentOptions,
        comm_prefix: &str,
    ) -> Result<Self> {
        let mut cmd;
        let mut metrics = None;
        match setup {
            Setup::Bare => unreachable!("nothing to start"),
            Setup::Floor | Setup::FloorActivity => {
                cmd = Command::new(&tools.bench);
                cmd.arg("floor").stdout(Stdio::piped());
                if setup == Setup::FloorActivity {
                    cmd.arg("--activity");
                }
            }
            Setup::AgentNull | Setup::AgentPipe | Setup::AgentMetrics | Setup::AgentActivity => {
                cmd = Command::new(&tools.agent);
                cmd.arg("trace");
                if setup == Setup::AgentActivity {
                    cmd.args(["--activity-interval", "10"]);
                }
                if setup == Setup::AgentMetrics {
                    metrics = Some(Scraper::address()?);
                    cmd.arg("--metrics-addr")
                        .arg(metrics.expect("set").to_string());
                }
                if let Some(size) = options.ring_buffer_size {
                    cmd.args(["--ring-buffer-size", size]);
                }
                if options.raw {
                    cmd.arg("--raw");
                }
                cmd.stdout(if setup != Setup::AgentPipe {
                    Stdio::null()
                } else {
                    Stdio::piped()
                });
            }
            Setup::Bpftrace => {
                cmd = Command::new("bpftrace");
                cmd.args(["-e", BPFTRACE_SCRIPT]).stdout(Stdio::null());
            }
        }
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut process = Process::spawn(&mut cmd, setup.label())?;
        let stderr = Lines::new(process.child.stderr.take().expect("piped"));
        let mut stdout = None;
        let mut reader = None;
        if let Some(out) = process.child.stdout.take() {
            if setup == Setup::AgentPipe {
                reader = Some(if options.stall_reader {
                    Reader::Stalled(out)
                } else {
                    spawn_reader(tools, out, comm_prefix, options)?
                });
            } else {
                stdout = Some(Lines::new(out));
            }
        }
        let mut tracer = Self {
            setup,
            options,
            process,
            stdout,
            stderr,
            reader,
            attach_seconds: 0.0,
            cpu_at_ready_ns: 0,
            prog_ids: Vec::new(),
            scraper: None,
            stats_at_ready: BTreeMap::new(),
            map_ids: Vec::new(),
        };
        tracer.wait_attached(tools)?;
        tracer.attach_seconds = spawned.elapsed().as_secs_f64();
        tracer.scraper = metrics.map(Scraper::start);
        let pid = tracer.process.pid();
        tracer.cpu_at_ready_ns = kernel::cpu_ns(pid)?;
        let fds = kernel::bpf_fds(pid)?;
        tracer.prog_ids = fds.progs.iter().map(|p| p.id).collect();
        tracer.stats_at_ready = fds
            .progs
            .iter()
            .map(|p| (p.id, (p.run_cnt, p.run_time_ns)))
            .collect();
        tracer.map_ids = fds.map_ids;
        Ok(tracer)
    }

    fn failed(&self, what: &str) -> anyhow::Error {
        let stderr = self.stderr.so_far().join("\n");
        anyhow::anyhow!("{} {what}; its stderr:\n{stderr}", self.setup.label())
    }

    /// Waits until every probe is attached: the floor says so; for the others, the attachments
    /// are counted in /proc/PID/fd, since their stdout goes where the harness cannot read it.
    fn wait_attached(&mut self, tools: &mut Tools) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        if let Some(stdout) = &self.stdout {
            let line = stdout.next(START_TIMEOUT);
            let ready: Value = line
                .as_deref()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            if ready["event"] != "floor.ready" {
                return Err(self.failed("did not report floor.ready"));
            }
            // The hooks of the default setups (the activity ones have more).
            if self.setup == Setup::Floor {
                tools.hooks = ready["programs"].as_u64().map(|n| n as usize);
            }
            return Ok(());
        }
        let hooks = tools
            .hooks
            .context("the warm-up floor run reports how many hooks the probes have")?;
        // The agent attaches more programs than the floor has hooks (two kfree copies), one at
        // a time, then takes its inventory of what exists: it is ready once its links have
        // stopped growing for a while. A workload started at the floor's count could create
        // its first object while the inventory ran, which then reported it as `msg.exists`
        // (no comm) instead of `msg.create`: one event short in the pipe's count, now and
        // then, with nothing lost.
        let mut links_seen = (0, Instant::now());
        loop {
            if self.process.try_exit()?.is_some() {
                return Err(self.failed("exited while starting"));
            }
            let fds = kernel::bpf_fds(self.process.pid())?;
            if fds.links != links_seen.0 {
                links_seen = (fds.links, Instant::now());
            }
            let attached = match self.setup {
                // Every program through a bpf_link.
                Setup::AgentNull
                | Setup::AgentPipe
                | Setup::AgentMetrics
                | Setup::AgentActivity => {
                    fds.links >= hooks && links_seen.1.elapsed() >= LINKS_SETTLED
                }
                // A perf event per tracepoint plus one output buffer per CPU.
                _ => fds.progs.len() >= hooks && fds.perf_events >= hooks + online_cpus(),
            };
            if attached {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failed(&format!(
                    "did not attach {hooks} probes within {START_TIMEOUT:?} ({} links, {} perf \
                     events, {} programs)",
                    fds.links,
                    fds.perf_events,
                    fds.progs.len()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.process.pid()
    }

    /// The pipe reader's latest counts, if it printed any since the last call (it does as the
    /// stream goes with [`AgentOptions::follow_namespaces`]).
    pub fn reader_progress(&self) -> Option<Value> {
        let Some(Reader::Running { stdout, .. }) = &self.reader else {
            return None;
        };
        let lines = stdout.so_far();
        serde_json::from_str(lines.last()?).ok()
    }

    /// Stops the tracer (SIGINT: it detaches, drains, exits), collects what it counted, and
    /// checks with bpftool that none of its programs is still loaded.
    pub fn stop(mut self, tools: &Tools, comm_prefix: &str, profile: bool) -> Result<Traced> {
        let pid = self.process.pid();
        let mut programs = Vec::new();
        if profile {
            let progs = kernel::bpf_fds(pid)?.progs;
            let ids: Vec<u32> = progs.iter().map(|p| p.id).collect();
            let names = kernel::program_names(&ids)?;
            for prog in progs {
                let (runs, time) = self
                    .stats_at_ready
                    .get(&prog.id)
                    .copied()
                    .unwrap_or_default();
                let runs = prog.run_cnt.saturating_sub(runs);
                if runs > 0 {
                    programs.push(ProgramStats {
                        name: names.get(&prog.id).cloned().unwrap_or_default(),
                        runs,
                        run_time_ns: prog.run_time_ns.saturating_sub(time),
                    });
                }
            }
        }
        let end_rss_kib = kernel::vm_rss_kib(pid)?;
        // The /dev/null stream cannot be read: its loss counter is read from the kernel.
        let scrapes = self.scraper.take().map(Scraper::stop).transpose()?;
        let mut lost = if matches!(
            self.setup,
            Setup::AgentNull | Setup::AgentMetrics | Setup::AgentActivity
        ) {
            kernel::per_cpu_counter(&self.map_ids, "LOST")?
        } else {
            None
        };
        if let Some(Reader::Stalled(_)) = &self.reader
            && let Some(Reader::Stalled(out)) = self.reader.take()
        {
            self.reader = Some(spawn_reader(
                tools,
                out,
                comm_prefix,
                AgentOptions {
                    follow_namespaces: false,
                    ..self.options
                },
            )?);
        }
        self.process.signal(libc::SIGINT)?;
        let exit = self.process.wait(STOP_TIMEOUT)?;
        if !exit.success() {
            return Err(self.failed(&format!("failed (wait status {})", exit.status)));
        }
        let mut events = None;
        if let Some(stdout) = &self.stdout {
            let stop: Value = stdout
                .rest()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["event"] == "floor.stop")
                .with_context(|| "the floor did not report floor.stop")?;
            events = stop["records"].as_u64();
            lost = stop["lost"].as_u64();
        }
        let mut workload_events = None;
        let mut lost_kinds = BTreeMap::new();
        let mut reader_cpu_ns = None;
        if let Some(Reader::Running {
            mut process,
            stdout,
        }) = self.reader.take()
        {
            let reader_exit = process.wait(STOP_TIMEOUT)?;
            let counts: Value = stdout
                .rest()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
                .context("the pipe reader printed no counts")?;
            if !reader_exit.success() {
                bail!(
                    "the pipe reader failed (wait status {})",
                    reader_exit.status
                );
            }
            events = counts["kernel_events"].as_u64();
            workload_events = counts["workload_events"].as_u64();
            lost = counts["lost"].as_u64();
            if let Some(kinds) = counts["lost_kinds"].as_object() {
                lost_kinds = kinds
                    .iter()
                    .filter_map(|(kind, count)| Some((kind.clone(), count.as_u64()?)))
                    .collect();
            }
            reader_cpu_ns = Some(reader_exit.cpu_ns);
        }
        // The kernel frees a detached program after an RCU grace period, not at once.
        let deadline = Instant::now() + UNLOAD_TIMEOUT;
        loop {
            let left = kernel::programs_still_loaded(&self.prog_ids)?;
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} exited but bpftool still lists its programs {left:?} after {:?}",
                    self.setup.label(),
                    UNLOAD_TIMEOUT
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Traced {
            attach_seconds: self.attach_seconds,
            cpu_ns: exit.cpu_ns.saturating_sub(self.cpu_at_ready_ns),
            max_rss_kib: exit.max_rss_kib,
            end_rss_kib,
            lost,
            lost_kinds,
            events,
            workload_events,
            reader_cpu_ns,
            programs,
            scrapes,
        })
    }
}

/// How often the metrics setup's endpoint is scraped: more often than Prometheus' default
/// (every 15 s or minute), so that its cost shows.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A thread that GETs `/metrics` every [`SCRAPE_INTERVAL`], as Prometheus would.
struct Scraper {
    stop: std::sync::mpsc::Sender<()>,
    thread: thread::JoinHandle<Result<u64>>,
}

impl Scraper {
    /// A free loopback port for the agent to listen on.
    fn address() -> Result<std::net::SocketAddr> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("finding a free loopback port for the metrics endpoint")?;
        Ok(listener.local_addr()?)
    }

    fn start(address: std::net::SocketAddr) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            // One at once, then every interval, and a last one when the workload is over: a
            // run shorter than the interval is scraped too.
            let mut scrapes = 0;
            loop {
                scrape(address)?;
                scrapes += 1;
                if stopped.recv_timeout(SCRAPE_INTERVAL).is_ok() {
                    scrape(address)?;
                    return Ok(scrapes + 1);
                }
            }
        });
        Self { stop, thread }
    }

    /// Stops scraping; returns the scrapes made (each one a 200 with `nsipc_` metrics).
    fn stop(self) -> Result<u64> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the metrics scraper panicked"))?
    }
}

fn scrape(address: std::net::SocketAddr) -> Result<()> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .with_context(|| format!("connecting to the agent's metrics endpoint {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .context("reading a metrics scrape")?;
    if !response.starts_with("HTTP/1.") || !response.contains(" 200 ") {
        bail!(
            "the metrics endpoint answered {:?}",
            response.lines().next()
        );
    }
    if !response.contains("nsipc_events_total") {
        bail!("a metrics scrape had no nsipc_events_total");
    }
    Ok(())
}
