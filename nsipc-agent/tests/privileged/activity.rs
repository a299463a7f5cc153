//! `--activity-interval`: what the probes count of msgsnd, msgrcv and semop, checked against
//! what the programs did.

use serde_json::Value;

use super::*;

/// The activity hooks, attached with `--activity-interval` only.
const ACTIVITY_HOOKS: [&str; 4] = ["msgsnd", "msgrcv", "semop", "semtimedop"];

/// Messages the producer sends: the i-th has i bytes of text.
const MESSAGES: u64 = 5;
const BYTES: u64 = MESSAGES * (MESSAGES + 1) / 2;
/// semop calls of two operations each.
const SEMOPS: u64 = 3;

// perl's msgget, msgsnd, msgrcv, semget and semop are builtins; IPC::SysV, which names the
// flags, is not in the VMs' initramfs: 01600 is IPC_CREAT | 0600.
const PRODUCER: &str = r#"
my ($key, $n) = @ARGV;
my $id = msgget($key, 01600) // die "msgget: $!";
for my $i (1 .. $n) { msgsnd($id, pack("l! a*", 1, "x" x $i), 0) or die "msgsnd: $!" }
print "producer $id $$\n";
"#;

const CONSUMER: &str = r#"
my ($key, $n) = @ARGV;
my $id = msgget($key, 0) // die "msgget: $!";
my $bytes = 0;
for (1 .. $n) {
    my $buf;
    msgrcv($id, $buf, 1024, 0, 0) or die "msgrcv: $!";
    $bytes += length($buf) - length(pack("l!", 0));
}
print "consumer $bytes $$\n";
"#;

const OPERATOR: &str = r#"
my ($key, $n) = @ARGV;
my $id = semget($key, 1, 01600) // die "semget: $!";
for (1 .. $n) { semop($id, pack("s!3 s!3", 0, 1, 0, 0, -1, 0)) or die "semop: $!" }
print "operator $id $$\n";
"#;

/// Sums a field of the participants with `pid` in list `list` of `lines`.
fn sum(lines: &[&Value], list: &str, pid: i64, field: &str) -> u64 {
    lines
        .iter()
        .flat_map(|line| line[list].as_array().cloned().unwrap_or_default())
        .filter(|p| p["pid"] == pid)
        .map(|p| p[field].as_u64().unwrap())
        .sum()
}

