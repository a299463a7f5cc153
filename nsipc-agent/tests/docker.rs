//! Real Docker: the story of the examples, told by containers made by dockerd and runc, and
//! every container event checked against what `docker inspect` says. Needs root; installs
//! docker.io and starts dockerd when missing (tests/containers/setup.sh).
//!
//! A producer (`--ipc shareable`) makes a queue, a segment and a semaphore set under known
//! keys; a consumer in its own namespace fails to find the queue (and is told where the key
//! lives, and in which container); a consumer with `--ipc container:producer` joins and
//! receives the message; `docker exec` makes another queue in the producer; a `--ipc host`
//! container makes one in the host's namespace; `--ipc none` and `--ipc private` get their
//! own namespaces; `docker rm -f` ends it all.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

const IMAGE: &str = "nsipc-test:latest";
const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/containers/setup.sh");

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The full id of a container, as `docker inspect` gives it.
fn inspect_id(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", name])
}

/// Removes the test's containers, whatever happened.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        let mut args = vec!["rm".to_owned(), "-f".to_owned()];
        args.extend(self.0.iter().cloned());
        let _ = Command::new("docker").args(&args).output();
    }
}

fn container_id(event: &Value) -> Option<&str> {
    event["container"]["id"].as_str()
}

#[test]
fn the_docker_story_with_real_containers() {
    require_root();
    let status = Command::new("bash")
        .arg(SETUP)
        .status()
        .expect("running setup.sh");
    assert!(status.success(), "tests/containers/setup.sh failed");

    let tag = std::process::id();
    let name = |role: &str| format!("nsipc-{tag}-{role}");
    let (producer, lonely, consumer, hostipc, none, private) = (
        name("producer"),
        name("lonely"),
        name("consumer"),
        name("hostipc"),
        name("none"),
        name("private"),
    );
    let _cleanup = Containers(vec![
        producer.clone(),
        lonely.clone(),
        consumer.clone(),
        hostipc.clone(),
        none.clone(),
        private.clone(),
    ]);
    let [queue, segment, sems, exec_queue, host_queue] =
        [1, 2, 3, 4, 5].map(|salt| unique_key(0x40 + salt).to_string());

    let mut agent = Agent::start(&[]);
    let ready = agent.events.last().unwrap().clone();
    assert!(
        ready["cgroup_hierarchy"].is_string(),
        "this host's tasks are attributed: {ready}"
    );

    let script = format!(
        "sysvtool msg-create {queue} && sysvtool msg-send {queue} hello && \
         sysvtool shm-create {segment} 4096 && sysvtool sem-create {sems} 2 && exec sysvtool hold"
    );
    docker(&[
        "run",
        "-d",
        "--name",
        &producer,
        "--ipc",
        "shareable",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let producer_id = inspect_id(&producer);
    let made = agent.wait_for("the producer's semaphore set", |e| {
        e["event"] == "sem.create" && e["key"].as_i64().map(|k| k.to_string()) == Some(sems.clone())
    });
    let producer_ns = made["ns"].as_u64().unwrap();

    // Its own namespace: the key is not there.
    let out = Command::new("docker")
        .args([
            "run", "--name", &lonely, "--ipc", "private", IMAGE, "sysvtool", "msg-get", &queue,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("msgget(key {queue}): ENOENT")
    );
    let lonely_id = inspect_id(&lonely);
    docker(&[
        "run",
        "--name",
        &consumer,
        "--ipc",
        &format!("container:{producer}"),
        IMAGE,
        "sysvtool",
        "msg-recv",
        &queue,
        "5",
    ]);
    let consumer_id = inspect_id(&consumer);
    docker(&["exec", &producer, "sysvtool", "msg-create", &exec_queue]);
    docker(&[
        "run",
        "--name",
        &hostipc,
        "--ipc",
        "host",
        IMAGE,
        "sysvtool",
        "msg-create",
        &host_queue,
    ]);
    let hostipc_id = inspect_id(&hostipc);
    docker(&["run", "--name", &none, "--ipc", "none", IMAGE, "true"]);
    docker(&["run", "--name", &private, "--ipc", "private", IMAGE, "true"]);
    let (none_id, private_id) = (inspect_id(&none), inspect_id(&private));
    // The host queue outlives its container.
    let _ = Command::new("ipcrm").args(["-Q", &host_queue]).status();
    docker(&["rm", "-f", &producer, &consumer]);
    agent.wait_for("the producer's namespace destroyed", |e| {
        e["event"] == "ipc_ns.destroy" && e["ns"].as_u64() == Some(producer_ns)
    });
    let stopped = agent.stop(libc::SIGINT);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let events = stopped.events;
    let story = |pred: &dyn Fn(&Value) -> bool| -> Vec<&Value> {
        events.iter().filter(|e| pred(e)).collect()
    };
    let one = |what: &str, pred: &dyn Fn(&Value) -> bool| -> &Value {
        let found = story(pred);
        assert_eq!(
            found.len(),
            1,
            "exactly one {what}: {found:#?}\nstream: {events:#?}"
        );
        found[0]
    };
    let key_is =
        |e: &Value, key: &str| e["key"].as_i64().map(|k| k.to_string()).as_deref() == Some(key);

    // Every event of a container names it as docker inspect does, with its name.
    let names = [
        (&producer_id, &producer),
        (&lonely_id, &lonely),
        (&consumer_id, &consumer),
        (&hostipc_id, &hostipc),
        (&none_id, &none),
        (&private_id, &private),
    ];
    let mut attributed = 0;
    for event in &events {
        for container in std::iter::once(&event["container"])
            .chain(event["ns_containers"].as_array().into_iter().flatten())
            .chain(event["containers"].as_array().into_iter().flatten())
            .filter(|c| c.is_object())
        {
            let id = container["id"].as_str().unwrap();
            if let Some((_, name)) = names.iter().find(|(known, _)| known.as_str() == id) {
                assert_eq!(container["name"], name.as_str(), "{event}");
                assert_eq!(container["runtime"], "docker", "{event}");
                attributed += 1;
            }
        }
    }
    assert!(
        attributed >= 10,
        "{attributed} container mentions: {events:#?}"
    );

    // The producer's namespace is made for it, by runc, from inside its cgroup.
    let created = one("producer namespace", &|e| {
        e["event"] == "ipc_ns.create" && e["ns"].as_u64() == Some(producer_ns)
    });
    assert_eq!(container_id(created), Some(producer_id.as_str()));
    assert_eq!(created["host_ipc"], false);
    for (kind, key) in [
        ("msg.create", &queue),
        ("shm.create", &segment),
        ("sem.create", &sems),
    ] {
        let e = one(kind, &|e| e["event"] == kind && key_is(e, key));
        assert_eq!(container_id(e), Some(producer_id.as_str()), "{e}");
        assert_eq!(e["ns"].as_u64(), Some(producer_ns));
    }

    // The lonely consumer: ENOENT, and where the key lives, with its container.
    let failed = one("failed get", &|e| {
        e["event"] == "msg.get_failed" && key_is(e, &queue)
    });
    assert_eq!(failed["errno"], "ENOENT");
    assert_eq!(container_id(failed), Some(lonely_id.as_str()));
    assert_eq!(failed["key_lives_in"], serde_json::json!([producer_ns]));
    assert_eq!(
        failed["key_lives_in_ns"][0]["ns"].as_u64(),
        Some(producer_ns)
    );
    assert_eq!(
        failed["key_lives_in_ns"][0]["containers"][0]["id"].as_str(),
        Some(producer_id.as_str())
    );

    // --ipc container:producer joins another container's namespace.
    let shared = one("consumer join", &|e| {
        e["event"] == "ipc_ns.join" && container_id(e) == Some(consumer_id.as_str())
    });
    assert_eq!(shared["join"], "share");
    assert_eq!(shared["ns"].as_u64(), Some(producer_ns));
    assert_eq!(
        shared["ns_containers"][0]["id"].as_str(),
        Some(producer_id.as_str())
    );

    // docker exec: runc joins before it moves the task into the container's cgroup, so the
    // join is runc's; what the exec'd program does is the producer's.
    let exec_join = story(&|e| {
        e["event"] == "ipc_ns.join"
            && e["ns"].as_u64() == Some(producer_ns)
            && container_id(e) != Some(consumer_id.as_str())
    });
    assert_eq!(exec_join.len(), 1, "{exec_join:#?}");
    assert!(
        exec_join[0]["join"] == "exec"
            || exec_join[0]["comm"].as_str().unwrap().starts_with("runc"),
        "{}",
        exec_join[0]
    );
    let exec_made = one("exec'd queue", &|e| {
        e["event"] == "msg.create" && key_is(e, &exec_queue)
    });
    assert_eq!(container_id(exec_made), Some(producer_id.as_str()));
    assert_eq!(exec_made["ns"].as_u64(), Some(producer_ns));

    // --ipc host: flagged, and the queue it made is the host's.
    let flagged = one("host IPC container", &|e| {
        e["event"] == "container.host_ipc" && container_id(e) == Some(hostipc_id.as_str())
    });
    assert_eq!(flagged["ns"].as_u64(), Some(HOST_NS));
    let host_made = one("host queue", &|e| {
        e["event"] == "msg.create" && key_is(e, &host_queue)
    });
    assert_eq!(host_made["host_ipc"], true);
    assert_eq!(container_id(host_made), Some(hostipc_id.as_str()));
    assert_eq!(host_made["ns"].as_u64(), Some(HOST_NS));

    // --ipc none and --ipc private: namespaces of their own, made for them.
    for id in [&none_id, &private_id] {
        let own = one("own namespace", &|e| {
            e["event"] == "ipc_ns.create" && container_id(e) == Some(id.as_str())
        });
        assert_ne!(own["ns"].as_u64(), Some(producer_ns));
    }

    // docker rm -f: the producer's namespace dies with what was left in it, naming both
    // containers that lived there.
    let destroyed = one("producer namespace destroy", &|e| {
        e["event"] == "ipc_ns.destroy" && e["ns"].as_u64() == Some(producer_ns)
    });
    assert_eq!(
        destroyed["objects_destroyed"],
        serde_json::json!({"msg": 2, "shm": 1, "sem": 1})
    );
    let lived: Vec<&str> = destroyed["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(lived, [producer_id.as_str(), consumer_id.as_str()]);

    eprintln!(
        "docker: {} events, {attributed} container mentions, producer {}",
        events.len(),
        &producer_id[..12]
    );
}
