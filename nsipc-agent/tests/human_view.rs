//! The human view (`--output pretty`) of the real agent: its lines name the events and the
//! keys in hex, `--color never` writes no escape codes, and what stdout is decides the default
//! (JSON into a pipe, pretty and coloured on a terminal, uncoloured with NO_COLOR). Needs root.

mod support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

use support::*;

/// A running command whose stdout is read line by line.
struct Lines {
    child: Child,
    rx: Receiver<String>,
    /// Every line so far.
    seen: Vec<String>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> Lines {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A terminal ends lines with \r\n.
                let line = line.trim_end_matches('\r').to_owned();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// The first line (seen or to come) that `pred` accepts.
    fn wait_for(&mut self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    panic!(
                        "no {what} within {within:?}; lines:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Sends `signal` to `pid`, then reads every line until the command exits.
    fn stop(mut self, pid: u32, signal: libc::c_int) -> Vec<String> {
        // SAFETY: kill with a pid and a valid signal.
        unsafe { libc::kill(pid as i32, signal) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}; lines:\n{}",
            self.seen.join("\n")
        );
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

/// `HH:MM:SS.mmm ` at the start of a line.
fn starts_with_a_time(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 13
        && [0, 1, 3, 4, 6, 7, 9, 10, 11]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && b[12] == b' '
}

/// The columns of a pretty line: time, kind, ns, who, pid/comm, then the facts.
fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The agent's pid, from its `agent.ready` line (`… pid 1234 …`).
fn agent_pid(ready: &str) -> u32 {
    let words = columns(ready);
    let at = words.iter().position(|w| *w == "pid").expect("a pid fact");
    words[at + 1].parse().expect("a pid")
}

/// `unshare --ipc` runs a shell that makes a segment (0600, 4096 bytes) and a queue (0640)
/// with ipcmk, prints their keys as ipcs does, then removes them; returns (shm key, msg key).
fn ipcmk_workload() -> (String, String) {
    let out = sh("unshare --ipc sh -ec '\
         ipcmk -M 4096 -p 0600 >/dev/null; ipcmk -Q -p 0640 >/dev/null; \
         ipcs -m | awk \"/^0x/ {print \\$1}\"; ipcs -q | awk \"/^0x/ {print \\$1}\"; \
         ipcrm -a'");
    let keys: Vec<&str> = out.lines().collect();
    assert_eq!(keys.len(), 2, "{out}");
    for key in &keys {
        assert!(key.starts_with("0x") && key.len() == 10, "{out}");
    }
    (keys[0].to_owned(), keys[1].to_owned())
}

#[test]
fn trace_pretty_names_the_events_and_the_keys_in_hex() {
    require_root();
    let mut agent = Lines::spawn(trace_command().args(["--output", "pretty", "--color", "never"]));
    let ready = agent.wait_for("agent.ready", READY_WAIT, |l| {
        columns(l).get(1) == Some(&"agent.ready")
    });
    let (shm_key, msg_key) = ipcmk_workload();
    let has = |kind: &'static str, key: String| {
        move |l: &str| columns(l).get(1) == Some(&kind) && l.contains(&format!(" key {key} "))
    };
    let shm = agent.wait_for("shm.create", WAIT, has("shm.create", shm_key.clone()));
    let words = columns(&shm);
    let ns = words[2].to_owned();
    assert_eq!(words[3], "host", "{shm}");
    assert!(words[4].ends_with("/ipcmk"), "{shm}");
    assert!(shm.ends_with(" mode 0600 size 4096"), "{shm}");
    let msg = agent.wait_for("msg.create", WAIT, has("msg.create", msg_key.clone()));
    assert_eq!(columns(&msg)[2], ns, "{msg}");
    assert!(msg.ends_with(" mode 0640"), "{msg}");
    let created = agent.wait_for("ipc_ns.create", WAIT, |l| {
        let words = columns(l);
        words.get(1) == Some(&"ipc_ns.create") && words.get(2) == Some(&ns.as_str())
    });
    assert!(
        created.contains(&format!("4026531839→{ns} via unshare")),
        "{created}"
    );
    for (kind, key) in [("shm.destroy", &shm_key), ("msg.destroy", &msg_key)] {
        let line = agent.wait_for(kind, WAIT, has(kind, key.clone()));
        assert!(line.contains(" reason rmid lifetime "), "{line}");
        assert!(columns(&line)[4].ends_with("/ipcrm"), "{line}");
    }
    agent.wait_for("ipc_ns.destroy", WAIT, |l| {
        let words = columns(l);
        words.get(1) == Some(&"ipc_ns.destroy") && words.get(2) == Some(&ns.as_str())
    });
    let lines = agent.stop(agent_pid(&ready), libc::SIGINT);
    let stop = lines.last().expect("lines");
    assert_eq!(columns(stop)[1], "agent.stop", "{stop}");
    assert!(stop.contains(" reason SIGINT "), "{stop}");
    for line in &lines {
        assert!(!line.contains('\x1b'), "an escape code: {line:?}");
        assert!(starts_with_a_time(line), "{line:?}");
        assert!(!line.starts_with('{'), "{line:?}");
    }
}

/// `script` gives the agent a terminal for stdout and copies what it writes to a pipe.
fn on_a_terminal(command: &str, no_color: bool) -> Command {
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", command, "/dev/null"])
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    cmd
}

#[test]
fn on_a_terminal_trace_is_pretty_and_coloured_unless_no_color() {
    require_root();
    for no_color in [false, true] {
        let mut agent = Lines::spawn(&mut on_a_terminal(
            &format!("{AGENT} trace --events 'shm.*'"),
            no_color,
        ));
        let ready = agent.wait_for("agent.ready", READY_WAIT, |l| l.contains("agent.ready"));
        let key = unique_key(7);
        sh(&format!(
            "perl -e 'my $id = shmget({key}, 4096, 01600) // die; shmctl($id, 0, 0) or die'"
        ));
        let hex = format!("0x{:08x}", key as u32);
        let created = agent.wait_for("shm.create", WAIT, |l| {
            l.contains("shm.create") && l.contains(&format!(" key {hex} "))
        });
        let lines = agent.stop(agent_pid(&ready), libc::SIGINT);
        assert!(starts_with_a_time(&created), "{created:?}");
        if no_color {
            assert!(
                lines.iter().all(|l| !l.contains('\x1b')),
                "NO_COLOR: {lines:#?}"
            );
        } else {
            assert!(created.contains("\x1b[32mshm.create\x1b[0m"), "{created:?}");
            let destroyed = lines
                .iter()
                .find(|l| l.contains("shm.destroy") && l.contains(&hex))
                .expect("shm.destroy");
            assert!(
                destroyed.contains("\x1b[31mshm.destroy\x1b[0m"),
                "{destroyed:?}"
            );
        }
        assert!(lines.iter().all(|l| !l.starts_with('{')), "{lines:#?}");
    }
}

#[test]
fn snapshot_is_json_into_a_pipe_and_pretty_when_asked_or_on_a_terminal() {
    require_root();
    // A namespace held by a process, with a queue in it.
    let mut holder = Lines::spawn(Command::new("unshare").args([
        "--ipc",
        "sh",
        "-c",
        "ipcmk -Q -p 0600 >/dev/null; ipcs -q | awk '/^0x/ {print $1}'; exec sleep 60",
    ]));
    let key = holder.wait_for("the queue's key", WAIT, |l| l.starts_with("0x"));

    let snapshot = |args: &[&str]| {
        let out = Command::new(AGENT)
            .arg("snapshot")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Into a pipe, without asking: JSON Lines.
    let json = snapshot(&[]);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let queue = events
        .iter()
        .find(|e| e["event"] == "msg.exists" && e["key_hex"] == key.as_str())
        .unwrap_or_else(|| panic!("no msg.exists with key {key}: {json}"));
    let ns = queue["ns"].to_string();
    assert_eq!(
        snapshot(&["--output", "json", "--color", "always"])
            .lines()
            .count(),
        events.len()
    );

    let pretty = snapshot(&["--output", "pretty", "--color", "never"]);
    assert!(!pretty.contains('\x1b'), "{pretty:?}");
    let lines: Vec<&str> = pretty.lines().collect();
    // The namespaces and objects may have changed in between (other tests run): as many as
    // some snapshot's, and the queue.
    assert!(lines.iter().all(|l| starts_with_a_time(l)), "{pretty}");
    let line = lines
        .iter()
        .find(|l| columns(l)[1] == "msg.exists" && l.contains(&format!(" key {key} ")))
        .unwrap_or_else(|| panic!("no msg.exists with key {key}: {pretty}"));
    assert_eq!(columns(line)[2], ns, "{line}");
    assert!(line.contains(" mode 0600 "), "{line}");
    assert!(
        lines
            .iter()
            .any(|l| columns(l)[1] == "ipc_ns.exists" && columns(l)[2] == ns),
        "{pretty}"
    );

    // On a terminal: pretty by default, JSON when asked.
    let out = Command::new("script")
        .args(["-qec", &format!("{AGENT} snapshot"), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("msg.exists") && l.contains(&format!(" key {key} "))),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| !l.starts_with("nsipc-agent: warning"))
            .all(|l| starts_with_a_time(l.trim_end_matches('\r'))),
        "{text}"
    );
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{AGENT} snapshot --output json"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .filter(|l| !l.starts_with("nsipc-agent: warning"))
            .all(|l| serde_json::from_str::<serde_json::Value>(l.trim_end_matches('\r')).is_ok()),
        "{text}"
    );
    let _ = holder.child.kill();
    let _ = holder.child.wait();
}
