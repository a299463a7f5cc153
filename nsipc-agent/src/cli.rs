//! Command-line interface.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    filter::{EVENT_NAMES, FilterSpec, glob_match},
    kernel::DEFAULT_BTF_PATH,
    output::pretty::Style,
    output::sink::Format,
    probes,
};

#[derive(Debug, Parser)]
#[command(
    name = "nsipc-agent",
    version,
    about = "See Linux IPC namespaces and the SysV IPC objects (message queues, shared memory, \
             semaphores) inside them, as a JSON Lines stream (one line per event for people on \
             a terminal)",
    after_help = "Examples:\n  \
        sudo nsipc-agent trace   # on a terminal: one line per event, for people\n  \
        sudo nsipc-agent trace | jq -c 'select(.event == \"msg.get\")'   # piped: JSON Lines\n  \
        sudo nsipc-agent trace | jq -c 'select(.ns != 4026531839)'   # everything outside the host namespace\n  \
        sudo nsipc-agent snapshot   # what exists now: namespaces, what holds them, their objects\n\n\
        Every event is documented in docs/events.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream IPC namespace, SysV IPC and POSIX message queue events on stdout: JSON Lines, or
    /// one line per event for people on a terminal (needs root).
    ///
    /// The stream starts with what already exists (`ipc_ns.exists`, `msg.exists`, …,
    /// `mqueue.exists`), then
    /// `agent.ready` once every probe is attached; events follow as they happen, each naming
    /// its container where the task is in one. SIGINT or SIGTERM detaches, drains what is
    /// buffered and ends with `agent.stop`.
    ///
    /// Every lifecycle event is written by default, `shm.attach`/`shm.detach` included: who
    /// holds a segment is part of its life. Where processes attach a segment by the thousand,
    /// they are most of the stream (PostgreSQL with SysV shared memory, a connection per
    /// transaction: 7 214 of 7 235 lines); `--events=-shm.attach,-shm.detach` leaves them out.
    #[command(after_help = "Examples:\n  \
        sudo nsipc-agent trace --events 'msg.*,shm.*'   # on a terminal: the human view\n  \
        sudo nsipc-agent trace --output pretty --color never | tee ipc.log   # the human view, plain\n  \
        sudo nsipc-agent trace --output json   # JSON Lines on a terminal too\n  \
        sudo nsipc-agent trace | jq -c 'select(.event == \"msg.get_failed\")'\n  \
        sudo nsipc-agent trace --container producer --events 'msg.*,ipc_ns.*'\n  \
        sudo nsipc-agent trace --events=-shm.attach,-shm.detach   # all but attachments\n  \
        sudo nsipc-agent trace | jq -c 'select(.host_ipc) | {event, container: .container.name}'\n  \
        sudo nsipc-agent trace | jq -c 'select(.event | startswith(\"ipc_ns.\"))'\n  \
        sudo nsipc-agent trace --events 'mqueue.*'   # POSIX message queues, per namespace\n  \
        sudo nsipc-agent trace --ring-buffer-size 64M > events.jsonl\n  \
        sudo nsipc-agent trace --activity-interval 10 | jq -c 'select(.event == \"ipc.flow\") | {from: .from.container.name, to: .to.container.name, messages}'\n  \
        sudo nsipc-agent trace --backend kprobe | jq -c 'select(.event == \"agent.ready\") | .hooks'\n  \
        sudo nsipc-agent trace --metrics-addr 127.0.0.1:9464 > events.jsonl   # and Prometheus metrics\n  \
        sudo nsipc-agent trace --output none --metrics-addr 127.0.0.1:9464   # metrics only, no stream\n  \
        curl -s http://127.0.0.1:9464/metrics | grep '^nsipc_ipc_objects'")]
    Trace(TraceArgs),

    /// Print every live IPC namespace and the SysV IPC objects and POSIX message queues
    /// inside it, then exit (needs root).
    ///
    /// Namespaces are found through whatever holds them: a thread in them, an open namespace
    /// fd, or a bind mount of one (which `lsns` misses). One `ipc_ns.exists` line per
    /// namespace comes first, then one `msg.exists`, `shm.exists` or `sem.exists` line per
    /// object, then one `mqueue.exists` line per POSIX message queue.
    #[command(after_help = "Examples:\n  \
        sudo nsipc-agent snapshot   # on a terminal: one line per namespace and object\n  \
        sudo nsipc-agent snapshot | jq -c 'select(.event == \"ipc_ns.exists\") | {ns, pids: [.processes[].pid], held_by}'\n  \
        sudo nsipc-agent snapshot | jq -c 'select(.event == \"shm.exists\" and .nattch > 0) | {ns, id, key, size}'\n  \
        sudo nsipc-agent snapshot | jq -c 'select(.event == \"mqueue.exists\") | {ns, name, curmsgs, maxmsg}'\n  \
        sudo nsipc-agent snapshot | jq -c 'select(.event == \"ipc_ns.exists\" and (.processes | length) == 0)'   # held only by fds or mounts\n  \
        sudo nsipc-agent snapshot | jq -s 'map(select(has(\"key\"))) | group_by(.ns) | map({ns: .[0].ns, objects: length})'\n\n\
        The events are documented in docs/events.md.")]
    Snapshot(OutputArgs),

    /// Report what this kernel allows, as one JSON object: release, BTF, lockdown, and for
    /// each backend (fentry, kprobe, tracepoint) which hooks load and attach here, and why
    /// not where not; then what `trace --backend auto` would pick (needs root).
    ///
    /// Every hook is really loaded and attached, then detached at once.
    #[command(after_help = "Examples:\n  \
        sudo nsipc-agent check | jq .auto\n  \
        sudo nsipc-agent check | jq '.backends | map_values(.usable)'\n  \
        sudo nsipc-agent check | jq -r '.backends.kprobe.hooks | to_entries[] | select(.value.ok | not) | \"\\(.key): \\(.value.why)\"'")]
    Check(CheckArgs),

    /// Write the man pages (nsipc-agent.1, one per subcommand) into DIR, for packaging.
    #[command(hide = true)]
    Man(ManArgs),
    /// Print the completion script for a shell on stdout, for packaging.
    #[command(hide = true)]
    Completions(CompletionsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write them (made if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Shells completion scripts are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// For each hook, the best backend this kernel takes (fentry, then kprobe, then
    /// tracepoint), found by loading and attaching.
    Auto,
    /// fentry/fexit on the kernel functions behind the syscalls (BPF trampolines).
    Fentry,
    /// kprobes/kretprobes on the kernel functions behind the syscalls.
    Kprobe,
    /// The syscall tracepoints: works on locked-down kernels.
    Tracepoint,
}

impl Backend {
    /// The backend to force, or None to choose per hook.
    pub fn wanted(self) -> Option<probes::Backend> {
        match self {
            Backend::Auto => None,
            Backend::Fentry => Some(probes::Backend::Fentry),
            Backend::Kprobe => Some(probes::Backend::Kprobe),
            Backend::Tracepoint => Some(probes::Backend::Tracepoint),
        }
    }
}

/// How the events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// JSON Lines, one object per event: the stable format (docs/events.md).
    Json,
    /// One aligned line per event for people: time, kind, namespace, container, pid/comm,
    /// keys in hex, modes in octal. Not a stable format: parse the JSON.
    Pretty,
    /// Nothing: for hosts that want only the metrics (`trace` with --metrics-addr).
    None,
}

