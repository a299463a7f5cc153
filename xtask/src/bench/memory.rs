//! The memory scenario: the agent's resident set with many IPC namespaces and objects alive at
//! once, and once they all died.
//!
//! `xtask bench-memory-workload` (run from a release build) creates the namespaces and their
//! objects and holds the namespaces with bind mounts; the bench runs it under `nsipc-agent trace
//! | xtask bench-reader --namespaces` and reads the agent's /proc/PID/status once the reader's
//! counts show that the agent has written every creation, then every destruction.

use std::{
    ffi::{CStr, CString},
    fs,
    io::{self, BufRead as _, Write as _},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    ptr, thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    kernel,
    process::{Lines, Process},
    setups::{AgentOptions, Setup, Tools, Tracer},
    workload::{self, check, cpu_ns, monotonic_ns},
};

#[derive(clap::Args)]
pub struct MemoryWorkloadArgs {
    #[arg(long)]
    pub namespaces: u32,
    #[arg(long)]
    pub objects_per_namespace: u32,
}

/// The first key of every namespace's objects: the same keys in every namespace, as the same
/// application in many containers would have them (the agent indexes keys across namespaces).
const KEY_BASE: i32 = 0x6e73_0000;

/// Where the bind mounts go: `/tmp` as the workload's own mount namespace sees it, covered
/// there by a tmpfs, so that nothing is created on the host's filesystems.
const HOLDERS: &CStr = c"/tmp";

/// Kernel limits the workload needs room under, checked first so that it fails with a clear
/// message rather than halfway through.
fn check_limits(namespaces: u32) -> Result<()> {
    let read = |path: &str| -> Result<u64> {
        fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {path}"))
    };
    let wanted = u64::from(namespaces);
    // Per user, all of root's IPC namespaces together: leave others some.
    let max_ipc = read("/proc/sys/user/max_ipc_namespaces")?;
    if max_ipc < wanted + 1_000 {
        bail!("user.max_ipc_namespaces is {max_ipc}: too few for {namespaces} namespaces");
    }
    // Per mount namespace: the workload's starts with a copy of the host's mounts.
    let max_mounts = read("/proc/sys/fs/mount-max")?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?.lines().count() as u64;
    if max_mounts < wanted + mounts + 10 {
        bail!("fs.mount-max is {max_mounts}: too few for {namespaces} more mounts");
    }
    Ok(())
}

/// Object `index` of the namespace this process is in: a message queue, a one-page shm
/// segment (never touched, so it takes no memory) or a one-semaphore set, in turn.
fn create_object(index: u32) -> Result<()> {
    let key = KEY_BASE + index as i32;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
    // SAFETY: plain syscalls with no pointers.
    let (ret, call) = unsafe {
        match index % 3 {
            0 => (libc::msgget(key, flags), "msgget"),
            1 => (libc::shmget(key, 4096, flags), "shmget"),
            _ => (libc::semget(key, 1, flags), "semget"),
        }
    };
    check(ret, call).map(drop)
}

fn print_line(value: &Value) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush().context("writing to stdout")
}

