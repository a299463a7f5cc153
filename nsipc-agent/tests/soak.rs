//! A storm soak: the agent with `--raw` and a tiny ring buffer, read by a consumer that stalls
//! now and then (so the pipe fills, the agent blocks writing, and the ring buffer overflows),
//! while a workload makes SysV syscalls as fast as it can. The agent must not crash, its memory
//! must stay bounded, and every record must be either printed or counted lost. Needs root.
//!
//! How exactness is established. `agent.stop` counts the records the agent decoded (`events`)
//! and the records the probes could not write (`lost`, machine-wide: a loss names no process).
//! - Every decoded record is printed: the raw lines read equal `events`, exactly.
//! - Every loss is reported: the `agent.lost` counts add up to `lost`, exactly.
//! - The workload (one pid, in an IPC namespace of its own) counts its own calls, G. Its raw
//!   events seen, E, can only miss what was lost: E <= G <= E + lost. Other activity on the
//!   machine (other tests, the agent's own inventory entering namespaces) also makes records,
//!   and some of `lost` may be theirs, so G = E + lost holds exactly only when the workload
//!   was alone; with no loss at all, E = G.
//!
//! `NSIPC_SOAK_SECS` sets the storm's length (default 30 s) for a real soak of minutes.
//! Nothing here asserts on speed.

mod support;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{ChildStdout, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Sender, channel},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{model::*, *};

const DEFAULT_SECS: u64 = 30;
/// The smallest the agent takes: about 130 records, full within a stall.
const RING_BUFFER: &str = "4K";

/// Held by each test while it runs: with a ring buffer this small, one test's storm makes the
/// others' agents lose records too, the ones a test's premise needs among them (the held
/// namespace's `ipc_ns.create`, which nothing can bring back: no inventory finds it).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for the other tests of this file to end (a failed one included).
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
/// The consumer reads for this long, then stops reading for the next of [`STALLS`].
const READ_BETWEEN_STALLS: Duration = Duration::from_millis(700);
const STALLS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_millis(900),
];
/// How much the agent's resident memory may grow over its size at `agent.ready`: a robustness
/// bound (nothing may grow with the number of events), not a tuning target.
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// What the consumer read.
#[derive(Default)]
struct Tally {
    lines: u64,
    raw: u64,
    /// `msg.get` and `msg.ctl` events per pid.
    msg_calls: HashMap<i64, u64>,
    lost_counts: u64,
    last_lost_total: u64,
    decode_errors: u64,
    stop: Option<Value>,
}

/// Reads the whole stream, checking every line is JSON, stalling on schedule; sends
/// `agent.ready` as soon as it comes.
fn consume(stdout: ChildStdout, ready: Sender<Value>) -> Tally {
    let mut tally = Tally::default();
    let mut stalls = STALLS.iter().cycle();
    let mut reading_since = Instant::now();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading the agent");
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        tally.lines += 1;
        if is_raw(&event) {
            tally.raw += 1;
            if matches!(event["event"].as_str(), Some("msg.get" | "msg.ctl")) {
                *tally.msg_calls.entry(field(&event, "pid")).or_default() += 1;
            }
        }
        match event["event"].as_str() {
            Some("agent.ready") => {
                ready.send(event).expect("the test waits for agent.ready");
                reading_since = Instant::now();
                continue;
            }
            Some("agent.lost") => {
                tally.lost_counts += field(&event, "count") as u64;
                tally.last_lost_total = field(&event, "total") as u64;
            }
            Some("agent.decode_error") => tally.decode_errors += 1,
            Some("agent.stop") => tally.stop = Some(event),
            _ => {}
        }
        if reading_since.elapsed() >= READ_BETWEEN_STALLS {
            thread::sleep(*stalls.next().expect("cycle"));
            reading_since = Instant::now();
        }
    }
    tally
}

/// A `VmRSS:`-style line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| {
            line.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
}

