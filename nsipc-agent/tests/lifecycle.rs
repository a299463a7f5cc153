//! Lifecycle events against the real kernel: births, deaths with and without a syscall, and
//! the two-namespaces-same-key diagnosis. Needs root.

#[path = "lifecycle/limits.rs"]
mod limits;
mod support;

use std::{fs, os::unix::fs::MetadataExt};

use support::*;

/// Objects still inside a namespace when its last process exits die with it, with no syscall:
/// each gets a destroy with reason namespace_teardown, then the namespace's destroy counts them.
#[test]
fn teardown_destroys_the_objects_left_inside() {
    let mut agent = Agent::start(&[]);
    let (msg_key, shm_key, sem_key) = (unique_key(21), unique_key(22), unique_key(23));
    let out = sh(&format!(
        "unshare --ipc sh -c 'readlink /proc/self/ns/ipc
            perl -e \"msgget({msg_key}, 01600) // die; shmget({shm_key}, 4096, 01600) // die; \
                      semget({sem_key}, 2, 01600) // die\"'"
    ));
    let ns = parse_ns_link(&out);
    // The inum may have had other lives during this test (the kernel reuses it at once, and
    // tests run concurrently): the queue's create, by its unique key, names this life.
    let queue = agent.wait_for("msg.create", |e| {
        e["event"] == "msg.create" && e["key"] == msg_key
    });
    assert_eq!(queue["ns"], ns);
    let same_life = |e: &serde_json::Value| {
        e["ns"] == ns && e["ns_id"] == queue["ns_id"] && e["ns_gen"] == queue["ns_gen"]
    };
    let create = agent.wait_for("ipc_ns.create", |e| {
        e["event"] == "ipc_ns.create" && same_life(e)
    });
    assert_eq!(create["via"], "unshare");
    assert_eq!(create["from_ns"], HOST_NS);
    for (event, key) in [("shm.create", shm_key), ("sem.create", sem_key)] {
        let created = agent.wait_for(event, |e| e["event"] == event && e["key"] == key);
        assert!(same_life(&created), "{created}");
    }
    let destroy = agent.wait_for("ipc_ns.destroy", |e| {
        e["event"] == "ipc_ns.destroy" && same_life(e)
    });
    assert_eq!(
        destroy["objects_destroyed"],
        serde_json::json!({"msg": 1, "shm": 1, "sem": 1})
    );
    assert!(field(&destroy, "lifetime_ns") > 0);
    assert!(
        destroy.get("pid").is_none(),
        "no process destroys a namespace"
    );
    for (event, key) in [
        ("msg.destroy", msg_key),
        ("shm.destroy", shm_key),
        ("sem.destroy", sem_key),
    ] {
        let destroyed = agent.wait_for(event, |e| e["event"] == event && e["key"] == key);
        assert_eq!(destroyed["ns"], ns, "{event}");
        assert_eq!(destroyed["reason"], "namespace_teardown", "{event}");
    }
}

