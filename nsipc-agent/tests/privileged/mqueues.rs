//! POSIX message queues, per IPC namespace: made, unlinked and destroyed by real `mq_open` and
//! `mq_unlink` calls (perl's `syscall`), checked against the inode numbers the kernel gives
//! each queue (`fstat` of its descriptor) and the errors it returns.

use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

use super::*;

/// `worker.pl ROLE BASE`: the queues of one namespace, each with what `fstat` says of it.
/// Role `a`: `BASE-held` (attributes 4 × 64) unlinked while open, then closed a second later:
/// it ends at that close; `BASE-gone`, closed then unlinked: it ends at the unlink;
/// `BASE-shared`, left for the namespace's teardown. Role `b`: `BASE-shared` only. Role
/// `host`: opens `BASE-shared`, which lives in the other two namespaces only, and prints the
/// error. SYS_mq_open = 240 takes the name without its `/`; SYS_mq_unlink = 241.
const WORKER: &str = r#"
my ($role, $base) = @ARGV;
sub open_queue {
    my ($name, $mode, $attr) = @_;
    my $fd = syscall(240, $name, 0102, $mode, $attr // 0);
    die "mq_open $name: $!" if $fd < 0;
    open(my $fh, "<&=", $fd) or die "fdopen: $!";
    print "$name ", (stat($fh))[1], "\n";
    return $fh;
}
sub unlink_queue { my $name = shift; syscall(241, $name) == 0 or die "mq_unlink $name: $!" }
$| = 1;
if ($role eq "a") {
    my $held = open_queue("$base-held", 0640, pack("q8", 0, 4, 64));
    unlink_queue("$base-held");
    sleep 1;
    close($held);
    close(open_queue("$base-gone", 0600));
    unlink_queue("$base-gone");
}
if ($role eq "a" or $role eq "b") {
    close(open_queue("$base-shared", 0600));
}
if ($role eq "host") {
    my $name = "$base-shared";
    syscall(240, $name, 0, 0, 0) < 0 or die "$name opened on the host";
    print "errno ", $! + 0, "\n";
}
"#;

/// What one run of [`WORKER`] printed: the namespace, then queue name → inode number.
fn queues_of(out: &str) -> (u64, BTreeMap<String, i64>) {
    let mut lines = out.lines();
    let ns = parse_ns_link(lines.next().unwrap());
    let queues = lines
        .map(|line| {
            let (name, ino) = line.split_once(' ').unwrap();
            (format!("/{name}"), ino.parse().unwrap())
        })
        .collect();
    (ns, queues)
}

/// Queues in two namespaces and a failed open on the host: each queue is reported created
/// with the inode number the kernel gave it, in its namespace, and destroyed exactly once, for
/// the reason that ended it (its unlink, its last close after the unlink, its namespace's
/// teardown), after its unlink where it had one; the open of a name that lives only in the
/// other two namespaces fails with the kernel's ENOENT, and says where the name lives.
#[test]
fn posix_queues_are_followed_from_create_to_destroy_in_their_namespace() {
    let mut agent = Agent::start(&[]);
    agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    let base = format!("nsipc-mq-{}", std::process::id());
    let worker = std::env::temp_dir().join(format!("{base}.pl"));
    std::fs::write(&worker, WORKER).unwrap();
    let in_namespace = |role: &str| {
        Command::new("unshare")
            .args(["--ipc", "sh", "-ec"])
            .arg(format!(
                "readlink /proc/self/ns/ipc; perl {} {role} {base}; sleep 4",
                worker.display()
            ))
            .output()
            .unwrap()
    };
    let (a, b, host) = std::thread::scope(|scope| {
        let a = scope.spawn(|| in_namespace("a"));
        let b = scope.spawn(|| in_namespace("b"));
        // Both namespaces have their queue named BASE-shared by now (role a's takes a second
        // more), and live on for 2 s more.
        std::thread::sleep(Duration::from_secs(2));
        let host = Command::new("perl")
            .arg(&worker)
            .args(["host", &base])
            .output()
            .unwrap();
        (a.join().unwrap(), b.join().unwrap(), host)
    });
    std::fs::remove_file(&worker).unwrap();
    for out in [&a, &b, &host] {
        assert!(out.status.success(), "{out:?}");
    }
    let (ns_a, queues_a) = queues_of(&String::from_utf8(a.stdout).unwrap());
    let (ns_b, queues_b) = queues_of(&String::from_utf8(b.stdout).unwrap());
    assert_eq!(queues_a.len(), 3);
    assert_eq!(queues_b.len(), 1);
    let host_out = String::from_utf8(host.stdout).unwrap();
    assert_eq!(host_out.trim(), format!("errno {}", libc::ENOENT));

    for ns in [ns_a, ns_b] {
        agent.wait_for("the namespace's destroy", |e| {
            e["event"] == "ipc_ns.destroy" && e["ns"] == ns
        });
    }
    // The queue that ended at its last close, where the probes cannot name evicted queues,
    // is found by a look in the next second.
    std::thread::sleep(Duration::from_secs(1));
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let of = |e: &Value, ns: u64, name: &str| e["ns"] == ns && e["name"] == name;
    let expected = [
        (ns_a, &queues_a, "-held", "last_close"),
        (ns_a, &queues_a, "-gone", "unlink"),
        (ns_a, &queues_a, "-shared", "namespace_teardown"),
        (ns_b, &queues_b, "-shared", "namespace_teardown"),
    ];
    for (ns, queues, suffix, reason) in expected {
        let name = format!("/{base}{suffix}");
        let ino = queues[&name];
        let lines: Vec<(usize, &Value)> = stopped
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e["event"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("mqueue."))
                    && of(e, ns, &name)
            })
            .collect();
        let kinds: Vec<&str> = lines
            .iter()
            .map(|(_, e)| e["event"].as_str().unwrap())
            .collect();
        let unlinked = reason != "namespace_teardown";
        let expected_kinds = if unlinked {
            vec!["mqueue.create", "mqueue.unlink", "mqueue.destroy"]
        } else {
            vec!["mqueue.create", "mqueue.destroy"]
        };
        assert_eq!(kinds, expected_kinds, "{name} in {ns}: {lines:#?}");
        for (_, e) in &lines {
            assert_eq!(
                field(e, "ino"),
                ino,
                "{name}: the kernel's inode number: {e}"
            );
        }
        let create = lines[0].1;
        let destroy = lines.last().unwrap().1;
        assert_eq!(destroy["reason"], reason, "{destroy}");
        if suffix == "-held" {
            assert_eq!(create["mode_octal"], "640", "{create}");
            assert_eq!((field(create, "maxmsg"), field(create, "msgsize")), (4, 64));
        } else {
            assert_eq!(create["mode_octal"], "600", "{create}");
            assert!(create.get("maxmsg").is_none(), "{create}");
        }
    }
    let failed = stopped
        .events
        .iter()
        .find(|e| e["event"] == "mqueue.open_failed" && e["name"] == format!("/{base}-shared"))
        .expect("the host's failed open");
    assert_eq!(failed["errno"], "ENOENT", "{failed}");
    let mut homes = vec![ns_a, ns_b];
    homes.sort_unstable();
    assert_eq!(failed["name_lives_in"], json!(homes), "{failed}");
}

