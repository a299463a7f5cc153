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
    collections::HashMap,
    fs,
    io::{BufRead as _, BufReader},
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
use support::*;

const DEFAULT_SECS: u64 = 30;
/// The smallest the agent takes: about 130 records, full within a stall.
const RING_BUFFER: &str = "4K";
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

/// The raw (kernel) events of docs/events.md, by name. `shm.attach` and `shm.detach` also
/// name lifecycle events; their raw form is the one with `ret`.
fn is_raw(event: &Value) -> bool {
    match event["event"].as_str() {
        Some(
            "msg.get" | "shm.get" | "sem.get" | "msg.ctl" | "shm.ctl" | "sem.ctl"
            | "ipc_ns.unshare" | "ipc_ns.setns" | "ipc_ns.clone" | "process.exit" | "ipc_ns.freed"
            | "shm.freed",
        ) => true,
        Some("shm.attach" | "shm.detach") => event.get("ret").is_some(),
        _ => false,
    }
}

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