#[test]
fn a_stalling_consumer_loses_nothing_unaccounted() {
    require_root();
    let _alone = alone();
    let secs = std::env::var("NSIPC_SOAK_SECS")
        .map(|s| s.parse().expect("NSIPC_SOAK_SECS is a number of seconds"))
        .unwrap_or(DEFAULT_SECS);
    let mut agent = trace_command()
        .args(["--raw", "--ring-buffer-size", RING_BUFFER])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning nsipc-agent");
    let pid = agent.id();
    let (ready_tx, ready_rx) = channel();
    let stdout = agent.stdout.take().expect("piped stdout");
    let consumer = thread::spawn(move || consume(stdout, ready_tx));
    let ready = ready_rx.recv_timeout(WAIT).expect("agent.ready");
    assert_eq!(ready["ring_buffer_bytes"], 4096);
    let rss_at_ready = status_kib(pid, "VmRSS:").expect("the agent's VmRSS");

    // Samples the agent's resident memory through the storm.
    let storming = Arc::new(AtomicBool::new(true));
    let peak_rss = Arc::new(AtomicU64::new(rss_at_ready));
    let sampler = thread::spawn({
        let (storming, peak_rss) = (storming.clone(), peak_rss.clone());
        move || {
            while storming.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS:") {
                    peak_rss.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    });

    let workload = msg_storm(secs)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the storm");
    let workload_pid = i64::from(workload.id());
    let output = workload.wait_with_output().expect("waiting for the storm");
    assert!(
        output.status.success(),
        "the storm failed: {}",
        output.status
    );
    let generated: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the storm prints its number of calls");
    storming.store(false, Ordering::Relaxed);
    sampler.join().expect("the sampler");
    let peak_hwm = status_kib(pid, "VmHWM:").expect("the agent's VmHWM");

    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let tally = consumer.join().expect("the consumer");
    // The consumer read to the end of the stream: the agent is exiting.
    let status = wait_timeout(&mut agent, WAIT).expect("the agent exits after SIGINT");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut agent.stderr.take().expect("stderr"), &mut stderr)
        .expect("reading the agent's stderr");

    let stop = tally.stop.as_ref().expect("agent.stop");
    let (events, lost) = (field(stop, "events") as u64, field(stop, "lost") as u64);
    let seen = tally.msg_calls.get(&workload_pid).copied().unwrap_or(0);
    let peak_rss = peak_rss.load(Ordering::Relaxed);
    eprintln!(
        "soak {secs}s: workload generated {generated}, emitted {seen}; agent events {events}, \
         lost {lost}, lines {}; RSS {rss_at_ready} KiB at ready, peak {peak_rss} KiB sampled, \
         VmHWM {peak_hwm} KiB",
        tally.lines
    );

    assert!(status.success(), "the agent failed: {status}: {stderr}");
    assert_eq!(stderr, "");
    assert_eq!(stop["reason"], "SIGINT");
    assert_eq!(field(stop, "decode_errors"), 0);
    assert_eq!(tally.decode_errors, 0);
    assert_eq!(tally.raw, events, "every decoded record is printed");
    assert_eq!(tally.lost_counts, lost, "every loss is reported once");
    assert_eq!(tally.last_lost_total, lost);
    assert!(
        lost > 0,
        "the stalls never overflowed the ring buffer: nothing was tested"
    );
    assert!(
        seen <= generated,
        "more events than calls: {seen} > {generated}"
    );
    assert!(
        seen + lost >= generated,
        "{} of the workload's calls are neither printed nor counted lost",
        generated - seen - lost
    );
    assert!(
        peak_rss <= 2 * rss_at_ready + RSS_SLACK_KIB,
        "the agent grew from {rss_at_ready} KiB to {peak_rss} KiB"
    );
}

/// How long the resynchronisation workload runs.
const RESYNC_SECS: u64 = 8;

/// Keyed objects made and removed, 2 ms apart, in slots 0..9 of an IPC namespace of its own
/// (slot % 3: a queue, a segment, a semaphore set; key `$base + slot`), for `$ARGV[0]` seconds;
/// then it says `done` and holds the namespace, with what is left in it, until killed.
const HOLDER_PL: &str = r#"
$| = 1;
my ($end, $base) = (time + $ARGV[0], $ARGV[1]);
my @ids;
while (time < $end) {
    my $slot = int(rand(9));
    my $kind = $slot % 3;
    if (defined $ids[$slot]) {
        my $ok = $kind == 0 ? msgctl($ids[$slot], 0, 0)
               : $kind == 1 ? shmctl($ids[$slot], 0, 0)
               :              semctl($ids[$slot], 0, 0, 0);
        $ok or die "IPC_RMID: $!";
        undef $ids[$slot];
    } else {
        my $key = $base + $slot;
        $ids[$slot] = ($kind == 0 ? msgget($key, 01600)
                     : $kind == 1 ? shmget($key, 4096, 01600)
                     :              semget($key, 1, 01600)) // die "get: $!";
    }
    select(undef, undef, undef, 0.002);
}
print "done\n";
sleep 600;
"#;

