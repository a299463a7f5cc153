//! `trace`'s filters against the real kernel: agents with filters run beside one without, on
//! the same workload, and each filtered stream must be exactly the unfiltered one's lines that
//! the filter selects (no more, no fewer), its lifecycles still whole. Needs root.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::*;

/// A line as both agents write it: what differs between two agents watching the same event
/// left out: times (each agent's probes read the clock themselves, nanoseconds apart) and so
/// lifetimes; and a namespace's `limits`, which each agent reads when it handles the creation
/// (through the creator, which may be gone for one and not the other).
fn comparable(event: &Value) -> String {
    let mut event = event.as_object().unwrap().clone();
    event.remove("time");
    event.remove("lifetime_ns");
    event.remove("limits");
    Value::Object(event).to_string()
}

/// The lines of `events` about the workload's namespaces, as a set.
fn about(events: &[Value], namespaces: &BTreeSet<u64>) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| {
            !e["event"].as_str().unwrap_or_default().ends_with(".exists")
                && e["ns"].as_u64().is_some_and(|ns| namespaces.contains(&ns))
        })
        .map(comparable)
        .collect()
}

#[test]
fn filtered_streams_are_the_unfiltered_stream_filtered() {
    let mut everything = Agent::start(&[]);
    let mut by_comm = Agent::start(&["--comm", "ipcmk"]);
    let mut by_events = Agent::start(&["--events", "msg.*,ipc_ns.destroy"]);
    let (msg_key, shm_key, sem_key) = (unique_key(61), unique_key(62), unique_key(63));
    // Two namespaces: perl makes keyed objects in one, ipcmk private ones in the other; both
    // die with what is left in them.
    let out = sh(&format!(
        "unshare --ipc sh -c 'readlink /proc/self/ns/ipc; perl -e \"msgget({msg_key}, 01600) // die; \
             shmget({shm_key}, 4096, 01600) // die; semget({sem_key}, 1, 01600) // die\"'
         unshare --ipc sh -c 'readlink /proc/self/ns/ipc; ipcmk -Q >/dev/null; \
             ipcmk -M 4096 >/dev/null; ipcmk -S 2 >/dev/null'"
    ));
    let namespaces: BTreeSet<u64> = out.lines().map(parse_ns_link).collect();
    assert_eq!(namespaces.len(), 2, "{out}");
    let ended = |e: &Value| {
        e["event"] == "ipc_ns.destroy" && e["ns"].as_u64().is_some_and(|n| namespaces.contains(&n))
    };
    let destroyed = |agent: &mut Agent, namespaces: &BTreeSet<u64>| {
        for ns in namespaces {
            agent.wait_for("the workload's namespaces destroyed", |e| {
                ended(e) && e["ns"].as_u64() == Some(*ns)
            });
        }
    };
    destroyed(&mut everything, &namespaces);
    destroyed(&mut by_events, &namespaces);
    let ipcmk_ns: BTreeSet<u64> = everything
        .events
        .iter()
        .filter(|e| e["comm"] == "ipcmk")
        .filter_map(|e| e["ns"].as_u64())
        .collect();
    assert_eq!(ipcmk_ns.len(), 1, "ipcmk worked in one namespace");
    destroyed(&mut by_comm, &ipcmk_ns);
    let [everything, by_comm, by_events] =
        [everything, by_comm, by_events].map(|agent| agent.stop(libc::SIGINT));
    for stopped in [&everything, &by_comm, &by_events] {
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
    let all = about(&everything.events, &namespaces);

    // --comm: ipcmk's lines, and the task-less lines (teardown) of the namespace it was in.
    let expected: BTreeSet<String> = everything
        .events
        .iter()
        .filter(|e| match e.get("comm") {
            Some(comm) => comm == "ipcmk",
            None => e["ns"].as_u64().is_some_and(|ns| ipcmk_ns.contains(&ns)),
        })
        .map(comparable)
        .filter(|line| all.contains(line))
        .collect();
    assert_eq!(
        expected
            .iter()
            .filter(|l| l.contains("\"comm\":\"ipcmk\""))
            .count(),
        3,
        "ipcmk made three objects: {expected:#?}"
    );
    assert_eq!(
        about(&by_comm.events, &namespaces),
        expected,
        "--comm ipcmk"
    );

    // --events: the globs, whoever the task.
    let expected: BTreeSet<String> = everything
        .events
        .iter()
        .filter(|e| {
            let name = e["event"].as_str().unwrap_or_default();
            name.starts_with("msg.") || name == "ipc_ns.destroy"
        })
        .map(comparable)
        .filter(|line| all.contains(line))
        .collect();
    assert_eq!(
        expected
            .iter()
            .filter(
                |l| l.contains("\"event\":\"msg.create") || l.contains("\"event\":\"msg.destroy")
            )
            .count(),
        4,
        "two queues made and destroyed: {expected:#?}"
    );
    assert_eq!(
        about(&by_events.events, &namespaces),
        expected,
        "--events msg.*,ipc_ns.destroy"
    );
    eprintln!(
        "filters: {} lines about the workload unfiltered, {} with --comm ipcmk, {} with --events",
        all.len(),
        about(&by_comm.events, &namespaces).len(),
        about(&by_events.events, &namespaces).len()
    );
}
