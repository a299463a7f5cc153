//! `nsipc-agent snapshot` against the running kernel: namespaces held in each of the ways the
//! kernel allows (a process, an open fd, a bind mount, in this or another mount namespace),
//! with objects created in them by real programs, compared with what `lsipc`, `lsns` and /proc
//! say. Needs root.
//!
//! Other programs may be using IPC namespaces on the machine at the same time: every test
//! looks only at the namespaces it made, found by inum.

#[path = "snapshot/harness.rs"]
mod harness;
mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use harness::*;
use serde_json::{Value, json};
use support::*;

/// (a) `unshare --ipc sleep`: the namespace with its one process, and a queue (with a message),
/// a segment and a semaphore set created inside with known keys, with the ids, sizes and
/// counts the kernel reports.
#[test]
fn namespace_held_by_a_process_with_one_object_of_each_kind() {
    require_root();
    let holder = Holder::spawn("unshare", &["--ipc", "sleep", "60"]);
    let ns = holder.wait_for_own_namespace();
    holder.wait_for_comm("sleep");
    let ns_path = format!("/proc/{}/ns/ipc", holder.pid());
    let (msg_key, shm_key, sem_key) = (unique_key(11), unique_key(12), unique_key(13));
    let perl_pid: u64 = sh(&format!(
        "nsenter --ipc={ns_path} perl -e '
            my $q = msgget({msg_key}, 01600) // die qq(msgget $!);
            msgsnd($q, pack(q(l! a*), 1, q(hello)), 0) or die qq(msgsnd $!);
            shmget({shm_key}, 8192, 01640) // die qq(shmget $!);
            semget({sem_key}, 3, 01600) // die qq(semget $!);
            print $$'"
    ))
    .parse()
    .unwrap();
    let msgmnb: u64 = sh(&format!(
        "nsenter --ipc={ns_path} cat /proc/sys/kernel/msgmnb"
    ))
    .trim()
    .parse()
    .unwrap();

    let snap = Snapshot::take();
    assert!(
        lsns_ipc().contains(&ns),
        "lsns sees a namespace with a process"
    );
    let entry = snap.namespace(ns);
    assert_eq!(
        entry["processes"],
        json!([{"pid": holder.pid(), "comm": "sleep", "uid": 0}]),
        "the holder, all its threads, no container"
    );
    assert_eq!(entry["held_by"], json!({"fds": [], "mounts": []}));

    let kernel = kernel_objects(&ns_path);
    assert_eq!(kernel.len(), 3, "{kernel:?}");
    assert_eq!(snap.objects(ns), kernel, "the ids and keys lsipc shows");

    let msg = snap.object(ns, "msg.exists", msg_key);
    assert_eq!(field(msg, "qnum"), 1);
    assert_eq!(field(msg, "cbytes"), 5);
    assert_eq!(msg["qbytes"], msgmnb, "a new queue's limit is msgmnb");
    assert_eq!(field(msg, "mode"), 0o600);
    let shm = snap.object(ns, "shm.exists", shm_key);
    assert_eq!(field(shm, "size"), 8192);
    assert_eq!(field(shm, "nattch"), 0);
    assert_eq!(shm["cpid"], perl_pid);
    assert_eq!(field(shm, "mode"), 0o640);
    assert_eq!(shm["dest"], false);
    let sem = snap.object(ns, "sem.exists", sem_key);
    assert_eq!(field(sem, "nsems"), 3);
    for object in [msg, shm, sem] {
        assert_eq!(object["uid"], 0);
        assert_eq!(object["cuid"], 0);
        assert_eq!(object["ns_id"], entry["ns_id"]);
    }
}