/// For `$ARGV[0]` seconds, 3 ms apart: unshare(CLONE_NEWIPC) (SYS_unshare = 272), print the new
/// namespace's inum, make a queue (removed at once), a segment and a semaphore set there (left
/// to die with the namespace when the next unshare lets it go).
const CHURN_PL: &str = r#"
$| = 1;
my $end = time + $ARGV[0];
while (time < $end) {
    syscall(272, 0x08000000) == -1 and die "unshare: $!";
    readlink('/proc/self/ns/ipc') =~ /\[(\d+)\]/ and print "$1\n";
    my $queue = msgget(0, 01600) // die "msgget: $!";
    shmget(0, 4096, 01600) // die "shmget: $!";
    semget(0, 1, 01600) // die "semget: $!";
    msgctl($queue, 0, 0) or die "msgctl: $!";
    select(undef, undef, undef, 0.003);
}
"#;

/// Holds an IPC namespace by an attachment alone: with an fd on its own namespace, it
/// unshares (SYS_unshare = 272), makes a segment there, attaches it (SYS_shmat = 30), goes
/// back (SYS_setns = 308), closes the fd and prints the new namespace's inum. No task, fd or
/// mount is in the namespace any more. On a line of input it detaches (SYS_shmdt = 67), which
/// lets the namespace go, and says `detached`; it exits at the end of its input.
const ATTACHED_FROM_OUTSIDE_PL: &str = r#"
$| = 1;
open(my $home, '<', '/proc/self/ns/ipc') or die "open: $!";
syscall(272, 0x08000000) == -1 and die "unshare: $!";
readlink('/proc/self/ns/ipc') =~ /\[(\d+)\]/ or die "readlink: $!";
my $inum = $1;
my $id = shmget(0, 4096, 01600) // die "shmget: $!";
my $addr = syscall(30, $id, 0, 0);
$addr == -1 and die "shmat: $!";
syscall(308, fileno($home), 0x08000000) == -1 and die "setns: $!";
close($home);
print "$inum\n";
<STDIN>;
syscall(67, $addr) == -1 and die "shmdt: $!";
print "detached\n";
<STDIN>;
"#;

/// A child killed when the test ends, also on failure.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Workload namespaces (by inum) the stream still has alive but the kernel does not, and
/// differences between the stream's objects of the held namespace and the kernel's, key for key.
fn differences_of(
    stream: &StreamState,
    workload: &HashSet<u64>,
    held: u64,
    kernel: &KernelState,
) -> Vec<String> {
    let mut out = Vec::new();
    for (&id, &inum) in &stream.alive {
        if workload.contains(&inum) && !kernel.namespaces.contains(&inum) {
            out.push(format!("namespace {inum} ({id}) alive in the stream only"));
        }
    }
    let Some((&held_life, _)) = stream.alive.iter().find(|(_, inum)| **inum == held) else {
        out.push(format!(
            "the held namespace {held} is not alive in the stream"
        ));
        return out;
    };
    let seen = keys(&stream.view_of(held_life));
    let held_objects = keys(&kernel.held_objects);
    if seen != held_objects {
        out.push(format!(
            "objects of the held namespace: stream {seen:?}, kernel {held_objects:?}"
        ));
    }
    out
}

/// (type, id, key) of each object: only keys are compared here.
fn keys(view: &View) -> BTreeSet<(Kind, i64, i64)> {
    view.iter()
        .map(|(&(kind, id), listed)| (kind, id, listed.key))
        .collect()
}

/// The lifecycle stream replayed by the shared model.
fn replayed(events: &[Value]) -> StreamState {
    let mut stream = StreamState::default();
    stream.apply_new(events);
    stream
}

/// What the kernel has: live IPC namespaces (`lsns`) and the held namespace's objects.
struct KernelState {
    namespaces: HashSet<u64>,
    held_objects: View,
}

impl KernelState {
    /// `holder`: a pid in the held namespace.
    fn now(holder: u32) -> KernelState {
        let namespaces = sh("lsns -t ipc -n -o NS")
            .split_whitespace()
            .map(|ns| ns.parse().expect("lsns prints inums"))
            .collect();
        let held_objects = parse_sysvipc(&sh(&format!(
            "nsenter --ipc=/proc/{holder}/ns/ipc \
             cat /proc/sysvipc/msg /proc/sysvipc/shm /proc/sysvipc/sem"
        )));
        KernelState {
            namespaces,
            held_objects,
        }
    }
}

