//! However the agent ends (SIGTERM, SIGINT, its reader closing the pipe, its reader killed while
//! it writes, or the agent itself killed), no BPF program, link or map it loaded stays in the
//! kernel. Needs root and bpftool.
//!
//! Which ids are the agent's comes from what it holds open (`/proc/PID/fdinfo`): bpftool here
//! prints no `pids` (it is built without its pid iterator), and program names would also match
//! the agents that other tests, or people, run at the same time. Each test checks its own
//! agent's ids only, so the tests of this file run in parallel without seeing each other.

mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::Read,
    os::unix::process::ExitStatusExt as _,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// BPF objects by kernel id.
#[derive(Debug, Default, PartialEq, Eq)]
struct BpfIds {
    progs: BTreeSet<u64>,
    links: BTreeSet<u64>,
    maps: BTreeSet<u64>,
}

/// The `key:` line of an fdinfo file.
fn fdinfo_field(fdinfo: &str, key: &str) -> Option<u64> {
    fdinfo.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .parse()
            .ok()
    })
}

/// The BPF programs, links and maps process `pid` holds by fd.
fn held_by(pid: u32) -> BpfIds {
    let mut ids = BpfIds::default();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).expect("listing the agent's fds") {
        let fd = entry.expect("an fd entry").file_name();
        let fd = fd.to_string_lossy();
        // Fds the agent opens for a moment (the inventory's) may be gone already.
        let (Ok(target), Ok(fdinfo)) = (
            fs::read_link(format!("/proc/{pid}/fd/{fd}")),
            fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")),
        ) else {
            continue;
        };
        let (set, key) = match target.to_string_lossy().as_ref() {
            "anon_inode:bpf-prog" => (&mut ids.progs, "prog_id"),
            "anon_inode:bpf_link" => (&mut ids.links, "link_id"),
            "anon_inode:bpf-map" => (&mut ids.maps, "map_id"),
            _ => continue,
        };
        set.insert(fdinfo_field(&fdinfo, key).unwrap_or_else(|| panic!("no {key}: {fdinfo}")));
    }
    ids
}

/// What the agent that printed `ready` holds: every program it attached, through one link each.
fn attached_by(pid: u32, ready: &Value) -> BpfIds {
    let ids = held_by(pid);
    let programs = field(ready, "programs") as usize;
    assert_eq!(
        ids.progs.len(),
        programs,
        "programs held vs attached: {ids:?}"
    );
    assert_eq!(ids.links.len(), programs, "links held vs attached: {ids:?}");
    assert!(!ids.maps.is_empty(), "no maps held: {ids:?}");
    // So that "gone from bpftool's lists" later means something.
    assert_eq!(
        still_loaded(&ids),
        ids,
        "bpftool lists what the agent holds"
    );
    ids
}

/// `bpftool -j <object> show`: every such object in the kernel.
fn bpftool_show(object: &str) -> Vec<Value> {
    let out = Command::new("bpftool")
        .args(["-j", object, "show"])
        .output()
        .expect("running bpftool (apt-get install bpftool)");
    assert!(
        out.status.success(),
        "bpftool {object} show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool prints a JSON array")
}

/// Which of `ids` bpftool still lists (links also by the program they hold).
fn still_loaded(ids: &BpfIds) -> BpfIds {
    let listed = |object: &str, mine: &BTreeSet<u64>, also: Option<(&str, &BTreeSet<u64>)>| {
        bpftool_show(object)
            .iter()
            .filter(|item| {
                mine.contains(&(field(item, "id") as u64))
                    || also.is_some_and(|(key, set)| {
                        item[key].as_u64().is_some_and(|id| set.contains(&id))
                    })
            })
            .map(|item| field(item, "id") as u64)
            .collect()
    };
    BpfIds {
        progs: listed("prog", &ids.progs, None),
        links: listed("link", &ids.links, Some(("prog_id", &ids.progs))),
        maps: listed("map", &ids.maps, None),
    }
}

/// Waits until the kernel has let go of every one of `ids`. Programs and maps are freed
/// asynchronously once their last reference goes (work queues, RCU), so this polls.
fn assert_released(ids: &BpfIds) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = still_loaded(ids);
        if left.progs.is_empty() && left.links.is_empty() && left.maps.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still in the kernel {WAIT:?} after the agent exited: {left:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The next line, read a byte at a time: a buffered reader would take part of the line after
/// it (other activity on the machine makes events at any time) and leave the consumer a
/// fragment.
fn read_line_unbuffered(pipe: &mut impl Read) -> Option<String> {
    let (mut line, mut byte) = (Vec::new(), [0u8]);
    loop {
        match pipe.read(&mut byte).expect("reading the agent") {
            0 => return None,
            _ if byte[0] == b'\n' => return Some(String::from_utf8(line).expect("utf-8")),
            _ => line.push(byte[0]),
        }
    }
}

/// An agent whose stdout is a pipe a consumer of the test's choosing takes over after
/// `agent.ready`.
struct PipedAgent {
    child: Child,
    /// The pipe's read end, until a consumer takes it.
    stdout: Option<ChildStdout>,
    ids: BpfIds,
}

impl PipedAgent {
    fn start(args: &[&str]) -> PipedAgent {
        require_root();
        let mut child = trace_command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning nsipc-agent");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let ready = std::iter::from_fn(|| read_line_unbuffered(&mut stdout))
            .map(|line| event_line(&line))
            .find(|event| event["event"] == "agent.ready")
            .expect("the agent ended before agent.ready");
        let ids = attached_by(child.id(), &ready);
        PipedAgent {
            child,
            stdout: Some(stdout),
            ids,
        }
    }

    /// The pipe's read end, for a consumer process: the test keeps no copy, so the consumer is
    /// the only reader.
    fn consumer_stdin(&mut self) -> Stdio {
        Stdio::from(self.stdout.take().expect("one consumer"))
    }

    /// Waits for the agent to end by itself; returns its status and stderr.
    fn wait(mut self) -> (ExitStatus, String, BpfIds) {
        let status = wait_timeout(&mut self.child, WAIT).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("the agent did not exit within {WAIT:?} of losing its reader")
        });
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("reading the agent's stderr");
        (status, stderr, std::mem::take(&mut self.ids))
    }
}