/// (b) `unshare --ipc=FILE`: a namespace held only by a bind mount, which `lsns` cannot see.
#[test]
fn namespace_held_only_by_a_bind_mount() {
    require_root();
    let file = format!("/tmp/nsipc-snapshot-{}-bind", std::process::id());
    // Lazily: a snapshot running meanwhile (another test) may have the mount busy.
    let _cleanup = Cleanup(format!("umount --lazy {file} 2>/dev/null; rm -f {file}"));
    sh(&format!("touch {file} && unshare --ipc={file} true"));
    let ns = parse_ns_link(&sh(&format!(
        "nsenter --ipc={file} readlink /proc/self/ns/ipc"
    )));
    assert_ne!(ns, HOST_NS);
    let key = unique_key(21);
    sh(&format!(
        "nsenter --ipc={file} perl -e 'semget({key}, 2, 01600) // die qq(semget $!); \
         msgget(0, 01600) // die qq(msgget $!)'"
    ));

    let snap = Snapshot::take();
    assert!(
        !lsns_ipc().contains(&ns),
        "lsns does not see a namespace held only by a mount"
    );
    let entry = snap.namespace(ns);
    assert_eq!(entry["processes"], json!([]));
    assert_eq!(entry["held_by"]["fds"], json!([]));
    let our_mnt_ns = mnt_ns_of("self");
    let mounts = entry["held_by"]["mounts"].as_array().unwrap();
    let ours = mounts
        .iter()
        .find(|m| m["mnt_ns"] == our_mnt_ns)
        .unwrap_or_else(|| panic!("the mount in our mount namespace: {mounts:?}"));
    assert_eq!(ours["mount_point"], file);
    let seer = ours["pid"].as_u64().unwrap().to_string();
    assert_eq!(mnt_ns_of(&seer), our_mnt_ns, "the pid sees the mount");

    let kernel = kernel_objects(&file);
    assert_eq!(kernel.len(), 2, "{kernel:?}");
    assert_eq!(snap.objects(ns), kernel);
    assert_eq!(field(snap.object(ns, "sem.exists", key), "nsems"), 2);
}

/// A bind mount that exists only in another mount namespace (on a tmpfs mounted there): the
/// snapshot reaches it through /proc/PID/root.
#[test]
fn namespace_held_by_a_bind_mount_in_another_mount_namespace() {
    require_root();
    let key = unique_key(31);
    let (mut holder, dir) = Holder::in_own_mount_namespace("mntns", |dir| {
        format!(
            "nsenter --ipc={dir}/ipc perl -e 'msgget({key}, 01600) // die qq(msgget $!)'
             nsenter --ipc={dir}/ipc readlink /proc/self/ns/ipc
             exec sleep 60"
        )
    });
    let ns = parse_ns_link(&holder.line());
    // readlink may still be alive (in the namespace) until the shell execs sleep.
    holder.wait_for_comm("sleep");
    assert!(
        !Path::new(&format!("{dir}/ipc")).exists(),
        "the mount is not in our mount namespace"
    );

    let snap = Snapshot::take();
    let entry = snap.namespace(ns);
    assert_eq!(entry["processes"], json!([]));
    let holder_mnt_ns = mnt_ns_of(&holder.pid().to_string());
    assert_ne!(holder_mnt_ns, mnt_ns_of("self"));
    assert_eq!(
        entry["held_by"],
        json!({"fds": [], "mounts": [
            {"pid": holder.pid(), "mnt_ns": holder_mnt_ns, "mount_point": format!("{dir}/ipc")}
        ]})
    );
    let through_root = format!("/proc/{}/root{dir}/ipc", holder.pid());
    let kernel = kernel_objects(&through_root);
    assert_eq!(kernel.len(), 1, "{kernel:?}");
    assert_eq!(snap.objects(ns), kernel);
}

/// A chrooted process's mountinfo leaves out mounts outside its root: when such a process
/// comes first (lowest pid) in a mount namespace, the mount is still found through another
/// process of that namespace.
#[test]
fn a_chrooted_view_does_not_hide_a_bind_mount() {
    require_root();
    // The shell chroots itself last (exec), so the lowest pid in the mount namespace is
    // chrooted (to /usr, which has a sleep), the next one too, the last one not.
    let (mut holder, dir) = Holder::in_own_mount_namespace("chroot", |dir| {
        format!(
            "nsenter --ipc={dir}/ipc readlink /proc/self/ns/ipc
             chroot /usr sleep 60 &
             echo $!
             sleep 60 &
             echo $!
             exec chroot /usr sleep 60"
        )
    });
    let ns = parse_ns_link(&holder.line());
    let chrooted: u32 = holder.line().parse().unwrap();
    let unchrooted: u32 = holder.line().parse().unwrap();
    let _kill = Cleanup(format!("kill {chrooted} {unchrooted}"));
    for pid in [holder.pid(), chrooted, unchrooted] {
        wait_for_comm(pid, "sleep");
    }
    for pid in [holder.pid(), chrooted] {
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        assert!(!mountinfo.contains(&dir), "{pid} is chrooted: {mountinfo}");
    }
    assert!(holder.pid() < chrooted && chrooted < unchrooted);

    let snap = Snapshot::take();
    let entry = snap.namespace(ns);
    assert_eq!(
        entry["held_by"]["mounts"],
        json!([{
            "pid": unchrooted,
            "mnt_ns": mnt_ns_of(&holder.pid().to_string()),
            "mount_point": format!("{dir}/ipc"),
        }])
    );
}