/// The workload: creates the namespaces with their objects, prints `{"phase": "live",
/// "namespaces", "objects", "ns", "cpu_ns"}`, waits for a line on stdin (or its end), lets them
/// all die and prints `{"phase": "dead", "ns"}`.
pub fn generate(args: &MemoryWorkloadArgs) -> Result<()> {
    workload::set_comm()?;
    check_limits(args.namespaces)?;
    // SAFETY: plain syscalls on this process; the strings are NUL-terminated literals.
    unsafe {
        // A private mount namespace of its own: the bind mounts that hold the IPC namespaces
        // are seen by nobody else, and go, with the namespaces they hold, when this process
        // exits, however it ends.
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
        check(
            libc::mount(
                ptr::null(),
                c"/".as_ptr(),
                ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                ptr::null(),
            ),
            "making the mounts private",
        )?;
        check(
            libc::mount(
                c"nsipc-bench".as_ptr(),
                HOLDERS.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=0700".as_ptr().cast(),
            ),
            "mounting a tmpfs on /tmp",
        )?;
    }
    let host = fs::File::open("/proc/thread-self/ns/ipc").context("opening the IPC namespace")?;
    let start = monotonic_ns();
    let start_cpu = cpu_ns();
    for namespace in 0..args.namespaces {
        // SAFETY: a plain syscall; it moves this (single-threaded) process alone.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWIPC) },
            "unshare(CLONE_NEWIPC)",
        )?;
        for index in 0..args.objects_per_namespace {
            create_object(index)?;
        }
        let holder = format!("{}/{namespace}", HOLDERS.to_str().expect("ASCII"));
        fs::File::create(&holder).with_context(|| format!("creating {holder}"))?;
        let holder = CString::new(holder).expect("no NUL");
        // SAFETY: NUL-terminated paths; a bind mount takes no data.
        check(
            unsafe {
                libc::mount(
                    c"/proc/thread-self/ns/ipc".as_ptr(),
                    holder.as_ptr(),
                    ptr::null(),
                    libc::MS_BIND,
                    ptr::null(),
                )
            },
            "bind-mounting the IPC namespace",
        )?;
    }
    // Back where it came from, so that the mounts alone hold what it created.
    // SAFETY: a namespace fd this process opened.
    check(
        unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWIPC) },
        "setns back to the first IPC namespace",
    )?;
    print_line(&json!({
        "phase": "live",
        "namespaces": args.namespaces,
        "objects": u64::from(args.namespaces) * u64::from(args.objects_per_namespace),
        "ns": monotonic_ns() - start,
        "cpu_ns": cpu_ns() - start_cpu,
    }))?;
    // Until the bench has measured, or is gone.
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let start = monotonic_ns();
    // Detaching the tmpfs takes every bind mount under it: the last references of all the
    // namespaces, which the kernel then frees with their objects.
    // SAFETY: a NUL-terminated path.
    check(
        unsafe { libc::umount2(HOLDERS.as_ptr(), libc::MNT_DETACH) },
        "unmounting the holders",
    )?;
    print_line(&json!({"phase": "dead", "ns": monotonic_ns() - start}))
}

/// What the agent's stream showed of the workload, from the reader's counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    pub namespaces_created: u64,
    pub objects_created: u64,
    pub objects_destroyed: u64,
    pub namespaces_destroyed: u64,
}

impl Seen {
    fn from_counts(counts: &Value) -> Self {
        let field = |key: &str| counts[key].as_u64().unwrap_or(0);
        Self {
            namespaces_created: field("namespaces_created"),
            objects_created: field("objects_created"),
            objects_destroyed: field("objects_destroyed"),
            namespaces_destroyed: field("namespaces_destroyed"),
        }
    }
}

/// One run of the memory scenario. Sizes in KiB, times in seconds.
pub struct MemoryRun {
    pub namespaces: u64,
    pub objects: u64,
    /// The workload's own time to create everything (elapsed and CPU).
    pub create_seconds: f64,
    pub create_cpu_seconds: f64,
    /// From the workload's "all alive" until the stream showed every creation.
    pub created_seen_after: Option<f64>,
    /// From the unmount until the stream showed every destruction.
    pub destroyed_seen_after: Option<f64>,
    /// What the stream showed once everything was alive, and at the end.
    pub seen_live: Seen,
    pub seen_dead: Seen,
    /// The agent's `VmRSS` before the workload, with everything alive, once everything died;
    /// its `VmHWM` with everything alive, and over its whole life.
    pub rss_before: u64,
    pub rss_live: u64,
    pub hwm_live: u64,
    pub rss_after: u64,
    pub hwm_end: u64,
    /// The anonymous part of `VmRSS` (`RssAnon`: the heap) at the same three times; the rest
    /// is file-backed (the binary, the ring buffer's mapping).
    pub anon: [u64; 3],
    /// The agent's CPU time per second over [`IDLE_WINDOW`] with everything alive and
    /// nothing happening: what its periodic work costs with that much state.
    pub idle_cpu_share: f64,
    /// Records the kernel could not buffer, as the agent reported them by its stop.
    pub lost: Option<u64>,
    /// SysV objects in the bench's own (the host's) IPC namespace before and after.
    pub host_objects: (u64, u64),
}

/// How long the agent may take to settle after attaching (its inventory written, its start-up
/// memory freed), and after the last destruction it writes.
pub const SETTLE: Duration = Duration::from_millis(500);
/// How long the workload may take to create everything, and the stream to show it all.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);
const SEEN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the agent's CPU time is read over with everything alive and quiet.
pub const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// Objects listed in /proc/sysvipc, i.e. in this process's IPC namespace.
fn host_objects() -> Result<u64> {
    let mut total = 0;
    for table in ["msg", "shm", "sem"] {
        let path = format!("/proc/sysvipc/{table}");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // A header line, then one line per object.
        total += text.lines().count().saturating_sub(1) as u64;
    }
    Ok(total)
}

