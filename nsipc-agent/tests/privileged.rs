//! End-to-end tests: the real probes in the running kernel, driven by util-linux programs,
//! checked against what the kernel itself reports. Needs root.

#[path = "privileged/activity.rs"]
mod activity;
#[path = "privileged/frees.rs"]
mod frees;
#[path = "privileged/kernel.rs"]
mod kernel;
#[path = "privileged/mqueues.rs"]
mod mqueues;
mod support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use support::*;

/// Objects created with known keys inside `unshare --ipc` are reported with those keys, the ids
/// the kernel gave them, and the new namespace's inum (not the host's); `ipcrm` gives the ctl
/// IPC_RMID.
#[test]
fn objects_in_a_new_namespace_carry_its_inum() {
    let mut agent = Agent::start(&["--raw"]);
    // 64-bit namespace ids (ns_common.ns_id) only exist since 6.18.
    let has_ns_id = agent.wait_for("agent.ready", |e| e["event"] == "agent.ready")["ns_id"]
        .as_bool()
        .expect("agent.ready has a boolean ns_id");
    let (msg_key, shm_key, sem_key) = (unique_key(1), unique_key(2), unique_key(3));
    // perl's msgget/shmget/semget are the syscalls themselves; ipcmk here cannot pick a key.
    let out = sh(&format!(
        "unshare --ipc sh -c '
            readlink /proc/self/ns/ipc
            perl -e \"msgget({msg_key}, 01600) // die; shmget({shm_key}, 8192, 01600) // die; \
                      semget({sem_key}, 3, 01600) // die\"
            ipcs -q | awk \"\\$1 == sprintf(\\\"0x%08x\\\", {msg_key}) {{ print \\$2 }}\"
            ipcs -m | awk \"\\$1 == sprintf(\\\"0x%08x\\\", {shm_key}) {{ print \\$2 }}\"
            ipcs -s | awk \"\\$1 == sprintf(\\\"0x%08x\\\", {sem_key}) {{ print \\$2 }}\"
            ipcrm -Q {msg_key} -M {shm_key} -S {sem_key}
        '"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "readlink and three ids from ipcs: {out}");
    let ns = parse_ns_link(lines[0]);
    assert_ne!(ns, HOST_NS);
    let kernel_ids: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();

    // The inum may have had other lives meanwhile (reused at once; other tests and workloads
    // run concurrently): the queue's get, by its unique key, names this life where the kernel
    // has ns_id (on older kernels the VM runs one test at a time).
    let queue = agent.wait_for("msg.get", |e| {
        e["event"] == "msg.get" && e["key"] == msg_key
    });
    let unshare = agent.wait_for("ipc_ns.unshare", |e| {
        e["event"] == "ipc_ns.unshare" && e["ns"] == ns && e["ns_id"] == queue["ns_id"]
    });
    assert_eq!(unshare["comm"], "unshare");
    assert_eq!(unshare["ret"], 0);
    assert_ne!(unshare["from_ns"], ns);

    for ((event, key), kernel_id) in [
        ("msg.get", msg_key),
        ("shm.get", shm_key),
        ("sem.get", sem_key),
    ]
    .into_iter()
    .zip(kernel_ids)
    {
        let get = agent.wait_for(event, |e| {
            e["event"] == event && e["key"] == key && e["comm"] == "perl"
        });
        assert_eq!(get["ns"], ns, "{event} in the new namespace");
        assert_eq!(field(&get, "id"), kernel_id, "{event}: the id ipcs shows");
        assert_eq!(field(&get, "flags"), 0o1600);
        for common in ["pid", "tid", "uid", "comm", "time"] {
            assert!(get.get(common).is_some(), "{event} lacks {common}: {get}");
        }
        assert_eq!(
            get.get("ns_id").is_some(),
            has_ns_id,
            "{event} has ns_id exactly when agent.ready says the kernel has it: {get}"
        );
        let object = &event[..3];
        let ctl_event = format!("{object}.ctl");
        let rmid = agent.wait_for(&ctl_event, |e| {
            e["event"] == ctl_event.as_str()
                && e["ns"] == ns
                && e["cmd"] == "IPC_RMID"
                && e["comm"] == "ipcrm"
        });
        assert_eq!(field(&rmid, "id"), kernel_id);
        assert_eq!(rmid["ret"], 0);
    }
    assert!(agent.stop(libc::SIGTERM).status.success());
}

/// Issue 14: `key_hex` and `mode_octal` are what `ipcs -q` prints as `key` and `perms`, on the
/// raw get, the create, the snapshot's exists line and the destroy of each queue: one made by
/// `ipcmk -Q` (a key it picks at random), one with a negative key, one IPC_PRIVATE with a mode
/// under 0o100 (which ipcs prints without its leading zero).
#[test]
fn keys_in_hex_and_modes_in_octal_are_what_ipcs_prints() {
    let mut agent = Agent::start(&["--raw"]);
    let negative_key = -unique_key(6);
    let out = sh(&format!(
        "unshare --ipc sh -c '
            set -e
            readlink /proc/self/ns/ipc
            ipcmk -Q -p 0640 >/dev/null
            perl -e \"msgget({negative_key}, 01604) // die; msgget(0, 01044) // die\"
            ipcs -q
            {AGENT} snapshot
        '"
    ));
    let ns = parse_ns_link(out.lines().next().unwrap());
    // ipcs -q: key, msqid, owner, perms, used-bytes, messages.
    let rows: Vec<(String, i64, String)> = out
        .lines()
        .filter(|l| l.starts_with("0x"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (
                cols[0].to_owned(),
                cols[1].parse().unwrap(),
                cols[3].to_owned(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 3, "three queues in ipcs -q: {out}");
    let negative_hex = format!("0x{:08x}", negative_key as i32 as u32);
    assert!(
        rows.iter()
            .any(|(key, _, perms)| *key == negative_hex && perms == "604"),
        "{out}"
    );
    assert!(
        rows.iter()
            .any(|(key, _, perms)| key == "0x00000000" && perms == "44"),
        "{out}"
    );
    let snapshot: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(event_line)
        .collect();

    // This life of the inum (other tests may make others meanwhile): the negative key's get.
    let anchor = agent.wait_for("msg.get", |e| {
        e["event"] == "msg.get" && e["key"] == negative_key
    });
    assert_eq!(anchor["ns"], ns);
    let same_life = |e: &serde_json::Value| e["ns"] == ns && e["ns_id"] == anchor["ns_id"];
    for (key_hex, id, perms) in &rows {
        // ipcs writes the permission bits with no leading zeros; the stream always in 3 digits.
        let mode_octal = format!("{perms:0>3}");
        let key = i64::from(u32::from_str_radix(&key_hex[2..], 16).unwrap() as i32);
        let by_id = |event: &'static str| {
            move |e: &serde_json::Value| e["event"] == event && same_life(e) && e["id"] == *id
        };
        let get = agent.wait_for("msg.get", by_id("msg.get"));
        let create = agent.wait_for("msg.create", by_id("msg.create"));
        let destroy = agent.wait_for("msg.destroy", by_id("msg.destroy"));
        let exists = snapshot
            .iter()
            .find(|e| e["event"] == "msg.exists" && e["ns"] == ns && e["id"] == *id)
            .unwrap_or_else(|| panic!("no msg.exists of {id} in {ns}: {out}"));
        for line in [&get, &create, exists, &destroy] {
            assert_eq!(line["key_hex"], key_hex.as_str(), "ipcs: {key_hex}; {line}");
            assert_eq!(line["key"], key, "{line}");
        }
        for line in [&get, &create, exists] {
            assert_eq!(line["mode_octal"], mode_octal, "ipcs: {perms}; {line}");
            assert_eq!(
                line["mode"],
                i64::from_str_radix(perms, 8).unwrap(),
                "{line}"
            );
        }
        assert_eq!(destroy["reason"], "namespace_teardown");
    }
    // The key ipcmk picked, and its mode, exactly as ipcs prints them.
    let (ipcmk_hex, ipcmk_id, _) = rows
        .iter()
        .find(|(key, _, perms)| perms == "640" && key != "0x00000000")
        .unwrap_or_else(|| panic!("ipcmk's queue: {out}"));
    let create = agent.wait_for("msg.create", |e| {
        e["event"] == "msg.create" && same_life(e) && e["id"] == *ipcmk_id
    });
    assert_eq!(create["key_hex"], ipcmk_hex.as_str());
    assert_eq!(create["mode_octal"], "640");
}

/// A get for a key that does not exist fails with ENOENT, named.
#[test]
fn failed_get_names_the_errno() {
    let mut agent = Agent::start(&["--raw"]);
    let key = unique_key(4);
    sh(&format!("unshare --ipc perl -e 'msgget({key}, 0) and die'"));
    let get = agent.wait_for("failed msg.get", |e| {
        e["event"] == "msg.get" && e["key"] == key
    });
    assert_eq!(get["errno"], "ENOENT");
    assert_eq!(get["ret"], -2);
    assert!(get.get("id").is_none());
}

/// With `--raw`, one `shmat` and one `shmdt` each give one raw line and one lifecycle line,
/// under different names: `select(.event == "shm.attach")` counts calls, not twice the calls.
#[test]
fn raw_and_lifecycle_attaches_have_names_of_their_own() {
    let mut agent = Agent::start(&["--raw"]);
    let out = sh(r#"unshare --ipc sh -c 'readlink /proc/self/ns/ipc
        perl -e "\$id = shmget(0, 4096, 0600) // die; \$a = syscall(30, \$id, 0, 0);
                 \$a > 0 or die; syscall(67, \$a) == 0 or die; shmctl(\$id, 0, 0) or die"'"#);
    let ns = parse_ns_link(out.trim());
    agent.wait_for("shm.destroy", |e| {
        e["event"] == "shm.destroy" && e["ns"] == ns
    });
    let count = |name: &str| {
        agent
            .events
            .iter()
            .filter(|e| e["event"] == name && e["ns"] == ns)
            .count()
    };
    for name in ["shm.shmat", "shm.attach", "shm.shmdt", "shm.detach"] {
        assert_eq!(count(name), 1, "{name} lines for one call");
    }
}

/// `nsenter --ipc=/proc/PID/ns/ipc` is a setns into PID's namespace, from the host's.
#[test]
fn nsenter_is_a_setns_into_the_target_namespace() {
    let mut agent = Agent::start(&["--raw"]);
    let mut holder = Command::new("unshare")
        .args(["--ipc", "sleep", "60"])
        .spawn()
        .expect("starting a namespace holder");
    let link = format!("/proc/{}/ns/ipc", holder.id());
    // unshare execs sleep after switching; wait until the pid shows the new namespace.
    let deadline = Instant::now() + WAIT;
    let target = loop {
        let inum = parse_ns_link(&std::fs::read_link(&link).unwrap().to_string_lossy());
        if inum != HOST_NS || Instant::now() > deadline {
            break inum;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_ne!(target, HOST_NS);
    let lsns = sh("lsns -t ipc -n -o NS");
    assert!(
        lsns.lines().any(|l| l.trim() == target.to_string()),
        "lsns knows {target}: {lsns}"
    );

    let inside = sh(&format!("nsenter --ipc={link} readlink /proc/self/ns/ipc"));
    assert_eq!(parse_ns_link(&inside), target);
    // Other agents' startup inventories (concurrent tests) setns into it too: match nsenter's.
    let setns = agent.wait_for("ipc_ns.setns", |e| {
        e["event"] == "ipc_ns.setns" && e["ns"] == target && e["comm"] == "nsenter"
    });
    assert_eq!(setns["from_ns"], HOST_NS);
    assert_eq!(setns["ret"], 0);
    assert_eq!(field(&setns, "nstype"), 0x0800_0000, "CLONE_NEWIPC");
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The holder's exit is in a non-host namespace, so it is reported.
    let pid = holder.id();
    agent.wait_for("process.exit", |e| {
        e["event"] == "process.exit" && e["pid"] == pid && e["ns"] == target
    });
}

/// clone(CLONE_NEWIPC) gives ipc_ns.clone with the child's pid and its new namespace.
#[test]
fn clone_with_newipc_reports_the_child_namespace() {
    let mut agent = Agent::start(&["--raw"]);
    // SYS_clone = 56 on x86_64; flags CLONE_NEWIPC | SIGCHLD, no new stack: fork semantics.
    let out = sh("perl -e '
        my $pid = syscall(56, 0x08000011, 0, 0, 0, 0);
        die \"clone: $!\" if $pid < 0;
        if ($pid == 0) { exec \"readlink\", \"/proc/self/ns/ipc\" }
        waitpid($pid, 0);
        print \"$pid\\n\"'");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let child_ns = parse_ns_link(lines[0]);
    let child_pid: i64 = lines[1].parse().unwrap();
    let clone = agent.wait_for("ipc_ns.clone", |e| {
        e["event"] == "ipc_ns.clone" && e["child_pid"] == child_pid
    });
    assert_eq!(clone["ns"], child_ns);
    assert_ne!(clone["ns"], clone["from_ns"]);
    assert_eq!(clone["comm"], "perl");
    assert_eq!(clone["ret"], child_pid, "single-threaded child: tid == pid");
}

/// SIGTERM and SIGINT detach, drain, end with agent.stop and exit 0.
#[test]
fn signals_stop_cleanly_with_agent_stop() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut agent = Agent::start(&["--raw"]);
        let key = unique_key(5);
        sh(&format!("unshare --ipc perl -e 'msgget({key}, 0)'"));
        agent.wait_for("msg.get", |e| e["event"] == "msg.get" && e["key"] == key);
        let stopped = agent.stop(signal);
        assert_eq!(
            stopped.status.code(),
            Some(0),
            "{name}: exit status; stderr: {}",
            stopped.stderr
        );
        let last = stopped.events.last().expect("some events");
        assert_eq!(last["event"], "agent.stop", "{name}: last line");
        assert_eq!(last["reason"], name);
        assert!(field(last, "events") >= 1);
        // Loss depends on what else runs on the machine; its accounting does not: the total
        // in agent.stop is exactly what the agent.lost lines reported.
        let reported: i64 = stopped
            .events
            .iter()
            .filter(|e| e["event"] == "agent.lost")
            .map(|e| field(e, "count"))
            .sum();
        assert_eq!(field(last, "lost"), reported, "{name}: lost accounting");
        assert!(
            stopped.stderr.is_empty(),
            "{name}: nothing on stderr: {}",
            stopped.stderr
        );
    }
}

/// The startup check (`agent.kfree_check`) sees, on this kernel and backend, the frees of the
/// namespace and the removed segment it makes, and none of its own doings reach the stream.
#[test]
fn startup_kfree_check_sees_both_frees_and_stays_out_of_the_stream() {
    let mut agent = Agent::start(&["--raw"]);
    let pid = agent.wait_for("agent.ready", |e| e["event"] == "agent.ready")["pid"].clone();
    let check = agent.wait_within("agent.kfree_check", Duration::from_secs(60), |e| {
        e["event"] == "agent.kfree_check"
    });
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["namespace_free_seen"], true, "{check}");
    assert_eq!(check["segment_free_seen"], true, "{check}");
    assert_eq!(check["error"], serde_json::Value::Null, "{check}");
    let stopped = agent.stop(libc::SIGINT);
    let own: Vec<_> = stopped
        .events
        .iter()
        // The inventory's helper thread (`nsipc-setns`) is the agent's too, and shows in --raw.
        .filter(|e| {
            let agents_task = e["pid"] == pid && e.get("tid").is_some();
            e["comm"] == "nsipc-kfreechk" || (agents_task && e["comm"] != "nsipc-setns")
        })
        .collect();
    assert!(own.is_empty(), "the check's own records: {own:#?}");
    assert!(
        !stopped
            .events
            .iter()
            .any(|e| e["event"] == "agent.resync" && e["after"] == "kfree_unverified"),
        "no fallback after a check that passed"
    );
}

/// `nsipc-agent trace | head -3`: the agent notices the closed pipe and exits 0, quietly.
#[test]
fn closed_pipe_exits_quietly() {
    require_root();
    let mut child = trace_command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    // The startup inventory's lines come first, then agent.ready.
    let mut line = String::new();
    while !line.contains("\"agent.ready\"") {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended before agent.ready"
        );
    }
    drop(reader); // the reader goes away, like `head` after its lines
    let key = unique_key(6);
    sh(&format!("unshare --ipc perl -e 'msgget({key}, 0)'"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent kept running after its reader left"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        output.stderr.is_empty(),
        "quiet: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The one-shot commands into a pipe whose reader is already gone (`| head -c0`, `| true`):
/// exit 0, no panic, no error about the pipe, as `trace` does.
#[test]
fn one_shot_commands_exit_quietly_into_a_closed_pipe() {
    require_root();
    for args in [&["check"][..], &["snapshot"], &["completions", "bash"]] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = Command::new(AGENT)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("running the agent");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
    }
}

/// Without root: one clear sentence naming what is missing, non-zero exit, no backtrace.
#[test]
fn non_root_gets_one_clear_sentence() {
    require_root();
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            AGENT,
        ])
        .args(trace_command().get_args())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("needs root") && stderr.contains("CAP_BPF"),
        "{stderr}"
    );
}

/// Without BTF: one clear sentence naming the kernel option.
#[test]
fn missing_btf_gets_one_clear_sentence() {
    require_root();
    let output = trace_command()
        .args(["--btf", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("CONFIG_DEBUG_INFO_BTF"), "{stderr}");
}

/// The validation every line read here goes through refuses what the agent must not write: a
/// real `agent.ready` line passes, and the same line with a field too many, one missing (`time`
/// too), or a backend that does not exist, is refused, with the line in the error.
#[test]
fn the_stream_reader_refuses_lines_the_schema_does_not_allow() {
    let agent = Agent::start(&[]);
    let ready = agent
        .events
        .iter()
        .find(|e| e["event"] == "agent.ready")
        .expect("agent.ready")
        .clone();
    drop(agent);
    assert!(validate_line(&ready.to_string()).is_ok());
    let mut extra = ready.clone();
    extra["colour"] = json!("red");
    let mut missing = ready.clone();
    missing.as_object_mut().unwrap().remove("hooks");
    let mut backend = ready.clone();
    backend["backend"] = json!("uprobe");
    let mut untimed = ready.clone();
    untimed.as_object_mut().unwrap().remove("time");
    for wrong in [extra, missing, backend, untimed] {
        let line = wrong.to_string();
        let error = validate_line(&line).expect_err(&line);
        assert!(error.contains(&line), "{error}");
    }
    assert!(
        validate_line("{\"event\": \"agent.ready\"").is_err(),
        "not JSON"
    );
}