/// Losses forced (a 4K ring buffer under a storm) while namespaces and objects come and go:
/// every resynchronisation must agree with the records the agent applies around it, and once
/// the workload stops, the stream with the kernel. Checked on the whole stream:
/// - no destroy is called `unknown` and then followed by its own IPC_RMID record (the agent
///   reconciled with an inventory while that removal still waited in the ring buffer);
/// - every namespace the workload's printed `unshare` made gets its `ipc_ns.create`, not an
///   `exists` (a resynchronisation found it while its creation waited);
/// - no life is announced twice, ended twice, or goes on after its end;
/// - at the end, the workload's namespaces the stream has alive are alive (`lsns`), and the
///   held namespace's objects are the kernel's (`/proc/sysvipc`), key for key.
#[test]
fn after_losses_the_stream_agrees_with_its_records_and_the_kernel() {
    let _alone = alone();
    let mut agent = Agent::start(&["--raw", "--ring-buffer-size", RING_BUFFER]);
    let secs = RESYNC_SECS.to_string();
    let storm = Killed(
        msg_storm(RESYNC_SECS)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning the storm"),
    );
    let mut holder = Killed(
        std::process::Command::new("unshare")
            .args(["--ipc", "perl", "-e", HOLDER_PL, &secs, "0x5e000000"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the holder"),
    );
    let churner = std::process::Command::new("perl")
        .args(["-e", CHURN_PL, &secs])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the churner");
    let (storm_pid, holder_pid, churner_pid) = (storm.0.id(), holder.0.id(), churner.id());
    let churned = churner.wait_with_output().expect("waiting for the churner");
    assert!(churned.status.success(), "the churner: {}", churned.status);
    let mut done = String::new();
    BufReader::new(holder.0.stdout.take().expect("piped"))
        .read_line(&mut done)
        .expect("reading the holder");
    assert_eq!(done, "done\n", "the holder failed");
    let held = parse_ns_link(
        &fs::read_link(format!("/proc/{holder_pid}/ns/ipc"))
            .unwrap()
            .to_string_lossy(),
    );
    let mut workload: HashSet<u64> = String::from_utf8_lossy(&churned.stdout)
        .lines()
        .map(|inum| inum.parse().expect("the churner prints inums"))
        .collect();
    let namespaces_churned = workload.len();
    workload.insert(held);
    let workload_pids = [storm_pid, holder_pid, churner_pid].map(i64::from);

    // Settled: the last loss was followed by a resynchronisation, and frees have come.
    let resynced = agent.read_until(4 * WAIT, |events| {
        let last_loss = events
            .iter()
            .rposition(|e| matches!(e["event"].as_str(), Some("agent.lost" | "agent.missed")));
        last_loss.is_some_and(|at| events[at..].iter().any(|e| e["event"] == "agent.resync"))
    });
    assert!(
        resynced,
        "no loss, or no resynchronisation after the last one"
    );
    let mut differences = Vec::new();
    agent.read_until(WAIT, |events| {
        let kernel = KernelState::now(holder_pid);
        differences = differences_of(&replayed(events), &workload, held, &kernel);
        differences.is_empty()
    });
    drop(holder);
    drop(storm);
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let replay = replayed(&stopped.events);
    let count = |name: &str| stopped.events.iter().filter(|e| e["event"] == name).count();
    let unknown = stopped
        .events
        .iter()
        .filter(|e| e["reason"] == "unknown")
        .count();
    // What a resynchronisation found, written as the inventory writes it (the schema every
    // line was validated against requires `processes` and `held_by` of `ipc_ns.exists`).
    let first_resync = stopped
        .events
        .iter()
        .position(|e| e["event"] == "agent.resync")
        .unwrap_or(stopped.events.len());
    let found = stopped.events[first_resync..]
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|name| name.ends_with(".exists"))
        })
        .count();
    let births: Vec<&Value> = replay
        .births
        .iter()
        .filter(|birth| workload_pids.contains(&birth["pid"].as_i64().unwrap_or(0)))
        .collect();
    let uncreated: Vec<&Value> = births
        .iter()
        .copied()
        .filter(|birth| {
            !replay
                .creates
                .iter()
                .any(|create| life(create) == life(birth))
        })
        .collect();
    eprintln!(
        "resync: {namespaces_churned} namespaces churned; {} agent.lost, {} agent.resync, {} \
         destroys with reason unknown, {} of them then removed by a printed record; {} \
         printed unshares of the workload, {} without ipc_ns.create; {} contradictions; {} \
         final differences; {found} exists lines after the first resynchronisation",
        count("agent.lost"),
        count("agent.resync"),
        unknown,
        replay.unknown_then_removed.len(),
        births.len(),
        uncreated.len(),
        replay.contradictions.len(),
        differences.len()
    );
    assert!(count("agent.resync") > 0, "nothing was tested");
    // docs/events.md: `time` on every line, the resynchronisations' own included.
    let untimed: Vec<&Value> = stopped
        .events
        .iter()
        .filter(|e| !e.get("time").is_some_and(Value::is_string))
        .take(3)
        .collect();
    assert!(untimed.is_empty(), "lines without time: {untimed:?}");
    assert_eq!(replay.unknown_then_removed, Vec::<String>::new());
    assert!(uncreated.is_empty(), "{uncreated:#?}");
    assert_eq!(replay.contradictions, Vec::<String>::new());
    assert_eq!(differences, Vec::<String>::new());
}

