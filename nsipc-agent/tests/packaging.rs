//! The systemd unit the .deb installs (packaging/nsipc-agent.service), as systemd and the
//! kernel see it: `systemd-analyze verify` finds nothing to say, and the agent, run with
//! exactly the unit's `CapabilityBoundingSet` and `ExecStart` arguments, starts, inventories a
//! namespace held only by a process, traces, and stops cleanly on SIGTERM. Needs root.

mod support;

use std::{
    fs,
    process::{Command, Stdio},
};

use support::*;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/nsipc-agent.service"
);
const PACKAGED_AGENT: &str = "/usr/bin/nsipc-agent";

/// The values of `key=` lines of the unit.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn systemd_finds_nothing_to_say_about_the_unit() {
    require_root();
    let unit = fs::read_to_string(UNIT).unwrap();
    // verify also checks that ExecStart's program exists: this build's agent stands in for the
    // packaged one.
    let copy = std::env::temp_dir().join(format!("nsipc-agent-{}.service", std::process::id()));
    fs::write(&copy, unit.replace(PACKAGED_AGENT, AGENT)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (package systemd)");
    let _ = fs::remove_file(&copy);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn the_agent_works_with_the_units_capabilities_only() {
    require_root();
    let unit = fs::read_to_string(UNIT).unwrap();
    let caps: Vec<String> = values(&unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|set| set.split_whitespace())
        .map(|cap| format!("+{}", cap.strip_prefix("CAP_").unwrap().to_lowercase()))
        .collect();
    assert!(caps.len() >= 3, "{caps:?}");
    let exec = values(&unit, "ExecStart");
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(args[0], PACKAGED_AGENT);

    // A namespace held only by a process: found through /proc, which the capabilities must
    // allow.
    let mut holder = Command::new("unshare")
        .args(["--ipc", "sleep", "60"])
        .spawn()
        .expect("unshare");
    let inum = wait_for_ns_change(holder.id());
    let child = Command::new("setpriv")
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .arg("--")
        .arg(AGENT)
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let mut agent = Agent::from_child(child);
    let found = agent.wait_for("the held namespace in the inventory", |e| {
        e["event"] == "ipc_ns.exists" && e["ns"] == inum
    });
    assert_eq!(found["processes"][0]["pid"], holder.id(), "{found}");
    agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    let key = unique_key(1);
    sh(&format!(
        "perl -e 'msgctl(msgget({key}, 01600), 0, 0) or die'"
    ));
    agent.wait_for("the queue made", |e| {
        e["event"] == "msg.create" && e["key"] == key
    });
    let _ = holder.kill();
    let _ = holder.wait();
    let stopped = agent.stop(libc::SIGTERM);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let last = stopped.events.last().expect("a stream");
    assert_eq!(last["event"], "agent.stop", "{last}");
    assert_eq!(last["reason"], "SIGTERM");
}

/// The inum of `pid`'s IPC namespace once it differs from this process's (unshare has run).
fn wait_for_ns_change(pid: u32) -> u64 {
    let mine = parse_ns_link(
        &fs::read_link("/proc/self/ns/ipc")
            .unwrap()
            .to_string_lossy(),
    );
    for _ in 0..200 {
        if let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/ipc")) {
            let inum = parse_ns_link(&link.to_string_lossy());
            if inum != mine {
                return inum;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("pid {pid} never left this IPC namespace");
}