/// IPC_RMID on an attached segment only marks it (shm.remove); it dies at the last detach,
/// here the attaching process's exit (no shmdt), with reason last_detach.
#[test]
fn shm_removed_while_attached_dies_at_the_last_detach() {
    let mut agent = Agent::start(&[]);
    let key = unique_key(24);
    // One namespace held by this shell: a child attaches (SYS_shmat = 30), the parent removes
    // the segment, then the child exits without detaching.
    let out = sh(&format!(
        "unshare --ipc sh -c '
            readlink /proc/self/ns/ipc
            id=$(perl -e \"print shmget({key}, 4096, 01600) // die\")
            perl -e \"\\$|=1; syscall(30, $id, 0, 0) >= 0 or die; print qq(attached\\n); sleep 1\" &
            sleep 0.3
            ipcrm -m $id
            ipcs -m | grep -c dest
            wait
            echo $id'"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let ns = parse_ns_link(lines[0]);
    assert_eq!(lines[1], "attached");
    assert_eq!(
        lines[2], "1",
        "the kernel shows the segment marked dest while attached"
    );
    let id: i64 = lines[3].parse().unwrap();

    let created = agent.wait_for("shm.create", |e| {
        e["event"] == "shm.create" && e["key"] == key
    });
    assert_eq!(field(&created, "id"), id);
    let attach = agent.wait_for("shm.attach", |e| {
        e["event"] == "shm.attach" && e["ns"] == ns && e["key"] == key
    });
    assert_eq!(field(&attach, "id"), id);
    assert_eq!(attach["key"], key);
    let removed = agent.wait_for("shm.remove", |e| {
        e["event"] == "shm.remove" && e["ns"] == ns && e["key"] == key
    });
    assert_eq!(field(&removed, "id"), id);
    assert_eq!(removed["comm"], "ipcrm");
    let destroyed = agent.wait_for("shm.destroy", |e| {
        e["event"] == "shm.destroy" && e["ns"] == ns && e["key"] == key
    });
    assert_eq!(field(&destroyed, "id"), id);
    assert_eq!(destroyed["reason"], "last_detach");
    // It died before its namespace did. The inum may have had other lives during this test
    // (the kernel reuses it at once): compare this life only (ns_id, or ns_gen before 6.18).
    let same_life = |e: &serde_json::Value| {
        e["ns"] == ns && e["ns_id"] == destroyed["ns_id"] && e["ns_gen"] == destroyed["ns_gen"]
    };
    let destroy_at = agent
        .events
        .iter()
        .position(|e| e["event"] == "shm.destroy" && same_life(e));
    agent.wait_for("ipc_ns.destroy", |e| {
        e["event"] == "ipc_ns.destroy" && same_life(e)
    });
    let ns_destroy_at = agent
        .events
        .iter()
        .position(|e| e["event"] == "ipc_ns.destroy" && same_life(e));
    assert!(destroy_at < ns_destroy_at);
}

/// Issue 10, defect 5: the probes find a segment's kernel pointer (to see its free) by the
/// index part of its id, which is below bit 15, or bit 24 on a kernel booted with
/// `ipcmni_extend`. A segment made with kernel.shm_next_id set (in a fresh namespace) has an
/// index of 40000 where the kernel allows it (ipcmni_extend), and else sequence bits from 15 to
/// 23 (the kernel masks next_id's index to 15 bits: 40000 there is sequence 1, index 7232):
/// either way, wrong index bits lose its pointer, and its destroy at the last detach.
#[test]
fn a_segment_is_tracked_whatever_bits_of_its_id_are_set() {
    if !std::path::Path::new("/proc/sys/kernel/shm_next_id").exists() {
        eprintln!("no kernel.shm_next_id (CONFIG_CHECKPOINT_RESTORE) here: nothing to check");
        return;
    }
    let extended = std::fs::read_to_string("/proc/cmdline")
        .unwrap()
        .split_ascii_whitespace()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "ipcmni_extend");
    let next_id: i64 = if extended {
        (1 << 24) | 40000
    } else {
        (0x1ff << 15) | 40
    };
    let mut agent = Agent::start(&[]);
    let key = unique_key(25);
    // As above, with the id chosen: a child attaches, the parent removes the segment, the
    // child exits without detaching.
    let out = sh(&format!(
        "unshare --ipc sh -c '
            readlink /proc/self/ns/ipc
            echo {next_id} > /proc/sys/kernel/shm_next_id
            id=$(perl -e \"print shmget({key}, 4096, 01600) // die\")
            perl -e \"\\$|=1; syscall(30, $id, 0, 0) >= 0 or die; print qq(attached\\n); sleep 1\" &
            sleep 0.3
            ipcrm -m $id
            wait
            echo $id'"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let ns = parse_ns_link(lines[0]);
    assert_eq!(lines[1], "attached");
    let id: i64 = lines[2].parse().unwrap();
    assert_eq!(id, next_id, "the kernel took kernel.shm_next_id");
    let created = agent.wait_for("shm.create", |e| {
        e["event"] == "shm.create" && e["key"] == key
    });
    assert_eq!(field(&created, "id"), id);
    let destroyed = agent.wait_for("shm.destroy", |e| {
        e["event"] == "shm.destroy" && e["ns"] == ns && e["ns_id"] == created["ns_id"]
    });
    assert_eq!(field(&destroyed, "id"), id);
    assert_eq!(destroyed["reason"], "last_detach", "{destroyed}");
}

/// The classic mistake: a key created in one namespace, looked up from another.
#[test]
fn a_failed_get_names_the_namespace_where_the_key_lives() {
    let mut agent = Agent::start(&[]);
    let key = unique_key(25);
    let mut holder = std::process::Command::new("unshare")
        .args([
            "--ipc",
            "perl",
            "-e",
            &format!("$|=1; msgget({key}, 01600) // die; print qq(ok\\n); sleep 60"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ok\n");
    let producer_ns = parse_ns_link(
        &std::fs::read_link(format!("/proc/{}/ns/ipc", holder.id()))
            .unwrap()
            .to_string_lossy(),
    );
    agent.wait_for("msg.create", |e| {
        e["event"] == "msg.create" && e["key"] == key
    });

    let out = sh(&format!(
        "unshare --ipc sh -c 'readlink /proc/self/ns/ipc; perl -e \"msgget({key}, 0) and die\"'"
    ));
    let consumer_ns = parse_ns_link(&out);
    let failed = agent.wait_for("msg.get_failed", |e| {
        e["event"] == "msg.get_failed" && e["key"] == key
    });
    assert_eq!(failed["ns"], consumer_ns);
    assert_eq!(failed["errno"], "ENOENT");
    assert_eq!(
        failed["key_lives_in"],
        serde_json::json!([producer_ns]),
        "{:#?}",
        agent.events
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let destroyed = agent.wait_for("msg.destroy", |e| {
        e["event"] == "msg.destroy" && e["key"] == key
    });
    assert_eq!(destroyed["reason"], "namespace_teardown");
}

/// Issue 10, defect 2: a host process that exits still attached (the kernel detaches it, with no
/// shmdt) must not leave its attachment behind in the agent. Its pid is then given (through
/// `kernel.ns_last_pid`) to a child that inherited another segment at the same address: the
/// child's shmdt detaches that segment, not the dead process's.
#[test]
fn a_dead_processs_attachment_is_not_its_pids_next_owners() {
    if !std::path::Path::new("/proc/sys/kernel/ns_last_pid").exists() {
        eprintln!("no kernel.ns_last_pid (CONFIG_CHECKPOINT_RESTORE) here: nothing to check");
        return;
    }
    let mut agent = Agent::start(&[]);
    // SYS_shmat = 30, SYS_shmdt = 67; a fixed address, so both segments are attached there.
    let out = sh(r#"perl -e '
        $| = 1;
        my $addr = 0x7e0000000000;
        my $first = shmget(0, 4096, 01600) // die "shmget: $!";
        my $second = shmget(0, 4096, 01600) // die "shmget: $!";
        my $dead = fork // die;
        if ($dead == 0) { syscall(30, $first, $addr, 0) == $addr or die "shmat: $!"; exit 0 }
        waitpid($dead, 0) == $dead && $? == 0 or die "the first attacher failed";
        syscall(30, $second, $addr, 0) == $addr or die "shmat: $!";
        my $done = 0;
        for (1 .. 200) {
            open(my $f, ">", "/proc/sys/kernel/ns_last_pid") or die "ns_last_pid: $!";
            print $f $dead - 1;
            close $f;
            my $child = fork // die;
            if ($child == 0) {
                exit 3 if $$ != $dead;
                syscall(67, $addr) == 0 or die "shmdt: $!";
                exit 0;
            }
            waitpid($child, 0);
            if ($? == 0) { $done = 1; last }
        }
        shmctl($first, 0, 0); shmctl($second, 0, 0);
        $done or die "pid $dead never came back";
        print "$first $second $dead\n";
    '"#);
    let fields: Vec<i64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let [first, second, pid] = fields[..] else {
        panic!("{out}");
    };
    assert_ne!(first, second);
    let detach = agent.wait_for("the reused pid's shm.detach", |e| {
        e["event"] == "shm.detach" && e["pid"] == pid
    });
    assert_ne!(
        detach["id"], first,
        "the detach was credited to the dead process's segment: {detach}"
    );
}

/// Which process made an object, when comm is ambiguous (every postgres process is
/// "postgres"): events carry the parent's pid, as the kernel has it.
#[test]
fn events_name_the_parent_process() {
    let mut agent = Agent::start(&[]);
    let key = unique_key(26);
    // `; true`: the shell forks perl rather than exec'ing it as its last command.
    let shell: i64 = sh(&format!(
        "sh -c 'echo $$; perl -e \"msgget({key}, 01600) // die; msgctl(msgget({key}, 0), 0, 0)\"; true'"
    ))
    .trim()
    .parse()
    .unwrap();
    let created = agent.wait_for("msg.create", |e| {
        e["event"] == "msg.create" && e["key"] == key
    });
    assert_eq!(created["comm"], "perl");
    assert_eq!(field(&created, "ppid"), shell, "{created}");
}

/// Which process, by its command line: read while the process lives (perl waits a moment
/// after its get), and left out with `--no-cmdline`.
#[test]
fn events_carry_the_command_line() {
    for (args, wanted) in [(&[][..], true), (&["--no-cmdline"][..], false)] {
        let mut agent = Agent::start(args);
        let key = unique_key(if wanted { 29 } else { 30 });
        let script = format!(
            "msgget({key}, 01600) // die; select(undef, undef, undef, 0.5); msgctl(msgget({key}, 0), 0, 0)"
        );
        sh(&format!("perl -e '{script}' marker-{key}"));
        let created = agent.wait_for("msg.create", |e| {
            e["event"] == "msg.create" && e["key"] == key
        });
        if wanted {
            assert_eq!(
                created["cmdline"],
                format!("perl -e {script} marker-{key}"),
                "{created}"
            );
        } else {
            assert!(created.get("cmdline").is_none(), "{created}");
        }
    }
}

/// Issue 10, defect 6: a namespace and a segment that existed before the agent started are
/// seen dying like any other. The probes recognise a namespace's or a segment's free by its
/// kernel pointer, which they learn from a syscall naming it; for what predates the agent,
/// those syscalls are the startup inventory's own (its helper thread's setns into each
/// namespace, then IPC_STAT on each segment), made after the probes are attached. Here the
/// namespace is held by a bind mount only (no process in it, nothing else enters it).
#[test]
fn what_existed_before_start_is_seen_dying() {
    let dir = std::env::temp_dir().join(format!("nsipc-before-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let holder = dir.join("ipc");
    fs::write(&holder, "").unwrap();
    let (shm_key, msg_key) = (unique_key(27), unique_key(28));
    sh(&format!(
        "unshare --ipc={h} true && nsenter --ipc={h} perl -e \
         'shmget({shm_key}, 4096, 01600) // die; msgget({msg_key}, 01600) // die'",
        h = holder.display()
    ));
    let inum = fs::metadata(&holder).unwrap().ino();
    let mut agent = Agent::start(&[]);
    let listed = agent
        .events
        .iter()
        .find(|e| e["event"] == "ipc_ns.exists" && e["ns"] == inum)
        .cloned()
        .expect("the startup inventory lists the namespace");
    assert_eq!(
        listed["held_by"]["mounts"].as_array().map(Vec::len),
        Some(1)
    );
    sh(&format!("umount {}", holder.display()));
    let destroy = agent.wait_for("the namespace's destroy", |e| {
        e["event"] == "ipc_ns.destroy"
            && e["ns"] == inum
            && e["ns_id"] == listed["ns_id"]
            && e["ns_gen"] == listed["ns_gen"]
    });
    assert_eq!(destroy["reason"], "freed", "{destroy}");
    assert_eq!(
        destroy["objects_destroyed"],
        serde_json::json!({"msg": 1, "shm": 1, "sem": 0})
    );
    let segment = agent.wait_for("the segment's destroy", |e| {
        e["event"] == "shm.destroy" && e["key"] == shm_key
    });
    assert_eq!(segment["ns"], inum);
    assert_eq!(segment["reason"], "namespace_teardown", "{segment}");
    let _ = fs::remove_dir_all(&dir);
}

/// Issue 10, defect 3, against the kernel. A namespace dies with a segment 0 left in it;
/// its inum (where the kernel has no ns_id) goes to the next namespace once it is freed, and
/// its segment is freed an RCU grace period later. Right after each such death, namespaces are
/// made until one gets the dead one's inum, and it makes its own segment 0: a late free of the
/// dead one's segment must not end that one. Each round that got the inum keeps its holder
/// until the end, and every held segment must still be alive in the stream.
#[test]
fn late_segment_frees_spare_the_namespace_that_took_the_inum() {
    const ROUNDS: usize = 12;
    let agent = Agent::start(&[]);
    // SYS_unshare = 272, CLONE_NEWIPC = 0x08000000. A holder that got the inum prints it with
    // its segment's id and blocks; the others leave at once.
    let mut workload = std::process::Command::new("perl")
        .arg("-e")
        .arg(format!(
            r#"$| = 1;
            # undef when the kernel refuses (ENOSPC while dead namespaces wait to be freed
            # count against user.max_ipc_namespaces).
            sub newipc {{ syscall(272, 0x08000000) == 0 or return undef;
                          readlink("/proc/self/ns/ipc") =~ /(\d+)/; $1 }}
            for (1 .. {ROUNDS}) {{
                pipe(my $r, my $w) or die;
                my $dying = fork // die;
                if ($dying == 0) {{
                    close $r;
                    my $inum = newipc() // exit 1;
                    shmget(0, 4096, 01600) // die "shmget: $!";
                    syswrite($w, "$inum\n");
                    exit 0;
                }}
                close $w;
                my $inum = <$r> // "";
                chomp $inum;
                waitpid($dying, 0);
                next if $inum eq "";
                for (1 .. 60) {{
                    pipe(my $r2, my $w2) or die;
                    my $holder = fork // die;
                    if ($holder == 0) {{
                        close $r2;
                        my $got = newipc();
                        if (!defined $got || $got ne $inum) {{ syswrite($w2, "n"); exit 0 }}
                        my $id = shmget(0, 4096, 01600) // die "shmget: $!";
                        print "$inum $id\n";
                        syswrite($w2, "y");
                        sleep 600;
                        exit 0;
                    }}
                    close $w2;
                    sysread($r2, my $said, 1);
                    last if ($said // "") eq "y";
                    waitpid($holder, 0);
                }}
            }}
            print "done\n";
            sleep 600;"#
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(workload.stdout.take().unwrap())) {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        let (inum, id) = line.split_once(' ').unwrap();
        held.push((inum.parse::<u64>().unwrap(), id.parse::<i64>().unwrap()));
    }
    // The last dying namespace's segment free comes an RCU grace period later.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stopped = agent.stop(libc::SIGINT);
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-P", &workload.id().to_string()])
        .status();
    let _ = workload.kill();
    let _ = workload.wait();
    // The tests that follow wait for namespaces' frees: let this one's hundreds drain first
    // (each waits for an RCU grace period, long under TCG).
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(!held.is_empty(), "no namespace ever got a dead one's inum");
    for (inum, id) in &held {
        let created = stopped
            .events
            .iter()
            .rev()
            .find(|e| e["event"] == "shm.create" && e["ns"] == *inum && e["id"] == *id)
            .unwrap_or_else(|| panic!("no shm.create of {id} in {inum}"));
        let destroyed: Vec<&serde_json::Value> = stopped
            .events
            .iter()
            .filter(|e| {
                e["event"] == "shm.destroy"
                    && e["ns"] == *inum
                    && e["ns_id"] == created["ns_id"]
                    && e["ns_gen"] == created["ns_gen"]
                    && e["id"] == *id
            })
            .collect();
        assert!(
            destroyed.is_empty(),
            "a held segment destroyed: {destroyed:?}"
        );
    }
    eprintln!(
        "late frees: {} of {ROUNDS} rounds got the dead namespace's inum",
        held.len()
    );
}