/// When the pretty output is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// How to write the events [default: pretty when stdout is a terminal, json otherwise].
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Output")]
    pub output: Option<OutputFormat>,

    /// Colour the pretty output's event kinds (JSON is never coloured).
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorChoice::Auto,
        help_heading = "Output"
    )]
    pub color: ColorChoice,
}

impl OutputArgs {
    /// The format asked for, or the one for where stdout goes: pretty on a terminal, JSON
    /// into a pipe or a file. `no_color`: NO_COLOR is set (and not empty), which `auto` obeys.
    pub fn format(&self, stdout_is_terminal: bool, no_color: bool) -> Format {
        let pretty = match self.output {
            Some(OutputFormat::Json) => false,
            Some(OutputFormat::Pretty) => true,
            Some(OutputFormat::None) => return Format::None,
            None => stdout_is_terminal,
        };
        if !pretty {
            return Format::Json;
        }
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stdout_is_terminal && !no_color,
        };
        Format::Pretty(Style::new(color))
    }

    /// [`Self::format`] for this process's stdout and environment.
    pub fn format_for_stdout(&self) -> Format {
        use std::io::IsTerminal as _;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        self.format(std::io::stdout().is_terminal(), no_color)
    }
}

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub output: OutputArgs,

    /// Serve Prometheus metrics at http://IP:PORT/metrics (off by default; 127.0.0.1:9464 keeps
    /// them on this host): live namespaces and objects, shm bytes, lines by kind, losses, the
    /// agent's CPU and memory. Documented in docs/events.md.
    #[arg(long, value_name = "IP:PORT", required_if_eq("output", "none"))]
    pub metrics_addr: Option<SocketAddr>,

    /// Which kind of kernel probes to use.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Size of the kernel-to-agent ring buffer: a power of two of at least 4K (suffixes K, M, G).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_ring_buffer_size)]
    pub ring_buffer_size: u32,

    /// Also print the raw syscall events (msg.get, shm.ctl, ipc_ns.setns, …) the lifecycle
    /// events are derived from.
    #[arg(long)]
    pub raw: bool,

    /// Count the traffic through message queues and semaphore sets (msgsnd, msgrcv, semop,
    /// semtimedop) in the kernel, and every SECONDS write what each object saw since the last
    /// time: `msg.activity` (senders and receivers, messages and bytes), `sem.activity`
    /// (operations per process), `ipc.flow` (each sender → receiver pair of a queue) and
    /// `msg.full` (once per queue: a send left it full, or was refused), with a last line when
    /// the object is gone. 0, the default: off, and those syscalls are not hooked at all. Off
    /// by default because it puts a probe on every msgsnd, msgrcv and semop of the host, whose
    /// cost is above the ×1.25-of-the-floor target (docs/bench.md).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub activity_interval: u64,

    /// BTF of the running kernel, where the probes' struct offsets come from.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF_PATH)]
    pub btf: PathBuf,

    /// Leave out `cmdline` (each process's command line, from /proc): for hosts where
    /// command lines may carry secrets.
    #[arg(long)]
    pub no_cmdline: bool,

    /// Only events of these containers: ids, id prefixes (as `docker ps` shows them) or
    /// names. Lines without a task (teardowns) are kept for namespaces the container lived in.
    #[arg(
        long,
        value_name = "ID|NAME",
        value_delimiter = ',',
        help_heading = "Filters"
    )]
    pub container: Vec<String>,

    /// Only events in (or switching from) these IPC namespaces, by inode number.
    #[arg(
        long = "ns",
        value_name = "INUM",
        value_delimiter = ',',
        help_heading = "Filters"
    )]
    pub namespaces: Vec<u32>,

    /// Only events of these processes (thread group ids).
    #[arg(
        long,
        value_name = "PID",
        value_delimiter = ',',
        help_heading = "Filters"
    )]
    pub pid: Vec<u32>,

    /// Only events of tasks with this command name (exact, as `comm` shows it).
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "Filters"
    )]
    pub comm: Vec<String>,

    /// Only these event kinds; `*` matches anything (`msg.*`, `*.destroy`); `-KIND` leaves a
    /// kind out (`--events=-shm.attach,-shm.detach`: everything but attachments). `agent.*`
    /// lines and the startup inventory are always written. Filters choose lines after the
    /// lifecycle engine, which sees every record, so lifecycles stay exact.
    #[arg(long, value_name = "KINDS", value_delimiter = ',', value_parser = parse_event_glob, allow_hyphen_values = true, help_heading = "Filters")]
    pub events: Vec<String>,
}

