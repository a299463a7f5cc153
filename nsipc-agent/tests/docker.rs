//! Real Docker and Podman: the story of the examples, told by containers made by dockerd and
//! runc, then by podman (conmon and runc, cgroupfs), and every container event checked against
//! what `docker inspect` / `podman inspect` says. Needs root; installs docker.io or podman and
//! starts dockerd when missing (tests/containers/setup.sh).
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

const SETUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/containers/setup.sh");

/// A container engine with a docker-like command line.
#[derive(Clone, Copy)]
struct Engine {
    /// Its command, and the argument setup.sh takes.
    program: &'static str,
    /// What the stream calls the runtime of its containers.
    runtime: &'static str,
    image: &'static str,
    /// Options for every `run`: podman would set up a network through netavark otherwise, and
    /// by default raises the container's RLIMIT_NOFILE and RLIMIT_NPROC to its own hard limits,
    /// which runc is refused on some machines ("error setting rlimit type 7: operation not
    /// permitted": no CAP_SYS_RESOURCE); lower ones are always allowed. runc, not crun, which
    /// podman prefers when both are installed (as when podman is installed before docker.io)
    /// and which refuses a host with cgroup v1 controllers next to cgroup2 ("cgroups in hybrid
    /// mode not supported").
    run_options: &'static [&'static str],
    /// Keeps the SysV keys of the two stories apart: they run at the same time.
    key_salt: u32,
}

const DOCKER: Engine = Engine {
    program: "docker",
    runtime: "docker",
    image: "nsipc-test:latest",
    run_options: &[],
    key_salt: 0x40,
};

const PODMAN: Engine = Engine {
    program: "podman",
    runtime: "podman",
    image: "localhost/nsipc-test:latest",
    run_options: &[
        "--runtime",
        "runc",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ],
    key_salt: 0x50,
};

impl Engine {
    fn command(self, args: &[&str]) -> Command {
        let mut command = Command::new(self.program);
        if args.first() == Some(&"run") {
            command.arg("run").args(self.run_options).args(&args[1..]);
        } else {
            command.args(args);
        }
        command
    }