/// Polls the reader's counts until `done` holds of them or `timeout` passes: returns the last
/// counts seen and, if done, after how long.
fn wait_for(
    tracer: &Tracer,
    since: Instant,
    timeout: Duration,
    done: impl Fn(&Seen) -> bool,
) -> (Seen, Option<f64>) {
    let mut seen = Seen::default();
    loop {
        if let Some(counts) = tracer.reader_progress() {
            seen = Seen::from_counts(&counts);
        }
        if done(&seen) {
            return (seen, Some(since.elapsed().as_secs_f64()));
        }
        if since.elapsed() > timeout {
            return (seen, None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn phase(lines: &Lines, name: &str, timeout: Duration) -> Result<Value> {
    let line = lines
        .next(timeout)
        .with_context(|| format!("the memory workload did not report {name} in {timeout:?}"))?;
    let value: Value = serde_json::from_str(&line)
        .with_context(|| format!("parsing the memory workload's line {line:?}"))?;
    if value["phase"] != name {
        bail!("the memory workload said {line:?}, not {name}");
    }
    Ok(value)
}

/// Runs the scenario once under `nsipc-agent trace | reader`.
pub fn run(tools: &mut Tools, namespaces: u32, objects_per_namespace: u32) -> Result<MemoryRun> {
    let objects = u64::from(namespaces) * u64::from(objects_per_namespace);
    let all_namespaces = u64::from(namespaces);
    let host_before = host_objects()?;
    let options = AgentOptions {
        follow_namespaces: true,
        ..AgentOptions::default()
    };
    let tracer = Tracer::start(tools, Setup::AgentPipe, options, workload::COMM)?;
    let pid = tracer.pid();
    thread::sleep(SETTLE);
    let rss_before = kernel::vm_rss_kib(pid)?;
    let anon_before = kernel::status_kib(pid, "RssAnon")?;

    let mut generator = Process::spawn(
        Command::new(&tools.xtask)
            .args(["bench-memory-workload", "--namespaces"])
            .arg(namespaces.to_string())
            .arg("--objects-per-namespace")
            .arg(objects_per_namespace.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        "the memory workload",
    )?;
    let mut stdin = generator.child.stdin.take().expect("piped");
    let lines = Lines::new(generator.child.stdout.take().expect("piped"));
    let live = phase(&lines, "live", CREATE_TIMEOUT)?;
    let (seen_live, created_seen_after) = wait_for(&tracer, Instant::now(), SEEN_TIMEOUT, |seen| {
        seen.namespaces_created >= all_namespaces && seen.objects_created >= objects
    });
    let rss_live = kernel::vm_rss_kib(pid)?;
    let hwm_live = kernel::status_kib(pid, "VmHWM")?;
    let anon_live = kernel::status_kib(pid, "RssAnon")?;
    let idle_from = kernel::cpu_ns(pid)?;
    thread::sleep(IDLE_WINDOW);
    let idle_cpu_share = (kernel::cpu_ns(pid)? - idle_from) as f64 / IDLE_WINDOW.as_nanos() as f64;

    writeln!(stdin, "die").context("telling the memory workload to end")?;
    drop(stdin);
    let died = Instant::now();
    phase(&lines, "dead", SEEN_TIMEOUT)?;
    let exit = generator.wait(SEEN_TIMEOUT)?;
    if !exit.success() {
        bail!("the memory workload failed (wait status {})", exit.status);
    }
    let (seen_dead, destroyed_seen_after) = wait_for(&tracer, died, SEEN_TIMEOUT, |seen| {
        seen.namespaces_destroyed >= all_namespaces && seen.objects_destroyed >= objects
    });
    thread::sleep(SETTLE);
    let rss_after = kernel::vm_rss_kib(pid)?;
    let anon_after = kernel::status_kib(pid, "RssAnon")?;
    let host_after = host_objects()?;
    let traced = tracer.stop(tools, workload::COMM, false)?;
    let seconds = |key: &str| live[key].as_u64().unwrap_or(0) as f64 / 1e9;
    Ok(MemoryRun {
        namespaces: all_namespaces,
        objects,
        create_seconds: seconds("ns"),
        create_cpu_seconds: seconds("cpu_ns"),
        created_seen_after,
        destroyed_seen_after,
        seen_live,
        seen_dead,
        rss_before,
        rss_live,
        hwm_live,
        rss_after,
        hwm_end: traced.max_rss_kib,
        anon: [anon_before, anon_live, anon_after],
        idle_cpu_share,
        lost: traced.lost,
        host_objects: (host_before, host_after),
    })
}