/// (c) A namespace held only by an open fd: a process creates it, keeps an fd to it on 3,
/// creates a queue in it, then goes back to the host namespace.
#[test]
fn namespace_held_only_by_an_open_fd() {
    require_root();
    let key = unique_key(41);
    // One process all along (each step execs the next): fd 4 keeps the way back to the host
    // namespace, fd 3 the new namespace once the process has left it.
    let mut holder = Holder::spawn(
        "sh",
        &[
            "-c",
            &format!(
                "exec 4</proc/self/ns/ipc; exec unshare --ipc sh -c '
                    exec 3</proc/self/ns/ipc
                    perl -e \"msgget({key}, 01600) // die qq(msgget \\$!)\"
                    readlink /proc/self/ns/ipc
                    exec nsenter --ipc=/proc/self/fd/4 sleep 60'"
            ),
        ],
    );
    let ns = parse_ns_link(&holder.line());
    holder.wait_for_comm("sleep");
    let pid = holder.pid();
    assert_eq!(ipc_ns_of(&format!("/proc/{pid}/ns/ipc")), HOST_NS);
    assert_eq!(ipc_ns_of(&format!("/proc/{pid}/fd/3")), ns);

    let snap = Snapshot::take();
    assert!(!lsns_ipc().contains(&ns), "lsns does not see it");
    let entry = snap.namespace(ns);
    assert_eq!(
        entry,
        json!({
            "event": "ipc_ns.exists", "time": entry["time"], "ns": ns, "ns_id": entry["ns_id"],
            "processes": [], "containers": [],
            "held_by": {"fds": [{"pid": pid, "comm": "sleep", "fd": 3}], "mounts": []},
            "limits": limits_inside(&format!("--ipc=/proc/{pid}/fd/3")),
        })
    );
    let kernel = kernel_objects(&format!("/proc/{pid}/fd/3"));
    assert_eq!(kernel.len(), 1, "{kernel:?}");
    assert_eq!(snap.objects(ns), kernel);
    // The same process is in the host namespace, and also holds an fd to it.
    let host = snap.namespace(HOST_NS);
    assert!(
        host["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == pid && p.get("tids").is_none()),
        "{host}"
    );
    assert!(
        host["held_by"]["fds"]
            .as_array()
            .unwrap()
            .contains(&json!({"pid": pid, "comm": "sleep", "fd": 4})),
        "{host}"
    );
}

/// Namespaces are per thread: a process with one thread moved into another namespace is
/// listed in both, each time with the threads that are there.
#[test]
fn a_process_split_across_namespaces_lists_its_threads() {
    require_root();
    let target = Holder::spawn("unshare", &["--ipc", "sleep", "60"]);
    let ns = target.wait_for_own_namespace();
    target.wait_for_comm("sleep");
    let script = "
import ctypes, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
ns_file = open(sys.argv[1])  # kept open: setns needs the fd
def moved():
    if libc.setns(ns_file.fileno(), 0x08000000) != 0:
        raise OSError(ctypes.get_errno(), 'setns')
    print(threading.get_native_id(), flush=True)
    time.sleep(60)
t = threading.Thread(target=moved, daemon=True)
t.start()
t.join()
";
    let ns_path = format!("/proc/{}/ns/ipc", target.pid());
    let mut python = Holder::spawn("python3", &["-c", script, &ns_path]);
    let moved_tid: u64 = python.line().parse().unwrap();
    let pid = u64::from(python.pid());
    assert_eq!(
        ipc_ns_of(&format!("/proc/{pid}/task/{moved_tid}/ns/ipc")),
        ns
    );

    let snap = Snapshot::take();
    let in_ns = snap.namespace(ns)["processes"].as_array().unwrap().clone();
    let python_in_ns: Vec<_> = in_ns.iter().filter(|p| p["pid"] == pid).collect();
    assert_eq!(python_in_ns.len(), 1, "{in_ns:?}");
    assert_eq!(python_in_ns[0]["tids"], json!([moved_tid]));
    assert_eq!(python_in_ns[0]["comm"], "python3");
    assert!(
        in_ns
            .iter()
            .any(|p| p["pid"] == target.pid() && p.get("tids").is_none()),
        "{in_ns:?}"
    );
    let in_host = snap.namespace(HOST_NS)["processes"]
        .as_array()
        .unwrap()
        .clone();
    let python_in_host: Vec<_> = in_host.iter().filter(|p| p["pid"] == pid).collect();
    assert_eq!(python_in_host.len(), 1, "{in_host:?}");
    let host_tids = python_in_host[0]["tids"].as_array().unwrap();
    assert!(host_tids.contains(&json!(pid)), "the main thread stayed");
    assert!(!host_tids.contains(&json!(moved_tid)));
}

/// (d) The snapshot reads every namespace without moving the agent's main thread: run from
/// inside a fresh namespace, it lists itself there (whole, no thread elsewhere) and still
/// reads the host's, and it exits 0 (it checks its own thread at the end and fails if moved).
#[test]
fn the_agent_stays_in_its_own_namespace() {
    let snap = Snapshot::take_with(&["unshare", "--ipc"]);
    // unshare execs the agent: same pid.
    let homes: Vec<&Value> = snap
        .namespaces()
        .into_iter()
        .filter(|n| {
            n["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["pid"] == snap.pid)
        })
        .collect();
    assert_eq!(homes.len(), 1, "the agent is in one namespace: {homes:?}");
    let home = snap.namespace(homes[0]["ns"].as_u64().unwrap());
    assert_ne!(home["ns"], HOST_NS);
    assert_eq!(
        home["processes"],
        json!([{"pid": snap.pid, "comm": "nsipc-agent", "uid": 0}])
    );
    assert!(snap.objects(home["ns"].as_u64().unwrap()).is_empty());
    let host = snap.namespace(HOST_NS);
    assert!(!host["processes"].as_array().unwrap().is_empty());

    // Every namespace once; ns_id, where the kernel has it, is never shared.
    let inums: Vec<u64> = snap
        .namespaces()
        .iter()
        .map(|n| n["ns"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = inums.iter().copied().collect();
    assert_eq!(unique.len(), inums.len(), "{inums:?}");
    let ids: Vec<&Value> = snap.namespaces().iter().map(|n| &n["ns_id"]).collect();
    if ids.iter().any(|id| !id.is_null()) {
        let unique: BTreeSet<u64> = ids.iter().map(|id| id.as_u64().unwrap()).collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }
}

/// Processes the agent may not inspect are named in one warning on stderr (here: pid 1 holds
/// capabilities that root in this sandbox lacks); when there are none, stderr stays empty.
#[test]
fn processes_it_may_not_inspect_are_named() {
    require_root();
    let denied = || -> BTreeSet<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid: &u32| {
                std::fs::read_link(format!("/proc/{pid}/ns/ipc"))
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            })
            .collect()
    };
    let before = denied();
    let snap = Snapshot::take();
    let after = denied();
    let stable: BTreeSet<u32> = before.intersection(&after).copied().collect();
    if stable.is_empty() && before.is_empty() && after.is_empty() {
        assert_eq!(snap.stderr, "", "nothing to warn about");
        return;
    }
    assert_eq!(snap.stderr.lines().count(), 1, "{}", snap.stderr);
    assert!(
        snap.stderr
            .starts_with("nsipc-agent: warning: permission denied"),
        "{}",
        snap.stderr
    );
    let named: BTreeSet<u32> = snap
        .stderr
        .split_once("(pid ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list.split(", ").map(|p| p.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("no pid list in {}", snap.stderr));
    assert!(stable.is_subset(&named), "{stable:?} ⊄ {named:?}");
    assert!(named.is_subset(&before.union(&after).copied().collect()));
}

/// Without CAP_SYS_ADMIN: one sentence naming it, non-zero exit, nothing on stdout.
#[test]
fn without_cap_sys_admin_one_clear_sentence() {
    require_root();
    for setpriv_args in [
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ][..],
        // Still root, but without the one capability setns needs.
        &["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"][..],
    ] {
        let output = Command::new("setpriv")
            .args(setpriv_args)
            .args([AGENT, "snapshot"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{setpriv_args:?}: {stderr}");
        assert!(output.stdout.is_empty());
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("needs root") && stderr.contains("CAP_SYS_ADMIN"),
            "{stderr}"
        );
    }
}

/// What the kernel says of POSIX queue `name` of the namespace at `ns_path`: its queue file's
/// text and its mode, read through an mqueue mount made inside the namespace, in a mount
/// namespace of its own (so the mount goes away with it).
fn kernel_mqueue(ns_path: &str, name: &str) -> (String, u32) {
    let out = sh(&format!(
        "nsenter --ipc={ns_path} unshare --mount sh -c \
         'mount -t mqueue none /mnt && cat /mnt/{name} && echo && stat -c %a /mnt/{name}'"
    ));
    let mut lines = out.lines();
    let status = lines.next().expect("the queue file").to_owned();
    let mode = lines
        .last()
        .and_then(|mode| u32::from_str_radix(mode.trim(), 8).ok())
        .unwrap_or_else(|| panic!("no mode in {out:?}"));
    (status, mode)
}

/// POSIX message queues: each IPC namespace has its own. The same name in two namespaces, one
/// queue with attributes given and a message in it, the other with the namespace's defaults,
/// and neither in this test's namespace: one `mqueue.exists` each, in its namespace, with the
/// size, mode and attributes the kernel gives it.
#[test]
fn posix_queues_are_listed_in_their_namespaces() {
    require_root();
    let a = Holder::spawn("unshare", &["--ipc", "sleep", "60"]);
    let b = Holder::spawn("unshare", &["--ipc", "sleep", "60"]);
    let (ns_a, ns_b) = (a.wait_for_own_namespace(), b.wait_for_own_namespace());
    let (path_a, path_b) = (
        format!("/proc/{}/ns/ipc", a.pid()),
        format!("/proc/{}/ns/ipc", b.pid()),
    );
    let name = format!("nsipc-test-{}", std::process::id());
    // SYS_mq_open = 240 takes the name without its '/'; O_CREAT | O_RDWR; a struct mq_attr of
    // 8 longs (flags, maxmsg, msgsize, curmsgs, reserved) or NULL; SYS_mq_timedsend = 242.
    sh(&format!(
        "nsenter --ipc={path_a} perl -e '
            my ($name, $attr, $message) = (q({name}), pack(q(q8), 0, 4, 64), q(hello));
            my $fd = syscall(240, $name, 0102, 0640, $attr);
            $fd >= 0 or die qq(mq_open $!);
            syscall(242, $fd, $message, 5, 0, 0) == 0 or die qq(mq_timedsend $!)'"
    ));
    sh(&format!(
        "nsenter --ipc={path_b} perl -e '
            my $name = q({name});
            syscall(240, $name, 0102, 0600, 0) >= 0 or die qq(mq_open $!)'"
    ));
    let default_maxmsg: u64 = sh(&format!(
        "nsenter --ipc={path_b} cat /proc/sys/fs/mqueue/msg_default"
    ))
    .trim()
    .parse()
    .unwrap();
    let default_msgsize: u64 = sh(&format!(
        "nsenter --ipc={path_b} cat /proc/sys/fs/mqueue/msgsize_default"
    ))
    .trim()
    .parse()
    .unwrap();

    let snap = Snapshot::take();
    let queues: Vec<&Value> = snap
        .lines
        .iter()
        .filter(|l| l["event"] == "mqueue.exists" && l["name"] == format!("/{name}"))
        .collect();
    let namespaces: BTreeSet<u64> = queues.iter().map(|q| q["ns"].as_u64().unwrap()).collect();
    assert_eq!(
        namespaces,
        BTreeSet::from([ns_a, ns_b]),
        "one queue in each namespace, none elsewhere: {queues:#?}"
    );
    let queue_in = |ns| *queues.iter().find(|q| q["ns"] == ns).unwrap();
    for (ns, path, mode, maxmsg, msgsize, curmsgs) in [
        (ns_a, &path_a, 0o640, 4, 64, 1),
        (ns_b, &path_b, 0o600, default_maxmsg, default_msgsize, 0),
    ] {
        let queue = queue_in(ns);
        let (status, kernel_mode) = kernel_mqueue(path, &name);
        assert_eq!(kernel_mode, mode, "the kernel's mode: {status}");
        assert_eq!(field(queue, "mode"), i64::from(mode), "{queue}");
        assert_eq!(queue["mode_octal"], format!("{mode:o}"), "{queue}");
        assert_eq!(queue["uid"], 0, "{queue}");
        let qsize = status
            .split_whitespace()
            .find_map(|field| field.strip_prefix("QSIZE:"))
            .and_then(|size| size.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no QSIZE in {status:?}"));
        assert_eq!(queue["qsize"], qsize, "{queue} against {status:?}");
        assert_eq!(queue["maxmsg"], maxmsg, "{queue}");
        assert_eq!(queue["msgsize"], msgsize, "{queue}");
        assert_eq!(queue["curmsgs"], curmsgs, "{queue}");
        assert_eq!(queue["notify_pid"], 0, "{queue}");
        assert_eq!(queue["ns_id"], snap.namespace(ns)["ns_id"], "{queue}");
    }
    assert_eq!(field(queue_in(ns_a), "qsize"), 5, "one 5-byte message");
    assert!(
        snap.stderr.is_empty() || !snap.stderr.contains("message queues"),
        "{}",
        snap.stderr
    );
}