/// A producer sends into a queue in a namespace made by `unshare`, a consumer that entered it
/// with `nsenter` receives, a third process operates a semaphore set: the activity lines count
/// what each did, `ipc.flow` names the producer → consumer pair with the messages and bytes
/// sent, and each object gets its last line when the namespace goes. Without the option the
/// syscalls are not hooked at all.
#[test]
fn activity_counts_what_a_producer_and_a_consumer_did() {
    let plain = Agent::start(&[]);
    let ready = plain.events.last().unwrap().clone();
    for hook in ACTIVITY_HOOKS {
        assert!(ready["hooks"].get(hook).is_none(), "{hook} hooked: {ready}");
    }
    assert!(plain.stop(libc::SIGINT).status.success());

    let mut agent = Agent::start(&["--activity-interval", "1", "--metrics-addr", "127.0.0.1:0"]);
    let ready = agent.events.last().unwrap().clone();
    let metrics: std::net::SocketAddr = ready["metrics_addr"].as_str().unwrap().parse().unwrap();
    for hook in ACTIVITY_HOOKS {
        assert_eq!(ready["hooks"][hook], ready["hooks"]["msgget"], "{ready}");
    }
    let dir = std::env::temp_dir().join(format!("nsipc-activity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (producer, consumer, operator) = (
        script("producer.pl", PRODUCER),
        script("consumer.pl", CONSUMER),
        script("operator.pl", OPERATOR),
    );
    let (queue_key, sem_key) = (unique_key(40), unique_key(41));
    // The namespace lives past a report, then goes with its objects.
    let out = Command::new("unshare")
        .args(["--ipc", "sh", "-ec"])
        .arg(format!(
            "readlink /proc/self/ns/ipc
             perl {producer} {queue_key} {MESSAGES}
             nsenter --target $$ --ipc perl {consumer} {queue_key} {MESSAGES}
             perl {operator} {sem_key} {SEMOPS}
             sleep 1.5"
        ))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
    let ns = parse_ns_link(lines[0][0]);
    let (queue_id, producer_pid): (i64, i64) =
        (lines[1][1].parse().unwrap(), lines[1][2].parse().unwrap());
    assert_eq!(
        lines[2][1],
        BYTES.to_string(),
        "what the consumer got: {out}"
    );
    let consumer_pid: i64 = lines[2][2].parse().unwrap();
    let (sem_id, operator_pid): (i64, i64) =
        (lines[3][1].parse().unwrap(), lines[3][2].parse().unwrap());

    let is_object =
        |e: &Value, event: &str, id: i64| e["event"] == event && e["ns"] == ns && e["id"] == id;
    agent.wait_for("the queue's last activity line", |e| {
        is_object(e, "msg.activity", queue_id) && e["ended"] == true
    });
    agent.wait_for("the semaphore set's last activity line", |e| {
        is_object(e, "sem.activity", sem_id) && e["ended"] == true
    });
    // The metrics count the same calls and flows (at least: other processes of the host may
    // make such calls meanwhile).
    let (status, _, body) = http_get(metrics, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    let value = |sample: &str| -> u64 {
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in\n{body}"))
    };
    assert!(value("nsipc_activity_calls_total{kind=\"msgsnd\"}") >= MESSAGES);
    assert!(value("nsipc_activity_calls_total{kind=\"msgrcv\"}") >= MESSAGES);
    assert!(value("nsipc_activity_calls_total{kind=\"semop\"}") >= SEMOPS);
    let host_to_host = "{from_container_id=\"\",from_container_name=\"\",to_container_id=\"\",\
                        to_container_name=\"\"}";
    assert!(value(&format!("nsipc_ipc_flow_messages_total{host_to_host}")) >= MESSAGES);
    assert!(value(&format!("nsipc_ipc_flow_bytes_total{host_to_host}")) >= BYTES);
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let events = &stopped.events;

    let queue: Vec<&Value> = events
        .iter()
        .filter(|e| is_object(e, "msg.activity", queue_id))
        .collect();
    for line in &queue {
        assert_eq!(line["key"], queue_key, "{line}");
    }
    assert_eq!(
        queue.iter().filter(|e| e["ended"] == true).count(),
        1,
        "{queue:#?}"
    );
    assert_eq!(sum(&queue, "senders", producer_pid, "messages"), MESSAGES);
    assert_eq!(sum(&queue, "senders", producer_pid, "bytes"), BYTES);
    assert_eq!(sum(&queue, "receivers", consumer_pid, "messages"), MESSAGES);
    assert_eq!(sum(&queue, "receivers", consumer_pid, "bytes"), BYTES);
    let totals: u64 = queue
        .iter()
        .map(|e| e["messages_sent"].as_u64().unwrap())
        .sum();
    assert_eq!(totals, MESSAGES, "{queue:#?}");

    let flows: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "ipc.flow" && e["via"]["ns"] == ns && e["via"]["id"] == queue_id)
        .collect();
    assert!(!flows.is_empty(), "no flow: {queue:#?}");
    for flow in &flows {
        assert_eq!(flow["from"]["pid"], producer_pid, "{flow}");
        assert_eq!(flow["from"]["comm"], "perl", "{flow}");
        assert_eq!(flow["to"]["pid"], consumer_pid, "{flow}");
        assert_eq!(flow["via"]["key"], queue_key, "{flow}");
        assert_eq!(flow["via"]["kind"], "msg", "{flow}");
    }
    let flowed = |field: &str| -> u64 { flows.iter().map(|f| f[field].as_u64().unwrap()).sum() };
    assert_eq!((flowed("messages"), flowed("bytes")), (MESSAGES, BYTES));

    let sems: Vec<&Value> = events
        .iter()
        .filter(|e| is_object(e, "sem.activity", sem_id))
        .collect();
    assert_eq!(sum(&sems, "operators", operator_pid, "calls"), SEMOPS);
    assert_eq!(
        sum(&sems, "operators", operator_pid, "operations"),
        2 * SEMOPS
    );
    for line in &sems {
        assert_eq!(line["key"], sem_key, "{line}");
    }
}

/// Sends of `SIZE`-byte messages with IPC_NOWAIT (04000) into a queue: `SENT` fit in
/// `kernel.msgmnb` = `SENT * SIZE`, the last of them filling it, then `REFUSED` are refused.
const FILLER: &str = r#"
my ($key, $size, $n) = @ARGV;
my $id = msgget($key, 01600) // die "msgget: $!";
my ($sent, $refused) = (0, 0);
for (1 .. $n) {
    if (msgsnd($id, pack("l! a*", 1, "x" x $size), 04000)) { $sent++ }
    elsif ($! + 0 == 11) { $refused++ }
    else { die "msgsnd: $!" }
}
print "filler $id $$ $sent $refused\n";
"#;
const SIZE: u64 = 100;
const SENT: u64 = 10;
const REFUSED: u64 = 3;

/// A producer fills a queue whose namespace's `kernel.msgmnb` was lowered, then has sends
/// refused: one `msg.full` names it with the bytes and limit the kernel shows, and the
/// activity lines count the refusals.
#[test]
fn a_full_queue_is_reported_once_with_what_the_kernel_holds() {
    let mut agent = Agent::start(&["--activity-interval", "1"]);
    let dir = std::env::temp_dir().join(format!("nsipc-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let filler = dir.join("filler.pl");
    std::fs::write(&filler, FILLER).unwrap();
    let key = unique_key(42);
    let out = Command::new("unshare")
        .args(["--ipc", "sh", "-ec"])
        .arg(format!(
            "readlink /proc/self/ns/ipc
             echo {limit} > /proc/sys/kernel/msgmnb
             perl {filler} {key} {SIZE} {calls}
             cat /proc/sysvipc/msg
             sleep 1.5",
            limit = SENT * SIZE,
            filler = filler.display(),
            calls = SENT + REFUSED,
        ))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let ns = parse_ns_link(lines[0][0]);
    let (queue_id, filler_pid): (i64, i64) =
        (lines[1][1].parse().unwrap(), lines[1][2].parse().unwrap());
    assert_eq!(
        (lines[1][3], lines[1][4]),
        (SENT.to_string().as_str(), REFUSED.to_string().as_str()),
        "what the filler did: {out}"
    );
    // /proc/sysvipc/msg: key msqid perms cbytes qnum ...
    let kernel_bytes: u64 = lines[2..]
        .iter()
        .find(|l| l.get(1) == Some(&queue_id.to_string().as_str()))
        .unwrap_or_else(|| panic!("queue {queue_id} not listed: {out}"))[3]
        .parse()
        .unwrap();
    assert_eq!(kernel_bytes, SENT * SIZE, "{out}");

    let is_queue =
        |e: &Value, event: &str| e["event"] == event && e["ns"] == ns && e["id"] == queue_id;
    agent.wait_for("the queue's last activity line", |e| {
        is_queue(e, "msg.activity") && e["ended"] == true
    });
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let events = &stopped.events;
    let full: Vec<&Value> = events.iter().filter(|e| is_queue(e, "msg.full")).collect();
    assert_eq!(full.len(), 1, "one msg.full: {full:#?}");
    let full = full[0];
    assert_eq!(full["key"], key, "{full}");
    assert_eq!(full["bytes"], kernel_bytes, "{full}");
    assert_eq!(full["limit"], SENT * SIZE, "{full}");
    assert_eq!(full["sender"]["pid"], filler_pid, "{full}");
    assert_eq!(full["sender"]["comm"], "perl", "{full}");
    // The last send filled it; the fills and refusals may fall into two reports.
    assert_eq!(full["fills"], 1, "{full}");
    let queue: Vec<&Value> = events
        .iter()
        .filter(|e| is_queue(e, "msg.activity"))
        .collect();
    assert_eq!(sum(&queue, "senders", filler_pid, "messages"), SENT);
    assert_eq!(sum(&queue, "senders", filler_pid, "refused"), REFUSED);
    let refused: u64 = queue
        .iter()
        .map(|e| e["messages_refused"].as_u64().unwrap())
        .sum();
    assert_eq!(refused, REFUSED, "{queue:#?}");
}