impl TraceArgs {
    pub fn filter(&self) -> FilterSpec {
        FilterSpec {
            containers: self.container.clone(),
            namespaces: self.namespaces.clone(),
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            events: self.events.clone(),
        }
    }
}

/// An `--events` glob, which must match some event kind (a typo would match nothing, silently);
/// `-glob` leaves out what it matches.
fn parse_event_glob(glob: &str) -> Result<String, String> {
    let pattern = glob.strip_prefix('-').unwrap_or(glob);
    if EVENT_NAMES.iter().any(|name| glob_match(pattern, name)) {
        Ok(glob.to_owned())
    } else {
        Err(format!(
            "no event kind matches {glob:?}; kinds are: {}",
            EVENT_NAMES.join(", ")
        ))
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// BTF of the running kernel.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_BTF_PATH)]
    pub btf: PathBuf,
}

/// Parses `4096`, `64K`, `8M`, `1G`: a power of two from 4 KiB to 2 GiB.
pub fn parse_ring_buffer_size(text: &str) -> Result<u32, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M or G)")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let bytes = value
        .checked_shl(shift)
        .filter(|b| b >> shift == value)
        .unwrap_or(u64::MAX);
    if !bytes.is_power_of_two() || !(4096..=1 << 31).contains(&bytes) {
        return Err(format!("{text} is not a power of two between 4K and 2G"));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ring_buffer_sizes() {
        assert_eq!(parse_ring_buffer_size("4096"), Ok(4096));
        assert_eq!(parse_ring_buffer_size("64K"), Ok(65536));
        assert_eq!(parse_ring_buffer_size("8M"), Ok(8 << 20));
        assert_eq!(parse_ring_buffer_size("1g"), Ok(1 << 30));
        assert!(parse_ring_buffer_size("3M").is_err());
        assert!(parse_ring_buffer_size("1K").is_err());
        assert!(parse_ring_buffer_size("4G").is_err());
        assert!(parse_ring_buffer_size("lots").is_err());
        assert!(parse_ring_buffer_size("99999999999999999999G").is_err());
    }

    #[test]
    fn unknown_flags_are_rejected() {
        assert!(Cli::try_parse_from(["nsipc-agent", "trace", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["nsipc-agent", "trace", "--backend", "nope"]).is_err());
        let cli = Cli::try_parse_from(["nsipc-agent", "trace"]).unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("not trace: {:?}", cli.command);
        };
        assert_eq!(args.backend, Backend::Auto);
        assert_eq!(args.ring_buffer_size, 8 << 20);
    }

    #[test]
    fn metrics_and_output() {
        let trace = |args: &[&str]| {
            let cli = Cli::try_parse_from(["nsipc-agent", "trace"].iter().chain(args))?;
            let Command::Trace(args) = cli.command else {
                panic!("not trace");
            };
            Ok::<_, clap::Error>(args)
        };
        let args = trace(&[]).unwrap();
        assert_eq!(args.output.output, None);
        assert_eq!(args.metrics_addr, None);
        let args = trace(&["--metrics-addr", "127.0.0.1:9464"]).unwrap();
        assert_eq!(args.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let args = trace(&["--output", "none", "--metrics-addr", "[::1]:9464"]).unwrap();
        assert_eq!(args.output.output, Some(OutputFormat::None));
        // No stream and no metrics would be nothing at all: a usage error.
        let err = trace(&["--output", "none"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--metrics-addr"), "{err}");
        for bad in ["9464", "localhost:9464", "127.0.0.1", "1.2.3.4:99999"] {
            assert!(trace(&["--metrics-addr", bad]).is_err(), "{bad}");
        }
        assert!(trace(&["--output", "yaml"]).is_err());
    }

    #[test]
    fn snapshot_takes_only_the_output_options() {
        let cli = Cli::try_parse_from(["nsipc-agent", "snapshot"]).unwrap();
        let Command::Snapshot(output) = cli.command else {
            panic!("not snapshot: {:?}", cli.command);
        };
        assert_eq!((output.output, output.color), (None, ColorChoice::Auto));
        let cli = Cli::try_parse_from(["nsipc-agent", "snapshot", "--output", "pretty"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Snapshot(OutputArgs {
                output: Some(OutputFormat::Pretty),
                ..
            })
        ));
        assert!(Cli::try_parse_from(["nsipc-agent", "snapshot", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["nsipc-agent", "snapshot", "--output", "yaml"]).is_err());
        assert!(Cli::try_parse_from(["nsipc-agent", "snapshot", "--color", "sometimes"]).is_err());
    }

    fn output(args: &[&str]) -> OutputArgs {
        let cli = Cli::try_parse_from(["nsipc-agent", "trace"].iter().chain(args)).unwrap();
        let Command::Trace(trace) = cli.command else {
            unreachable!()
        };
        trace.output
    }

    #[test]
    fn pretty_on_a_terminal_json_into_a_pipe_unless_asked() {
        let pretty = |color| Format::Pretty(Style::new(color));
        // (flags, stdout is a terminal, NO_COLOR set) → format
        for (args, terminal, no_color, format) in [
            (&[][..], true, false, pretty(true)),
            (&[], true, true, pretty(false)),
            (&[], false, false, Format::Json),
            (&["--color", "always"], false, false, Format::Json),
            (&["--output", "json"], true, false, Format::Json),
            (
                &["--output", "json", "--color", "always"],
                true,
                false,
                Format::Json,
            ),
            (&["--output", "pretty"], false, false, pretty(false)),
            (&["--output", "pretty"], true, false, pretty(true)),
            (
                &["--output", "pretty", "--color", "always"],
                false,
                false,
                pretty(true),
            ),
            (
                &["--output", "pretty", "--color", "always"],
                true,
                true,
                pretty(true),
            ),
            (
                &["--output", "pretty", "--color", "never"],
                true,
                false,
                pretty(false),
            ),
            (&["--color", "never"], true, false, pretty(false)),
        ] {
            assert_eq!(
                output(args).format(terminal, no_color),
                format,
                "{args:?} terminal {terminal} NO_COLOR {no_color}"
            );
        }
    }

    #[test]
    fn bench_commands_are_not_the_agents_and_packaging_ones_stay_hidden() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("trace"), "{help}");
        assert!(!help.contains("bench"), "{help}");
        assert!(!help.contains("completions"), "{help}");
        assert!(!help.contains("man "), "{help}");
        assert!(Cli::try_parse_from(["nsipc-agent", "completions", "fish"]).is_ok());
        assert!(Cli::try_parse_from(["nsipc-agent", "completions", "tcsh"]).is_err());
        assert!(Cli::try_parse_from(["nsipc-agent", "man", "/tmp/x"]).is_ok());
        assert!(Cli::try_parse_from(["nsipc-agent", "bench-json", "--records", "10"]).is_err());
    }
}
