//! The Docker story, reproduced without Docker by `examples/docker-story.sh`: a producer in its
//! own IPC namespace, a consumer in another that cannot find the key, a consumer that joins the
//! producer's namespace and receives the messages, then everything gone. This runs the script
//! as users would and checks each step of the story in the agent's stream. Needs root.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

const SCRIPT: &str = include_str!("../../examples/docker-story.sh");
const MESSAGES: usize = 3;

/// The inum in the first `ipc:[N]` of `line`.
fn ns_in(line: &str) -> u64 {
    let start = line
        .find("ipc:[")
        .unwrap_or_else(|| panic!("no ipc:[…] in {line:?}"));
    let end = start + line[start..].find(']').unwrap() + 1;
    parse_ns_link(&line[start..end])
}

/// The one event matching `pred`, with its position in the stream.
fn only<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> (usize, &'a Value) {
    let found: Vec<(usize, &Value)> = events.iter().enumerate().filter(|(_, e)| pred(e)).collect();
    assert_eq!(found.len(), 1, "exactly one {what}: {found:#?}");
    found[0]
}

#[test]
fn the_docker_story_is_told_step_by_step() {
    require_root();
    // The script as built in: the test binary also runs where the checkout is not (the VMs of
    // `cargo xtask vm-test`).
    let script = std::env::temp_dir().join(format!("nsipc-story-{}.sh", std::process::id()));
    std::fs::write(&script, SCRIPT).unwrap();
    let key = unique_key(0x5d);
    let events_file =
        std::env::temp_dir().join(format!("nsipc-story-{}.jsonl", std::process::id()));
    let output = Command::new("bash")
        .arg(&script)
        .arg(AGENT)
        .env("STORY_KEY", key.to_string())
        .env("STORY_MESSAGES", MESSAGES.to_string())
        .env("STORY_EVENTS", &events_file)
        .output()
        .expect("running examples/docker-story.sh");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "docker-story.sh failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&events_file).expect("the stream the script kept");
    let _ = std::fs::remove_file(&events_file);
    let events: Vec<Value> = text.lines().map(event_line).collect();

    // What the programs themselves said.
    let line = |prefix: &str| -> &str {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{stdout}"))
    };
    let producer_ns = ns_in(line("producer: queue id"));
    let lonely_line = line("consumer in its own namespace");
    let lonely_ns = ns_in(lonely_line);
    assert!(
        lonely_line.ends_with(&format!("msgget(key {key}): No such file or directory")),
        "{lonely_line}"
    );
    let received: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("consumer joined to"))
        .collect();
    assert_eq!(received.len(), MESSAGES, "{stdout}");
    for (i, l) in received.iter().enumerate() {
        assert_eq!(
            ns_in(l),
            producer_ns,
            "the joined consumer is in the producer's namespace"
        );
        assert!(
            l.ends_with(&format!("received \"message {} of {MESSAGES}\"", i + 1)),
            "{l}"
        );
    }
    assert_ne!(producer_ns, HOST_NS);
    assert_ne!(lonely_ns, HOST_NS);
    assert_ne!(producer_ns, lonely_ns);

    // The same story in the agent's stream. Namespace lives are told apart by ns_id (or ns_gen).
    let life = |e: &Value| e.get("ns_id").or_else(|| e.get("ns_gen")).cloned();
    assert!(
        events.iter().all(|e| e["event"] != "agent.lost"),
        "nothing lost"
    );

    // 1. The producer's queue, and its namespace: the same inum may have other lives in the
    //    stream (other tests run meanwhile); the queue's names the producer's.
    let (queue_at, queue) = only(&events, "msg.create of the key", |e| {
        e["event"] == "msg.create" && e["key"] == key
    });
    assert_eq!(queue["ns"], producer_ns);
    assert_eq!(queue["comm"], "perl");
    assert_eq!(queue["mode"], 0o600);
    let producer_life = life(queue);
    assert!(producer_life.is_some(), "{queue}");
    let (created_at, producer) = only(&events, "create of the producer's namespace", |e| {
        e["event"] == "ipc_ns.create" && e["ns"] == producer_ns && life(e) == producer_life
    });
    assert_eq!(producer["comm"], "unshare");
    assert_eq!(producer["via"], "unshare");
    assert_eq!(producer["from_ns"], HOST_NS);
    assert_eq!(producer["pid"], queue["pid"], "unshare execs the producer");

    // 2. The consumer in its own namespace does not find the key, and is told where it lives.
    let (failed_at, failed) = only(&events, "msg.get_failed of the key", |e| {
        e["event"] == "msg.get_failed" && e["key"] == key
    });
    assert_eq!(failed["ns"], lonely_ns);
    assert_eq!(failed["errno"], "ENOENT");
    assert_eq!(failed["key_lives_in"], serde_json::json!([producer_ns]));
    let (_, lonely) = only(&events, "create of the lonely consumer's namespace", |e| {
        e["event"] == "ipc_ns.create" && e["ns"] == lonely_ns && life(e) == life(failed)
    });
    assert_eq!(lonely["from_ns"], HOST_NS);

    // 3. The consumer that joins the producer's namespace.
    let (joined_at, join) = only(&events, "ipc_ns.join into the producer's namespace", |e| {
        // By life, not inum; and nsenter's: other agents' inventories (concurrent tests) join too.
        e["event"] == "ipc_ns.join"
            && e["ns"] == producer_ns
            && life(e) == producer_life
            && e["comm"] == "nsenter"
    });
    assert_eq!(join["from_ns"], HOST_NS);
    assert_eq!(join["into_host"], false);

    // 4. Everything exits: both namespaces are destroyed, the queue with the producer's.
    let (queue_gone_at, queue_gone) = only(&events, "msg.destroy of the key", |e| {
        e["event"] == "msg.destroy" && e["key"] == key
    });
    assert_eq!(queue_gone["reason"], "namespace_teardown");
    assert_eq!(queue_gone["id"], queue["id"]);
    assert_eq!(life(queue_gone), producer_life);
    let (producer_gone_at, producer_gone) =
        only(&events, "destroy of the producer's namespace", |e| {
            e["event"] == "ipc_ns.destroy" && e["ns"] == producer_ns && life(e) == producer_life
        });
    assert_eq!(producer_gone["reason"], "freed");
    assert_eq!(
        producer_gone["objects_destroyed"],
        serde_json::json!({"msg": 1, "shm": 0, "sem": 0})
    );
    let (lonely_gone_at, lonely_gone) =
        only(&events, "destroy of the lonely consumer's namespace", |e| {
            e["event"] == "ipc_ns.destroy" && e["ns"] == lonely_ns && life(e) == life(failed)
        });
    assert_eq!(
        lonely_gone["objects_destroyed"],
        serde_json::json!({"msg": 0, "shm": 0, "sem": 0})
    );

    // In the order it happened.
    assert!(created_at < queue_at && queue_at < failed_at && failed_at < joined_at);
    assert!(failed_at < lonely_gone_at);
    assert!(joined_at < queue_gone_at && queue_gone_at < producer_gone_at);
    let stop = events.last().expect("events");
    assert_eq!(stop["event"], "agent.stop");
    assert_eq!(stop["reason"], "SIGINT");
    assert_eq!(stop["lost"], 0);

    // And the script printed the story with jq: the same events, without time.
    let printed: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for wanted in [
        "ipc_ns.create",
        "msg.create",
        "msg.get_failed",
        "ipc_ns.join",
        "msg.destroy",
        "ipc_ns.destroy",
    ] {
        assert!(
            printed.iter().any(|e| e["event"] == wanted),
            "the printed story has {wanted}:\n{stdout}"
        );
    }
    assert!(printed.iter().all(|e| e.get("time").is_none()));
}