    /// Runs `ENGINE args`, which must succeed; returns its stdout.
    fn run(self, args: &[&str]) -> String {
        let output = self
            .command(args)
            .output()
            .unwrap_or_else(|err| panic!("running {}: {err}", self.program));
        assert!(
            output.status.success(),
            "{} {args:?}: {}\n{}",
            self.program,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// The full id of a container, as `inspect` gives it.
    fn inspect_id(self, name: &str) -> String {
        self.run(&["inspect", "-f", "{{.Id}}", name])
    }
}

/// Removes a queue left in the host's namespace, whatever happened.
struct HostQueue(String);

impl Drop for HostQueue {
    fn drop(&mut self) {
        let _ = Command::new("ipcrm").args(["-Q", &self.0]).status();
    }
}

/// Removes the test's containers, whatever happened: the last made first, as podman removes
/// a container only after those sharing its namespaces.
struct Containers(Engine, Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in self.1.iter().rev() {
            let _ = self.0.command(&["rm", "-f", name]).output();
        }
    }
}

fn container_id(event: &Value) -> Option<&str> {
    event["container"]["id"].as_str()
}

#[test]
fn the_docker_story_with_real_containers() {
    the_story_with(DOCKER);
}

#[test]
fn the_docker_story_with_real_podman_containers() {
    the_story_with(PODMAN);
}

#[test]
fn the_example_story_runs_with_real_containers() {
    the_example_story_with(DOCKER);
}

#[test]
fn the_example_story_runs_with_real_podman_containers() {
    the_example_story_with(PODMAN);
}

/// examples/container-story.sh, as a user runs it: it sets its engine up, traces with its own
/// agent, and prints the story, whose lines must name the containers as the story goes.
fn the_example_story_with(engine: Engine) {
    require_root();
    let key = unique_key(engine.key_salt + 0xf);
    let events_file = std::env::temp_dir().join(format!(
        "nsipc-container-story-{}-{}.jsonl",
        engine.program,
        std::process::id()
    ));
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/container-story.sh"
    ))
    .args([engine.program, env!("CARGO_BIN_EXE_nsipc-agent")])
    .env("STORY_KEY", key.to_string())
    .env("STORY_EVENTS", &events_file)
    .output()
    .expect("running examples/container-story.sh");
    // The agent's own stream, which the script kept, validates line by line (the script exits
    // without waiting for the agent: a last line still being written is left out).
    let stream = std::fs::read_to_string(&events_file).expect("the stream the script kept");
    let _ = std::fs::remove_file(&events_file);
    let mut validated = 0;
    for line in stream.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        event_line(line.trim_end());
        validated += 1;
    }
    assert!(validated > 0, "the script kept an empty stream");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // What it prints is jq's view of the stream (no `time`, containers by name): not lines of
    // the stream, so not the schema's.
    let story: Vec<Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let one = |what: &str, pred: &dyn Fn(&Value) -> bool| -> &Value {
        let found: Vec<&Value> = story.iter().filter(|e| pred(e)).collect();
        assert_eq!(found.len(), 1, "exactly one {what}: {stdout}");
        found[0]
    };
    let made = one("msg.create", &|e| {
        e["event"] == "msg.create" && e["key"] == key
    });
    let producer = made["container"].as_str().expect("the maker's container");
    assert!(producer.starts_with("nsipc-story-producer-"), "{made}");
    let failed = one("msg.get_failed", &|e| e["event"] == "msg.get_failed");
    assert_eq!(failed["errno"], "ENOENT");
    assert!(
        failed["container"]
            .as_str()
            .unwrap()
            .starts_with("nsipc-story-lonely-")
    );
    assert_eq!(failed["key_lives_in_ns"][0]["ns"], made["ns"]);
    assert_eq!(failed["key_lives_in_ns"][0]["containers"][0], producer);
    let joined = one("ipc_ns.join", &|e| e["event"] == "ipc_ns.join");
    assert_eq!(joined["join"], "share");
    assert!(
        joined["container"]
            .as_str()
            .unwrap()
            .starts_with("nsipc-story-consumer-")
    );
    assert_eq!(joined["ns_containers"][0], producer);
    let gone = one("ipc_ns.destroy", &|e| e["event"] == "ipc_ns.destroy");
    assert_eq!(gone["ns"], made["ns"]);
    assert_eq!(gone["containers"][0], producer);
    assert_eq!(gone["containers"][1], joined["container"]);
    assert_eq!(gone["objects_destroyed"]["msg"], 1);
}

