//! docs/events.md's "Fields common to events" as rules a line can be checked against: the
//! fields on every line, and the ones that come together. The schema requires them
//! (`required`, `dependentRequired`), the unit tests check every sample line of every kind
//! with [`missing`], and the privileged tests check every line of the agent's stream with it
//! (tests/support includes this file: it needs nothing but serde_json).

use serde_json::Value;

/// On every line.
pub const EVERY_LINE: &[&str] = &["event", "time"];

/// Where the first field is, the others are (on lines other than the agent's own): a task's
/// fields, `host_ipc` with `container`, a
/// namespace's identity with its inum, `key_hex` with `key`, `mode_octal` with `mode`.
pub const TOGETHER: &[(&str, &[&str])] = &[
    ("pid", &["tid", "uid", "comm"]),
    ("tid", &["pid"]),
    ("ppid", &["pid"]),
    ("cmdline", &["pid"]),
    ("container", &["host_ipc"]),
    ("host_ipc", &["container"]),
    ("ns_id", &["ns"]),
    ("ns_gen", &["ns"]),
    ("from_ns_id", &["from_ns"]),
    ("from_ns_gen", &["from_ns"]),
    ("key", &["key_hex"]),
    ("mode", &["mode_octal"]),
];

/// Fields of which a line has at most one: a namespace's identity is its kernel id or the
/// agent's count of the inum's lives, not both.
pub const ONE_OF: &[(&str, &str)] = &[("ns_id", "ns_gen"), ("from_ns_id", "from_ns_gen")];

/// The raw syscall events (`--raw`): each has `ret`, and `errno` when `ret` is negative.
pub const SYSCALL_EVENTS: &[&str] = &[
    "msg.get",
    "shm.get",
    "sem.get",
    "msg.ctl",
    "shm.ctl",
    "sem.ctl",
    "shm.shmat",
    "shm.shmdt",
    "mqueue.mq_open",
    "mqueue.mq_unlink",
    "ipc_ns.unshare",
    "ipc_ns.setns",
    "ipc_ns.clone",
];

/// The agent's own lines (`agent.ready`…), to which only [`EVERY_LINE`] applies.
pub fn is_agent_line(event: &str) -> bool {
    event.starts_with("agent.")
}

/// What `line` lacks, or has wrongly, of the common fields; empty when it has them all.
pub fn missing(line: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(fields) = line.as_object() else {
        return vec!["not an object".to_owned()];
    };
    for field in EVERY_LINE {
        if !fields.get(*field).is_some_and(Value::is_string) {
            problems.push(format!("no {field}"));
        }
    }
    let event = fields.get("event").and_then(Value::as_str).unwrap_or("");
    // The agent's own lines are about no process and no namespace: `agent.ready`'s `pid` is
    // the agent's, its `ns_id` whether the kernel has namespace ids.
    if is_agent_line(event) {
        return problems;
    }
    for (field, others) in TOGETHER {
        if fields.contains_key(*field) {
            for other in others.iter().filter(|other| !fields.contains_key(**other)) {
                problems.push(format!("{field} without {other}"));
            }
        }
    }
    for (one, other) in ONE_OF {
        if fields.contains_key(*one) && fields.contains_key(*other) {
            problems.push(format!("both {one} and {other}"));
        }
    }
    if SYSCALL_EVENTS.contains(&event) {
        match fields.get("ret").and_then(Value::as_i64) {
            None => problems.push("a syscall event without ret".to_owned()),
            Some(ret) if ret < 0 && !fields.contains_key("errno") => {
                problems.push("a failed syscall without errno".to_owned());
            }
            Some(_) => {}
        }
    }
    problems
}