/// No inventory can find a namespace held only by a segment attached from another namespace
/// (no task, fd or mount is in it), yet it lives: the resynchronisations that losses force
/// must not declare it gone while the attachment lasts. It ends, with its segment, at the
/// detach.
#[test]
fn a_namespace_held_only_by_an_attachment_outlives_resynchronisations() {
    let _alone = alone();
    let mut agent = Agent::start(&["--ring-buffer-size", RING_BUFFER]);
    let mut holder = Killed(
        std::process::Command::new("perl")
            .args(["-e", ATTACHED_FROM_OUTSIDE_PL])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the holder"),
    );
    let mut said = BufReader::new(holder.0.stdout.take().expect("piped"));
    let mut line = String::new();
    said.read_line(&mut line).expect("reading the holder");
    let inum: u64 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the holder said {line:?}"));
    let maps = fs::read_to_string(format!("/proc/{}/maps", holder.0.id())).unwrap();
    assert!(
        maps.contains("/SYSV"),
        "the holder has no segment attached:\n{maps}"
    );
    agent.wait_for("the held namespace's ipc_ns.create", |e| {
        e["event"] == "ipc_ns.create" && e["ns"] == inum
    });

    let resyncs = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["event"] == "agent.resync")
            .count()
    };
    let before = resyncs(&agent.events);
    let storm = msg_storm(3)
        .stdout(Stdio::null())
        .status()
        .expect("running the storm");
    assert!(storm.success(), "the storm: {storm}");
    assert!(
        agent.read_until(4 * WAIT, |events| resyncs(events) > before),
        "no resynchronisation after the storm: nothing was tested"
    );
    let ended = |e: &Value| e["event"] == "ipc_ns.destroy" && e["ns"] == inum;
    assert!(
        agent.all(ended).is_empty(),
        "a resynchronisation ended the namespace its attachment holds: {:#?}",
        agent.all(ended)
    );

    let mut input = holder.0.stdin.take().expect("piped");
    writeln!(input, "detach").expect("telling the holder to detach");
    line.clear();
    said.read_line(&mut line).expect("reading the holder");
    assert_eq!(line, "detached\n", "the holder failed");
    let end = agent.wait_for("the held namespace's ipc_ns.destroy", ended);
    match end["reason"].as_str() {
        Some("freed") => assert_eq!(end["objects_destroyed"]["shm"], 1, "{end}"),
        // A resynchronisation still due after the storm's losses may look between the
        // detach and the namespace's free (an RCU grace period and a work item later): it
        // finds it gone and says so, `unknown`, in its batch (docs/events.md).
        Some("unknown") => assert!(
            agent.read_until(WAIT, |events| {
                let at = events.iter().position(ended).expect("seen");
                events[at..]
                    .iter()
                    .any(|e| e["event"] == "agent.resync" && e["after"] == "lost")
            }),
            "an `unknown` end outside a resynchronisation after losses: {end}"
        ),
        _ => panic!("{end}"),
    }
    agent.stop(libc::SIGINT);
}