fn the_story_with(engine: Engine) {
    require_root();
    let status = Command::new("bash")
        .arg(SETUP)
        .arg(engine.program)
        .status()
        .expect("running setup.sh");
    assert!(
        status.success(),
        "tests/containers/setup.sh {} failed",
        engine.program
    );
    let image = engine.image;

    let tag = std::process::id();
    let name = |role: &str| format!("nsipc-{tag}-{}-{role}", engine.program);
    let (producer, lonely, consumer, hostipc, none, private, restarted) = (
        name("producer"),
        name("lonely"),
        name("consumer"),
        name("hostipc"),
        name("none"),
        name("private"),
        name("restarted"),
    );
    let _cleanup = Containers(
        engine,
        vec![
            producer.clone(),
            lonely.clone(),
            consumer.clone(),
            hostipc.clone(),
            none.clone(),
            private.clone(),
            restarted.clone(),
        ],
    );
    let [queue, segment, sems, exec_queue, host_queue, restart_queue] =
        [1, 2, 3, 4, 5, 6].map(|salt| unique_key(engine.key_salt + salt).to_string());

    // Activity reports every second: the producer → consumer traffic is in the story.
    let mut agent = Agent::start(&["--activity-interval", "1"]);
    let ready = agent.events.last().unwrap().clone();
    assert!(
        ready["cgroup_hierarchy"].is_string(),
        "this host's tasks are attributed: {ready}"
    );

    let script = format!(
        "sysvtool msg-create {queue} && sysvtool msg-send {queue} hello && \
         sysvtool shm-create {segment} 4096 && sysvtool sem-create {sems} 2 && exec sysvtool hold"
    );
    engine.run(&[
        "run",
        "-d",
        "--name",
        &producer,
        "--ipc",
        "shareable",
        image,
        "sh",
        "-c",
        &script,
    ]);
    let producer_id = engine.inspect_id(&producer);
    let made = agent.wait_for("the producer's semaphore set", |e| {
        e["event"] == "sem.create" && e["key"].as_i64().map(|k| k.to_string()) == Some(sems.clone())
    });
    let producer_ns = made["ns"].as_u64().unwrap();
    // Its namespace's life: inums come back at once, and the other story runs meanwhile.
    let life = |e: &Value| (e["ns"].clone(), e["ns_id"].clone(), e["ns_gen"].clone());
    let producer_life = life(&made);
    let in_producer_ns = |e: &Value| life(e) == producer_life;

    // `snapshot` names the producer's namespace's container as inspect does.
    let snapshot = Command::new(AGENT).arg("snapshot").output().unwrap();
    assert!(snapshot.status.success(), "{snapshot:?}");
    let listed: Vec<Value> = String::from_utf8(snapshot.stdout)
        .unwrap()
        .lines()
        .map(event_line)
        .filter(|e: &Value| e["event"] == "ipc_ns.exists" && e["ns"].as_u64() == Some(producer_ns))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(
        listed[0]["containers"],
        serde_json::json!([{"id": producer_id, "runtime": engine.runtime, "name": producer}]),
        "{}",
        listed[0]
    );

    // Its own namespace: the key is not there.
    let out = engine
        .command(&[
            "run", "--name", &lonely, "--ipc", "private", image, "sysvtool", "msg-get", &queue,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("msgget(key {queue}): ENOENT")
    );
    let lonely_id = engine.inspect_id(&lonely);
    engine.run(&[
        "run",
        "--name",
        &consumer,
        "--ipc",
        &format!("container:{producer}"),
        image,
        "sysvtool",
        "msg-recv",
        &queue,
        "5",
    ]);
    let consumer_id = engine.inspect_id(&consumer);
    engine.run(&["exec", &producer, "sysvtool", "msg-create", &exec_queue]);
    engine.run(&[
        "run",
        "--name",
        &hostipc,
        "--ipc",
        "host",
        image,
        "sysvtool",
        "msg-create",
        &host_queue,
    ]);
    let hostipc_id = engine.inspect_id(&hostipc);
    engine.run(&["run", "--name", &none, "--ipc", "none", image, "true"]);
    engine.run(&["run", "--name", &private, "--ipc", "private", image, "true"]);
    let (none_id, private_id) = (engine.inspect_id(&none), engine.inspect_id(&private));
    // restart: the same container in a new namespace, each start making its queue.
    let script = format!("sysvtool msg-create {restart_queue} && exec sysvtool hold");
    engine.run(&[
        "run", "-d", "--name", &restarted, "--ipc", "private", image, "sh", "-c", &script,
    ]);
    let restarted_id = engine.inspect_id(&restarted);
    let is_restart_queue = |e: &Value| {
        e["event"] == "msg.create"
            && e["key"].as_i64().map(|k| k.to_string()) == Some(restart_queue.clone())
    };
    let first_queue = agent.wait_for("the restarted container's first queue", is_restart_queue);
    engine.run(&["restart", "-t", "0", &restarted]);
    agent.wait_for("the restarted container's second queue", |e| {
        is_restart_queue(e) && life(e) != life(&first_queue)
    });
    agent.wait_for("the restarted container's first namespace destroyed", |e| {
        e["event"] == "ipc_ns.destroy" && life(e) == life(&first_queue)
    });
    // The host queue outlives its container: orphaned once the container's cgroup is gone.
    let host_queue_left = HostQueue(host_queue.clone());
    agent.wait_for("the host queue orphaned by its container's end", |e| {
        e["event"] == "msg.orphaned"
            && e["cause"] == "container_ended"
            && e["key"].as_i64().map(|k| k.to_string()) == Some(host_queue.clone())
    });
    drop(host_queue_left);
    // The consumer first: podman refuses to remove a container another one shares.
    engine.run(&["rm", "-f", &consumer]);
    engine.run(&["rm", "-f", &producer]);
    agent.wait_for("the producer's namespace destroyed", |e| {
        e["event"] == "ipc_ns.destroy" && in_producer_ns(e)
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
        (&restarted_id, &restarted),
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
                assert_eq!(container["runtime"], engine.runtime, "{event}");
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
        e["event"] == "ipc_ns.create" && in_producer_ns(e)
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
        assert!(in_producer_ns(e), "{e}");
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
    assert!(in_producer_ns(shared), "{shared}");
    assert_eq!(
        shared["ns_containers"][0]["id"].as_str(),
        Some(producer_id.as_str())
    );

    // The message the producer's sysvtool sent ("hello", 5 bytes) is the one the consumer
    // received: one flow from the producer container to the consumer container.
    let flow = one("producer → consumer flow", &|e| {
        e["event"] == "ipc.flow" && key_is(&e["via"], &queue)
    });
    assert_eq!(
        flow["from"]["container"]["id"],
        producer_id.as_str(),
        "{flow}"
    );
    assert_eq!(flow["from"]["comm"], "sysvtool", "{flow}");
    assert_eq!(
        flow["to"]["container"]["id"],
        consumer_id.as_str(),
        "{flow}"
    );
    assert_eq!(
        (flow["messages"].as_u64(), flow["bytes"].as_u64()),
        (Some(1), Some(5))
    );
    assert!(in_producer_ns(&flow["via"]), "{flow}");

    // docker exec: runc joins before it moves the task into the container's cgroup, so the
    // join is runc's; what the exec'd program does is the producer's.
    let exec_join = story(&|e| {
        e["event"] == "ipc_ns.join"
            && in_producer_ns(e)
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
    assert!(in_producer_ns(exec_made), "{exec_made}");

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
    // Orphaned twice, once per cause: its maker exited, then its container ended.
    for cause in ["creator_exited", "container_ended"] {
        let orphaned = one(&format!("host queue orphaned ({cause})"), &|e| {
            e["event"] == "msg.orphaned" && key_is(e, &host_queue) && e["cause"] == cause
        });
        assert_eq!(container_id(orphaned), Some(hostipc_id.as_str()));
        assert_eq!(orphaned["host_ipc"], true);
        assert_eq!(orphaned["id"], host_made["id"]);
        if cause == "creator_exited" {
            assert_eq!(orphaned["creator_pid"], host_made["pid"]);
        }
    }

    // restart: each start's namespace is made for the container and names it at its end.
    let starts =
        story(&|e| e["event"] == "ipc_ns.create" && container_id(e) == Some(restarted_id.as_str()));
    assert_eq!(starts.len(), 2, "{starts:#?}");
    let first_end = one("the first start's namespace destroy", &|e| {
        e["event"] == "ipc_ns.destroy" && life(e) == life(starts[0])
    });
    assert_eq!(first_end["containers"][0]["id"], restarted_id.as_str());
    assert_eq!(
        first_end["objects_destroyed"],
        serde_json::json!({"msg": 1, "shm": 0, "sem": 0})
    );

    // --ipc none and --ipc private: namespaces of their own, made for them.
    for id in [&none_id, &private_id] {
        let own = one("own namespace", &|e| {
            e["event"] == "ipc_ns.create" && container_id(e) == Some(id.as_str())
        });
        assert!(!in_producer_ns(own), "{own}");
    }

    // docker rm -f: the producer's namespace dies with what was left in it, naming both
    // containers that lived there.
    let destroyed = one("producer namespace destroy", &|e| {
        e["event"] == "ipc_ns.destroy" && in_producer_ns(e)
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
        "{}: {} events, {attributed} container mentions, producer {}",
        engine.program,
        events.len(),
        &producer_id[..12]
    );
}