/// A queue that exists before the agent starts is listed by the startup inventory as
/// `mqueue.exists`, with the inode number the kernel gives it, and its unlink (nothing holds it
/// open) is its destroy.
#[test]
fn a_queue_listed_at_startup_is_followed_to_its_end() {
    let base = format!("nsipc-mq-startup-{}", std::process::id());
    // The namespace lives while the agent starts; the queue goes when told (a file appears).
    let go = std::env::temp_dir().join(format!("{base}.go"));
    let mut holder = Command::new("unshare")
        .args(["--ipc", "perl", "-e"])
        .arg(format!(
            r#"$| = 1;
            my $name = "{base}";
            my $fd = syscall(240, $name, 0102, 0600, 0);
            die "mq_open: $!" if $fd < 0;
            open(my $fh, "<&=", $fd) or die;
            print readlink("/proc/self/ns/ipc"), " ", (stat($fh))[1], "\n";
            close($fh);
            select(undef, undef, undef, 0.1) until -e "{go}" or $waited++ > 600;
            syscall(240 + 1, $name) == 0 or die "mq_unlink: $!";
            sleep 1;"#,
            go = go.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let (link, ino) = first.trim().split_once(' ').unwrap();
    let (ns, ino) = (parse_ns_link(link), ino.parse::<i64>().unwrap());

    let mut agent = Agent::start(&[]);
    let exists = agent.wait_for("the queue's mqueue.exists", |e| {
        e["event"] == "mqueue.exists" && e["name"] == format!("/{base}")
    });
    assert_eq!(
        (exists["ns"].as_u64(), field(&exists, "ino")),
        (Some(ns), ino)
    );
    agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    std::fs::write(&go, "").unwrap();
    let destroy = agent.wait_for("the queue's destroy", |e| {
        e["event"] == "mqueue.destroy" && e["name"] == format!("/{base}")
    });
    std::fs::remove_file(&go).unwrap();
    assert!(holder.wait().unwrap().success());
    assert_eq!(
        (destroy["ns"].as_u64(), field(&destroy, "ino")),
        (Some(ns), ino)
    );
    assert_eq!(destroy["reason"], "unlink", "{destroy}");
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let unlinks = stopped.events.iter().filter(|e| {
        e["event"] == "mqueue.unlink" && e["name"] == format!("/{base}") && e["ns"] == ns
    });
    assert_eq!(unlinks.count(), 1);
}

/// `limited.pl BASE`: a queue asking 11 messages refused; then one queue made and unlinked
/// (still open), and a second refused; prints the two errnos. The big one goes first: where
/// both checks would fail, kernels differ in which comes first (6.18 counts first).
const LIMITED: &str = r#"
my $base = shift;
my ($one, $two, $big) = ("$base-one", "$base-two", "$base-big");
my $attr = pack("q8", 0, 11, 64);
syscall(240, $big, 0102, 0600, $attr) < 0 or die "big made";
print $! + 0, "\n";
syscall(240, $one, 0102, 0600, 0) >= 0 or die "one: $!";
syscall(241, $one) == 0 or die "unlink: $!";
syscall(240, $two, 0102, 0600, 0) < 0 or die "two made";
print $! + 0, "\n";
"#;

/// In a namespace whose `fs.mqueue.queues_max` is lowered to 1, a process without
/// CAP_SYS_RESOURCE (as a container's root by default) cannot make a queue asking for more
/// messages than `fs.mqueue.msg_max` (`EINVAL`: the failure names `mq_msg_max` and what was
/// asked), makes one queue, and cannot make a second (`ENOSPC`: `mq_queues_max`, and the
/// namespace's one queue, which counts while open though unlinked).
#[test]
fn creates_refused_by_the_namespace_limits_name_them() {
    let mut agent = Agent::start(&[]);
    agent.wait_for("agent.ready", |e| e["event"] == "agent.ready");
    let base = format!("nsipc-mq-limit-{}", std::process::id());
    let script = std::env::temp_dir().join(format!("{base}.pl"));
    std::fs::write(&script, LIMITED).unwrap();
    let out = Command::new("unshare")
        .args(["--ipc", "sh", "-ec"])
        .arg(format!(
            "readlink /proc/self/ns/ipc
             echo 1 > /proc/sys/fs/mqueue/queues_max
             cat /proc/sys/fs/mqueue/msg_max
             setpriv --inh-caps=-sys_resource --bounding-set=-sys_resource perl {} {base}
             sleep 1",
            script.display()
        ))
        .output()
        .unwrap();
    std::fs::remove_file(&script).unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let [link, msg_max, big, two] = lines[..] else {
        panic!("{out}");
    };
    let ns = parse_ns_link(link);
    assert_eq!(msg_max, "10", "a new namespace's fs.mqueue.msg_max");
    let errnos = [libc::EINVAL.to_string(), libc::ENOSPC.to_string()];
    assert_eq!([big, two], errnos, "the kernel's errors");
    let mut failed = |suffix: &str| {
        let name = format!("/{base}-{suffix}");
        agent.wait_for(&format!("the open_failed of {name}"), |e| {
            e["event"] == "mqueue.open_failed" && e["name"] == name && e["ns"] == ns
        })
    };
    let big = failed("big");
    let two = failed("two");
    assert_eq!(two["errno"], "ENOSPC", "{two}");
    assert_eq!(
        two["limit"],
        json!({"name": "mq_queues_max", "value": 1, "used": 1}),
        "{two}"
    );
    assert_eq!(big["errno"], "EINVAL", "{big}");
    assert_eq!(
        big["limit"],
        json!({"name": "mq_msg_max", "value": 10, "asked": 11}),
        "{big}"
    );
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