impl Drop for PipedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stopped_by_signal_releases_everything(signal: libc::c_int, name: &str) {
    let agent = Agent::start(&[]);
    let ready = agent.events.last().expect("agent.ready").clone();
    let ids = attached_by(agent.child.id(), &ready);
    let stopped = agent.stop(signal);
    assert!(stopped.status.success(), "{name}: {}", stopped.stderr);
    let stop = stopped.events.last().expect("a last line");
    assert_eq!(stop["event"], "agent.stop", "{stop}");
    assert_eq!(stop["reason"], name);
    assert_released(&ids);
}

#[test]
fn sigterm_releases_everything() {
    stopped_by_signal_releases_everything(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_releases_everything() {
    stopped_by_signal_releases_everything(libc::SIGINT, "SIGINT");
}

/// `nsipc-agent trace | head -n 1`: head leaves after one line, the agent exits 0 without a
/// word.
#[test]
fn a_reader_that_leaves_ends_the_agent_quietly() {
    let mut agent = PipedAgent::start(&[]);
    let head = Command::new("head")
        .args(["-n", "1"])
        .stdin(agent.consumer_stdin())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning head");
    // Until something happens the stream is quiet: a namespace born and freed gives head its
    // line.
    sh("unshare --ipc true");
    let head = head.wait_with_output().expect("waiting for head");
    let line = String::from_utf8(head.stdout).expect("utf-8");
    assert_eq!(line.lines().count(), 1, "{line}");
    let event: Value = event_line(line.trim_end());
    assert!(event["event"].is_string(), "{event}");
    let (status, stderr, ids) = agent.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "the agent exits quietly");
    assert_released(&ids);
}

/// The consumer dies (SIGKILL) while the agent writes a storm of raw events into the pipe: the
/// agent meets EPIPE and exits 0 without a word.
#[test]
fn a_consumer_killed_mid_stream_ends_the_agent_quietly() {
    let mut agent = PipedAgent::start(&["--raw"]);
    let mut consumer = Command::new("cat")
        .stdin(agent.consumer_stdin())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning cat");
    let mut storm = msg_storm(30)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning the storm");
    // Let the storm's events flow for a while, so the agent is writing when its reader dies.
    thread::sleep(Duration::from_millis(500));
    assert!(
        agent.child.try_wait().expect("polling the agent").is_none(),
        "the agent ended before its reader did"
    );
    consumer.kill().expect("killing cat");
    consumer.wait().expect("reaping cat");
    let (status, stderr, ids) = agent.wait();
    let _ = storm.kill();
    let _ = storm.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "", "the agent exits quietly");
    assert_released(&ids);
}

/// The agent killed outright: it cleans nothing up, the kernel does, since every program, link
/// and map is held by an fd.
#[test]
fn a_killed_agent_leaves_nothing_behind() {
    let mut agent = Agent::start(&[]);
    let ready = agent.events.last().expect("agent.ready").clone();
    let ids = attached_by(agent.child.id(), &ready);
    agent.child.kill().expect("killing the agent");
    let status = agent.child.wait().expect("reaping the agent");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_released(&ids);
}

/// The reader stops reading without closing the pipe (a stalled consumer) while a storm fills
/// it and the agent's queue: the agent, blocked writing, still ends on SIGTERM, says so on stderr, and the kernel
/// releases everything.
#[test]
fn a_stalled_reader_does_not_keep_sigterm_from_stopping_the_agent() {
    let mut agent = PipedAgent::start(&["--raw"]);
    // Holds the read end and never reads.
    let mut stalled = Command::new("sleep")
        .arg("60")
        .stdin(agent.consumer_stdin())
        .spawn()
        .expect("spawning sleep");
    let mut storm = msg_storm(30)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning the storm");
    // A pipe holds 64 KiB and the agent queues 1 MiB more: the storm fills both at once, and
    // the agent's stdout writer thread blocks in write(2).
    let pid = agent.child.id();
    let blocked = (0..100).any(|_| {
        thread::sleep(Duration::from_millis(50));
        fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| {
                fs::read_to_string(task.path().join("wchan"))
                    .is_ok_and(|w| w.contains("pipe_write"))
            })
    });
    let _ = storm.kill();
    let _ = storm.wait();
    assert!(
        blocked,
        "the agent never blocked writing to the stalled pipe"
    );
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let (status, stderr, ids) = agent.wait();
    let _ = stalled.kill();
    let _ = stalled.wait();
    assert_eq!(status.code(), Some(1), "{status}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("has not read"), "{stderr}");
    assert_released(&ids);
}
